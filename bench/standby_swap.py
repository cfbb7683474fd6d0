"""What a model swap costs a live run: standby swaps (``inference.swap = standby``: a second process loads the set and
takes the stage over at a batch boundary) against in-process swaps (``in_process``: the serving process loads between
batches), one live run each, in one invocation.

Each run (signal strategy, synthetic market, a 2-member ensemble) gets ``--swaps`` publications, alternating two
ensembles. Printed per mode: the time a publication took to be answered; for standby swaps, how long the stage had no
process serving at each handover (``/bot4.<run>.inference``'s last-handover word); and the inference slot's longest
batch wait around swaps against apart from them (a batch's oldest decision, from risk to inference: the run's own
queueing is in both).

    flock /tmp/bot4-bench.lock python -m bench.standby_swap [--swaps 10]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from pipeline import names, registry
from pipeline.hosting import standby
from pipeline.hosting.model_swap import PUBLISH
from pipeline.store import model_store
from shm import control as cb
from tests.onnx_members import registry_with_members, write_ensemble

ROOT = Path(__file__).resolve().parent.parent


def _wait_running(run: str, proc: subprocess.Popen, timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the run exited ({proc.returncode}) before it served")
        try:
            block = cb.ControlBlock.attach(names.control(run))
        except Exception:
            time.sleep(0.5)
            continue
        try:
            if int(block.globals[cb.G_RUN_STATE]) == cb.RUN_RUNNING:
                return
        finally:
            block.close()
        time.sleep(0.5)
    raise SystemExit("the run did not start")


def one_mode(mode: str, sets: list[Path], swaps: int) -> dict:
    run = f"bsw{mode[:2]}{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "run", "--name", run, "--quiet",
                             "--set", "strategy.kind=signal", "--set", f"inference.ensemble={sets[0]}",
                             "--set", f"inference.swap={mode}", "--set", "inference.member_timeout_us=0",
                             "--set", "watchdog.hard_drawdown_pct=99", "--set", "run.duration_s=0"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    answered, handovers = [], []
    try:
        _wait_running(run, proc)
        time.sleep(3)
        for i in range(swaps):
            started = time.monotonic()
            ok, _, text = model_store.request(run, PUBLISH, str(sets[(i + 1) % 2]), 180.0)
            if not ok:
                raise SystemExit(f"{mode}: publication {i + 1} refused: {text}")
            answered.append(time.monotonic() - started)
            if mode == "standby":
                shared = standby.InferenceShared.attach(run)
                handovers.append(int(shared.words[standby.LAST_HANDOVER_NS]))
                shared.close()
            time.sleep(1)
        block = cb.ControlBlock.attach(names.control(run))
        slot, counter = block.stages[registry.slot("inference")], registry.BY_NAME["inference"].counter
        waits = {k: int(slot[cb.S_CUSTOM + counter(k)]) for k in ("wait_max_ns", "swap_wait_max_ns",
                                                                  "load_step_max_ns", "handover_max_ns")}
        block.close()
    finally:
        proc.send_signal(2)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"answered": np.array(answered), "handovers": np.array(handovers, float), **waits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--swaps", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = registry_with_members(Path(tmp), 3)
        sets = [write_ensemble(Path(tmp), 1, [{"path": paths[0], "weight": 1.0}, {"path": paths[1], "weight": 1.0}]),
                write_ensemble(Path(tmp), 2, [{"path": paths[0], "weight": 1.0}, {"path": paths[2], "weight": 2.0}])]
        results = {mode: one_mode(mode, sets, args.swaps) for mode in ("standby", "in_process")}
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"{args.swaps} swaps per mode; load average {' '.join(load)}")
    for mode, r in results.items():
        a = r["answered"]
        print(f"{mode:>10}: answered in p50 {np.median(a):.2f} s (max {a.max():.2f} s); longest batch wait around "
              f"swaps {r['swap_wait_max_ns'] / 1e6:.2f} ms, apart {r['wait_max_ns'] / 1e6:.2f} ms; longest load step "
              f"in the serving process {r['load_step_max_ns'] / 1e6:.2f} ms")
        if len(r["handovers"]):
            h = r["handovers"] / 1e3
            print(f"{'':>10}  handover (no process serving): p50 {np.median(h):.0f} us, p99 "
                  f"{np.percentile(h, 99):.0f} us, max {h.max():.0f} us; over 1 ms: {(h > 1000).sum()} of {len(h)}")


if __name__ == "__main__":
    main()
