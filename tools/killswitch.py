"""``bot4 killswitch status | trip --reason TEXT | arm``: the operator's side of layer 0.

Everything goes through the control block in shared memory, so it works while the supervisor is busy or
hung. Tripping is immediate (any process may drop the flag). Arming is a request that only the watchdog
grants, after finding the hardware switch armed, every stage healthy and no panic condition; a refusal
names each blocking condition.
"""
from __future__ import annotations

import datetime
import sys
import time

from pipeline import kill_reasons, names
from pipeline.registry import NAMES as PROCESSES
from pipeline.safety.arming import request_arm
from shm import control as cb
from shm.segment import SegmentError

SWITCH_STATE_NAMES = {0: "no switch"}


def trip(block: cb.ControlBlock, reason_text: str) -> bool:
    """Drop trading now with KILL_OPERATOR; False if it was already disabled (the first reason stays)."""
    return cb.trip(block.globals, kill_reasons.KILL_OPERATOR, -1, reason_text, time.time_ns(), time.monotonic_ns())


def _when(ns: int) -> str:
    if not ns:
        return "-"
    at = datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc)
    return f"{at:%Y-%m-%d %H:%M:%S.%f} UTC ({(time.time_ns() - ns) / 1e9:.1f} s ago)"


def _ago_monotonic(ns: int) -> str:
    """A CLOCK_MONOTONIC stamp (system-wide, so another process's) as an age; it has no date."""
    return f"{(time.monotonic_ns() - ns) / 1e9:.1f} s ago" if ns else "-"


def describe(block: cb.ControlBlock) -> list[str]:
    from pipeline.safety.switch import SwitchState
    from pipeline.status_view import PROCESS_NAMES, state_label, supervisor_alive
    g = block.globals
    lines = []
    if not supervisor_alive(block):
        dead = [n for i, n in enumerate(PROCESS_NAMES) if state_label(block.stages[i]) == "dead"]
        lines.append(f"run: DEAD: the supervisor (pid {int(g[cb.G_SUPERVISOR_PID])}) is gone"
                     + (f"; dead processes: {', '.join(dead)}" if dead else "")
                     + ("; the flag below reads 1, but nothing is trading" if g[cb.G_TRADING_ENABLED] else "")
                     + "; the next start under this name reclaims its memory")
    if g[cb.G_TRADING_ENABLED]:
        lines.append(f"trading: ENABLED since {_when(int(g[cb.G_ARMED_NS]))}")
    else:
        reason = kill_reasons.KILL_REASON_NAMES.get(int(g[cb.G_KILL_REASON]), "?")
        stage = int(g[cb.G_KILL_STAGE])
        where = f" ({PROCESSES[stage]})" if reason in ("stage died", "heartbeat stale", "stage failed",
                                                      "ring blocked") and 0 <= stage < len(PROCESSES) else ""
        lines.append(f"trading: DISABLED, reason: {reason}{where}, since {_when(int(g[cb.G_KILL_TIME_NS]))}")
        text = cb.kill_text(g)
        if text:
            lines.append(f"  detail: {text}")
    state = int(g[cb.G_SWITCH_STATE])
    switch = "no hardware switch configured" if state == 0 else SwitchState(state - 1).name.lower()
    lines.append(f"switch: {switch}; frames ok {int(g[cb.G_SWITCH_FRAMES_OK])}, bad "
                 f"{int(g[cb.G_SWITCH_FRAMES_BAD])}, disconnects {int(g[cb.G_SWITCH_DISCONNECTS])}, "
                 f"last frame {_ago_monotonic(int(g[cb.G_SWITCH_LAST_FRAME_NS]))}")
    holding = cb.conditions_text(g)
    lines.append(f"conditions holding now: {holding or 'none'}")
    lines.append(f"trips this run: {int(g[cb.G_TRIPS])}, stage restarts: {int(g[cb.G_RESTARTS])}")
    return lines


def main(command: str, run: str, reason: str = "") -> int:
    try:
        block = cb.ControlBlock.attach(names.control(run))
    except SegmentError as exc:
        from pipeline.safety import postmortem
        account = postmortem.read(run) if command == "status" else None
        if account:
            print("\n".join(postmortem.describe(account)))
        else:
            print(f"bot4 killswitch: {exc}", file=sys.stderr)
        return 1
    try:
        if command == "status":
            print("\n".join(describe(block)))
            from pipeline.status_view import supervisor_alive
            return 0 if supervisor_alive(block) else 1
        if command == "trip":
            if trip(block, reason or "operator"):
                print(f"tripped: trading disabled ({reason or 'operator'})")
            else:
                print("trading was already disabled; the first reason stays: "
                      + kill_reasons.KILL_REASON_NAMES.get(int(block.globals[cb.G_KILL_REASON]), "?"))
            return 0
        if command == "arm":
            armed, blockers = request_arm(block)
            if armed:
                print("armed: trading enabled")
                return 0
            print(f"arm refused: {blockers or 'unknown'}")
            return 3
        raise ValueError(command)
    finally:
        block.close()
