import errno
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.store import journal
from pipeline.store.journal import (HEADER_BYTES, FsyncPolicy, JournalError, JournalLayoutError, JournalReader,
                                    JournalWriter)
from stages import records

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, os.pardir))


def random_records(dtype, n, seed=0, first_ts=1_700_000_000_000_000_000):
    """Every byte random (so pads and reserved round-trip too), with increasing origin_ts where present."""
    rng = np.random.default_rng(seed)
    out = np.frombuffer(rng.bytes(n * dtype.itemsize), dtype=dtype).copy()
    if "origin_ts" in dtype.names:
        out["origin_ts"] = first_ts + np.arange(n, dtype=np.int64) * 1_000_000
    return out


def same_bytes(a, b):
    # Byte comparison: random float fields hold NaNs, which never compare equal.
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def files(directory, stream):
    return [path for _, path in journal.segment_paths(str(directory), stream)]


@pytest.mark.parametrize("name", sorted(records.ALL))
def test_should_round_trip_every_record_dtype(tmp_path, name):
    dtype = records.ALL[name]
    batches = [random_records(dtype, n, seed=n) for n in (1, 7, 300)]
    with JournalWriter(str(tmp_path), name, dtype, source="test-run") as w:
        for batch in batches:
            w.append(batch)
    expected = np.concatenate(batches)

    reader = JournalReader(str(tmp_path), name, dtype)
    assert len(reader) == 308 and reader.torn == [] and reader.torn_tail_bytes == 0
    assert same_bytes(reader.read_all(), expected)
    assert same_bytes(np.concatenate(list(reader.batches(batch_records=50))), expected)
    assert same_bytes(np.concatenate(list(reader.batches(batch_records=50, mmap=True))), expected)

    decoded = JournalReader(str(tmp_path), name)  # no code for the dtype: the header describes it
    assert decoded.dtype == dtype and decoded.layout_hash == journal.record_layout_hash(dtype)
    header = decoded.segments[0].header
    assert (header.stream, header.source, header.segment_index, header.record_size) == (name, "test-run", 1,
                                                                                       dtype.itemsize)
    assert header.writer_pid == os.getpid()


def test_should_describe_dtype_with_unnamed_alignment_gaps():
    dtype = np.dtype([("a", np.uint8), ("b", np.int64), ("c", np.float32, (3,))], align=True)
    decoded = journal.dtype_from_json(journal.dtype_to_json(dtype))
    assert decoded == dtype and decoded.itemsize == dtype.itemsize
    assert journal.record_layout_hash(decoded) == journal.record_layout_hash(dtype)


def test_should_rotate_before_a_batch_would_exceed_rotate_bytes(tmp_path):
    dtype = records.ORDER_INTENT
    rotate_bytes = HEADER_BYTES + 10 * dtype.itemsize
    data = random_records(dtype, 40)
    with JournalWriter(str(tmp_path), "intent", dtype, rotate_bytes=rotate_bytes,
                       fsync_policy=FsyncPolicy.NEVER) as w:
        for start in range(0, 24, 4):
            w.append(data[start:start + 4])
        w.append(data[24:40])  # larger than a segment: written whole, in a segment of its own
        assert w.segments_created == 4 and w.segment_index == 4

    paths = files(tmp_path, "intent")
    assert [os.path.basename(p) for p in paths] == [f"intent-0000000{i}.b4j" for i in range(1, 5)]
    sizes = [os.path.getsize(p) for p in paths]
    assert sizes == [HEADER_BYTES + n * dtype.itemsize for n in (8, 8, 8, 16)]
    reader = JournalReader(str(tmp_path), "intent", dtype)
    assert [s.header.segment_index for s in reader.segments] == [1, 2, 3, 4]
    assert [len(b) for b in reader.batches()] == [8, 8, 8, 16]
    assert same_bytes(reader.read_all(), data)


def test_should_continue_with_next_segment_when_reopened_and_never_touch_old_ones(tmp_path):
    dtype = records.EXEC_REPORT
    first, second = random_records(dtype, 5, seed=1), random_records(dtype, 3, seed=2)
    with JournalWriter(str(tmp_path), "exec", dtype, source="run-a") as w:
        w.append(first)
    old_path = files(tmp_path, "exec")[0]
    with open(old_path, "rb") as f:
        old_bytes = f.read()

    with JournalWriter(str(tmp_path), "exec", dtype, source="run-b") as w:
        assert w.segment_index == 2 and w.resumed_torn_bytes == 0
        w.append(second)

    with open(old_path, "rb") as f:
        assert f.read() == old_bytes
    reader = JournalReader(str(tmp_path), "exec")
    assert [s.header.source for s in reader.segments] == ["run-a", "run-b"]
    assert same_bytes(reader.read_all(), np.concatenate([first, second]))


def test_should_refuse_a_second_writer_on_the_same_stream(tmp_path):
    with JournalWriter(str(tmp_path), "market", records.MARKET_EVENT):
        with pytest.raises(JournalError, match=f"pid={os.getpid()}"):
            JournalWriter(str(tmp_path), "market", records.MARKET_EVENT)
        JournalWriter(str(tmp_path), "exec", records.EXEC_REPORT).close()  # other streams are independent
    JournalWriter(str(tmp_path), "market", records.MARKET_EVENT).close()  # released on close


def test_should_ignore_and_report_a_torn_tail(tmp_path):
    dtype = records.MARKET_EVENT
    data = random_records(dtype, 10)
    with JournalWriter(str(tmp_path), "market", dtype) as w:
        w.append(data)
    path = files(tmp_path, "market")[-1]
    os.truncate(path, os.path.getsize(path) - 5)  # a crash mid-write of the last record

    reader = JournalReader(str(tmp_path), "market", dtype)
    assert len(reader) == 9 and reader.torn_tail_bytes == dtype.itemsize - 5
    assert reader.torn == [(path, dtype.itemsize - 5)]
    assert same_bytes(reader.read_all(), data[:9])
    assert same_bytes(np.concatenate(list(reader.batches(mmap=True))), data[:9])

    more = random_records(dtype, 2, seed=3)
    with JournalWriter(str(tmp_path), "market", dtype) as w:  # the restarted writer sees it and moves on
        assert w.resumed_torn_bytes == dtype.itemsize - 5
        w.append(more)
    reader = JournalReader(str(tmp_path), "market", dtype)
    assert reader.torn_tail_bytes == 0 and reader.torn == [(path, dtype.itemsize - 5)]
    assert same_bytes(reader.read_all(), np.concatenate([data[:9], more]))


def test_should_tolerate_a_segment_whose_header_never_reached_the_disk(tmp_path):
    dtype = records.ORDER_INTENT
    data = random_records(dtype, 4)
    with JournalWriter(str(tmp_path), "intent", dtype) as w:
        w.append(data)
    with open(os.path.join(tmp_path, journal.segment_name("intent", 2)), "wb") as f:
        f.write(b"\0" * 100)
    with JournalWriter(str(tmp_path), "intent", dtype) as w:
        assert w.segment_index == 3
        w.append(data)
    reader = JournalReader(str(tmp_path), "intent")
    assert reader.segments[1].header is None and reader.segments[1].torn_bytes == 100
    assert same_bytes(reader.read_all(), np.concatenate([data, data]))


def test_should_refuse_a_segment_of_another_layout_naming_file_and_hashes(tmp_path):
    with JournalWriter(str(tmp_path), "intent", records.ORDER_INTENT) as w:
        w.append(random_records(records.ORDER_INTENT, 3))
    path = files(tmp_path, "intent")[0]
    found = journal.record_layout_hash(records.ORDER_INTENT)
    expected = journal.record_layout_hash(records.EXEC_REPORT)

    with pytest.raises(JournalLayoutError) as info:
        JournalReader(str(tmp_path), "intent", records.EXEC_REPORT)
    message = str(info.value)
    assert path in message and f"{found:#x}" in message and f"{expected:#x}" in message

    with pytest.raises(JournalLayoutError, match="another directory or stream"):
        JournalWriter(str(tmp_path), "intent", records.EXEC_REPORT)
    assert len(files(tmp_path, "intent")) == 1  # refused before creating anything


def test_should_refuse_a_stream_that_mixes_layouts(tmp_path):
    other = tmp_path / "other"
    with JournalWriter(str(tmp_path), "s", records.ORDER_INTENT) as w:
        w.append(random_records(records.ORDER_INTENT, 2))
    with JournalWriter(str(other), "s", records.ORDER) as w:
        w.append(random_records(records.ORDER, 2))
    os.rename(files(other, "s")[0], os.path.join(tmp_path, journal.segment_name("s", 2)))
    with pytest.raises(JournalLayoutError, match="s-00000002.b4j"):
        JournalReader(str(tmp_path), "s")


def test_should_refuse_a_corrupt_header(tmp_path):
    with JournalWriter(str(tmp_path), "intent", records.ORDER_INTENT, source="abc"):
        pass
    path = files(tmp_path, "intent")[0]
    with open(path, "r+b") as f:
        f.seek(130)
        f.write(b"X")
    with pytest.raises(JournalError, match="header_crc32"):
        JournalReader(str(tmp_path), "intent")
    with open(path, "r+b") as f:
        f.write(b"NOTAJRNL")
    with pytest.raises(JournalError, match="not a Bot4 journal segment"):
        JournalReader(str(tmp_path), "intent")


def test_should_report_missing_segments(tmp_path):
    dtype = records.ORDER_INTENT
    with JournalWriter(str(tmp_path), "intent", dtype, rotate_bytes=HEADER_BYTES + dtype.itemsize) as w:
        for i in range(3):
            w.append(random_records(dtype, 1, seed=i))
    os.unlink(files(tmp_path, "intent")[1])
    reader = JournalReader(str(tmp_path), "intent")
    assert reader.missing_indices == [2] and len(reader) == 2
    lines, ok = journal.describe(str(tmp_path))
    assert not ok and any("MISSING" in line for line in lines)


def test_should_check_dtype_and_state_on_append(tmp_path):
    w = JournalWriter(str(tmp_path), "intent", records.ORDER_INTENT)
    with pytest.raises(TypeError, match="layout_hash"):
        w.append(random_records(records.ORDER, 1))
    w.append(np.empty(0, records.ORDER_INTENT))
    w.append(random_records(records.ORDER_INTENT, 1)[0])  # a single record (numpy void) is a batch of one
    w.close()
    w.close()
    with pytest.raises(JournalError, match="closed"):
        w.append(random_records(records.ORDER_INTENT, 1))
    assert len(JournalReader(str(tmp_path), "intent")) == 1
    with pytest.raises(ValueError, match="stream="):
        JournalWriter(str(tmp_path), "../escape", records.ORDER_INTENT)
    with pytest.raises(ValueError, match="rotate_bytes="):
        JournalWriter(str(tmp_path), "x", records.ORDER_INTENT, rotate_bytes=HEADER_BYTES)


def test_should_cut_off_a_batch_whose_write_failed_part_way(tmp_path, monkeypatch):
    dtype = records.ORDER_INTENT
    good = random_records(dtype, 3, seed=1)
    w = JournalWriter(str(tmp_path), "intent", dtype)
    w.append(good)
    real_write = os.write

    def disk_full_midway(fd, data):
        real_write(fd, bytes(data[:dtype.itemsize + 10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.os, "write", disk_full_midway)
    with pytest.raises(OSError):
        w.append(random_records(dtype, 4, seed=2))
    monkeypatch.setattr(journal.os, "write", real_write)
    w.append(good)
    w.close()
    reader = JournalReader(str(tmp_path), "intent")
    assert reader.torn == [] and same_bytes(reader.read_all(), np.concatenate([good, good]))


@pytest.fixture
def fdatasync_calls(monkeypatch):
    calls = []
    real = os.fdatasync

    def counting(fd):
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(journal.os, "fdatasync", counting)
    return calls


def test_should_never_fsync_under_never(tmp_path, fdatasync_calls):
    with JournalWriter(str(tmp_path), "i", records.ORDER_INTENT, fsync_policy=FsyncPolicy.NEVER) as w:
        for _ in range(5):
            w.append(random_records(records.ORDER_INTENT, 2))
        assert not w.tick(now_ns=10**18)
    assert fdatasync_calls == [] and w.fsync_count == 0


def test_should_fsync_every_batch_under_every_batch(tmp_path, fdatasync_calls):
    with JournalWriter(str(tmp_path), "i", records.ORDER_INTENT, fsync_policy=FsyncPolicy.EVERY_BATCH) as w:
        assert w.fsync_count == 1  # the new segment's header
        for _ in range(5):
            w.append(random_records(records.ORDER_INTENT, 2))
        assert w.fsync_count == 6
    assert w.fsync_count == 6  # nothing left to sync at close
    assert len(fdatasync_calls) == 6


def test_should_fsync_at_most_once_per_interval_under_interval(tmp_path, fdatasync_calls):
    now_ms = [0]
    w = JournalWriter(str(tmp_path), "i", records.ORDER_INTENT, fsync_policy=FsyncPolicy.INTERVAL,
                      fsync_interval_ms=100, clock_ns=lambda: now_ms[0] * 1_000_000)
    batch = random_records(records.ORDER_INTENT, 2)
    assert w.fsync_count == 1  # header, at t=0

    def append_at(t_ms):
        now_ms[0] = t_ms
        w.append(batch)
        return w.fsync_count

    assert append_at(50) == 1
    assert append_at(99) == 1
    assert append_at(100) == 2
    assert append_at(150) == 2
    now_ms[0] = 199
    assert not w.tick()
    now_ms[0] = 200
    assert w.tick() and w.fsync_count == 3  # a quiet stream is synced by the host's idle tick
    now_ms[0] = 400
    assert not w.tick()  # nothing unsynced
    assert append_at(410) == 4
    assert append_at(420) == 4
    w.flush()  # whatever the interval
    assert w.fsync_count == 5
    w.close()
    assert w.fsync_count == 5 and len(fdatasync_calls) == 5


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(min_value=0, max_value=40), max_size=12),
       rotate_records=st.integers(min_value=1, max_value=64),
       reopen_after=st.integers(min_value=0, max_value=12),
       batch_records=st.integers(min_value=1, max_value=50))
def test_should_read_back_exactly_what_was_appended_in_any_batching(sizes, rotate_records, reopen_after,
                                                                    batch_records):
    dtype = records.ORDER_INTENT
    data = random_records(dtype, sum(sizes), seed=len(sizes))
    rotate_bytes = HEADER_BYTES + rotate_records * dtype.itemsize
    with tempfile.TemporaryDirectory() as directory:
        w = JournalWriter(directory, "intent", dtype, fsync_policy=FsyncPolicy.NEVER, rotate_bytes=rotate_bytes)
        at = 0
        for i, n in enumerate(sizes):
            if i == reopen_after:
                w.close()
                w = JournalWriter(directory, "intent", dtype, fsync_policy=FsyncPolicy.NEVER,
                                  rotate_bytes=rotate_bytes)
            w.append(data[at:at + n])
            at += n
        w.close()
        reader = JournalReader(directory, "intent", dtype)
        assert len(reader) == len(data) and reader.torn == [] and reader.missing_indices == []
        assert same_bytes(reader.read_all(), data)
        chunks = list(reader.batches(batch_records=batch_records))
        assert all(0 < len(c) <= batch_records for c in chunks)
        assert same_bytes(np.concatenate(chunks) if chunks else np.empty(0, dtype), data)
        oversize = {n for n in sizes if n > rotate_records}  # each written whole into a segment of its own
        for s in reader.segments:
            assert s.file_bytes <= rotate_bytes or s.record_count in oversize


def test_should_print_streams_segments_counts_and_time_ranges(tmp_path, capsys):
    with JournalWriter(str(tmp_path), "market", records.MARKET_EVENT, source="synthetic/run1",
                       rotate_bytes=HEADER_BYTES + 4 * records.MARKET_EVENT.itemsize) as w:
        w.append(random_records(records.MARKET_EVENT, 3, first_ts=1_700_000_000_000_000_000))
        w.append(random_records(records.MARKET_EVENT, 3, first_ts=1_700_000_001_000_000_000))
    with JournalWriter(str(tmp_path), "exec", records.EXEC_REPORT) as w:
        w.append(random_records(records.EXEC_REPORT, 2))

    assert journal.main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "stream=market" in out and "segments=2 records=6" in out and "stream=exec" in out
    assert "first=2023-11-14T22:13:20.000000000Z last=2023-11-14T22:13:21.002000000Z" in out
    assert "market-00000002.b4j records=3" in out and "source='synthetic/run1'" in out

    done = subprocess.run([sys.executable, "-m", "pipeline.store.journal", "info", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "stream=exec" in done.stdout and "records=2" in done.stdout


def _version_1_segment(path, dtype, records_, stream, source="old writer", index=1):
    """A segment exactly as format version 1 wrote it (layout spelled out here, not taken from the code)."""
    import json
    import struct
    import zlib
    stream_raw, source_raw = stream.encode(), source.encode()
    descr = json.dumps(np.lib.format.dtype_to_descr(dtype), separators=(",", ":")).encode()
    header = bytearray(4096)
    struct.pack_into("<8sIIQQqQIIHHI", header, 0, b"BOT4JRNL", 1, 4096, journal.record_layout_hash(dtype),
                     dtype.itemsize, 1_700_000_000_000_000_000, index, 4242, 0, len(stream_raw), len(source_raw),
                     len(descr))
    header[64:64 + len(stream_raw)] = stream_raw
    header[128:128 + len(source_raw)] = source_raw
    header[256:256 + len(descr)] = descr
    struct.pack_into("<I", header, 52, zlib.crc32(header))
    with open(path, "wb") as f:
        f.write(bytes(header) + records_.tobytes())


def test_should_write_journal_id_run_id_and_universe_in_every_header(tmp_path):
    universe = {"venues": ["venue_a", "venue_b"], "symbols": ["BTC-USDT", "ETH-USDT"]}
    with JournalWriter(str(tmp_path), "intent", records.ORDER_INTENT, run_id=77, universe=universe,
                       rotate_bytes=HEADER_BYTES + records.ORDER_INTENT.itemsize) as w:
        w.append(random_records(records.ORDER_INTENT, 1))
        w.append(random_records(records.ORDER_INTENT, 1))
    with JournalWriter(str(tmp_path), "exec", records.EXEC_REPORT, run_id=78) as w:
        w.append(random_records(records.EXEC_REPORT, 1))
    journal_id = journal.journal_id(str(tmp_path))
    assert journal_id > 0
    intents = JournalReader(str(tmp_path), "intent").segments
    assert len(intents) == 2
    for s in intents:
        h = s.header
        assert (h.format_version, h.journal_id, h.run_id, h.universe) == (2, journal_id, 77, universe)
    h = JournalReader(str(tmp_path), "exec").segments[0].header
    assert (h.journal_id, h.run_id, h.universe) == (journal_id, 78, {"venues": [], "symbols": []})
    other = tmp_path / "other"
    JournalWriter(str(other), "exec", records.EXEC_REPORT).close()
    assert journal.journal_id(str(other)) not in (0, journal_id)  # a new directory, a new journal


def test_should_read_version_1_segments_and_keep_their_journal_identity(tmp_path):
    dtype = records.MARKET_EVENT
    old = random_records(dtype, 5)
    _version_1_segment(os.path.join(tmp_path, journal.segment_name("market", 1)), dtype, old, "market")
    reader = JournalReader(str(tmp_path), "market")
    h = reader.segments[0].header
    assert (h.format_version, h.run_id, h.journal_id, h.universe, h.source) == (
        1, 0, 0, {"venues": [], "symbols": []}, "old writer")
    assert same_bytes(reader.read_all(), old)
    derived = journal.journal_id(str(tmp_path))
    assert derived > 0 and journal.journal_id(str(tmp_path)) == derived  # stable without an id file
    lines, ok = journal.describe(str(tmp_path))
    assert ok and any("records=5" in line for line in lines)
    new = random_records(dtype, 3, seed=9)
    with JournalWriter(str(tmp_path), "market", dtype, run_id=5) as w:  # a new writer continues the old journal
        w.append(new)
    assert journal.journal_id(str(tmp_path)) == derived
    reader = JournalReader(str(tmp_path), "market")
    assert [s.header.format_version for s in reader.segments] == [1, 2]
    assert reader.segments[1].header.journal_id == derived
    assert same_bytes(reader.read_all(), np.concatenate([old, new]))


def test_should_create_journal_files_owner_only(tmp_path):
    previous = os.umask(0o022)
    try:
        directory = tmp_path / "deep" / "journal"
        with JournalWriter(str(directory), "market", records.MARKET_EVENT) as w:
            w.append(random_records(records.MARKET_EVENT, 2))
    finally:
        os.umask(previous)
    assert os.stat(directory).st_mode & 0o777 == 0o700
    entries = os.listdir(directory)
    assert {".market.lock", journal.ID_FILE, journal.segment_name("market", 1)} <= set(entries)
    for entry in entries:
        assert os.stat(directory / entry).st_mode & 0o777 == 0o600, entry
