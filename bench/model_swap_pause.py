"""What a hot swap costs the batches around it: lateness of batches due every 500 us while model sets are published,
loaded and swapped, with the load in steps between batches (``pipeline.hosting.model_swap.Swapper``, as the
inference host runs it: short waits inside njit while a load is in flight, a step in each idle spell) against
the whole load at once between two batches, in one invocation.

The loop mimics the inference host: it waits for the batch's due time inside an njit spin (holding the GIL, as
``duty_cycle.wait_for_input`` does), polls the swapper at every batch boundary, runs the model set (a 2-member
ensemble, 64 decisions) and records how late the batch started. Every 200th batch a new version is published
(alternately two ensembles of the shipped logistic and a built logistic); a batch counts as "around a swap" while
a load is in flight and for the batch after the swap. The process is pinned to one CPU.

    flock /tmp/bot4-bench.lock python -m bench.model_swap_pause [--batches 6000]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from numba import njit

from bench._common import mono_ns
from pipeline.hosting import model_swap, models
from pipeline.hosting.stage_host import LOAD_STARVED_NS, LOADING_WAIT_NS
from stages import inference
from stages.records import N_FEATURES, RISK_DECISION
from tests.onnx_members import coefficients, logistic_graph, write_ensemble, write_member

PERIOD_NS = 500_000
N = 64


@njit(cache=True)
def spin_until(deadline_ns, ts):
    """Busy-wait inside njit (the GIL held, as the host's wait is) until ``deadline_ns`` (perf_counter_ns's clock)."""
    now = mono_ns(ts)
    while now < deadline_ns:
        now = mono_ns(ts)
    return now


def _registry(root: Path) -> list[Path]:
    shutil.copy(inference.DEFAULT_MODEL, root / "directional_v1.onnx")
    shutil.copy(inference.metadata_path_for(inference.DEFAULT_MODEL), root / "directional_v1.json")
    write_member(root, "lin", "v1", logistic_graph(coefficients(1), 0.05))
    return [write_ensemble(root, v, [{"path": "directional_v1.onnx", "weight": 1.0},
                                     {"path": "lin/v1", "weight": float(v)}]) for v in (1, 2)]


def run(mode: str, versions: list[Path], batches: int) -> tuple[np.ndarray, np.ndarray, int]:
    def make(path):
        made = models.Models((yield from models.load_steps(path)), N)
        yield from made.warm_steps()
        return made

    table = model_swap.table(f"benchswap{os.getpid()}{mode}", create=True)
    try:
        swapper = model_swap.Swapper(table, make, models.run_steps(make(versions[0])))
        x = np.random.default_rng(0).normal(0, 3, (N, N_FEATURES)).astype(np.float32)
        d = np.zeros(N, RISK_DECISION)
        late, around = np.zeros(batches, np.int64), np.zeros(batches, bool)
        due = time.perf_counter_ns() + PERIOD_NS
        just_swapped = False
        ts = np.zeros(2, np.int64)
        stepped = 0
        for k in range(batches):
            if k % 200 == 100:
                path = str(versions[(k // 200) % 2])
                if mode == "steps":
                    table.publish(model_swap.REQUEST, model_swap.message(model_swap.PUBLISH, path))
                else:  # at once: the whole load between two batches
                    swapper.previous, swapper.current = swapper.current, models.run_steps(make(Path(path)))
                    just_swapped = True
            if not swapper.loading or time.monotonic_ns() - stepped > LOAD_STARVED_NS:  # as the host
                stepped = time.monotonic_ns()
                just_swapped |= swapper.poll()
            loading = swapper.loading
            now = time.perf_counter_ns()
            while now < due:  # as the host: short waits while loading, a step at each idle moment
                now = spin_until(min(due, now + LOADING_WAIT_NS) if swapper.loading else due, ts)
                if swapper.loading and now < due:  # an idle spell: a step
                    stepped = time.monotonic_ns()
                    just_swapped |= swapper.poll()
                    now = time.perf_counter_ns()
            late[k] = now - due
            around[k] = loading or just_swapped
            just_swapped = False
            swapper.current.predict(d, x, N)
            due += PERIOD_NS
            if time.perf_counter_ns() > due + 50 * PERIOD_NS:  # fell far behind (preempted): restart the grid
                due = time.perf_counter_ns() + PERIOD_NS
        return late, around, swapper.longest_step_ns
    finally:
        table.close()
        table.segment.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=6000)
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        versions = _registry(Path(tmp))
        results = {}
        for mode in ("steps", "at once"):
            parts = [run(mode, versions, args.batches) for _ in range(2)]
            results[mode] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                             max(p[2] for p in parts))
    print(f"load average after: {os.getloadavg()}")
    print(f"{'load':<9}{'batches':<9}{'n':>7}{'p50 us':>9}{'p99 us':>9}{'max us':>9}{'> 1 ms':>8}")
    for mode, (late, around, step) in results.items():
        for label, sel in (("around", around), ("apart", ~around)):
            t = late[sel] / 1e3
            print(f"{mode:<9}{label:<9}{len(t):>7}{np.percentile(t, 50):>9.1f}{np.percentile(t, 99):>9.1f}"
                  f"{t.max():>9.1f}{int((t > 1000).sum()):>8}")
    print(f"longest load step (steps): {results['steps'][2] / 1e3:.0f} us")


if __name__ == "__main__":
    main()
