"""Named POSIX shared-memory segments with a self-describing header.

Segment layout (little-endian int64 words; every segment starts with this 128-byte line)::

    word  0  magic            0x42_4F_54_34_53_45_47_31 ("BOT4SEG1")
    word  1  version          LAYOUT_VERSION
    word  2  layout_hash      hash of the payload layout (record dtype, sizes); attach refuses a mismatch
    word  3  capacity         records (rings) or slots (control block)
    word  4  record_size      bytes per record
    word  5  creator_pid
    word  6  creator_start_ns the creator process's start time (pid reuse cannot fake liveness)
    word  7  created_ns       wall clock at creation
    word  8  total_bytes      the segment's size (header included); attach refuses a file of another size
    words 9-15 reserved
    byte 128... payload, owned by the segment's user (ring cursors, records, control words)

A segment whose creator is dead is stale: ``create`` reclaims it. Nothing is mapped before its owner and
size are checked (fstat): a segment another user owns is an error naming it, a size beyond what its header
says (or beyond MAX_SEGMENT_BYTES) is refused, and reclaiming maps the 128-byte header only. The ``Segment`` owns the mapping; views
are made with ``np.frombuffer`` (which refuses to outlive it) and must be dropped before ``close``.
"""
from __future__ import annotations

import hashlib
import mmap
import os
import pwd
import time
from dataclasses import dataclass

import numpy as np
import posix_ipc
import psutil

MAGIC = 0x424F543453454731
LAYOUT_VERSION = 2
HEADER_BYTES = 128
NAME_PREFIX = "/bot4."
SHM_DIR = "/dev/shm"
MAX_SEGMENT_BYTES = 1 << 36  # 64 GiB: far above any layout the config allows (2**24 records per ring)

(H_MAGIC, H_VERSION, H_LAYOUT_HASH, H_CAPACITY, H_RECORD_SIZE, H_CREATOR_PID, H_CREATOR_START_NS, H_CREATED_NS,
 H_TOTAL_BYTES) = range(9)


class SegmentError(RuntimeError):
    """A segment cannot be created or attached; the message says which and why."""


def layout_hash(*parts: object) -> int:
    """Stable 63-bit hash of a layout description (dtype descr, sizes, version)."""
    text = repr(tuple(p.descr if isinstance(p, np.dtype) else p for p in parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF


def process_start_ns(pid: int) -> int:
    try:
        return int(psutil.Process(pid).create_time() * 1e9)
    except psutil.NoSuchProcess:
        return -1


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped
    except (OSError, IndexError):
        return False


def process_alive(pid: int, start_ns: int = 0) -> bool:
    """``pid`` runs and is not a zombie; with its recorded start time, also that the pid was not reused."""
    return pid_alive(pid) and (start_ns <= 0 or creator_alive(pid, start_ns))


def creator_alive(pid: int, start_ns: int) -> bool:
    """A zombie is dead (only its parent has not reaped it yet: a killed supervisor's shell may never)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        now_start = int(process.create_time() * 1e9)
    except psutil.NoSuchProcess:
        return False
    # create_time has ~10 ms resolution from /proc; a reused pid starts later than that.
    return abs(now_start - start_ns) < 50_000_000


@dataclass
class Segment:
    name: str
    size: int
    mapping: mmap.mmap
    owner: bool

    @property
    def header(self) -> np.ndarray:
        return np.frombuffer(self.mapping, dtype=np.int64, count=HEADER_BYTES // 8)

    def payload(self, offset: int, dtype, count: int) -> np.ndarray:
        """A typed view of the payload at ``offset`` bytes past the header."""
        return np.frombuffer(self.mapping, dtype=dtype, count=count, offset=HEADER_BYTES + offset)

    def close(self) -> None:
        try:
            self.mapping.close()
        except BufferError:
            # A view still exists; the OS unmaps at exit. Never leave a dangling view (segfault).
            pass

    def unlink(self) -> None:
        try:
            posix_ipc.unlink_shared_memory(self.name)
        except posix_ipc.ExistentialError:
            pass


def _path(name: str) -> str:
    return f"{SHM_DIR}/{name.lstrip('/')}"


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _check_owner(name: str, st: os.stat_result) -> None:
    if st.st_uid != os.geteuid():
        owner = _owner_name(st.st_uid)
        raise SegmentError(f"segment {_path(name)} belongs to {owner} (uid {st.st_uid}), not to this user: "
                           f"choose another run.name (--name), or ask {owner} or root to remove {_path(name)}")


def _open(name: str) -> tuple[posix_ipc.SharedMemory, os.stat_result] | None:
    """Open an existing segment and check its owner; None if it does not exist. The caller closes the fd."""
    try:
        shm = posix_ipc.SharedMemory(name, 0)
    except posix_ipc.ExistentialError:
        return None
    try:
        st = os.fstat(shm.fd)
        _check_owner(name, st)
    except BaseException:
        shm.close_fd()
        raise
    return shm, st


def _read_header(fd: int) -> np.ndarray:
    head = mmap.mmap(fd, HEADER_BYTES, access=mmap.ACCESS_READ)
    try:
        return np.frombuffer(head, dtype=np.int64, count=HEADER_BYTES // 8).copy()
    finally:
        head.close()


def _check_create_size(name: str, size: int) -> None:
    stats = os.statvfs(SHM_DIR)
    free = stats.f_bavail * stats.f_frsize
    limits = []
    if size > MAX_SEGMENT_BYTES:
        limits.append(f"the cap of {MAX_SEGMENT_BYTES:,}")
    if size > free:  # tmpfs pages are allocated on first touch: a ring bigger than this dies of SIGBUS later
        limits.append(f"the {free:,} bytes free in {SHM_DIR}")
    if limits:
        raise SegmentError(f"refusing to create segment {_path(name)} of {size:,} bytes: more than "
                           f"{' and '.join(limits)}; lower rings.capacity / journal.tap_capacity")


def create(name: str, payload_bytes: int, layout: int, capacity: int, record_size: int) -> Segment:
    """Create a segment; a stale one (creator dead) is reclaimed, a live one is an error. Nothing is left
    behind when creation fails."""
    if not name.startswith(NAME_PREFIX):
        raise SegmentError(f"segment name={name!r} must start with {NAME_PREFIX!r}")
    size = HEADER_BYTES + payload_bytes
    _check_create_size(name, size)
    try:
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600)
    except posix_ipc.ExistentialError:
        if not reclaim_if_stale(name):
            raise SegmentError(f"segment name={name!r} exists and its creator is alive; stop that run first") from None
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600)
    try:
        os.ftruncate(shm.fd, size)
        mapping = mmap.mmap(shm.fd, size)
    except OSError as exc:
        posix_ipc.unlink_shared_memory(name)
        raise SegmentError(f"cannot create segment {_path(name)} of {size:,} bytes: {exc}") from None
    finally:
        shm.close_fd()
    seg = Segment(name, size, mapping, owner=True)
    h = seg.header
    h[H_LAYOUT_HASH] = layout
    h[H_CAPACITY] = capacity
    h[H_RECORD_SIZE] = record_size
    h[H_CREATOR_PID] = os.getpid()
    h[H_CREATOR_START_NS] = process_start_ns(os.getpid())
    h[H_CREATED_NS] = time.time_ns()
    h[H_TOTAL_BYTES] = size
    h[H_VERSION] = LAYOUT_VERSION
    h[H_MAGIC] = MAGIC  # last: a reader seeing the magic sees a complete header
    del h
    return seg


def attach(name: str, layout: int) -> Segment:
    """Attach to an existing segment, refusing one of another owner, layout, version or size."""
    opened = _open(name)
    if opened is None:
        raise SegmentError(f"segment name={name!r} does not exist; is the supervisor running?")
    shm, st = opened
    try:
        problem = None
        if st.st_size < HEADER_BYTES:
            problem = f"size={st.st_size} is smaller than its header (not initialised)"
        else:
            h = _read_header(shm.fd)
            magic, version, found, total = int(h[H_MAGIC]), int(h[H_VERSION]), int(h[H_LAYOUT_HASH]), int(h[H_TOTAL_BYTES])
            if magic != MAGIC:
                problem = f"magic={magic:#x} expected={MAGIC:#x} (not a Bot4 segment or not initialised)"
            elif version != LAYOUT_VERSION:
                problem = f"version={version} expected={LAYOUT_VERSION}"
            elif found != layout:
                problem = f"layout_hash={found:#x} expected={layout:#x}: built from other code; rebuild both sides"
            elif st.st_size != total or total > MAX_SEGMENT_BYTES:
                problem = (f"size={st.st_size:,} bytes but its header says {total:,} (at most "
                           f"{MAX_SEGMENT_BYTES:,}): resized by someone else")
        if problem:
            raise SegmentError(f"refusing to attach segment name={name!r}: {problem}")
        mapping = mmap.mmap(shm.fd, st.st_size)
    finally:
        shm.close_fd()
    return Segment(name, st.st_size, mapping, owner=False)


def _peek(name: str) -> tuple[bool, np.ndarray | None]:
    """(whether it exists, a copy of its header: None when the file is too small to hold one). Maps the
    128-byte header only, whatever the file's size."""
    opened = _open(name)
    if opened is None:
        return False, None
    shm, st = opened
    try:
        return True, (_read_header(shm.fd) if st.st_size >= HEADER_BYTES else None)
    finally:
        shm.close_fd()


def header_of(name: str) -> np.ndarray | None:
    """A copy of an existing segment's header (what it holds, to attach it with the right layout); None if there is
    no such segment or it is not initialised."""
    _, h = _peek(name)
    return h if h is not None and int(h[H_MAGIC]) == MAGIC else None


def reclaim_if_stale(name: str) -> bool:
    """Unlink ``name`` if its creator is dead (or it was never initialised); True if it is gone now. Maps its
    header only, whatever the file's size. A segment of another user is a SegmentError, left alone."""
    exists, h = _peek(name)
    if not exists:
        return True
    stale = h is None or int(h[H_MAGIC]) != MAGIC or not creator_alive(int(h[H_CREATOR_PID]),
                                                                        int(h[H_CREATOR_START_NS]))
    if stale:
        try:
            posix_ipc.unlink_shared_memory(name)
        except posix_ipc.ExistentialError:
            pass
    return stale


def unlink_semaphore(name: str, created_before_ns: int = 0) -> bool:
    """Unlink the POSIX semaphore ``name`` if it is ours (and, with ``created_before_ns``, older than that: a
    semaphore carries no creator, so its age tells a dead run's from a new run's); True if it was unlinked."""
    try:
        st = os.stat(f"/dev/shm/sem.{name.lstrip('/')}")
    except FileNotFoundError:
        return False
    if st.st_uid != os.geteuid() or (created_before_ns and st.st_ctime_ns >= created_before_ns):
        return False
    try:
        posix_ipc.unlink_semaphore(name)
    except posix_ipc.ExistentialError:
        return False
    return True


def reclaim_stale(entries: list[str], semaphores_created_before_ns: int = 0) -> int:
    """Unlink each of ``entries`` (names from ``list_segments``) that a dead run left: a segment whose creator
    is dead, a semaphore of ours (see ``unlink_semaphore``); returns how many went."""
    removed = 0
    for name in entries:
        if ".sem." in name:
            removed += unlink_semaphore(name, semaphores_created_before_ns)
        else:
            removed += reclaim_if_stale(name)
    return removed


def list_segments(prefix: str = NAME_PREFIX) -> list[str]:
    """Names of Bot4 segments and semaphores currently in /dev/shm (as posix names)."""
    out = []
    try:
        entries = os.listdir("/dev/shm")
    except FileNotFoundError:
        return out
    stem = prefix.lstrip("/")
    for entry in entries:
        if entry.startswith(stem):
            out.append("/" + entry)
        elif entry.startswith("sem." + stem):
            out.append("/" + entry[4:])
    return sorted(out)
