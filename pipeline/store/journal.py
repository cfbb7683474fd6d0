"""The journal: append-only segment files of raw records, one record dtype per stream (event sourcing).

A journal directory holds streams; a stream is a sequence of segment files ``<stream>-<index>.b4j``
(index zero-padded to 8 digits, dense from 1). A directory is one journal: its random 63-bit journal id is
in ``.journal_id`` (hex, created once, before any segment, by the first writer) and in every segment header,
so a database that records several journals tells them apart (and a directory emptied and reused is a new
journal). A segment is a 4096-byte header followed by records of the stream's dtype back to back, exactly as
they sat in the ring. Little-endian header, format version 2::

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
       256 2560  descr            JSON of the dtype's array-interface descr (numpy.lib.format.dtype_to_descr),
                                  so a reader without this code can decode the records; NUL-padded
      2816    8  journal_id       u64, the directory's journal id
      2824    8  run_id           u64, the run that wrote the segment (the control block's G_RUN_ID; fused
                                  mode draws one); 0 = unknown
      2832    4  universe_len     u32, bytes of UTF-8 at offset 2880
      2836   44  reserved         zero
      2880 1216  universe         JSON {"venues": [...], "symbols": [...]}: the names behind the records'
                                  venue and symbol indices in this run; NUL-padded
      4096       records          record_size bytes each; a partial record at the end is a torn tail

Version 1 (still read) is the same up to offset 256, with descr filling the rest of the header and no
journal id, run id or universe: such segments read as run 0 with an empty universe, and a directory of
version-1 segments only has a journal id derived from its oldest segment header (stable; a new writer in
that directory adopts it).

The header is written with one write() before any record; a batch is one write() and never straddles
segments, so a crash can tear only the end of the segment being written. A reopened stream continues in a
new segment (the old one is never touched), so every segment may end torn; readers ignore the partial
bytes and report them. One writer per stream, enforced with an flock on ``.<stream>.lock``. Everything a
writer creates is owner-only: a new directory 0700, files 0600 (records can hold positions and orders).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import enum
import fcntl
import hashlib
import json
import os
import re
import secrets
import struct
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Self

import numpy as np
from numpy.lib import format as npformat

from shm.segment import layout_hash

MAGIC = b"BOT4JRNL"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
ID_FILE = ".journal_id"
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
_DESCR_OFFSET, _DESCR_MAX = 256, 2560
_DESCR_MAX_V1 = HEADER_BYTES - _DESCR_OFFSET
_IDS = struct.Struct("<QQI")
_IDS_OFFSET = _DESCR_OFFSET + _DESCR_MAX
_UNIVERSE_OFFSET = _IDS_OFFSET + 64
_UNIVERSE_MAX = HEADER_BYTES - _UNIVERSE_OFFSET
assert _FIXED.size == _STREAM_OFFSET and _IDS.size <= 64
MAX_ID = 2**63 - 1  # ids are stored as PostgreSQL bigint

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


def empty_universe() -> dict:
    return {"venues": [], "symbols": []}


def _universe(value: dict | None) -> dict:
    """``{"venues": [names], "symbols": [names]}`` from a writer's argument (None: unknown, empty)."""
    if value is None:
        return empty_universe()
    try:
        out = {key: [str(name) for name in value.get(key, ())] for key in ("venues", "symbols")}
    except (AttributeError, TypeError):
        raise ValueError(f"universe={value!r} must be a dict of 'venues' and 'symbols' name lists") from None
    if set(value) - set(out):
        raise ValueError(f"universe keys {sorted(set(value) - set(out))} unknown; use 'venues' and 'symbols'")
    return out


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
    journal_id: int = 0     # version 1: 0 (the directory's journal id applies)
    run_id: int = 0         # version 1: 0, unknown
    universe: dict = field(default_factory=empty_universe)

    @property
    def dtype(self) -> np.dtype:
        return dtype_from_json(self.descr_json)


def _text(value: str, what: str, limit: int) -> bytes:
    raw = value.encode()
    if len(raw) > limit or b"\0" in raw:
        raise ValueError(f"{what}={value!r} must be at most {limit} bytes of UTF-8 without NUL")
    return raw


def _check_id(value: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise ValueError(f"{what}={value!r} must be an integer in [0, 2**63 - 1]")
    return value


def pack_header(dtype: np.dtype, stream: str, source: str, segment_index: int, created_ns: int,
                writer_pid: int, journal_id: int = 0, run_id: int = 0, universe: dict | None = None) -> bytes:
    stream_raw = _text(stream, "stream", _STREAM_MAX)
    source_raw = _text(source, "source", _SOURCE_MAX)
    descr_raw = dtype_to_json(dtype).encode()
    if len(descr_raw) > _DESCR_MAX:
        raise ValueError(f"dtype descr is {len(descr_raw)} bytes of JSON; the header holds {_DESCR_MAX}")
    universe_raw = json.dumps(_universe(universe), ensure_ascii=False, separators=(",", ":")).encode()
    if len(universe_raw) > _UNIVERSE_MAX:
        raise ValueError(f"universe (venue and symbol names) is {len(universe_raw)} bytes of JSON; the header "
                         f"holds {_UNIVERSE_MAX}: use shorter names")
    buf = bytearray(HEADER_BYTES)
    _FIXED.pack_into(buf, 0, MAGIC, FORMAT_VERSION, HEADER_BYTES, record_layout_hash(dtype), dtype.itemsize,
                     created_ns, segment_index, writer_pid & 0xFFFF_FFFF, 0, len(stream_raw), len(source_raw),
                     len(descr_raw))
    buf[_STREAM_OFFSET:_STREAM_OFFSET + len(stream_raw)] = stream_raw
    buf[_SOURCE_OFFSET:_SOURCE_OFFSET + len(source_raw)] = source_raw
    buf[_DESCR_OFFSET:_DESCR_OFFSET + len(descr_raw)] = descr_raw
    _IDS.pack_into(buf, _IDS_OFFSET, _check_id(journal_id, "journal_id"), _check_id(run_id, "run_id"),
                   len(universe_raw))
    buf[_UNIVERSE_OFFSET:_UNIVERSE_OFFSET + len(universe_raw)] = universe_raw
    struct.pack_into("<I", buf, _CRC_OFFSET, zlib.crc32(buf))
    return bytes(buf)


def unpack_header(raw: bytes, path: str) -> SegmentHeader:
    """Parse and verify a segment header (version 1 or 2); JournalError (naming ``path``) if it is not one."""
    if len(raw) < HEADER_BYTES:
        raise JournalError(f"segment path={path!r}: header is {len(raw)} bytes, expected {HEADER_BYTES}")
    (magic, version, header_bytes, found_hash, record_size, created_ns, index, pid, crc,
     stream_len, source_len, descr_len) = _FIXED.unpack_from(raw, 0)
    if magic != MAGIC:
        raise JournalError(f"segment path={path!r}: magic={magic!r} expected={MAGIC!r}; not a Bot4 journal segment")
    if version not in READABLE_VERSIONS:
        raise JournalError(f"segment path={path!r}: format_version={version}, this code reads "
                           f"{list(READABLE_VERSIONS)}; written by other code")
    blank = bytearray(raw[:HEADER_BYTES])
    blank[_CRC_OFFSET:_CRC_OFFSET + 4] = b"\0\0\0\0"
    if zlib.crc32(blank) != crc:
        raise JournalError(f"segment path={path!r}: header_crc32={crc:#010x} does not match its contents; "
                           "the header is corrupt")
    descr_max = _DESCR_MAX_V1 if version == 1 else _DESCR_MAX
    if header_bytes != HEADER_BYTES or record_size <= 0 or descr_len > descr_max:
        raise JournalError(f"segment path={path!r}: header_bytes={header_bytes} record_size={record_size} "
                           f"descr_len={descr_len} invalid")
    extra = {}
    if version >= 2:
        journal_id, run_id, universe_len = _IDS.unpack_from(raw, _IDS_OFFSET)
        if universe_len > _UNIVERSE_MAX:
            raise JournalError(f"segment path={path!r}: universe_len={universe_len} invalid")
        try:
            universe = _universe(json.loads(raw[_UNIVERSE_OFFSET:_UNIVERSE_OFFSET + universe_len].decode()))
        except (ValueError, UnicodeDecodeError) as exc:
            raise JournalError(f"segment path={path!r}: universe is not valid JSON ({exc})") from None
        extra = {"journal_id": journal_id, "run_id": run_id, "universe": universe}
    return SegmentHeader(
        format_version=version, header_bytes=header_bytes, layout_hash=found_hash, record_size=record_size,
        created_ns=created_ns, segment_index=index, writer_pid=pid,
        stream=raw[_STREAM_OFFSET:_STREAM_OFFSET + stream_len].decode(),
        source=raw[_SOURCE_OFFSET:_SOURCE_OFFSET + source_len].decode(),
        descr_json=raw[_DESCR_OFFSET:_DESCR_OFFSET + descr_len].decode(), **extra)


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


def make_directory(directory: str) -> None:
    """Create ``directory`` owner-only (0700 whatever the umask). An existing one keeps its mode: it may be
    shared (say /tmp) and is not ours to change."""
    try:
        os.makedirs(directory, mode=0o700)
    except FileExistsError:
        return
    os.chmod(directory, 0o700)


def _all_segments(directory: str) -> list[tuple[str, int, str]]:
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted((m["stream"], int(m["index"]), os.path.join(directory, entry))
                  for entry in entries if (m := _SEGMENT_NAME.fullmatch(entry)))


def _read_id_file(path: str) -> int:
    with open(path, encoding="ascii") as f:
        text = f.read().strip()
    try:
        value = int(text, 16)
    except ValueError:
        value = -1
    if not 0 < value <= MAX_ID:
        raise JournalError(f"journal id file path={path!r} holds {text!r}, expected a hex id in [1, 2**63 - 1]")
    return value


def _id_from_segments(directory: str) -> int:
    """The id of a directory without an id file: the one in its version-2 headers, else (version 1 only)
    one derived from its oldest segment header, stable while that segment exists; 0 without segments."""
    oldest = None
    for stream, index, path in _all_segments(directory):
        try:
            with open(path, "rb") as f:
                raw = f.read(HEADER_BYTES)
        except FileNotFoundError:
            continue
        if len(raw) < HEADER_BYTES or not any(raw):
            continue  # torn header
        header = unpack_header(raw, path)
        if header.journal_id:
            return header.journal_id
        key = (header.created_ns, stream, index)
        if oldest is None or key < oldest[0]:
            oldest = (key, raw)
    if oldest is None:
        return 0
    return int.from_bytes(hashlib.blake2b(oldest[1], digest_size=8).digest(), "little") & MAX_ID or 1


def journal_id(directory: str, create: bool = False) -> int:
    """The journal id of ``directory``; 0 if it has none yet (no id file, no segment) and not ``create``.

    ``create``: write the id file if missing (a writer does, before its first segment). Creation is one
    link() of a complete file, so concurrent writers agree on one id and a reader never sees a partial one.
    """
    path = os.path.join(directory, ID_FILE)
    try:
        return _read_id_file(path)
    except FileNotFoundError:
        pass
    value = _id_from_segments(directory)
    if not create:
        return value
    value = value or (secrets.randbits(63) or 1)
    scratch = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, f"{value:016x}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(scratch, path)
    except FileExistsError:
        return _read_id_file(path)  # another writer was first: its id holds
    finally:
        os.unlink(scratch)
    _fsync_directory(directory)
    return value


class JournalWriter:
    """Appends batches of one record dtype to a stream. Not safe for use from multiple threads; one
    writer per stream across processes (a second one raises JournalError at open).

    Opening a stream that already has segments starts a new segment after the last one; a previous
    segment whose layout differs is refused (JournalLayoutError) rather than making the stream
    unreadable. ``resumed_torn_bytes`` reports a partial record a crash left at the end of that segment.
    A batch larger than ``rotate_bytes`` is still written whole, into a segment of its own.

    ``run_id`` and ``universe`` (``{"venues": [...], "symbols": [...]}``, the names behind the records'
    indices) go into every segment header with the directory's journal id (created here if it has none).
    """

    def __init__(self, directory: str, stream: str, dtype: np.dtype, source: str = "",
                 fsync_policy: FsyncPolicy = FsyncPolicy.INTERVAL,
                 rotate_bytes: int = DEFAULT_ROTATE_BYTES,
                 fsync_interval_ms: float = DEFAULT_FSYNC_INTERVAL_MS,
                 clock_ns: Callable[[], int] = time.monotonic_ns, run_id: int = 0, universe: dict | None = None):
        _check_stream(stream)
        self.directory = directory
        self.stream = stream
        self.dtype = np.dtype(dtype)
        self.source = source
        self.fsync_policy = FsyncPolicy(fsync_policy)
        self.layout_hash = record_layout_hash(self.dtype)
        _text(source, "source", _SOURCE_MAX)
        self.run_id = _check_id(run_id, "run_id")
        self.universe = _universe(universe)
        self.journal_id = 0
        pack_header(self.dtype, stream, source, 1, 0, 0, 0, self.run_id, self.universe)  # refuse bad input now
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

        make_directory(directory)
        self._lock_fd = self._lock()
        try:
            self.journal_id = journal_id(directory, create=True)
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
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # also one an older writer left 0644
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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._fd, self.path, self.segment_index, self._segment_bytes = fd, path, index, 0
        self.segments_created += 1
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            self._write_all(memoryview(pack_header(self.dtype, self.stream, self.source, index, time.time_ns(),
                                                   os.getpid(), self.journal_id, self.run_id, self.universe)))
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
        journals = {s.header.journal_id for s in headed if s.header.journal_id}
        if len(journals) > 1:
            raise JournalError(f"stream={stream!r} in directory={directory!r} holds segments of journals "
                               f"{sorted(journals)}; segments were copied between journals")
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
    try:
        lines.append(f"journal_id={journal_id(directory):#018x}")
    except JournalError as exc:
        lines.append(f"journal_id ERROR {exc}")
        ok = False
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
            h = s.header
            run = f" run_id={h.run_id:#x}" if h.format_version >= 2 else f" format_version={h.format_version}"
            lines.append(f"  {os.path.basename(s.path)} records={s.record_count} bytes={s.file_bytes} "
                         f"created={_fmt_ns(h.created_ns)} source={h.source!r} pid={h.writer_pid}{run}{span}{torn}")
        if reader.missing_indices:
            lines.append(f"  MISSING segment indices {reader.missing_indices}")
            ok = False
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.store.journal", description="Inspect journal files.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="streams, segments, record counts, origin_ts ranges")
    info.add_argument("directory")
    args = parser.parse_args(argv)
    lines, ok = describe(args.directory)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
