"""Panic conditions: what the watchdog checks every poll, as plain logic over the control block.

Each condition has a kill reason code (``shm.control.KILL_*``), a threshold in ``WatchdogConfig`` and,
through the watchdog, a counter. ``evaluate`` returns every condition that holds now; the watchdog trips
on the first (the list is in priority order) and refuses to arm while any holds. No I/O here apart from
checking pids, so it is tested in-process against a local control block and a scripted clock.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from pipeline import kill_reasons, registry
from pipeline.config import WatchdogConfig
from pipeline.registry import STAGE_NAMES
from shm import control as cb
from shm import segment
from stages import risk, validate

ERROR_SAMPLE_FRACTION = 0.01  # the error window advances in steps of 1% of its length
VALIDATE, RISK, FEED = STAGE_NAMES.index("validate"), STAGE_NAMES.index("risk"), STAGE_NAMES.index("feed")
# Watched like the stages: a dead or hung gateway leaves execute's orders at the venue with no one to answer for them.
WATCHED = tuple(enumerate(STAGE_NAMES)) + ((registry.slot("gateway"), "gateway"),)


@dataclass(frozen=True)
class Condition:
    reason: int          # shm.control.KILL_*
    stage: int           # stage index, or -1
    detail: str          # for operators: what exactly, with figures

    def __str__(self) -> str:
        return self.detail


def read_clocks(max_gap_ns: int = 50_000, tries: int = 10) -> tuple[int, int]:
    """(wall, monotonic) as one reading: the wall read is bracketed by two monotonic reads, and taken again
    when something preempted us in between, so a preemption does not look like the wall clock stepping back."""
    for _ in range(tries):
        before = time.monotonic_ns()
        wall = time.time_ns()
        after = time.monotonic_ns()
        if after - before <= max_gap_ns:
            break
    return wall, (before + after) // 2


def process_condition(block: cb.ControlBlock, index: int, label: str, wall_ns: int,
                      stale_ns: int) -> Condition | None:
    """What is wrong with the process of slot ``index`` (``label`` names it in the text): it failed, it is
    dead, or it runs with a heartbeat older than ``stale_ns`` (hung or stopped); None when nothing is.
    The watchdog judges the stages by it, the supervisor the watchdog, the service manager's watchdog all."""
    slot = block.stages[index]
    state = int(slot[cb.S_STATE])
    if state == cb.FAILED:
        return Condition(kill_reasons.KILL_STAGE_FAILED, index, f"{label} failed")
    if not segment.pid_alive(int(slot[cb.S_PID])):
        return Condition(kill_reasons.KILL_STAGE_DIED, index, f"{label} (pid {int(slot[cb.S_PID])}) is dead")
    age = wall_ns - int(slot[cb.S_HEARTBEAT_NS])
    if state == cb.RUNNING and age > stale_ns:
        return Condition(kill_reasons.KILL_HEARTBEAT_STALE, index,
                         f"{label} heartbeat {age / 1e6:.0f} ms old (limit {stale_ns / 1e6:.0f})")
    return None


class PanicMonitor:
    """Stateful across polls (feed progress, error-rate window, last wall clock)."""

    def __init__(self, config: WatchdogConfig, layout: int = cb.LAYOUT):
        self.config = config
        self.layout = layout
        self.last_forwarded = -1
        self.last_progress_mono = 0
        # (mono_ns, received, quarantined) samples of validate's counters, oldest first, spanning at most
        # error_window_s (plus one sample older than it as the base), one every ERROR_SAMPLE_FRACTION of it.
        self.error_samples: collections.deque = collections.deque()
        self.last_wall = 0
        self.last_offset = None

    def evaluate(self, block: cb.ControlBlock, wall_ns: int, mono_ns: int) -> list[Condition]:
        out: list[Condition] = []
        g = block.globals
        corrupt = self._corruption(block)
        if corrupt:
            return [Condition(kill_reasons.KILL_CONTROL_CORRUPT, -1, corrupt)]
        # The wall clock against the monotonic one: a step back shows as a shrinking offset.
        offset = wall_ns - mono_ns
        tolerance = int(self.config.clock_backwards_ms * 1e6)
        if self.last_offset is not None and offset < self.last_offset - tolerance:
            out.append(Condition(kill_reasons.KILL_CLOCK_BACKWARDS, -1,
                                 f"wall clock stepped back {(self.last_offset - offset) / 1e6:.1f} ms"))
        self.last_offset = offset
        running = int(g[cb.G_RUN_STATE]) == cb.RUN_RUNNING
        stale_ns = int(self.config.heartbeat_stale_ms * 1e6)
        blocked_ns = int(self.config.ring_blocked_ms * 1e6)
        for index, name in WATCHED:
            slot = block.stages[index]
            state = int(slot[cb.S_STATE])
            if state in (0, cb.STOPPED):
                if running and state == 0 and name in STAGE_NAMES:  # the gateway runs only with live venues
                    out.append(Condition(kill_reasons.KILL_STAGE_DIED, index, f"stage {name} is not running"))
                continue
            condition = process_condition(block, index, f"stage {name}", wall_ns, stale_ns)
            if condition is not None:
                out.append(condition)
                if condition.reason != kill_reasons.KILL_HEARTBEAT_STALE:
                    continue
            since = int(slot[cb.S_BLOCKED_SINCE_NS])
            if since and wall_ns - since > blocked_ns:
                out.append(Condition(kill_reasons.KILL_RING_BLOCKED, index,
                                     f"stage {name} blocked on a full ring for {(wall_ns - since) / 1e6:.0f} ms"))
        if running:
            out.extend(self._feed_and_errors(block, mono_ns))
        drawdown_bps = int(block.stages[RISK][cb.S_CUSTOM + risk.ST_DRAWDOWN_BPS])
        if drawdown_bps >= self.config.hard_drawdown_pct * 100:
            out.append(Condition(kill_reasons.KILL_HARD_DRAWDOWN, RISK, f"drawdown {drawdown_bps / 100:.2f}% from peak equity "
                                 f"(limit {self.config.hard_drawdown_pct:g}%)"))
        return out

    def _corruption(self, block: cb.ControlBlock) -> str:
        g = block.globals
        if block.segment is not None:
            h = block.segment.header
            if int(h[segment.H_MAGIC]) != segment.MAGIC or int(h[segment.H_VERSION]) != segment.LAYOUT_VERSION \
                    or int(h[segment.H_LAYOUT_HASH]) != self.layout:
                return "control block header (magic/version/layout) changed"
        if int(g[cb.G_TRADING_ENABLED]) not in (0, 1):
            return f"trading_enabled={int(g[cb.G_TRADING_ENABLED])} is neither 0 nor 1"
        if not 0 <= int(g[cb.G_RUN_STATE]) <= cb.RUN_STOPPED:
            return f"run_state={int(g[cb.G_RUN_STATE])} is out of range"
        return ""

    def _feed_and_errors(self, block: cb.ControlBlock, mono_ns: int) -> list[Condition]:
        out = []
        stats = block.stages[VALIDATE][cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
        forwarded = int(stats[validate.ST_FORWARDED])
        if forwarded != self.last_forwarded or self.last_progress_mono == 0:
            self.last_forwarded = forwarded
            self.last_progress_mono = mono_ns
        quiet_ms = (mono_ns - self.last_progress_mono) / 1e6
        if self.config.feed_stale_ms and quiet_ms > self.config.feed_stale_ms:
            out.append(Condition(kill_reasons.KILL_FEED_STALE, FEED, f"no valid market event for {quiet_ms:.0f} ms "
                                 f"(limit {self.config.feed_stale_ms:g})"))
        received = int(block.stages[VALIDATE][cb.S_IN])
        quarantined = int(stats[validate.ST_QUARANTINED])
        condition = self._error_rate(mono_ns, received, quarantined)
        if condition is not None:
            out.append(condition)
        return out

    def _error_rate(self, mono_ns: int, received: int, quarantined: int) -> Condition | None:
        """Quarantined / received over the sliding window, judged once it holds ``min_error_events``: a count,
        not a rate, so a 250 events/s stream trips as surely as a 10 k/s one."""
        samples = self.error_samples
        window_ns = int(self.config.error_window_s * 1e9)
        if samples and received < samples[-1][1]:
            samples.clear()  # validate restarted: its counters began again
        if not samples or mono_ns - samples[-1][0] >= window_ns * ERROR_SAMPLE_FRACTION:
            samples.append((mono_ns, received, quarantined))
        while len(samples) > 1 and samples[1][0] <= mono_ns - window_ns:
            samples.popleft()
        base_mono, base_in, base_quarantined = samples[0]
        got, bad = received - base_in, quarantined - base_quarantined
        if got < self.config.min_error_events or bad <= self.config.max_error_fraction * got:
            return None
        return Condition(kill_reasons.KILL_ERROR_RATE, VALIDATE,
                         f"{bad / got:.1%} of market events quarantined over the last {(mono_ns - base_mono) / 1e9:.1f} s "
                         f"({bad:,} of {got:,}; limit {self.config.max_error_fraction:.1%} "
                         f"over at least {self.config.min_error_events:,} events)")
