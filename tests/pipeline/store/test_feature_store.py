"""The online feature store: the seqlock table across processes, and a live run against the offline build."""
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from numba import njit

from pipeline.config import Config
from pipeline.store import feature_build
from pipeline.store.feature_store import FeatureStoreReader
from shm import seqlock
from shm.segment import SegmentError
from stages.records import FEATURE_NAMES, FEATURE_VECTOR, N_FEATURES
from tests.conftest import ROOT


@njit(cache=True)
def _write_counting(seqs, slots, slot, src, first, n):
    """Write vectors first..first+n-1, each field saying which write it is."""
    for i in range(first, first + n):
        v = src[0]
        v["origin_seq"] = i
        v["origin_ts"] = i
        v["bid"] = i
        v["ask_sz"] = i
        for j in range(N_FEATURES):
            v["values"][j] = i
        seqlock.write(seqs, slots, slot, src, 0)


@njit(cache=True)
def _read_checking(seqs, slots, slot, dst, n, counts):
    """counts: [reads, torn, versions seen, version != writes, gave up, went backwards]."""
    last = counts[6]
    for _ in range(n):
        version = seqlock.read(seqs, slots, slot, dst, 0, 1_000_000)
        if version < 0:
            counts[4] += 1
            continue
        counts[0] += 1
        v = dst[0]
        seq = v["origin_seq"]
        ok = v["origin_ts"] == seq and v["bid"] == seq and v["ask_sz"] == seq
        for j in range(N_FEATURES):
            ok = ok and v["values"][j] == seq
        if not ok:
            counts[1] += 1
        if version != last:
            counts[2] += 1
        if version < last:
            counts[5] += 1
        if version // 2 != seq:
            counts[3] += 1
        last = version
    counts[6] = last


def _writer(name, stop, chunk):
    table = seqlock.SeqlockTable.attach(name, FEATURE_VECTOR, 4)
    src = np.zeros(1, FEATURE_VECTOR)
    written = 0
    while not stop.is_set():
        _write_counting(table.seqs, table.records, 2, src, written + 1, chunk)
        written += chunk
    os._exit(0)


def test_readers_in_another_process_never_see_a_torn_vector(shm_prefix):
    local = seqlock.local_table(FEATURE_VECTOR, 4)
    _write_counting(local[0], local[1], 2, np.zeros(1, FEATURE_VECTOR), 1, 3)  # compile before forking
    _read_checking(local[0], local[1], 2, np.zeros(1, FEATURE_VECTOR), 1, np.zeros(7, np.int64))
    table = seqlock.SeqlockTable.create(f"{shm_prefix}.store", FEATURE_VECTOR, 4)
    try:
        ctx = multiprocessing.get_context("fork")
        stop = ctx.Event()
        chunk = 100_000
        child = ctx.Process(target=_writer, args=(table.segment.name, stop, chunk))
        child.start()
        counts = np.zeros(7, np.int64)
        dst = np.zeros(1, FEATURE_VECTOR)
        deadline = time.monotonic() + 30
        while counts[2] < 2000 and time.monotonic() < deadline and child.is_alive():
            _read_checking(table.seqs, table.records, 2, dst, 10_000, counts)
        stop.set()
        child.join(10)
        assert child.exitcode == 0
        _read_checking(table.seqs, table.records, 2, dst, 1, counts)
        reads, torn, versions, mismatched, gave_up, backwards, last = counts
        assert torn == 0 and mismatched == 0 and gave_up == 0 and backwards == 0
        assert versions >= 2000  # the reads saw the writer's vectors change under them
        writes = last // 2
        assert writes % chunk == 0 and dst[0]["origin_seq"] == writes
        record, count = table.read(2)
        assert count == writes and record["values"][N_FEATURES - 1] == writes
        assert table.read(0)[1] == 0  # never written
    finally:
        table.close()
        table.segment.unlink()


def test_attaching_with_another_record_layout_is_refused(shm_prefix):
    table = seqlock.SeqlockTable.create(f"{shm_prefix}.store", FEATURE_VECTOR, 4)
    try:
        with pytest.raises(SegmentError, match="layout_hash"):
            seqlock.SeqlockTable.attach(table.segment.name, FEATURE_VECTOR, 8)
    finally:
        table.close()
        table.segment.unlink()


def test_a_live_runs_online_vectors_equal_the_offline_rows_built_from_its_journal(live, tmp_path):
    journal = tmp_path / "journal"
    run = live("--quiet", "--rate", "20000", "--journal", str(journal))
    run.wait_for(r"bot4: running")
    time.sleep(2.0)
    reader = FeatureStoreReader(run.name)
    try:
        first = reader.snapshot()
        time.sleep(0.5)
        online = reader.snapshot()
    finally:
        reader.close()
    shown = subprocess.run([sys.executable, "-m", "tools.cli", "features", "latest", "--name", run.name], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["v0/s0", "v0/s1", "v0/s2", "v1/s0", "v1/s1", "v1/s2"]
    assert [line.split()[0] for line in lines[2:]] == list(FEATURE_NAMES)
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish()
    assert code == 0, output
    assert len(online) == 6  # 2 venues x 3 symbols
    assert (online["origin_seq"] > first["origin_seq"]).all()  # the store follows the stream
    market, source = feature_build.market_source(Config(), str(journal))
    result = feature_build.build(Config(), market, tmp_path / "f.parquet", source)
    offline, meta = feature_build.read(result.path)
    rows = offline[np.searchsorted(offline["origin_seq"], online["origin_seq"])]
    assert (rows["origin_seq"] == online["origin_seq"]).all()
    online["stage_ts"] = 0  # when the stage ran: not part of the row
    assert rows.tobytes() == online.tobytes()
