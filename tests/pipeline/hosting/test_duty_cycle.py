"""The njit duty cycle, run in-process (invoker mode) on local rings with cycle budgets.

The stage is validate, hosted with the argument types its stage process passes, so the machine code is the
one the warm-up compiles (numba's disk cache keys on them): a batch in, its valid events out to both of
validate's outputs, its quarantined ones to the journal tap.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from pipeline.hosting import duty_cycle
from shm import control as cb
from shm import idle as idle_strategies
from shm import ring
from shm.syscalls import new_timespec
from stages import records, validate
from tests.conftest import kernel_params
from tests.stages.test_stages import _with, book

VALIDATE = duty_cycle.VALIDATE_INDEX
EVENT = records.MARKET_EVENT


def events(first_seq: int, n: int, bad: tuple[int, ...] = ()) -> np.ndarray:
    """``n`` books of one instrument with rising sequences; those at the positions ``bad`` carry a NaN."""
    out = np.array([book(seq=first_seq + i) for i in range(n)], dtype=EVENT)
    for i in bad:
        out[i] = _with(out[i], **{"ask_px.0": math.nan})
    return out


@dataclass
class Host:
    """What validate's stage process hands the duty cycle, in local arrays."""
    out_capacities: tuple[int, int] = (16, 16)
    tap_capacity: int = 16
    batch: int = 8
    has_tap: bool = True
    idle: np.ndarray = field(default_factory=lambda: idle_strategies.make_params(idle_strategies.YIELDING))

    def __post_init__(self):
        self.block = cb.ControlBlock.local()
        self.slot = self.block.stages[VALIDATE]
        self.in_a = ring.local_ring(EVENT, 32)
        self.in_b = ring.local_ring(EVENT, 2)
        self.outs = tuple(ring.local_ring(EVENT, capacity) for capacity in self.out_capacities)
        self.tap = ring.local_ring(EVENT, self.tap_capacity)
        self.idle_state = idle_strategies.make_state()
        self.state = validate.make_state(self.batch)
        self.params = kernel_params("validate", n_venues=1, n_symbols=1, ticks=(), lots=())
        self.scratch_a, self.scratch_b = np.zeros(self.batch, EVENT), np.zeros(self.batch, EVENT)
        self.scratch_out = np.zeros(self.batch, EVENT)
        self.timespec = new_timespec()

    def feed(self, batch: np.ndarray) -> None:
        assert ring.try_write(*self.in_a, batch, len(batch)) == len(batch)

    def run(self, max_cycles: int) -> int:
        return duty_cycle.run(VALIDATE, self.in_a, self.in_b, self.outs, np.zeros(2, np.int64), self.tap, self.has_tap,
                              self.scratch_a, self.scratch_b, self.scratch_out, self.state, self.params,
                              self.block.globals, self.slot, self.idle, self.idle_state, self.batch, True, False, False,
                              max_cycles, self.timespec)

    def stats(self, index: int) -> int:
        return int(self.slot[cb.S_CUSTOM + index])


def drain(r) -> np.ndarray:
    out = np.zeros(r[2].shape[0], r[2].dtype)
    return out[:ring.read(*r, out, len(out))]


@pytest.fixture(scope="module", autouse=True)
def compiled():
    Host().run(1)  # the first run pays numba's compile (or cache load): once for the module
    drain(ring.local_ring(EVENT, 2))  # and the reader, before any child is forked


def test_a_batch_flows_in_through_the_kernel_and_out_to_every_output_and_the_counters_move():
    host = Host()
    host.feed(events(1, 4, bad=(2,)))
    assert host.run(max_cycles=5) == duty_cycle.EXIT_BUDGET
    for out in host.outs:
        assert list(drain(out)["venue_seq"]) == [1, 2, 4]
    quarantined = drain(host.tap)
    assert list(quarantined["venue_seq"]) == [3] and quarantined[0]["reason"] == validate.R_NAN
    slot = host.slot
    assert (slot[cb.S_IN], slot[cb.S_OUT], slot[cb.S_BATCHES], slot[cb.S_IN_B]) == (4, 3, 1, 0)
    assert host.stats(validate.ST_FORWARDED) == 3 and host.stats(validate.ST_QUARANTINED) == 1
    assert (slot[cb.S_TAP_WRITTEN], slot[cb.S_TAP_DROPPED]) == (1, 0)
    service = slot[cb.S_SERVICE_HIST:cb.S_SERVICE_HIST + cb.HIST_BUCKETS]
    origin = slot[cb.S_ORIGIN_HIST:cb.S_ORIGIN_HIST + cb.HIST_BUCKETS]
    assert service.sum() == 1 and origin.sum() == 3  # one batch served; each event out has an origin time
    assert slot[cb.S_LAST_ORIGIN_NS] > 0 and slot[cb.S_HEARTBEAT_NS] > 0 and slot[cb.S_QUEUE_DEPTH] == 0


def test_a_stage_without_a_tap_writes_none():
    host = Host(has_tap=False)
    host.feed(events(1, 3, bad=(0, 1)))
    assert host.run(max_cycles=2) == duty_cycle.EXIT_BUDGET
    assert len(drain(host.tap)) == 0 and host.slot[cb.S_TAP_WRITTEN] == host.slot[cb.S_TAP_DROPPED] == 0
    assert host.stats(validate.ST_QUARANTINED) == 2


def test_stop_drains_every_waiting_batch_before_it_returns_stopped():
    host = Host(batch=4)
    host.feed(events(1, 10))
    host.slot[cb.S_STOP] = 1
    assert host.run(max_cycles=50) == duty_cycle.EXIT_STOPPED
    assert host.slot[cb.S_BATCHES] == 3 and host.slot[cb.S_IN] == 10  # 4 + 4 + 2: none left behind
    assert ring.readable(host.in_a[0], host.in_a[1]) == 0
    assert [len(drain(out)) for out in host.outs] == [10, 10]


def test_abandon_while_blocked_on_a_full_output_returns_abandoned_and_still_taps_the_batch():
    host = Host(out_capacities=(2, 16))
    host.feed(events(1, 5, bad=(4,)))
    host.slot[cb.S_STOP] = 2
    assert host.run(max_cycles=50) == duty_cycle.EXIT_ABANDONED
    producer = host.outs[0][0]
    assert len(drain(host.outs[0])) == 2 and producer[ring.P_FULL_COUNT] == 1 and producer[ring.P_DISCARDED] == 0
    assert host.slot[cb.S_TAP_WRITTEN] == 1  # the quarantined event is journalled, not silently lost


def test_a_full_output_whose_consumer_is_gone_is_discarded_into_and_counted_the_others_get_everything():
    host = Host(out_capacities=(2, 16))
    host.outs[0][1][ring.C_GONE] = 1
    host.feed(events(1, 5))
    assert host.run(max_cycles=3) == duty_cycle.EXIT_BUDGET
    assert host.outs[0][0][ring.P_DISCARDED] == 3 and len(drain(host.outs[0])) == 2
    assert len(drain(host.outs[1])) == 5
    assert host.slot[cb.S_OUT] == 5 and host.slot[cb.S_BLOCKED_SINCE_NS] == 0


def _slow_consumer(name: str, capacity: int, expect: int) -> None:
    """Wait until the producer is blocked on this full ring, then take everything; exit 0 if it came in order.
    On any failure it marks itself gone, so the producer stops waiting instead of hanging the test."""
    view = ring.attach_ring(name, EVENT, capacity)
    r = (view.producer, view.consumer, view.records)
    got = []
    try:
        deadline = time.monotonic() + 60
        while view.producer[ring.P_FULL_COUNT] == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        batch = np.zeros(capacity, EVENT)
        while len(got) < expect and time.monotonic() < deadline:
            n = ring.read(*r, batch, capacity)
            got += list(batch[:n]["venue_seq"])
    finally:
        ok = got == list(range(1, expect + 1))
        if not ok:
            view.mark_consumer_gone()
        os._exit(0 if ok else 1)


def test_a_full_output_with_a_live_consumer_blocks_until_it_makes_room_and_counts_the_time_blocked(shm_prefix):
    host = Host()
    views = [ring.create_ring(f"{shm_prefix}.out{k}", EVENT, capacity) for k, capacity in enumerate((4, 16))]
    try:
        host.outs = tuple((v.producer, v.consumer, v.records) for v in views)
        host.feed(events(1, 8))
        child = multiprocessing.get_context("fork").Process(target=_slow_consumer, args=(views[0].name, 4, 8))
        child.start()
        assert host.run(max_cycles=3) == duty_cycle.EXIT_BUDGET
        child.join(30)
        assert child.exitcode == 0  # it got all 8, in order: nothing was dropped while the ring was full
        producer = views[0].producer
        assert producer[ring.P_FULL_COUNT] == 1 and producer[ring.P_DISCARDED] == 0
        assert producer[ring.P_BLOCKED_NS] > 0 and host.slot[cb.S_BLOCKED_NS] == producer[ring.P_BLOCKED_NS]
        assert host.slot[cb.S_BLOCKED_SINCE_NS] == 0 and host.slot[cb.S_OUT] == 8
        assert len(drain(host.outs[1])) == 8
    finally:
        host.outs = None
        for view in views:
            view.close()
            view.segment.unlink()


def test_a_full_tap_drops_and_counts_what_does_not_fit():
    host = Host(tap_capacity=2)
    host.feed(events(1, 6, bad=(0, 1, 2, 3, 4)))
    assert host.run(max_cycles=2) == duty_cycle.EXIT_BUDGET
    assert (host.slot[cb.S_TAP_WRITTEN], host.slot[cb.S_TAP_DROPPED]) == (2, 3)
    assert list(drain(host.tap)["venue_seq"]) == [1, 2]
    assert [len(drain(out)) for out in host.outs] == [1, 1]  # the hot path does not wait for the journal


def test_a_lossless_tap_whose_consumer_is_gone_stops_waiting_and_counts_the_rest_dropped():
    host = Host(tap_capacity=2)
    host.tap[1][ring.C_LOSSLESS] = 1
    host.tap[1][ring.C_GONE] = 1
    host.feed(events(1, 5, bad=(0, 1, 2, 3, 4)))
    assert host.run(max_cycles=2) == duty_cycle.EXIT_BUDGET
    assert (host.slot[cb.S_TAP_WRITTEN], host.slot[cb.S_TAP_DROPPED]) == (2, 3)
    assert host.tap[0][ring.P_FULL_COUNT] == 1 and host.slot[cb.S_BLOCKED_SINCE_NS] == 0


def test_blocking_idle_parks_after_its_spin_and_yield_cycles_with_the_input_declared_asleep():
    limits = {"spin_limit": 3, "yield_limit": 2}
    host = Host(idle=idle_strategies.make_params(idle_strategies.BLOCKING, **limits))
    assert host.run(max_cycles=5) == duty_cycle.EXIT_BUDGET  # 3 spins and 2 yields: not yet
    assert host.slot[cb.S_PARKS] == 0 and host.in_a[1][ring.C_ASLEEP] == 0
    host = Host(idle=idle_strategies.make_params(idle_strategies.BLOCKING, **limits))
    assert host.run(max_cycles=6) == duty_cycle.EXIT_PARK
    assert host.slot[cb.S_PARKS] == 1 and host.in_a[1][ring.C_ASLEEP] == 1  # a producer will post its semaphore


def test_a_parked_stage_called_again_serves_what_arrived_and_resets_its_idle_strategy():
    host = Host(idle=idle_strategies.make_params(idle_strategies.BLOCKING, spin_limit=0, yield_limit=0))
    assert host.run(max_cycles=3) == duty_cycle.EXIT_PARK
    ring.woke_up(host.in_a[1])  # what the host does after its semaphore wait
    host.feed(events(1, 2))
    assert host.run(max_cycles=1) == duty_cycle.EXIT_BUDGET
    assert host.slot[cb.S_OUT] == 2 and host.idle_state[idle_strategies.S_IDLE_CYCLES] == 0
    assert host.run(max_cycles=3) == duty_cycle.EXIT_PARK and host.slot[cb.S_PARKS] == 2


def test_a_stop_with_nothing_waiting_returns_at_once():
    host = Host()
    host.slot[cb.S_STOP] = 1
    assert host.run(max_cycles=100) == duty_cycle.EXIT_STOPPED and host.slot[cb.S_BATCHES] == 0
