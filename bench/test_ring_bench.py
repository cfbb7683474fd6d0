"""pytest-benchmark micro-benchmarks, single process (no timing assertions; figures only).

Run with ``pytest bench/`` (the test suite is ``tests/``; these are not part of it). Useful options:
``--benchmark-columns=min,median,mean,stddev,rounds`` and ``--benchmark-disable`` (run once, as a smoke test).
Each kernel is compiled before it is timed. "from Python" cases include the Python -> njit dispatch
(~0.1-0.2 µs a call); "in njit" cases loop inside compiled code, so the figure is the kernel's own cost.
"""
import numpy as np
import pytest
from numba import njit

from bench._common import RECORD
from shm import control, ring

BATCH = 256
CAPACITY = 1024
INNER = 1000  # iterations per timed call in the "in njit" cases


def _local_ring_with_batch():
    p, c, r = ring.local_ring(RECORD, CAPACITY)
    src = np.zeros(BATCH, RECORD)
    src["seq"] = np.arange(BATCH)
    out = np.zeros(BATCH, RECORD)
    return p, c, r, src, out


@njit(cache=True)
def _write_read_loop(p, c, r, src, out, n, iterations):
    moved = 0
    for _ in range(iterations):
        k = ring.try_write(p, c, r, src, n)
        moved += ring.read(p, c, r, out, n)
        if k != n:
            return -1
    return moved


@njit(cache=True)
def _bucket_loop(values):
    total = 0
    for v in values:
        total += control.bucket_of(v)
    return total


def test_ring_try_write_then_read_256_batch_from_python(benchmark):
    """One try_write of 256 records then one read of 256, each called from Python."""
    p, c, r, src, out = _local_ring_with_batch()
    assert ring.try_write(p, c, r, src, BATCH) == BATCH and ring.read(p, c, r, out, BATCH) == BATCH  # compile

    def write_read():
        ring.try_write(p, c, r, src, BATCH)
        return ring.read(p, c, r, out, BATCH)

    assert benchmark(write_read) == BATCH
    assert (out["seq"] == src["seq"]).all()
    benchmark.extra_info["records_per_call"] = BATCH


def test_ring_try_write_then_read_256_batch_in_njit(benchmark):
    """The same pair in a compiled loop (INNER pairs per timed call): the ring's own cost per batch."""
    p, c, r, src, out = _local_ring_with_batch()
    assert _write_read_loop(p, c, r, src, out, BATCH, 2) == 2 * BATCH  # compile
    assert benchmark(_write_read_loop, p, c, r, src, out, BATCH, INNER) == INNER * BATCH
    assert (out["seq"] == src["seq"]).all()
    benchmark.extra_info["records_per_call"] = INNER * BATCH
    benchmark.extra_info["batches_per_call"] = INNER


@pytest.mark.parametrize("value_ns", [1, 850, 123_456_789])
def test_bucket_of_from_python(benchmark, value_ns):
    control.bucket_of(value_ns)  # compile
    b = benchmark(control.bucket_of, value_ns)
    assert 0 <= b < control.HIST_BUCKETS


def test_bucket_of_in_njit(benchmark):
    """bucket_of over 1000 log-spread latencies inside a compiled loop."""
    values = np.unique(np.logspace(0, 10, INNER).astype(np.int64))
    values = np.resize(values, INNER)
    _bucket_loop(values)  # compile
    assert benchmark(_bucket_loop, values) > 0
    benchmark.extra_info["calls_per_round"] = INNER
