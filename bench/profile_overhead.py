"""What ``bot4 profile`` attached to a run costs its tick-to-order latency: the same live run (``bot4 run``, the
signal strategy, a paced feed) measured over the same window with nothing attached, with ``bot4 profile``
sampling it, and with ``bot4 profile --py-spy``; the three alternated (rotated) round by round.

A window is the execute stage's tick-to-order histogram (from the control block) between two reads, taken
while the profile samples (it starts first: its imports are not in the window; its report is drawn after).
Run it holding the bench lock::

    flock /tmp/bot4-bench.lock python -m bench.profile_overhead [--rounds 5] [--window 8] [--rate 10000]

Prints each round, then per mode the medians over rounds of the window's p50 / p99 / p99.9 and the ratio to
the rounds with nothing attached.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from pipeline.profiling.analysis import fmt_ns, quantile_ns
from pipeline.profiling.sampler import tick_to_order

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("none", "profile", "profile+py-spy")
QUANTILES = (0.5, 0.99, 0.999)


def _start_run(name: str, rate: float, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "run", "--name", name, "--quiet", "--set",
                             "strategy.kind=signal", "--rate", str(rate), "--duration", str(seconds)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("bot4: running"):
            return proc
    proc.kill()
    raise SystemExit("the run did not start:\n" + "".join(seen))


def trial(mode: str, rate: float, warm_s: float, window_s: float, out_dir: str) -> dict:
    name = f"benchprof{os.getpid()}"
    run = _start_run(name, rate, warm_s + window_s + 30)
    profiler = None
    try:
        time.sleep(warm_s)
        report = os.path.join(out_dir, f"{mode}-{time.time_ns()}")
        if mode != "none":
            args = [sys.executable, "-m", "tools.cli", "profile", "--name", name, "--seconds", str(window_s + 3),
                    "--out", report]
            profiler = subprocess.Popen(args + (["--py-spy"] if mode.endswith("py-spy") else []), cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)  # the profiler's imports, before the window
        first = tick_to_order(name)[0]
        time.sleep(window_s)
        window = tick_to_order(name)[0] - first
        if profiler is not None:
            _, err = profiler.communicate(timeout=120)
            if profiler.returncode != 0:
                raise SystemExit(f"bot4 profile failed: {err}")
    finally:
        if profiler is not None and profiler.poll() is None:
            profiler.kill()
            profiler.wait()
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
        try:
            run.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            run.kill()
            run.communicate()
    cost = {"sampler": 0.0, "py-spy": 0.0}
    if mode != "none":
        with open(os.path.join(report, "profile.json")) as fh:
            profile = json.load(fh)
        cost = {"sampler": profile["sampler_cpu_ns"] / 1e9 / profile["seconds"],
                "py-spy": profile["pyspy"].get("cpu_ns", 0) / 1e9 / profile["seconds"]}
    return {"count": int(window.sum()), "q": [quantile_ns(window, q) for q in QUANTILES], "cpu": cost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=float, default=8.0, help="seconds measured per trial")
    parser.add_argument("--warm", type=float, default=3.0, help="seconds after start before the profile attaches")
    parser.add_argument("--rate", type=float, default=10_000.0, help="feed events per second")
    args = parser.parse_args()
    print(f"cores {sorted(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds "
          f"of {', '.join(MODES)} (rotated); {args.window:g} s windows at {args.rate:,.0f} events/s")
    results: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="bot4-profile-overhead-") as out_dir:
        for r in range(args.rounds):
            order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
            for mode in order:
                res = trial(mode, args.rate, args.warm, args.window, out_dir)
                results[mode].append(res)
                print(f"round {r + 1} {mode:<15} {res['count']:>7,} orders  " + "  ".join(
                    f"p{q * 100:g} {fmt_ns(v)}" for q, v in zip(QUANTILES, res["q"]))
                    + f"  CPU: sampler {100 * res['cpu']['sampler']:.1f}%, py-spy {100 * res['cpu']['py-spy']:.1f}% "
                      "of a core", flush=True)
    base = [statistics.median(x["q"][i] for x in results["none"]) for i in range(len(QUANTILES))]
    print(f"\nmedians over {args.rounds} rounds (load average now {os.getloadavg()[0]:.2f}):")
    for mode in MODES:
        med = [statistics.median(x["q"][i] for x in results[mode]) for i in range(len(QUANTILES))]
        cpu = {k: statistics.median(x["cpu"][k] for x in results[mode]) for k in ("sampler", "py-spy")}
        print(f"{mode:<15} " + "  ".join(f"p{q * 100:g} {fmt_ns(v)} ({v / b:.2f}x)"
                                          for q, v, b in zip(QUANTILES, med, base))
              + f"  CPU: sampler {100 * cpu['sampler']:.1f}%, py-spy {100 * cpu['py-spy']:.1f}% of a core")


if __name__ == "__main__":
    main()
