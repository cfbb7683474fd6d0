"""Idle strategies, as in Agrona's IdleStrategy: what a duty cycle does after a cycle with no work.

* ``BUSY_SPIN``  lowest latency; burns its core. Only when every spinning process has a core of its own.
* ``YIELDING``   spin ``spin_limit`` empty cycles, then ``sched_yield`` each cycle: ~3-4 us a hop with
                 8 processes on 2 cores (DESIGN.md); the default when processes outnumber cores.
* ``SLEEPING``   spin, yield ``yield_limit`` times, then sleep with exponential backoff
                 ``min_sleep_us``..``max_sleep_us``: cheap on CPU, latency up to ``max_sleep_us``.
* ``BLOCKING``   spin, yield, then block on the stage's semaphore, posted by a producer only when the
                 consumer declared itself asleep: ~28 us wake-up floor on this VM, zero CPU when idle.

Params and state are small int64 arrays so the strategy runs inside njit duty cycles.
"""
import numpy as np
from numba import njit

from shm.syscalls import sched_yield, usleep

BUSY_SPIN, YIELDING, SLEEPING, BLOCKING = range(4)
NAMES = {"busy_spin": BUSY_SPIN, "yielding": YIELDING, "sleeping": SLEEPING, "blocking": BLOCKING}

I_STRATEGY, I_SPIN_LIMIT, I_YIELD_LIMIT, I_MIN_SLEEP_US, I_MAX_SLEEP_US = range(5)
S_IDLE_CYCLES, S_SLEEP_US = range(2)

PARK = 1  # idle(): the host should block on its semaphore now


def make_params(strategy: int, spin_limit: int = 5, yield_limit: int = 1000, min_sleep_us: int = 50,
                max_sleep_us: int = 1000) -> np.ndarray:
    return np.array([strategy, spin_limit, yield_limit, min_sleep_us, max_sleep_us, 0, 0, 0], np.int64)


def make_state() -> np.ndarray:
    return np.zeros(4, np.int64)


@njit(cache=True, nogil=True)
def idle(params, state, work_count):
    """Call once per duty cycle with its work count; returns PARK when a blocking host should block. Called from
    Python (a Python host's idle) it releases the GIL: the host's other threads run through its sleeps."""
    if work_count > 0:
        state[S_IDLE_CYCLES] = 0
        state[S_SLEEP_US] = params[I_MIN_SLEEP_US]
        return 0
    strategy = params[I_STRATEGY]
    cycles = state[S_IDLE_CYCLES]
    state[S_IDLE_CYCLES] = cycles + 1
    if strategy == BUSY_SPIN or cycles < params[I_SPIN_LIMIT]:
        return 0
    if strategy == YIELDING or cycles < params[I_SPIN_LIMIT] + params[I_YIELD_LIMIT]:
        sched_yield()
        return 0
    if strategy == SLEEPING:
        sleep_us = state[S_SLEEP_US]
        if sleep_us < params[I_MIN_SLEEP_US]:
            sleep_us = params[I_MIN_SLEEP_US]
        usleep(sleep_us)
        state[S_SLEEP_US] = min(sleep_us * 2, params[I_MAX_SLEEP_US])
        return 0
    return PARK
