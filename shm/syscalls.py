"""libc calls usable inside ``@njit(cache=True)`` code.

``types.ExternalFunction`` keeps on-disk caching working (ctypes calls inside njit silently disable it).
Pointers are passed as integers (x86-64/aarch64 pass both in the same register).
"""
import os
import time

import numpy as np
from numba import config, njit, types

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1

sched_yield = types.ExternalFunction("sched_yield", types.int32())
usleep = types.ExternalFunction("usleep", types.int32(types.uint32))
sem_post = types.ExternalFunction("sem_post", types.int32(types.intp))
_clock_gettime = types.ExternalFunction("clock_gettime", types.int32(types.int32, types.intp))


@njit(cache=True)
def clock_ns(timespec):
    """CLOCK_REALTIME in ns; ``timespec`` is a caller-owned int64[2] so the hot path allocates nothing."""
    _clock_gettime(CLOCK_REALTIME, timespec.ctypes.data)
    return timespec[0] * 1_000_000_000 + timespec[1]


def new_timespec():
    return np.zeros(2, np.int64)


if config.DISABLE_JIT:
    def sched_yield():  # noqa: F811
        os.sched_yield()
        return 0

    def usleep(us):  # noqa: F811
        time.sleep(us / 1e6)
        return 0

    def sem_post(address):  # noqa: F811
        return _libc().sem_post(address)

    def clock_ns(timespec):  # noqa: F811
        return time.time_ns()


def _libc():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sem_post.argtypes = [ctypes.c_void_p]
    libc.sem_open.restype = ctypes.c_void_p
    libc.sem_open.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.sem_close.argtypes = [ctypes.c_void_p]
    return libc


def open_semaphore_address(name: str) -> int:
    """sem_t* of an existing named semaphore (created with posix_ipc), for ``sem_post`` inside njit."""
    address = _libc().sem_open(name.encode(), 0)
    if not address:
        raise OSError(f"sem_open failed for semaphore name={name!r}")
    return address


def close_semaphore_address(address: int) -> None:
    if address:
        _libc().sem_close(address)
