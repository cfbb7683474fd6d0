"""Lock-free single-producer single-consumer ring of fixed-size records in shared memory.

Payload layout (after the 128-byte segment header; one 128-byte line per writer so the two sides never
share a cache line, adjacent-line prefetch included)::

    +0    producer line  [tail, cached_head, blocked_ns, full_count, wakeups, discarded, ...]  producer only
    +128  consumer line  [head, cached_tail, asleep, blocking, gone, lossless, ...]
                         written by the consumer only, except ``gone`` (the supervisor's)
    +256  records        capacity (power of two) x record_size; slot = sequence & (capacity - 1)

Cursors are unbounded int64 sequences (no wrap in any realistic run); fill = tail - head.

Memory ordering. The producer writes records, then publishes ``tail`` with a release store; the
consumer reads ``tail`` with an acquire load, then reads records: every record below an observed tail
is complete (no torn record). Symmetrically the consumer copies records out, then releases ``head``;
the producer acquires ``head`` before overwriting a slot, so it never overwrites an unread record. Each
side reads the opposite cursor only when its cached copy says the ring looks full/empty, so the
steady-state cost of a batch is one acquire load and one release store per side.

Sleep/wake (blocking consumers only): the consumer stores ``asleep=1``, runs a seq_cst fence, re-reads
``tail`` and only then blocks; the producer releases ``tail``, runs a seq_cst fence, then reads
``asleep`` and posts the semaphore if set. One of the two always sees the other's store (Dekker), so a
wake-up is never lost; the consumer's timed wait is the safety net.

A dead consumer: the supervisor sets ``gone`` in its consumer line (one aligned store, read with an
acquire load) when the consumer process died for good. A producer reads it only when the ring is full, so it costs nothing in steady state; it
then stops waiting and discards what does not fit, counting it in ``discarded``. ``lossless`` is the
consumer's request that a side tap (which otherwise drops when full) back-pressure its producer instead.
"""
import numpy as np
from numba import njit

from shm import segment
from shm.atomics import fence_seq_cst, load_acquire, store_release
from shm.syscalls import sem_post

LINE_WORDS = 16
CURSOR_BYTES = 2 * LINE_WORDS * 8

P_TAIL, P_CACHED_HEAD, P_BLOCKED_NS, P_FULL_COUNT, P_WAKEUPS, P_DISCARDED = range(6)
C_HEAD, C_CACHED_TAIL, C_ASLEEP, C_BLOCKING, C_GONE, C_LOSSLESS = range(6)

BACK_PRESSURED = -1  # try_write: the ring is full, nothing written


class RingView:
    """A ring's three numpy views over its segment: ``producer``/``consumer`` cursor lines, ``records``."""

    __slots__ = ("segment", "producer", "consumer", "records", "name")

    def __init__(self, seg: segment.Segment, dtype: np.dtype, capacity: int):
        self.segment = seg
        self.name = seg.name
        self.producer = seg.payload(0, np.int64, LINE_WORDS)
        self.consumer = seg.payload(LINE_WORDS * 8, np.int64, LINE_WORDS)
        self.records = seg.payload(CURSOR_BYTES, dtype, capacity)

    def depth(self) -> int:
        return int(self.producer[P_TAIL] - self.consumer[C_HEAD])

    def mark_consumer_gone(self) -> None:
        """Supervisor: the consumer died and will not come back; producers stop waiting on this ring."""
        self.consumer[C_GONE] = 1  # one aligned 8-byte store; producers read it with an acquire load

    def close(self) -> None:
        self.producer = self.consumer = self.records = None
        self.segment.close()


def ring_layout_hash(dtype: np.dtype, capacity: int) -> int:
    return segment.layout_hash("spsc-ring", 2, dtype, dtype.itemsize, capacity)


def _check_capacity(capacity: int) -> None:
    if capacity < 2 or capacity & (capacity - 1):
        raise ValueError(f"ring capacity={capacity} must be a power of two >= 2")


def create_ring(name: str, dtype: np.dtype, capacity: int) -> RingView:
    _check_capacity(capacity)
    seg = segment.create(name, CURSOR_BYTES + capacity * dtype.itemsize, ring_layout_hash(dtype, capacity),
                         capacity, dtype.itemsize)
    return RingView(seg, dtype, capacity)


def attach_ring(name: str, dtype: np.dtype, capacity: int) -> RingView:
    _check_capacity(capacity)
    return RingView(segment.attach(name, ring_layout_hash(dtype, capacity)), dtype, capacity)


def local_ring(dtype: np.dtype, capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Process-local (producer, consumer, records) arrays with the same semantics, for fused mode and tests."""
    _check_capacity(capacity)
    return np.zeros(LINE_WORDS, np.int64), np.zeros(LINE_WORDS, np.int64), np.zeros(capacity, dtype)


@njit(cache=True)
def try_write(producer, consumer, records, src, n):
    """Single producer: copy up to ``n`` records of ``src``; returns the count written or BACK_PRESSURED."""
    capacity = records.shape[0]
    mask = capacity - 1
    if n > src.shape[0]:
        n = src.shape[0]
    tail = producer[P_TAIL]
    free = capacity - (tail - producer[P_CACHED_HEAD])
    if free < n:
        head = load_acquire(consumer, C_HEAD)
        producer[P_CACHED_HEAD] = head
        free = capacity - (tail - head)
        if free <= 0:
            return BACK_PRESSURED
    k = n if n < free else free
    for i in range(k):
        records[(tail + i) & mask] = src[i]
    # Release: the records above are visible before the new tail.
    store_release(producer, P_TAIL, tail + k)
    return k


@njit(cache=True)
def consumer_gone(consumer):
    """Producer, after BACK_PRESSURED: True when the consumer died (nothing will ever make room)."""
    return load_acquire(consumer, C_GONE) != 0


@njit(cache=True)
def wake_if_asleep(producer, consumer, sem_address):
    """Producer side of the sleep/wake handshake; call after ``try_write`` published. Returns 1 if posted."""
    if consumer[C_BLOCKING] == 0 or sem_address == 0:
        return 0
    fence_seq_cst()
    if load_acquire(consumer, C_ASLEEP) != 0:
        sem_post(sem_address)
        producer[P_WAKEUPS] += 1
        return 1
    return 0


@njit(cache=True)
def read(producer, consumer, records, out, limit):
    """Single consumer: copy up to ``limit`` records into ``out``; returns the count (0 when empty)."""
    mask = records.shape[0] - 1
    if limit > out.shape[0]:
        limit = out.shape[0]  # numba does not bounds-check: never write past ``out``
    head = consumer[C_HEAD]
    available = consumer[C_CACHED_TAIL] - head
    if available < limit:
        tail = load_acquire(producer, P_TAIL)
        consumer[C_CACHED_TAIL] = tail
        available = tail - head
    k = available if available < limit else limit
    if k <= 0:
        return 0
    for i in range(k):
        out[i] = records[(head + i) & mask]
    # Release: our copies are done before the producer may reuse these slots.
    store_release(consumer, C_HEAD, head + k)
    return k


@njit(cache=True)
def readable(producer, consumer):
    """Consumer side: records waiting (acquire load of tail)."""
    return load_acquire(producer, P_TAIL) - consumer[C_HEAD]


@njit(cache=True)
def prepare_to_sleep(producer, consumer):
    """Consumer: declare asleep, fence, re-check. Returns True if it may block (ring still empty)."""
    store_release(consumer, C_ASLEEP, 1)
    fence_seq_cst()
    if load_acquire(producer, P_TAIL) != consumer[C_HEAD]:
        store_release(consumer, C_ASLEEP, 0)
        return False
    return True


@njit(cache=True)
def woke_up(consumer):
    store_release(consumer, C_ASLEEP, 0)
