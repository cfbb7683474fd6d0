"""``bot4 profile``: sample a running pipeline for a while and write where each stage's time goes
(profile.json, profile.html, PNGs); ``bot4 latency``: the tick-to-order histogram of a running pipeline.
Both only read shared memory: the run is not stopped, paused or written to."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time

EXIT_CONFIG = 2


def _bad(text: str) -> int:
    print(f"bot4: {text}", file=sys.stderr)
    return EXIT_CONFIG


def profile(run: str, seconds: float, out: str | None, interval_ms: float, py_spy: bool) -> int:
    if not 0 < seconds <= 3600:
        return _bad(f"--seconds={seconds:g} is out of range: use 0 < seconds <= 3600")
    if not 1 <= interval_ms <= 1000:
        return _bad(f"--interval-ms={interval_ms:g} is out of range: use 1..1000 (ms between samples)")
    from pipeline.profiling import analysis, figures, page, pyspy
    from pipeline.profiling.sampler import RunNotFound, Sampler
    try:
        sampler = Sampler(run)
    except RunNotFound as exc:
        print(f"bot4 profile: {exc}", file=sys.stderr)
        return 1
    out = out or f"profile-{run}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        os.makedirs(out, exist_ok=True)
        hosts = [(p.name, p.pid) for p in sampler.processes() if p.pid
                 and analysis.host_kind(p, [p.name]) in (analysis.AGENT, analysis.MODEL)]
        spying = pyspy.Recorders(hosts, seconds, out) if py_spy else contextlib.nullcontext()
        with spying:
            recording = sampler.record(seconds, interval_ms / 1e3)
            spied = spying.finish() if py_spy else None
    finally:
        sampler.close()
    if len(recording.wall_ns) < 2:
        print("bot4 profile: the run stopped before a second sample; nothing to report", file=sys.stderr)
        return 1
    result = analysis.analyse(recording, spied)
    drawn = {"phases": figures.phases(result, os.path.join(out, "phases.png")),
             "batches": figures.batches(result, os.path.join(out, "batches.png")),
             "depths": figures.depths(result, os.path.join(out, "depths.png")),
             "waterfall": figures.waterfall(result, os.path.join(out, "waterfall.png"))}
    result["figures"] = drawn
    with open(os.path.join(out, "profile.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    with open(os.path.join(out, "profile.html"), "w") as fh:
        fh.write(page.render(result, out, drawn))
    for line in summary(result):
        print(line)
    print(f"profile written to {out}: profile.html, profile.json, {', '.join(drawn.values())}"
          + (", py-spy stacks" if spied and spied.get("hosts") else ""))
    if spied and spied.get("error"):
        print(f"note: {spied['error']}", file=sys.stderr)
    return 0


def summary(result: dict) -> list[str]:
    from pipeline.profiling.analysis import PHASES, fmt_ns
    spy = (result["pyspy"] or {}).get("cpu_ns")
    lines = [f"{result['seconds']:.2f} s of run {result['run']!r}, {result['samples']:,} samples"
             + (f" ({result['ended_early']})" if result["ended_early"] else "")
             + f"; sampling used {result['sampler_cpu_ns'] / 1e6:,.0f} ms of CPU"
             + (f", py-spy {spy / 1e6:,.0f} ms" if spy else "")]
    lines.append(f"{'process':<10} " + " ".join(f"{p:>10}" for p in (*PHASES, "other")) + f" {'tick p50':>10}")
    for p in result["processes"]:
        wall = p["wall_ns"] or 1
        lines.append(f"{p['name']:<10} " + " ".join(f"{100 * p['phases_ns'][ph] / wall:>9.1f}%" for ph in PHASES)
                     + f" {100 * max(0, p['unaccounted_ns']) / wall:>9.1f}% {fmt_ns(p['tick_to_output']['p50']):>10}")
    hops = [s for s in result["waterfall"]["stages"] if s["hop_p50"] is not None]
    if hops:
        lines.append("tick to order p50, hop by hop: " + " -> ".join(
            f"{s['name']} {'+' if s['hop_p50'] >= 0 else ''}{fmt_ns(s['hop_p50'])}" for s in hops)
                     + f" = {fmt_ns(hops[-1]['p50'])}")
    return lines


def latency(run: str, out: str | None) -> int:
    from pipeline.profiling import analysis, figures
    from pipeline.profiling.sampler import RunNotFound, tick_to_order
    try:
        hist, measured = tick_to_order(run)
    except RunNotFound as exc:
        print(f"bot4 latency: {exc}", file=sys.stderr)
        return 1
    if not measured:
        print("bot4 latency: not measured: an unpaced replay (feed.replay_speed = 0) gives its events no wall time",
              file=sys.stderr)
        return 1
    out = out or f"latency-{run}.png"
    figures.tick_to_order(hist, out, f"tick to order, run {run!r} since its start")
    print(f"tick to order over {int(hist.sum()):,} orders and refusals: " + ", ".join(
        f"p{q * 100:g} {analysis.fmt_ns(analysis.quantile_ns(hist, q))}" for q in (0.5, 0.99, 0.999))
        + f"; histogram written to {out}")
    return 0
