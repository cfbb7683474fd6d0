import multiprocessing as mp
import os

import numpy as np
import pytest
from numba import njit

from shm import ring, segment
from shm.segment import SegmentError

STRESS_RECORD = np.dtype([("seq", np.int64), ("payload", np.int64, (6,)), ("checksum", np.int64)], align=True)
assert STRESS_RECORD.itemsize == 64


@njit(cache=True)
def _checksum(seq):
    x = seq * 0x9E3779B97F4A7C15
    return x ^ (x >> 29)


@njit(cache=True)
def _produce(producer, consumer, records, total, batch):
    src = np.zeros(batch, records.dtype)
    seq = 0
    full = 0
    while seq < total:
        n = min(batch, total - seq)
        for i in range(n):
            src[i]["seq"] = seq + i
            for j in range(6):
                src[i]["payload"][j] = (seq + i) * (j + 1)
            src[i]["checksum"] = _checksum(seq + i)
        done = 0
        while done < n:
            k = ring.try_write(producer, consumer, records, src[done:], n - done)
            if k == ring.BACK_PRESSURED:
                full += 1
            else:
                done += k
        seq += n
    return full


@njit(cache=True)
def _consume(producer, consumer, records, total, batch):
    out = np.zeros(batch, records.dtype)
    expected = 0
    errors = 0
    while expected < total:
        n = ring.read(producer, consumer, records, out, batch)
        for i in range(n):
            r = out[i]
            ok = r["seq"] == expected and r["checksum"] == _checksum(expected)
            for j in range(6):
                ok = ok and r["payload"][j] == expected * (j + 1)
            if not ok:
                errors += 1
            expected += 1
    return errors


def _pin(core):
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {core % os.cpu_count()})


def _producer_main(name, capacity, total, batch, result):
    _pin(0)
    view = ring.attach_ring(name, STRESS_RECORD, capacity)
    result.put(("full", _produce(view.producer, view.consumer, view.records, total, batch)))
    view.close()


def _consumer_main(name, capacity, total, batch, result):
    _pin(1)
    view = ring.attach_ring(name, STRESS_RECORD, capacity)
    result.put(("errors", _consume(view.producer, view.consumer, view.records, total, batch)))
    view.close()


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_two_pinned_processes_move_five_million_records_without_loss_duplicate_or_tear(shm_prefix, batch):
    capacity, total = 256, 5_000_000
    name = f"{shm_prefix}.stress"
    # Compile before forking so children inherit machine code instead of compiling twice.
    p, c, r = ring.local_ring(STRESS_RECORD, 4)
    _produce(p, c, r, 2, 2)
    _consume(p, c, r, 2, 2)
    view = ring.create_ring(name, STRESS_RECORD, capacity)
    ctx = mp.get_context("fork")
    result = ctx.Queue()
    procs = [ctx.Process(target=_consumer_main, args=(name, capacity, total, batch, result)),
             ctx.Process(target=_producer_main, args=(name, capacity, total, batch, result))]
    try:
        for proc in procs:
            proc.start()
        got = dict(result.get(timeout=120) for _ in procs)
        for proc in procs:
            proc.join(10)
            assert proc.exitcode == 0
        assert got["errors"] == 0
        assert view.producer[ring.P_TAIL] == total
        assert view.consumer[ring.C_HEAD] == total
        assert total // capacity > 1000  # thousands of wraps
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        view.close()
        view.segment.unlink()


def test_full_ring_back_pressures_and_empty_ring_reads_nothing():
    p, c, r = ring.local_ring(STRESS_RECORD, 8)
    src = np.zeros(10, STRESS_RECORD)
    src["seq"] = np.arange(10)
    out = np.zeros(10, STRESS_RECORD)
    assert ring.read(p, c, r, out, 10) == 0
    assert ring.try_write(p, c, r, src, 10) == 8  # partial write up to capacity
    assert ring.try_write(p, c, r, src[8:], 2) == ring.BACK_PRESSURED
    assert ring.read(p, c, r, out, 3) == 3
    assert list(out["seq"][:3]) == [0, 1, 2]
    assert ring.try_write(p, c, r, src[8:], 2) == 2
    assert ring.read(p, c, r, out, 10) == 7
    assert list(out["seq"][:7]) == [3, 4, 5, 6, 7, 8, 9]
    assert ring.read(p, c, r, out, 10) == 0


def test_ring_kernels_run_without_jit():
    import subprocess
    import sys
    code = (
        "import numpy as np; from shm import ring;"
        "p,c,r = ring.local_ring(np.dtype([('a', np.int64)]), 4);"
        "src = np.arange(6).astype([('a', np.int64)]);"
        "assert ring.try_write(p,c,r,src,6) == 4; out = np.zeros(4, r.dtype);"
        "assert ring.read(p,c,r,out,4) == 4 and list(out['a']) == [0,1,2,3]"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)))


def test_attach_refuses_a_ring_built_with_another_record_layout(shm_prefix):
    name = f"{shm_prefix}.layout"
    view = ring.create_ring(name, STRESS_RECORD, 16)
    other = np.dtype([("seq", np.int64), ("price", np.float64, (7,))], align=True)
    try:
        with pytest.raises(SegmentError, match="layout_hash"):
            ring.attach_ring(name, other, 16)
    finally:
        view.close()
        view.segment.unlink()


def test_stale_segment_of_a_dead_creator_is_reclaimed_at_next_start(shm_prefix):
    name = f"{shm_prefix}.stale"
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=lambda: (ring.create_ring(name, STRESS_RECORD, 16), os._exit(0)))
    proc.start()
    proc.join(10)
    assert name in segment.list_segments(shm_prefix)
    with pytest.raises(SegmentError):
        segment.attach(name, 12345)  # still there, wrong layout: refused, not silently reused
    view = ring.create_ring(name, STRESS_RECORD, 16)  # creator is dead: reclaimed
    assert view.segment.header[segment.H_CREATOR_PID] == os.getpid()
    view.close()
    view.segment.unlink()


def test_create_refuses_a_segment_whose_creator_is_alive(shm_prefix):
    name = f"{shm_prefix}.live"
    view = ring.create_ring(name, STRESS_RECORD, 16)
    try:
        with pytest.raises(SegmentError, match="creator is alive"):
            ring.create_ring(name, STRESS_RECORD, 16)
    finally:
        view.close()
        view.segment.unlink()


def test_read_and_write_never_go_past_the_callers_arrays():
    p, c, r = ring.local_ring(STRESS_RECORD, 8)
    src = np.zeros(4, STRESS_RECORD)
    src["seq"] = [1, 2, 3, 4]
    assert ring.try_write(p, c, r, src[:2], 4) == 2  # n larger than src: only src's records
    big = np.zeros(4, STRESS_RECORD)
    big["seq"] = -7
    assert ring.read(p, c, r, big[:1], 4) == 1  # limit larger than out: only out's room
    assert list(big["seq"]) == [1, -7, -7, -7]
