"""First start on a cold kernel cache: seconds from ``bot4 run`` (or ``bot4 warmup``) to its kernels compiled.

Each case runs in a fresh process with XDG_CACHE_HOME pointing at an empty temporary directory (NUMBA_CACHE_DIR
unset), so every kernel compiles. Cases, interleaved round by round so a change of machine load hits them alike:

- ``before``: ``bot4 run`` of another checkout (``--before DIR``, e.g. the main branch before the warm-up
  progress), until its supervisor prints "kernels compiled/loaded";
- ``run``: ``bot4 run`` of this checkout, the same line;
- ``warmup-jN``: ``bot4 warmup --jobs N`` of this checkout, until it exits (it also loads every kernel once
  more to check the cache).

Run with the bench lock held: ``flock /tmp/bot4-bench.lock python -m bench.first_start --before /work/main
[--rounds 3] [--jobs 1,2] [--config FILE]``. Prints each time, the medians, and the load average before and after.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "kernels compiled/loaded"


def run_case(checkout: str, args: list[str], until_mark: bool, timeout_s: float = 1800.0) -> float:
    """Seconds from start to the supervisor's compiled line (``until_mark``) or to exit; a cold cache each time."""
    cache = tempfile.mkdtemp(prefix="bot4-first-start-")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = cache
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", *args], cwd=checkout, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        seen = None
        for line in proc.stdout:
            if until_mark and seen is None and MARK in line:
                seen = time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{args} took over {timeout_s:.0f} s")
        code = proc.wait(timeout=120)
        elapsed = seen if until_mark else time.monotonic() - started
        if code != 0 or elapsed is None:
            raise RuntimeError(f"{' '.join(args)} in {checkout} exited {code} (mark seen: {seen is not None})")
        return elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(cache, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", help="the checkout to compare with (its bot4 run); omitted: no before case")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", default="1,2", help="bot4 warmup --jobs values, comma-separated")
    ap.add_argument("--config", help="a config file for every case (e.g. a record-mode one: fewer kernels)")
    args = ap.parse_args(argv)
    config = ["--config", os.path.abspath(args.config)] if args.config else []
    run = ["run", "--duration", "1", "--quiet", "--name", "start-bench", *config]
    cases = ([("before", args.before, run, True)] if args.before else []) + [("run", HERE, run, True)]
    cases += [(f"warmup-j{j}", HERE, ["warmup", "--jobs", j, *config], False) for j in args.jobs.split(",")]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    times: dict[str, list[float]] = {name: [] for name, *_ in cases}
    for r in range(args.rounds):
        for name, checkout, case_args, until_mark in cases:
            times[name].append(run_case(checkout, case_args, until_mark))
            print(f"round {r + 1} {name:<10} {times[name][-1]:7.1f} s  (load {os.getloadavg()[0]:.2f})", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    base = statistics.median(times["run"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<10} median {median:7.1f} s  ({median / base:.2f} x run)  all: "
              + ", ".join(f"{v:.1f}" for v in values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
