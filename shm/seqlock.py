"""A table of latest values under per-slot seqlocks: one writer, any number of readers, no tearing.

Payload layout (after the segment header)::

    seqs     int64[n_slots * 8]   slot i's sequence at word i * 8 (one 64-byte line each, so a reader
                                  spinning on one slot never shares a line with another slot's writer)
    records  dtype[n_slots]       the latest record of each slot (the dtype is opaque here)

Protocol (one writer per table; readers never write):

    writer  s = seqs[i]; seqs[i] = s + 1 (odd: writing); fence; records[i] = new; seqs[i] = s + 2 (release)
    reader  s1 = seqs[i] (acquire); if odd retry; copy records[i]; fence; s2 = seqs[i]; if s1 != s2 retry

A table with several writers (rare publishers, such as operator tools) uses :func:`write_contended` for every
write: it claims the slot by a compare-and-swap of an even sequence to the odd one, so two writers never
interleave; it must not be mixed with :func:`write` on the same table.

A reader's copy is one the writer published whole: had the writer touched the slot during the copy, the
sequence would have moved. ``s1 / 2`` is how many times the slot was written (0 = never). The writer never
waits; a reader retries while it races a write (a write is a few dozen ns), yielding the core after
SPIN_TRIES tries in case the writer was preempted mid-write, and gives up after ``max_tries``, returning -1.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from shm import segment
from shm.atomics import compare_exchange, fence_seq_cst, load_acquire, store_release
from shm.syscalls import sched_yield

SEQ_STRIDE = 8  # int64 words per slot sequence: one cache line
SPIN_TRIES = 64  # a reader's tries before it yields the core between tries


def payload_bytes(dtype: np.dtype, n_slots: int) -> int:
    return n_slots * SEQ_STRIDE * 8 + n_slots * np.dtype(dtype).itemsize


def layout(dtype: np.dtype, n_slots: int) -> int:
    return segment.layout_hash("seqlock-table", 1, np.dtype(dtype), n_slots)


def local_table(dtype: np.dtype, n_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """(seqs, records) in process memory, for a single process (fused mode, tests)."""
    return np.zeros(n_slots * SEQ_STRIDE, np.int64), np.zeros(n_slots, dtype)


class SeqlockTable:
    """A table in a named shared-memory segment. The creator (or one attached process) is the only writer."""

    def __init__(self, seg: segment.Segment, dtype: np.dtype, n_slots: int):
        self.segment = seg
        self.seqs = seg.payload(0, np.int64, n_slots * SEQ_STRIDE)
        self.records = seg.payload(n_slots * SEQ_STRIDE * 8, dtype, n_slots)

    @classmethod
    def create(cls, name: str, dtype: np.dtype, n_slots: int) -> SeqlockTable:
        dtype = np.dtype(dtype)
        seg = segment.create(name, payload_bytes(dtype, n_slots), layout(dtype, n_slots), n_slots, dtype.itemsize)
        return cls(seg, dtype, n_slots)

    @classmethod
    def attach(cls, name: str, dtype: np.dtype, n_slots: int) -> SeqlockTable:
        dtype = np.dtype(dtype)
        return cls(segment.attach(name, layout(dtype, n_slots)), dtype, n_slots)

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.seqs, self.records

    def read(self, slot: int, max_tries: int = 1_000_000) -> tuple[np.ndarray, int]:
        """(a copy of the slot's record, times written); raises TimeoutError if every try raced a write."""
        out = np.zeros(1, self.records.dtype)
        version = read(self.seqs, self.records, slot, out, 0, max_tries)
        if version < 0:
            raise TimeoutError(f"{self.segment.name}: slot {slot} changed during each of {max_tries} reads")
        return out[0], version // 2

    def publish(self, slot: int, record, max_tries: int = 1_000_000) -> int:
        """Write ``record`` to the slot under :func:`write_contended` (any number of writers); returns how many
        times the slot has now been written. Raises TimeoutError if every try met another writer."""
        src = np.zeros(1, self.records.dtype)
        src[0] = record
        sequence = write_contended(self.seqs, self.records, slot, src, 0, max_tries)
        if sequence < 0:
            raise TimeoutError(f"{self.segment.name}: slot {slot} was being written during each of {max_tries} tries")
        return sequence // 2

    def close(self) -> None:
        """Drop the views, then the mapping (views must not outlive it)."""
        self.seqs = self.records = None
        self.segment.close()


@njit(cache=True)
def write(seqs, records, slot, src, j):
    """Publish ``src[j]`` as slot ``slot``'s record. Single writer per table."""
    w = slot * SEQ_STRIDE
    s = seqs[w] & ~1  # odd at rest: the previous writer died mid-write; its odd sequence covers this write too
    store_release(seqs, w, s + 1)
    fence_seq_cst()  # the odd sequence is visible before any byte of the record changes
    records[slot] = src[j]
    store_release(seqs, w, s + 2)  # every byte of the record is visible before the even sequence


@njit(cache=True)
def write_contended(seqs, records, slot, src, j, max_tries):
    """Publish ``src[j]`` as slot ``slot``'s record when other processes may write it too; returns the new
    (even) sequence, or -1 after ``max_tries`` tries that each found another writer mid-write."""
    w = slot * SEQ_STRIDE
    for attempt in range(max_tries):
        if attempt >= SPIN_TRIES:
            sched_yield()  # the other writer was preempted mid-write
        s = load_acquire(seqs, w)
        if s & 1:
            continue
        if compare_exchange(seqs, w, s, s + 1):  # seq_cst: the odd sequence is visible before the record changes
            records[slot] = src[j]
            store_release(seqs, w, s + 2)
            return s + 2
    return -1


@njit(cache=True)
def read(seqs, records, slot, dst, j, max_tries):
    """Copy slot ``slot``'s record into ``dst[j]``; returns its (even) sequence, or -1 after ``max_tries``
    tries that each raced a write."""
    w = slot * SEQ_STRIDE
    for attempt in range(max_tries):
        if attempt >= SPIN_TRIES:
            sched_yield()  # the writer was preempted mid-write (cores are shared): let it finish
        s1 = load_acquire(seqs, w)
        if s1 & 1:
            continue
        dst[j] = records[slot]
        fence_seq_cst()  # the copy completes before the sequence is read again
        if load_acquire(seqs, w) == s1:
            return s1
    return -1
