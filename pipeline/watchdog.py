"""The watchdog process: polls stage liveness and drops ``trading_enabled`` on the first sign of trouble.

This minimal version checks heartbeats (a running stage silent past ``heartbeat_stale_ms``) and process
death (a stage's pid gone while it was not stopped). The hardware kill switch and panic conditions come
with the safety layer. Started like a stage (JSON launch spec on stdin); stops when its slot says so.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np

from pipeline import graph, names
from pipeline.config import STAGE_NAMES, from_dict
from pipeline.topology import Placement, die_with_parent, pin_current_process
from shm import control as cb

ST_CHECKS, ST_TRIPS = range(2)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (dead, not yet reaped by the supervisor) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def check_once(block: cb.ControlBlock, stale_ns: int, now_ns: int) -> tuple[int, int] | None:
    """The first (reason, stage index) that must disable trading, or None."""
    for index in range(len(STAGE_NAMES)):
        slot = block.stages[index]
        state = int(slot[cb.S_STATE])
        if state in (0, cb.STOPPED):
            continue
        if state == cb.FAILED:
            return cb.KILL_STAGE_FAILED, index
        if not pid_alive(int(slot[cb.S_PID])):
            return cb.KILL_STAGE_DIED, index
        if state == cb.RUNNING and now_ns - int(slot[cb.S_HEARTBEAT_NS]) > stale_ns:
            return cb.KILL_HEARTBEAT_STALE, index
    return None


def main() -> int:
    launch = json.load(sys.stdin)
    die_with_parent(launch["supervisor_pid"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    placement = Placement(**launch["placements"]["watchdog"])
    pin_current_process(placement.core)
    config = from_dict(launch["config"])
    block = cb.ControlBlock.attach(names.control(config.run.name))
    slot = block.stages[graph.WATCHDOG_INDEX]
    stats = slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
    slot[cb.S_PID] = os.getpid()
    slot[cb.S_CORE] = placement.core
    stale_ns = int(config.watchdog.heartbeat_stale_ms * 1e6)
    period_s = config.watchdog.period_ms / 1e3
    cb.disable_trading(np.zeros(cb.GLOBAL_WORDS, np.int64), 0, 0, 0)  # compile before ready
    slot[cb.S_STATE] = cb.READY
    try:
        while not slot[cb.S_STOP]:
            now = time.time_ns()
            slot[cb.S_HEARTBEAT_NS] = now
            if int(block.globals[cb.G_RUN_STATE]) == cb.RUN_RUNNING:
                slot[cb.S_STATE] = cb.RUNNING
                trouble = check_once(block, stale_ns, now)
                stats[ST_CHECKS] += 1
                if trouble is not None and block.globals[cb.G_TRADING_ENABLED]:
                    reason, stage = trouble
                    cb.disable_trading(block.globals, reason, stage, now)
                    stats[ST_TRIPS] += 1
                    print(f"watchdog: trading disabled: reason={cb.KILL_REASON_NAMES[reason]} "
                          f"stage={STAGE_NAMES[stage]}", file=sys.stderr, flush=True)
            time.sleep(period_s)
        slot[cb.S_STATE] = cb.STOPPED
        return 0
    finally:
        del slot, stats
        block.close()


if __name__ == "__main__":
    sys.exit(main())
