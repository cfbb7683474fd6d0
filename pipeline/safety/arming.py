"""Asking the watchdog to arm: the one way trading goes on (the supervisor at start, ``bot4 killswitch arm``).

The request and its answer are words of the control block; only the watchdog grants, after its checks.
"""
from __future__ import annotations

import time

from shm import control as cb


def request_arm(block: cb.ControlBlock, timeout_s: float = 3.0) -> tuple[bool, str]:
    """Ask the watchdog to arm; returns (armed, what blocked it)."""
    g = block.globals
    request = int(max(g[cb.G_ARM_REQUEST], g[cb.G_ARM_RESULT_ID])) + 1
    g[cb.G_ARM_REQUEST] = request
    deadline = time.monotonic() + timeout_s
    while int(g[cb.G_ARM_RESULT_ID]) != request:
        if time.monotonic() > deadline:
            return False, "the watchdog did not answer (is it running?)"
        time.sleep(0.002)
    if int(g[cb.G_ARM_RESULT_BLOCKERS]) == 0:
        return bool(g[cb.G_TRADING_ENABLED]), ""
    return False, cb.conditions_text(g)
