"""shm.idle: each strategy's state machine (spin -> yield -> sleep or park) and its reset on work.

A sleep is seen as a voluntary context switch of the calling thread (nanosleep blocks it); spinning and
yielding never block, so they add none. Spin and yield are told apart by the idle-cycle count alone.
"""
import resource
import threading
import time

import pytest

from shm import idle

SPIN, YIELD = 3, 4  # spin_limit, yield_limit
MIN_US, MAX_US = 50, 300


def params(strategy):
    return idle.make_params(strategy, spin_limit=SPIN, yield_limit=YIELD, min_sleep_us=MIN_US, max_sleep_us=MAX_US)


def voluntary_switches() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def empty_cycles(p, state, n):
    """``n`` idle calls with no work: per call, (what idle returned, whether it blocked the thread,
    the backoff it leaves for the next sleep)."""
    calls = []
    for _ in range(n):
        before = voluntary_switches()
        returned = idle.idle(p, state, 0)
        calls.append((returned, voluntary_switches() > before, int(state[idle.S_SLEEP_US])))
    return calls


@pytest.fixture(scope="module", autouse=True)
def compiled():
    idle.idle(params(idle.SLEEPING), idle.make_state(), 1)  # compile (or load) before any call is watched


@pytest.mark.parametrize("strategy", [idle.BUSY_SPIN, idle.YIELDING])
def test_spinning_and_yielding_never_block_nor_park(strategy):
    state = idle.make_state()
    calls = empty_cycles(params(strategy), state, 2000)
    assert {returned for returned, _, _ in calls} == {0}
    assert sum(blocked for _, blocked, _ in calls) < 20  # a sleep phase would block on every call
    assert state[idle.S_IDLE_CYCLES] == 2000


def test_sleeping_spins_yields_then_sleeps_with_a_doubling_backoff_up_to_its_cap():
    state = idle.make_state()
    calls = empty_cycles(params(idle.SLEEPING), state, SPIN + YIELD + 5)
    assert {returned for returned, _, _ in calls} == {0}
    quiet, sleeping = calls[:SPIN + YIELD], calls[SPIN + YIELD:]
    assert not any(blocked for _, blocked, _ in quiet) and all(blocked for _, blocked, _ in sleeping)
    assert [backoff for _, _, backoff in sleeping] == [2 * MIN_US, 4 * MIN_US, MAX_US, MAX_US, MAX_US]


def test_blocking_spins_yields_then_asks_its_host_to_park_on_every_empty_cycle():
    state = idle.make_state()
    calls = empty_cycles(params(idle.BLOCKING), state, SPIN + YIELD + 3)
    assert [returned for returned, _, _ in calls] == [0] * (SPIN + YIELD) + [idle.PARK] * 3
    assert not any(blocked for _, blocked, _ in calls)  # the host blocks, on its semaphore; idle() never does


@pytest.mark.parametrize("strategy", [idle.SLEEPING, idle.BLOCKING])
def test_work_resets_the_strategy_to_spinning_and_the_backoff_to_its_minimum(strategy):
    p, state = params(strategy), idle.make_state()
    empty_cycles(p, state, SPIN + YIELD + 4)
    assert idle.idle(p, state, 7) == 0
    assert state[idle.S_IDLE_CYCLES] == 0 and state[idle.S_SLEEP_US] == MIN_US
    again = empty_cycles(p, state, SPIN + YIELD + 1)
    assert [(returned, blocked) for returned, blocked, _ in again[:SPIN + YIELD]] == [(0, False)] * (SPIN + YIELD)
    last_returned, last_blocked, last_backoff = again[-1]
    if strategy == idle.SLEEPING:
        assert last_blocked and last_backoff == 2 * MIN_US  # the first sleep after work is the shortest again
    else:
        assert last_returned == idle.PARK



def test_a_sleep_called_from_python_lets_the_callers_other_threads_run():
    # a Python host (the gateway, the ccxt feed) sleeps through idle() between polls while its own thread runs an
    # event loop: holding the GIL through the sleep left that thread waiting for the interpreter's 5 ms switch
    p = idle.make_params(idle.SLEEPING, spin_limit=0, yield_limit=0, min_sleep_us=200_000, max_sleep_us=200_000)
    stamps, stop = [], threading.Event()

    def other():
        while not stop.is_set():
            stamps.append(time.monotonic())  # Python: only with the GIL

    thread = threading.Thread(target=other)
    thread.start()
    try:
        time.sleep(0.02)
        t0 = time.monotonic()
        idle.idle(p, idle.make_state(), 0)  # one 200 ms sleep
        t1 = time.monotonic()
    finally:
        stop.set()
        thread.join()
    during = [t for t in stamps if t0 <= t <= t1]
    assert t1 - t0 >= 0.2 and len(during) > 1
    assert max(b - a for a, b in zip([t0] + during, during + [t1])) < 0.1  # it ran all through the sleep
