"""What the per-phase time accounting costs the duty cycle: ns per batch of the real ``duty_cycle.run`` for the
feed (a source: one extra clock read a batch) and validate (two), hosted in-process on local rings with the
types a stage process passes, in this tree and in another checkout (the code before the accounting), the two
alternated round by round in fresh processes; plus a clock read inside njit (bench._common's, CLOCK_MONOTONIC:
the duty cycle reads CLOCK_REALTIME, the same vDSO call).

Run (hold the bench lock; the other tree needs its own numba compile the first time)::

    flock /tmp/bot4-bench.lock python -m bench.phase_accounting --other /path/to/checkout-before [--rounds 7]

Each child prints one JSON line; the parent prints per-round figures, then medians and after/before ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
import numpy as np
from bench._common import clock_overhead_ns
from pipeline import graph
from pipeline.config import Config
from pipeline.hosting import duty_cycle, stage_host
from pipeline.plan import resolve
from shm import control as cb, idle as idle_strategies, ring
from shm.syscalls import new_timespec

BATCH, CALLS, CYCLES = {batch}, {calls}, {cycles}
config = Config().with_overrides(feed={{"rate_eps": 0.0, "max_events": 0, "seed": 3}}, rings={{"batch": BATCH}})
plan = resolve(config)
block = cb.ControlBlock.local()
timespec = new_timespec()
idle_params = idle_strategies.make_params(idle_strategies.BUSY_SPIN)
rings = graph.rings(config)


def host(name):
    spec = graph.stage(config, name)
    local = lambda r: ring.local_ring(rings[r].dtype if r else spec.out_dtype, 1 << 14)
    in_a, in_b = local(spec.in_a), local(spec.in_b)
    outs = tuple(local(r) for r in spec.outs)
    _, params, state = graph.kernel(name, plan, live=True)
    tap = stage_host.with_step_tap(spec, ring.local_ring(spec.out_dtype, 2))
    scratch = (np.zeros(BATCH, in_a[2].dtype), np.zeros(BATCH, in_b[2].dtype),
               np.zeros(graph.out_capacity(name, BATCH), spec.out_dtype))
    slot = block.stages[spec.index]
    args = lambda cycles, warm=False: (spec.index, in_a, in_b, outs, np.zeros(len(outs), np.int64), tap, False,
                                       *scratch, state, params, block.globals, slot, idle_params,
                                       idle_strategies.make_state(), BATCH, spec.in_a is not None and not warm,
                                       spec.in_b is not None and not warm, spec.always_step and not warm, cycles,
                                       timespec)
    duty_cycle.run(*args(1, warm=True))
    return spec, in_a, outs, slot, duty_cycle.compiled_entry(spec.index), args


feed = host("feed")
validate = host("validate")
sink = np.zeros(1 << 14, rings["feed.validate"].dtype)


def drain(r):
    return ring.read(r[0], r[1], r[2], sink, len(sink))

clock_overhead_ns(timespec, 10)
ns = {{"feed": 0, "validate": 0}}
batches = {{"feed": 0, "validate": 0}}
for call in range(CALLS):
    spec, _, outs, slot, entry, args = feed
    before = int(slot[cb.S_BATCHES])
    t = time.perf_counter_ns()
    entry(*args(CYCLES))
    ns["feed"] += time.perf_counter_ns() - t
    batches["feed"] += int(slot[cb.S_BATCHES]) - before
    n = drain(outs[0])
    spec, in_a, vouts, vslot, ventry, vargs = validate
    assert ring.try_write(in_a[0], in_a[1], in_a[2], sink, n) == n
    before = int(vslot[cb.S_BATCHES])
    t = time.perf_counter_ns()
    ventry(*vargs(-(-n // BATCH)))
    ns["validate"] += time.perf_counter_ns() - t
    batches["validate"] += int(vslot[cb.S_BATCHES]) - before
    for r in vouts:
        drain(r)
print(json.dumps({{"feed_ns_per_batch": ns["feed"] / batches["feed"],
                  "validate_ns_per_batch": ns["validate"] / batches["validate"],
                  "batches": batches, "clock_ns": clock_overhead_ns(timespec, 100_000),
                  "phases": bool(getattr(cb, "S_READ_NS", 0))}}))
"""


def child(tree: str, batch: int, calls: int, cycles: int) -> dict:
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run([sys.executable, "-c", CHILD.format(batch=batch, calls=calls, cycles=cycles)], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"the child in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", required=True, help="a checkout of the code before the accounting")
    parser.add_argument("--rounds", type=int, default=7, help="0: only compile both trees (outside the lock)")
    parser.add_argument("--batch", type=int, default=64, help="records per batch (rings.batch)")
    parser.add_argument("--calls", type=int, default=40, help="calls of the duty cycle per measurement")
    parser.add_argument("--cycles", type=int, default=200, help="feed cycles per call (one batch each)")
    args = parser.parse_args()
    trees = {"before": os.path.abspath(args.other), "after": HERE}
    print(f"load average {os.getloadavg()[0]:.2f}; batch {args.batch}; {args.calls} calls x {args.cycles} feed "
          f"batches per measurement; before = {trees['before']}, after = {trees['after']}")
    for label, tree in trees.items():  # compile (or load) both first: no compile inside a timed round
        child(tree, args.batch, 1, 2)
    if args.rounds == 0:
        print("compiled (or loaded) in both trees; --rounds 0 measures nothing")
        return
    results: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for label in order:
            res = child(trees[label], args.batch, args.calls, args.cycles)
            results[label].append(res)
            print(f"round {r + 1} {label:<6}: feed {res['feed_ns_per_batch']:8.0f} ns/batch, validate "
                  f"{res['validate_ns_per_batch']:8.0f} ns/batch, clock read {res['clock_ns']:.1f} ns "
                  f"(phase words: {res['phases']})", flush=True)
    print(f"\nmedians over {args.rounds} rounds (load average now {os.getloadavg()[0]:.2f}):")
    for stage in ("feed", "validate"):
        key = f"{stage}_ns_per_batch"
        before = statistics.median(x[key] for x in results["before"])
        after = statistics.median(x[key] for x in results["after"])
        print(f"{stage:<9} before {before:8.0f} ns/batch  after {after:8.0f} ns/batch  after - before "
              f"{after - before:+6.0f} ns ({after / before:.3f}x)")
    print(f"clock read inside njit: {statistics.median(x['clock_ns'] for x in results['after']):.1f} ns")


if __name__ == "__main__":
    main()
