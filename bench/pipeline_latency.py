"""Whole-pipeline benchmark: ``bot4 run`` at a fixed feed rate, then at max rate.

Prints tick-to-order p50/p99/p99.9 (market event received -> execution report, from the execute stage's
histogram), per-stage origin latency, and sustained events/s through feed -> validate -> feature with the
conservation check (every event forwarded or quarantined). Run: ``python -m bench.pipeline_latency``.

``--threading dedicated,shared`` runs each threading mode (topology.threading) in turn within every round, so
a load that drifts over the benchmark reaches both alike; ``--rounds`` repeats, and the summary gives each
mode's median per feed rate side by side.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics

from pipeline.config import Config
from pipeline.status_view import PROCESS_NAMES, _us
from pipeline.supervisor import Supervisor
from shm import control as cb


def run_once(rate_eps: float, duration_s: float, idle: str, threading: str = "auto") -> dict:
    config = Config().with_overrides(run={"duration_s": duration_s, "status_interval_s": 0.0,
                                          "name": f"bench{os.getpid()}"},
                                     feed={"rate_eps": rate_eps}, topology={"idle": idle, "threading": threading},
                                     strategy={"kind": "signal"})  # tick-to-order needs orders: the default sends none
    sup = Supervisor(config, out=io.StringIO())
    code = sup.run()
    # Exit 5 = a trip during the run (e.g. hard drawdown: at max rate the synthetic market makes 20 s of
    # wall time into half an hour of its own moves). Events keep flowing through a trip, so the figures
    # stand; the trip is reported.
    if code not in (0, 5):
        raise SystemExit(f"run failed with exit code {code}:\n{sup.out.getvalue()}")
    tripped = next((line for line in sup.out.getvalue().splitlines() if "trading was disabled" in line), "")
    c = sup.final_counters
    lost = (c["feed"]["out"] - c["validate"]["in"]) + (c["validate"]["in"] - c["validate"]["out"]
                                                       - c["validate"]["quarantined"]) \
        + (c["validate"]["out"] - c["feature"]["in"])
    tick = sup.final_histograms["execute"][1]
    return {"rate": rate_eps, "events": c["feed"]["out"], "seconds": sup.ran_s,
            "feature_eps": c["feature"]["out"] / sup.ran_s, "lost": lost,
            "tick": [cb.percentile_ns(tick, q) for q in (0.5, 0.99, 0.999)],
            "stages": {n: [cb.percentile_ns(sup.final_histograms[n][1], q) for q in (0.5, 0.99)]
                       for n in PROCESS_NAMES if n != "watchdog"},
            "blocked_ns": {n: c[n]["blocked_ns"] for n in c}, "tripped": tripped}


def report(label: str, r: dict) -> None:
    p50, p99, p999 = r["tick"]
    print(f"\n== {label}: {r['events']:,} events in {r['seconds']:.1f} s; "
          f"feed->validate->feature {r['feature_eps']:,.0f} ev/s, lost {r['lost']}")
    print(f"tick-to-order p50 {_us(p50)}  p99 {_us(p99)}  p99.9 {_us(p999)}")
    print("per stage, tick to output p50/p99: " + ", ".join(
        f"{n} {_us(a)}/{_us(b)}" for n, (a, b) in r["stages"].items()))
    if r["tripped"]:
        print(r["tripped"])
    blocked = {n: v for n, v in r["blocked_ns"].items() if v}
    if blocked:
        print("blocked on full rings: " + ", ".join(f"{n} {_us(v)}" for n, v in blocked.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--idle", default="auto")
    parser.add_argument("--threading", default="auto",
                        help="comma-separated topology.threading modes, interleaved per round (dedicated,shared)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    modes = args.threading.split(",")
    print(f"cores: {sorted(os.sched_getaffinity(0))}; idle={args.idle}; threading {', '.join(modes)}; "
          f"{args.rounds} round(s); {args.duration:.0f} s per run")
    results = {}  # (rate, mode) -> runs
    for round_no in range(args.rounds):
        for rate in (args.rate, 0.0):
            for mode in modes:
                r = run_once(rate, args.duration, args.idle, mode)
                results.setdefault((rate, mode), []).append(r)
                label = f"{rate:,.0f} ev/s" if rate else "max rate"
                report(f"round {round_no + 1}, threading={mode}, feed {label}", r)
    if len(modes) > 1 or args.rounds > 1:
        print("\n== medians over rounds: tick-to-order p50 / p99 / p99.9, feed->validate->feature ev/s")
        for rate in (args.rate, 0.0):
            label = f"{rate:,.0f} ev/s" if rate else "max rate"
            cells = []
            for mode in modes:
                runs = results[(rate, mode)]
                p50, p99, p999 = (statistics.median(r["tick"][i] for r in runs) for i in range(3))
                eps = statistics.median(r["feature_eps"] for r in runs)
                cells.append(f"{mode}: {_us(p50)} / {_us(p99)} / {_us(p999)}, {eps:,.0f} ev/s")
            print(f"feed {label:>12}  " + "  |  ".join(cells))


if __name__ == "__main__":
    main()
