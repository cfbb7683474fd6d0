"""The journal: append-only segment files of raw records, one record dtype per stream (event sourcing).

A journal directory holds streams; a stream is a sequence of segment files ``<stream>-<index>.b4j``
(index zero-padded to 8 digits, dense from 1). A segment is a 4096-byte header followed by records of the
stream's dtype back to back, exactly as they sat in the ring. Little-endian header::

    offset size  field
         0    8  magic            b"BOT4JRNL"
         8    4  format_version   u32, FORMAT_VERSION
        12    4  header_bytes     u32, offset of the first record (4096)
        16    8  layout_hash      u64, shm.segment.layout_hash(dtype); a reader refuses a mismatch
        24    8  record_size      u64, bytes per record (dtype.itemsize)
        32    8  created_ns       i64, CLOCK_REALTIME when the segment was created
        40    8  segment_index    u64, the index in the file name
        48    4  writer_pid       u32
        52    4  header_crc32     u32, zlib.crc32 of the 4096 header bytes with this field zeroed
        56    2  stream_len       u16, bytes of UTF-8 at offset 64
        58    2  source_len       u16, bytes of UTF-8 at offset 128
        60    4  descr_len        u32, bytes of UTF-8 at offset 256
        64   64  stream           the stream name, NUL-padded
       128  128  source           who wrote it (run name, source), NUL-padded
       256 3840  descr            JSON of the dtype's array-interface descr (numpy.lib.format.dtype_to_descr),
                                  so a reader without this code can decode the records; NUL-padded
      4096       records          record_size bytes each; a partial record at the end is a torn tail

The header is written with one write() before any record; a batch is one write() and never straddles
segments, so a crash can tear only the end of the segment being written. A reopened stream continues in a
new segment (the old one is never touched), so every segment may end torn; readers ignore the partial
bytes and report them. One writer per stream, enforced with an flock on ``.<stream>.lock``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import enum
import fcntl
import json
import os
import re
import struct
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Self

import numpy as np
from numpy.lib import format as npformat

from shm.segment import layout_hash

MAGIC = b"BOT4JRNL"
FORMAT_VERSION = 1
HEADER_BYTES = 4096
SUFFIX = ".b4j"
INDEX_DIGITS = 8
DEFAULT_ROTATE_BYTES = 256 * 1024 * 1024
DEFAULT_FSYNC_INTERVAL_MS = 100
DEFAULT_BATCH_RECORDS = 65536

_FIXED = struct.Struct("<8sIIQQqQIIHHI")
_CRC_OFFSET = 52
_STREAM_OFFSET, _STREAM_MAX = 64, 64
_SOURCE_OFFSET, _SOURCE_MAX = 128, 128
_DESCR_OFFSET, _DESCR_MAX = 256, HEADER_BYTES - 256
assert _FIXED.size == _STREAM_OFFSET

_STREAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_SEGMENT_NAME = re.compile(
    rf"(?P<stream>[A-Za-z0-9_][A-Za-z0-9_.-]*)-(?P<index>\d{{{INDEX_DIGITS},}}){re.escape(SUFFIX)}")


class JournalError(RuntimeError):
    """A journal cannot be written or read; the message names the file and why."""


class JournalLayoutError(JournalError):
    """A segment holds records of another layout than expected."""


class FsyncPolicy(enum.Enum):
    """When a writer forces appended records to stable storage.

    A process crash (kill -9, segfault, an exception) loses nothing append() returned from under any
    policy: write() has copied the batch into the kernel's page cache, which outlives the process. A crash
    *inside* append() can leave part of that batch: its whole records are kept, the partial one is ignored.
    The policies differ only on power failure or a kernel crash:

    NEVER        the OS writes back when it likes (Linux: dirty pages older than ~30 s,
                 vm.dirty_expire_centisecs); up to that much is lost, and a new segment may vanish whole.
                 No fsync cost on the writer.
    EVERY_BATCH  fdatasync after every append(): nothing append() returned from is lost. Costs one disk
                 flush per batch (from tens of µs on NVMe to ms on other disks), paid by the appender.
    INTERVAL     fdatasync at most every ``fsync_interval_ms`` (default 100 ms), checked in append() and
                 tick(): at most the batches of the last interval are lost, provided append() or tick() keeps
                 being called: a stream that goes quiet stays at risk (as NEVER) until the next append(),
                 tick(), flush() or close().
    """

    NEVER = "never"
    EVERY_BATCH = "every_batch"
    INTERVAL = "interval"


def record_layout_hash(dtype: np.dtype) -> int:
    """The layout hash stored in and checked against every segment header of a stream of ``dtype``."""
    return layout_hash(np.dtype(dtype))


def dtype_to_json(dtype: np.dtype) -> str:
    return json.dumps(npformat.dtype_to_descr(np.dtype(dtype)), separators=(",", ":"))


def _descr_from_json(value):
    # JSON turned every tuple (field entry, shape, (title, name)) into a list; descr_to_dtype wants tuples.
    if isinstance(value, str):
        return value
    fields = []
    for entry in value:
        name, fmt, *shape = entry
        item = (tuple(name) if isinstance(name, list) else name, _descr_from_json(fmt))
        if shape:
            item += (tuple(shape[0]),)
        fields.append(item)
    return fields


def dtype_from_json(text: str) -> np.dtype:
    """The dtype whose ``dtype_to_json`` is ``text`` (unnamed alignment gaps come back as gaps)."""
    return npformat.descr_to_dtype(_descr_from_json(json.loads(text)))


def segment_name(stream: str, index: int) -> str:
    return f"{stream}-{index:0{INDEX_DIGITS}d}{SUFFIX}"


def _check_stream(stream: str) -> None:
    if not _STREAM_NAME.fullmatch(stream):
        raise ValueError(f"stream={stream!r} must be 1-64 of [A-Za-z0-9_.-], not starting with '.' or '-'")


def segment_paths(directory: str, stream: str) -> list[tuple[int, str]]:
    """``(index, path)`` of the stream's segments in index order."""
    _check_stream(stream)
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        m = _SEGMENT_NAME.fullmatch(entry)
        if m and m["stream"] == stream:
            out.append((int(m["index"]), os.path.join(directory, entry)))
    return sorted(out)


def list_streams(directory: str) -> list[str]:
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted({m["stream"] for m in map(_SEGMENT_NAME.fullmatch, entries) if m})


@dataclass(frozen=True)
class SegmentHeader:
    format_version: int
    header_bytes: int
    layout_hash: int
    record_size: int
    created_ns: int
    segment_index: int
    writer_pid: int
    stream: str
    source: str
    descr_json: str

    @property
    def dtype(self) -> np.dtype:
        return dtype_from_json(self.descr_json)


def _text(value: str, what: str, limit: int) -> bytes:
    raw = value.encode()
    if len(raw) > limit or b"\0" in raw:
        raise ValueError(f"{what}={value!r} must be at most {limit} bytes of UTF-8 without NUL")
    return raw


def pack_header(dtype: np.dtype, stream: str, source: str, segment_index: int, created_ns: int,
                writer_pid: int) -> bytes:
    stream_raw = _text(stream, "stream", _STREAM_MAX)
    source_raw = _text(source, "source", _SOURCE_MAX)
    descr_raw = dtype_to_json(dtype).encode()
    if len(descr_raw) > _DESCR_MAX:
        raise ValueError(f"dtype descr is {len(descr_raw)} bytes of JSON; the header holds {_DESCR_MAX}")
    buf = bytearray(HEADER_BYTES)
    _FIXED.pack_into(buf, 0, MAGIC, FORMAT_VERSION, HEADER_BYTES, record_layout_hash(dtype), dtype.itemsize,
                     created_ns, segment_index, writer_pid & 0xFFFF_FFFF, 0, len(stream_raw), len(source_raw),
                     len(descr_raw))
    buf[_STREAM_OFFSET:_STREAM_OFFSET + len(stream_raw)] = stream_raw
    buf[_SOURCE_OFFSET:_SOURCE_OFFSET + len(source_raw)] = source_raw
    buf[_DESCR_OFFSET:_DESCR_OFFSET + len(descr_raw)] = descr_raw
    struct.pack_into("<I", buf, _CRC_OFFSET, zlib.crc32(buf))
    return bytes(buf)


def unpack_header(raw: bytes, path: str) -> SegmentHeader:
    """Parse and verify a segment header; JournalError (naming ``path``) if it is not one."""
    if len(raw) < HEADER_BYTES:
        raise JournalError(f"segment path={path!r}: header is {len(raw)} bytes, expected {HEADER_BYTES}")
    (magic, version, header_bytes, found_hash, record_size, created_ns, index, pid, crc,
     stream_len, source_len, descr_len) = _FIXED.unpack_from(raw, 0)
    if magic != MAGIC:
        raise JournalError(f"segment path={path!r}: magic={magic!r} expected={MAGIC!r}; not a Bot4 journal segment")
    if version != FORMAT_VERSION:
        raise JournalError(f"segment path={path!r}: format_version={version} expected={FORMAT_VERSION}; "
                           "written by other code")
    blank = bytearray(raw[:HEADER_BYTES])
    blank[_CRC_OFFSET:_CRC_OFFSET + 4] = b"\0\0\0\0"
    if zlib.crc32(blank) != crc:
        raise JournalError(f"segment path={path!r}: header_crc32={crc:#010x} does not match its contents; "
                           "the header is corrupt")
    if header_bytes != HEADER_BYTES or record_size <= 0:
        raise JournalError(f"segment path={path!r}: header_bytes={header_bytes} record_size={record_size} invalid")
    return SegmentHeader(
        format_version=version, header_bytes=header_bytes, layout_hash=found_hash, record_size=record_size,
        created_ns=created_ns, segment_index=index, writer_pid=pid,
        stream=raw[_STREAM_OFFSET:_STREAM_OFFSET + stream_len].decode(),
        source=raw[_SOURCE_OFFSET:_SOURCE_OFFSET + source_len].decode(),
        descr_json=raw[_DESCR_OFFSET:_DESCR_OFFSET + descr_len].decode())


@dataclass(frozen=True)
class SegmentInfo:
    """One segment as a reader found it. ``header`` is None for a torn header (a crash right after the
    file was created, or a power failure before its header reached the disk); such a segment holds no
    records and all its ``torn_bytes`` are ignored."""

    path: str
    index: int
    header: SegmentHeader | None
    file_bytes: int
    record_count: int
    torn_bytes: int


def read_segment_info(path: str, index: int) -> SegmentInfo:
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
        file_bytes = os.fstat(f.fileno()).st_size
    if len(raw) < HEADER_BYTES or not any(raw):
        return SegmentInfo(path, index, None, file_bytes, 0, file_bytes)
    header = unpack_header(raw, path)
    payload_bytes = file_bytes - header.header_bytes
    return SegmentInfo(path, index, header, file_bytes, payload_bytes // header.record_size,
                       payload_bytes % header.record_size)


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournalWriter:
    """Appends batches of one record dtype to a stream. Not safe for use from multiple threads; one
    writer per stream across processes (a second one raises JournalError at open).

    Opening a stream that already has segments starts a new segment after the last one; a previous
    segment whose layout differs is refused (JournalLayoutError) rather than making the stream
    unreadable. ``resumed_torn_bytes`` reports a partial record a crash left at the end of that segment.
    A batch larger than ``rotate_bytes`` is still written whole, into a segment of its own.
    """

    def __init__(self, directory: str, stream: str, dtype: np.dtype, source: str = "",
                 fsync_policy: FsyncPolicy = FsyncPolicy.INTERVAL,
                 rotate_bytes: int = DEFAULT_ROTATE_BYTES,
                 fsync_interval_ms: float = DEFAULT_FSYNC_INTERVAL_MS,
                 clock_ns: Callable[[], int] = time.monotonic_ns):
        _check_stream(stream)
        self.directory = directory
        self.stream = stream
        self.dtype = np.dtype(dtype)
        self.source = source
        self.fsync_policy = FsyncPolicy(fsync_policy)
        self.layout_hash = record_layout_hash(self.dtype)
        _text(source, "source", _SOURCE_MAX)
        if rotate_bytes < HEADER_BYTES + self.dtype.itemsize:
            raise ValueError(f"rotate_bytes={rotate_bytes} must hold the header and one record "
                             f"({HEADER_BYTES + self.dtype.itemsize} bytes)")
        if fsync_interval_ms < 0:
            raise ValueError(f"fsync_interval_ms={fsync_interval_ms} must be >= 0")
        self.rotate_bytes = rotate_bytes
        self.fsync_interval_ns = int(fsync_interval_ms * 1_000_000)
        self._clock_ns = clock_ns

        self.records_written = 0
        self.bytes_written = 0
        self.segments_created = 0
        self.fsync_count = 0
        self.fsync_total_ns = 0
        self.resumed_torn_bytes = 0
        self.segment_index = 0
        self.path: str | None = None
        self._fd = -1
        self._segment_bytes = 0
        self._dirty = False
        self._last_sync_ns = clock_ns()
        self._broken: str | None = None

        os.makedirs(directory, exist_ok=True)
        self._lock_fd = self._lock()
        try:
            existing = segment_paths(directory, stream)
            if existing:
                self._check_previous(existing[-1])
            self._open_segment(existing[-1][0] + 1 if existing else 1)
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise

    def _lock(self) -> int:
        path = os.path.join(self.directory, f".{self.stream}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise JournalError(f"stream={self.stream!r} in directory={self.directory!r} is being written by "
                               f"pid={holder}; one writer per stream") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _check_previous(self, last: tuple[int, str]) -> None:
        info = read_segment_info(last[1], last[0])
        if info.header is None:
            return
        if info.header.layout_hash != self.layout_hash:
            raise JournalLayoutError(
                f"segment path={info.path!r} of stream={self.stream!r} has layout_hash="
                f"{info.header.layout_hash:#x}, this writer's dtype has layout_hash={self.layout_hash:#x}; "
                "write the new layout to another directory or stream")
        self.resumed_torn_bytes = info.torn_bytes

    def _open_segment(self, index: int) -> None:
        path = os.path.join(self.directory, segment_name(self.stream, index))
        # O_EXCL: a writer never overwrites; O_APPEND: after a failed batch is cut off, the next one
        # lands at the new end of file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._fd, self.path, self.segment_index, self._segment_bytes = fd, path, index, 0
        self.segments_created += 1
        try:
            self._write_all(memoryview(pack_header(self.dtype, self.stream, self.source, index, time.time_ns(),
                                                   os.getpid())))
            if self.fsync_policy is not FsyncPolicy.NEVER:
                self._sync()
                _fsync_directory(self.directory)
        except BaseException as exc:
            self._broken = f"creating segment path={path!r} failed: {exc!r}"
            raise
        self._segment_bytes = HEADER_BYTES

    def _write_all(self, view: memoryview) -> None:
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])

    def _sync(self) -> None:
        start_ns = self._clock_ns()
        os.fdatasync(self._fd)
        end_ns = self._clock_ns()
        self.fsync_count += 1
        self.fsync_total_ns += end_ns - start_ns
        self._last_sync_ns = end_ns
        self._dirty = False

    def append(self, records: np.ndarray) -> None:
        """Write a batch of records with one write(); on return a process crash cannot lose it (see
        FsyncPolicy for power failure). If write() fails part-way the partial batch is cut off and the
        error raised: the segment stays whole records only."""
        if self._broken:
            raise JournalError(f"stream={self.stream!r} writer is unusable: {self._broken}")
        if self._fd < 0:
            raise JournalError(f"stream={self.stream!r} writer is closed")
        records = np.asarray(records)
        if records.dtype != self.dtype:
            raise TypeError(f"stream={self.stream!r} takes dtype layout_hash={self.layout_hash:#x}, got "
                            f"layout_hash={record_layout_hash(records.dtype):#x}")
        if records.size == 0:
            return
        raw = np.ascontiguousarray(records).reshape(-1).view(np.uint8)
        if self._segment_bytes > HEADER_BYTES and self._segment_bytes + raw.nbytes > self.rotate_bytes:
            self._rotate()
        try:
            self._write_all(memoryview(raw))
        except BaseException as exc:
            try:
                os.ftruncate(self._fd, self._segment_bytes)
            except OSError as trunc_exc:
                self._broken = (f"a write to path={self.path!r} failed ({exc!r}) and cutting off the partial "
                                f"batch failed too ({trunc_exc!r})")
            raise
        self._segment_bytes += raw.nbytes
        self.records_written += records.size
        self.bytes_written += raw.nbytes
        self._dirty = True
        if self.fsync_policy is FsyncPolicy.EVERY_BATCH:
            self._sync()
        elif self.fsync_policy is FsyncPolicy.INTERVAL:
            self.tick()

    def tick(self, now_ns: int | None = None) -> bool:
        """INTERVAL policy: fdatasync if records are unsynced and the interval has passed; True if it did.
        Call it from the host's idle loop so a quiet stream is still synced within the interval."""
        if self.fsync_policy is not FsyncPolicy.INTERVAL or not self._dirty or self._fd < 0:
            return False
        if now_ns is None:
            now_ns = self._clock_ns()
        if now_ns - self._last_sync_ns < self.fsync_interval_ns:
            return False
        self._sync()
        return True

    def flush(self) -> None:
        """Force everything appended so far to stable storage now, whatever the policy."""
        if self._fd >= 0 and self._dirty:
            self._sync()

    def _rotate(self) -> None:
        # The finished segment reaches the disk before the next one exists, so after a power failure
        # (with a policy other than NEVER) only the newest segment can be short.
        if self.fsync_policy is not FsyncPolicy.NEVER and self._dirty:
            self._sync()
        os.close(self._fd)
        self._fd = -1
        self._open_segment(self.segment_index + 1)

    def close(self) -> None:
        """Sync (unless NEVER), close the segment and release the stream. Idempotent."""
        try:
            if self._fd >= 0:
                try:
                    if self.fsync_policy is not FsyncPolicy.NEVER and self._dirty and not self._broken:
                        self._sync()
                finally:
                    os.close(self._fd)
                    self._fd = -1
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JournalReader:
    """Reads a stream's records across its segments in index order, as the files stood when it was made
    (a live writer's later appends are not seen; a record being written then shows as a torn tail).

    ``dtype`` None: the first segment's header descr defines it. Every segment must carry the same layout
    hash (JournalLayoutError otherwise). Partial trailing bytes of any segment are ignored and listed in
    ``torn`` (``torn_tail_bytes`` is the last segment's); ``missing_indices`` lists gaps in the sequence,
    i.e. deleted segments.
    """

    def __init__(self, directory: str, stream: str, dtype: np.dtype | None = None):
        self.directory = directory
        self.stream = stream
        paths = segment_paths(directory, stream)
        self.segments: list[SegmentInfo] = [read_segment_info(path, index) for index, path in paths]
        headed = [s for s in self.segments if s.header is not None]
        if dtype is None:
            if not headed:
                raise JournalError(f"stream={stream!r} in directory={directory!r} has no readable segment; "
                                   "pass dtype to read an empty stream")
            dtype = headed[0].header.dtype
        self.dtype = np.dtype(dtype)
        self.layout_hash = record_layout_hash(self.dtype)
        for s in headed:
            h = s.header
            if h.layout_hash != self.layout_hash or h.record_size != self.dtype.itemsize:
                raise JournalLayoutError(
                    f"segment path={s.path!r} has layout_hash={h.layout_hash:#x} record_size={h.record_size}, "
                    f"expected layout_hash={self.layout_hash:#x} record_size={self.dtype.itemsize}")
            if h.stream != stream or h.segment_index != s.index:
                raise JournalError(f"segment path={s.path!r} says stream={h.stream!r} "
                                   f"segment_index={h.segment_index}; the file was renamed or copied")
        self.torn = [(s.path, s.torn_bytes) for s in self.segments if s.torn_bytes]
        self.torn_tail_bytes = self.segments[-1].torn_bytes if self.segments else 0
        indices = [s.index for s in self.segments]
        self.missing_indices = sorted(set(range(indices[0], indices[-1] + 1)) - set(indices)) if indices else []
        self.record_count = sum(s.record_count for s in self.segments)

    def __len__(self) -> int:
        return self.record_count

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.batches()

    def batches(self, batch_records: int = DEFAULT_BATCH_RECORDS, mmap: bool = False) -> Iterator[np.ndarray]:
        """Batches of at most ``batch_records``, never spanning segments. ``mmap=False`` reads each into a
        fresh writable array; ``mmap=True`` yields read-only views of the files (no copy; numba compiles a
        separate specialisation for read-only arrays)."""
        if batch_records < 1:
            raise ValueError(f"batch_records={batch_records} must be >= 1")
        for s in self.segments:
            if not s.record_count:
                continue
            if mmap:
                view = np.memmap(s.path, dtype=self.dtype, mode="r", offset=s.header.header_bytes,
                                 shape=(s.record_count,))
                for start in range(0, s.record_count, batch_records):
                    yield view[start:start + batch_records]
                continue
            with open(s.path, "rb", buffering=0) as f:
                f.seek(s.header.header_bytes)
                for start in range(0, s.record_count, batch_records):
                    out = np.empty(min(batch_records, s.record_count - start), self.dtype)
                    self._read_into(f, out, s.path)
                    yield out

    @staticmethod
    def _read_into(f, out: np.ndarray, path: str) -> None:
        view = memoryview(out.view(np.uint8))
        done = 0
        while done < len(view):
            n = f.readinto(view[done:])
            if not n:
                raise JournalError(f"segment path={path!r} shrank while being read")
            done += n

    def read_all(self) -> np.ndarray:
        out = np.empty(self.record_count, self.dtype)
        at = 0
        for s in self.segments:
            if s.record_count:
                with open(s.path, "rb", buffering=0) as f:
                    f.seek(s.header.header_bytes)
                    self._read_into(f, out[at:at + s.record_count], s.path)
                at += s.record_count
        return out

    def record_at(self, segment: SegmentInfo, i: int) -> np.ndarray:
        """Record ``i`` of ``segment`` as a one-record array (for first/last timestamps without a scan)."""
        out = np.empty(1, self.dtype)
        with open(segment.path, "rb", buffering=0) as f:
            f.seek(segment.header.header_bytes + i * self.dtype.itemsize)
            self._read_into(f, out, segment.path)
        return out


def _fmt_ns(ns: int) -> str:
    t = _dt.datetime.fromtimestamp(ns // 1_000_000_000, _dt.UTC)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000:09d}Z"


def describe(directory: str) -> tuple[list[str], bool]:
    """Lines describing every stream of a journal directory, and whether all of it could be read."""
    lines, ok = [], True
    streams = list_streams(directory)
    if not streams:
        return [f"directory={directory!r}: no journal segments"], os.path.isdir(directory)
    for stream in streams:
        try:
            reader = JournalReader(directory, stream)
        except JournalError as exc:
            lines.append(f"stream={stream} ERROR {exc}")
            ok = False
            continue
        has_ts = reader.dtype.names is not None and "origin_ts" in reader.dtype.names
        with_records = [s for s in reader.segments if s.record_count]
        span = ""
        if has_ts and with_records:
            first = int(reader.record_at(with_records[0], 0)["origin_ts"][0])
            last = int(reader.record_at(with_records[-1], with_records[-1].record_count - 1)["origin_ts"][0])
            span = f" origin_ts first={_fmt_ns(first)} last={_fmt_ns(last)}"
        lines.append(f"stream={stream} layout_hash={reader.layout_hash:#018x} record_size={reader.dtype.itemsize} "
                     f"segments={len(reader.segments)} records={reader.record_count}{span}")
        for s in reader.segments:
            if s.header is None:
                lines.append(f"  {os.path.basename(s.path)} torn header: {s.file_bytes} bytes ignored")
                continue
            span = ""
            if has_ts and s.record_count:
                first = int(reader.record_at(s, 0)["origin_ts"][0])
                last = int(reader.record_at(s, s.record_count - 1)["origin_ts"][0])
                span = f" origin_ts {_fmt_ns(first)} .. {_fmt_ns(last)}"
            torn = f" torn_bytes={s.torn_bytes}" if s.torn_bytes else ""
            lines.append(f"  {os.path.basename(s.path)} records={s.record_count} bytes={s.file_bytes} "
                         f"created={_fmt_ns(s.header.created_ns)} source={s.header.source!r} "
                         f"pid={s.header.writer_pid}{span}{torn}")
        if reader.missing_indices:
            lines.append(f"  MISSING segment indices {reader.missing_indices}")
            ok = False
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.journal", description="Inspect journal files.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="streams, segments, record counts, origin_ts ranges")
    info.add_argument("directory")
    args = parser.parse_args(argv)
    lines, ok = describe(args.directory)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
