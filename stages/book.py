"""L2 order books per (venue, symbol): fixed-capacity sorted price ladders in plain arrays.

One book per instrument key (:func:`stages.universe.instrument_key`), built from
MARKET_EVENT records by :func:`apply`; every kernel is an ``@njit(cache=True)`` free function over the
arrays of a :class:`Books` made by :func:`make_books` (no dicts, no jitclass: cacheable, and the arrays
could live in shared memory). Not safe for concurrent use: one stage owns the books and calls every
function from one thread.

Layout::

  Books.px[key, side, slot]  float64  side 0 = bids, 1 = asks; 2 * max_levels slots per side
  Books.sz[key, side, slot]  float64  size at px[key, side, slot]
  Books.state[key, col]      int64    S_* live state (cols 0..15), C_* counters (cols 16..31): 256 B a key
  Books.bbo[key, col]        float64  the venue's last BBO: B_BID, B_BID_SZ, B_ASK, B_ASK_SZ

  one side of one key, max_levels = 8 (16 slots), 5 levels in use:

    slot  0   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15
        +---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+
        |   |   |   |b0 |b1 |b2 |b3 |b4 |   |   |   |   |   |   |   |   |
        +---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+---+
                      ^ lo = state[key, S_LO + side]      n = state[key, S_N + side] = 5
        free: a better level         best -> worst         free: a worse level
        or a trim of the best        (bids: price down,    lands here
        costs no shifting            asks: price up)

Why a window in twice the slots: a new or removed level shifts whichever part of the ladder is shorter
(the levels better than it toward the front, or the worse ones toward the back), and dropping the best
(crossed-book trim) or the worst (overflow) level is O(1). On the Binance captures the median change is
60-200 levels from the top while 1,000-5,000 levels are live, so the ladder is usually full and a
plain best-first array would shift most of it on every new level; shifting the short side measured
1.3-1.7x faster per delta. When the short side has no free slot the window is re-centred (counted in
C_RECENTRED: a few times per capture).

Rules of :func:`apply`:

- EV_BOOK_DELTA: size 0 removes the level (a level the book does not have is not an error: venues send
  removals for levels beyond a client's depth); otherwise it sets the level's size. NaN, non-positive
  price, negative or NaN size, or a side other than BUY/SELL: IGNORED, counted in C_BAD.
- Runs: consecutive records of one key with the same F_SNAPSHOT bit, ``first_seq`` and ``venue_seq``
  form one venue message (a snapshot run shares the snapshot's ids, see
  :mod:`pipeline.sources.binance_ws`); F_LAST closes it. The first record of an F_SNAPSHOT run clears the
  key's ladders; the run leaves the book synced, with ``venue_seq`` as its last update id. A snapshot with
  ``first_seq == venue_seq`` (Binance REST ``lastUpdateId`` L, nothing folded in) must be bridged by the
  next message (``first_seq <= L + 1``); one with ``first_seq < venue_seq`` already holds the diffs up to
  ``venue_seq`` and the next message must continue it.
- Sequence checks, at the first record of each diff message while synced and both ids are known
  (sources without sequences, like Tardis, send 0 and are not checked): a message whose ``venue_seq`` is
  not beyond the last applied one is already in the book (stale: IGNORED, every record of it, counted in
  C_STALE); otherwise it must continue the last one: ``prev_seq == last`` when the venue sends it
  (Binance futures ``pu``), else ``first_seq (or venue_seq when 0) == last + 1`` (Binance spot ``U``). A
  break, or the source's own F_UNSYNCED on a diff, makes the book unsynced (C_SYNC_LOST). An unsynced
  book still applies diffs (a best effort view, e.g. before the capture's first snapshot) and answers
  RESYNC_NEEDED to each until a snapshot (or :func:`reset` then a snapshot) makes it synced again.
- Crossed book: a level set on one side at or through the other side's best removes the other side's
  levels it crosses or locks (counted: C_CROSSED records, C_TRIMMED levels). A matching engine never
  rests a crossed book, so those levels are gone at the venue and their removals are still to come or
  were merged away; Binance diffs list bids before asks, so when the market moves up the new bids
  cross the old asks until the same message's ask removals arrive. The newest level wins, and the book
  is never crossed between records, so a top-n view taken at any moment is consistent. (On the four
  Binance captures every synced message ends with the same book with or without this rule: the
  crossings are all such transients.)
- Overflow: a ladder holds ``max_levels`` levels; a new level in a full ladder drops the worst level (or
  the new one if it is the worst) and returns OVERFLOW (C_OVERFLOW). Depth beyond the capacity is
  best effort; the top of the book is exact.
- EV_BOOK (a top-BOOK_LEVELS view): authoritative from its best to its worst level on each side, so
  levels at prices at or better than the view's worst are replaced by the view; levels worse than it
  (from deltas) stay. A side with fewer valid levels than BOOK_LEVELS (NaN, non-positive: a thin book)
  is the whole side. A view that is crossed in itself is IGNORED (C_BAD). It leaves the book synced with
  ``venue_seq`` as its last id; a feed of views only should read at most BOOK_LEVELS levels (deeper
  ones are older views' leftovers).
- EV_BBO does not touch the ladders; it is stored as the venue's BBO (the last one per key). When a
  synced book has applied exactly the BBO's update id (the BBO arrives after that message, or that
  message closes after the BBO arrived: Binance's bookTicker usually beats the batched spot diffs), its
  best bid/ask price and size must equal the BBO's (C_BBO_MATCHED); a difference means the book is
  wrong: C_BBO_MISMATCHED, unsynced, RESYNC_NEEDED.
- Other kinds: IGNORED. So are keys outside the books (venue/symbol beyond MAX_SYMBOLS or max_keys).
"""
import math
from typing import NamedTuple

import numpy as np
from numba import njit

from stages.records import BOOK_LEVELS, BUY, EV_BBO, EV_BOOK, EV_BOOK_DELTA, F_LAST, F_SNAPSHOT, F_UNSYNCED, SELL
from stages.universe import MAX_KEYS, MAX_SYMBOLS, instrument_key

MAX_LEVELS = 1024  # levels per side per key

# apply() status, ordered by severity: when several hold, the highest is returned
OK = 0
IGNORED = 1        # nothing changed: not a book event, malformed, out-of-range key, or stale
CROSSED = 2        # applied; it crossed the other side, whose crossed levels were removed
OVERFLOW = 3       # applied; a full ladder dropped its worst level (or the new one)
RESYNC_NEEDED = 4  # applied, but the book is not synced (or just found wrong): get a snapshot
N_STATUS = 5
STATUS_NAMES = ("ok", "ignored", "crossed", "overflow", "resync_needed")

BID, ASK = 0, 1  # the side axis of px and sz

# Books.state columns, live state
S_LO = 0           # + side: slot of the best level
S_N = 2            # + side: levels in use
S_SYNCED = 4       # 1 when the book can be trusted
S_LAST_SEQ = 5     # venue_seq of the last applied message or snapshot (0 = unknown)
S_BRIDGE = 6       # 1 after an unfolded snapshot: the next message must bridge S_LAST_SEQ + 1
S_RUN_OPEN = 7     # 1 while a message (or snapshot run) of this key is open (no F_LAST yet)
S_RUN_SNAPSHOT = 8  # the open run is a snapshot
S_RUN_FIRST = 9    # first_seq of the open run
S_RUN_SEQ = 10     # venue_seq of the open run
S_RUN_SKIP = 11    # 1 when the open run is stale: its records are ignored
S_BBO_SEQ = 12     # venue_seq of the last EV_BBO

# Books.state columns, counters (monotonic; reset() keeps them)
C_DELTAS = 16          # deltas applied
C_SNAPSHOTS = 17       # snapshot runs started
C_VIEWS = 18           # EV_BOOK views applied
C_CROSSED = 19         # records that crossed the other side
C_TRIMMED = 20         # levels removed by those
C_OVERFLOW = 21        # levels dropped from a full ladder
C_SYNC_LOST = 22       # synced -> unsynced transitions
C_STALE = 23           # records of stale messages ignored
C_BAD = 24             # malformed records ignored
C_BBO_MATCHED = 25     # BBOs checked against the book and equal
C_BBO_MISMATCHED = 26  # BBOs checked against the book and different
C_RESETS = 27          # reset() calls
C_RECENTRED = 28       # ladder windows moved to make room
COUNTERS = ("deltas", "snapshots", "views", "crossed", "trimmed", "overflow", "sync_lost", "stale", "bad",
            "bbo_matched", "bbo_mismatched", "resets", "recentred")
C_FIRST = C_DELTAS
STATE_COLUMNS = 32

B_BID, B_BID_SZ, B_ASK, B_ASK_SZ = range(4)


class Books(NamedTuple):
    px: np.ndarray     # float64[max_keys, 2, 2 * max_levels]
    sz: np.ndarray     # float64[max_keys, 2, 2 * max_levels]
    state: np.ndarray  # int64[max_keys, STATE_COLUMNS]
    bbo: np.ndarray    # float64[max_keys, 4]


def make_books(max_keys: int = MAX_KEYS, max_levels: int = MAX_LEVELS) -> Books:
    """Empty, unsynced books for keys 0..max_keys-1, ``max_levels`` levels per side."""
    if max_keys < 1 or max_levels < 1:
        raise ValueError(f"make_books: max_keys={max_keys} and max_levels={max_levels} must be positive")
    books = Books(np.zeros((max_keys, 2, 2 * max_levels)), np.zeros((max_keys, 2, 2 * max_levels)),
                  np.zeros((max_keys, STATE_COLUMNS), np.int64), np.full((max_keys, 4), np.nan))
    books.state[:, S_LO + BID] = books.state[:, S_LO + ASK] = max_levels // 2
    return books


def counters(books: Books, key: int) -> dict:
    """The key's counters by name (for reports and tests; not for the hot path)."""
    return {name: int(books.state[key, C_FIRST + i]) for i, name in enumerate(COUNTERS)}


# Why _nrt=False on every kernel: numba increfs the arrays a non-inlined function receives (and any it
# takes out of the NamedTuple or slices into a per-side view), then decrefs them at each exit, all with
# atomic instructions, and its pruning pass leaves most of those pairs in functions with several
# returns. On the captures that was ~45% of the time per delta (200 ns -> 110 ns without). The kernels
# never allocate, so they need no runtime, and _nrt=False turns an accidental allocation into a compile
# error. For the same reason they index the Books arrays in 3-D: a per-side view is a new object.

@njit(cache=True, _nrt=False)
def key_of(venue, symbol, max_keys):
    """The book key of (venue, symbol), or -1 when it has no book."""
    if symbol >= MAX_SYMBOLS:
        return -1
    key = instrument_key(venue, symbol)
    return key if key < max_keys else -1


@njit(cache=True, _nrt=False)
def _clear(px, st, key):
    half = px.shape[2] // 4
    for s in range(2):
        st[key, S_LO + s] = half
        st[key, S_N + s] = 0


@njit(cache=True, _nrt=False)
def _lose_sync(st, key):
    if st[key, S_SYNCED] != 0:
        st[key, S_SYNCED] = 0
        st[key, C_SYNC_LOST] += 1


@njit(cache=True, _nrt=False)
def _find(px, key, s, lo, n, sgn, price):
    """First slot in [lo, lo + n) of px[key, s] whose level is not better than ``price`` (lo + n if none)."""
    target = sgn * price  # sgn = +1 bids, -1 asks: the ladder is descending in sgn * px (exact in floats)
    a = lo
    b = lo + n
    while a < b:
        m = (a + b) >> 1
        if sgn * px[key, s, m] > target:
            a = m + 1
        else:
            b = m
    return a


@njit(cache=True, _nrt=False)
def _move(px, sz, key, s, src, dst, count):
    """Move slots [src, src + count) of side s to [dst, dst + count); the ranges may overlap."""
    # Unsigned indices: numba then skips its negative-index wraparound, and the copy loops compile to
    # straight moves (~30% faster per delta on the captures).
    k = np.uintp(key)
    side = np.uintp(s)
    if dst < src:
        for t in range(count):
            px[k, side, np.uintp(dst + t)] = px[k, side, np.uintp(src + t)]
            sz[k, side, np.uintp(dst + t)] = sz[k, side, np.uintp(src + t)]
    elif dst > src:
        for t in range(count - 1, -1, -1):
            px[k, side, np.uintp(dst + t)] = px[k, side, np.uintp(src + t)]
            sz[k, side, np.uintp(dst + t)] = sz[k, side, np.uintp(src + t)]


@njit(cache=True, _nrt=False)
def _recentre(px, sz, st, key, s, lo, n):
    """Move the n levels at ``lo`` to the middle of the slots (so both ends have room); returns the new lo."""
    new_lo = (px.shape[2] - n) // 2
    _move(px, sz, key, s, lo, new_lo, n)
    st[key, C_RECENTRED] += 1
    return new_lo


@njit(cache=True, _nrt=False)
def _set_level(px, sz, st, key, s, price, size):
    """Set (size > 0) or remove (size == 0) one level; OK, OVERFLOW or CROSSED."""
    slots = px.shape[2]
    cap = slots // 2
    lo = st[key, S_LO + s]
    n = st[key, S_N + s]
    sgn = 1.0 if s == BID else -1.0
    at = _find(px, key, s, lo, n, sgn, price)
    found = at < lo + n and px[key, s, at] == price
    status = OK
    if size == 0.0:
        if found:
            j = at - lo
            if j < n - 1 - j:  # fewer better levels than worse ones: close the gap from the front
                _move(px, sz, key, s, lo, lo + 1, j)
                st[key, S_LO + s] = lo + 1
            else:
                _move(px, sz, key, s, at + 1, at, n - 1 - j)
            st[key, S_N + s] = n - 1
        return OK
    if found:
        sz[key, s, at] = size
    else:
        j = at - lo
        if n == cap:
            st[key, C_OVERFLOW] += 1
            status = OVERFLOW
            if j == n:  # worse than every level of a full ladder: the new level is the one dropped
                return status
            n -= 1  # drop the worst
        if j <= n - j:  # shift the better levels one slot to the front
            if lo == 0:
                lo = _recentre(px, sz, st, key, s, lo, n)
            _move(px, sz, key, s, lo, lo - 1, j)
            lo -= 1
        else:  # shift the worse levels one slot to the back
            if lo + n == slots:
                lo = _recentre(px, sz, st, key, s, lo, n)
            _move(px, sz, key, s, lo + j, lo + j + 1, n - j)
        px[key, s, lo + j] = price
        sz[key, s, lo + j] = size
        st[key, S_LO + s] = lo
        st[key, S_N + s] = n + 1
    # The other side must stay strictly worse than this level.
    o = 1 - s
    olo = st[key, S_LO + o]
    on = st[key, S_N + o]
    trimmed = 0
    while trimmed < on and sgn * px[key, o, olo + trimmed] <= sgn * price:
        trimmed += 1
    if trimmed:
        st[key, S_LO + o] = olo + trimmed
        st[key, S_N + o] = on - trimmed
        st[key, C_CROSSED] += 1
        st[key, C_TRIMMED] += trimmed
        if status == OK:
            status = CROSSED
    return status


@njit(cache=True, _nrt=False)
def _best(px, sz, st, key):
    bid = np.nan
    bid_sz = 0.0
    ask = np.nan
    ask_sz = 0.0
    if st[key, S_N + BID] > 0:
        bid = px[key, BID, st[key, S_LO + BID]]
        bid_sz = sz[key, BID, st[key, S_LO + BID]]
    if st[key, S_N + ASK] > 0:
        ask = px[key, ASK, st[key, S_LO + ASK]]
        ask_sz = sz[key, ASK, st[key, S_LO + ASK]]
    return bid, bid_sz, ask, ask_sz


@njit(cache=True, _nrt=False)
def _check_bbo(px, sz, st, bbo, key):
    """Compare the book with the venue's BBO of the same update id: OK, or RESYNC_NEEDED if they differ."""
    if st[key, S_SYNCED] == 0 or st[key, S_RUN_OPEN] != 0 or st[key, S_LAST_SEQ] == 0:
        return OK
    bid, bid_sz, ask, ask_sz = _best(px, sz, st, key)
    if (bid == bbo[key, B_BID] and bid_sz == bbo[key, B_BID_SZ] and ask == bbo[key, B_ASK]
            and ask_sz == bbo[key, B_ASK_SZ]):
        st[key, C_BBO_MATCHED] += 1
        return OK
    st[key, C_BBO_MISMATCHED] += 1
    _lose_sync(st, key)
    return RESYNC_NEEDED


@njit(cache=True, _nrt=False)
def _begin_message(st, key, ev):
    """Sequence checks at the first record of a diff message; returns 1 if the message is stale."""
    u = ev["venue_seq"]
    last = st[key, S_LAST_SEQ]
    if st[key, S_SYNCED] != 0 and u != 0 and last != 0:
        if u <= last:
            return 1
        first = ev["first_seq"] if ev["first_seq"] != 0 else u
        if st[key, S_BRIDGE] != 0:
            ok = first <= last + 1
        elif ev["prev_seq"] != 0:
            ok = ev["prev_seq"] == last
        else:
            ok = first == last + 1
        st[key, S_BRIDGE] = 0
        if not ok:
            _lose_sync(st, key)
    st[key, S_LAST_SEQ] = u
    return 0


@njit(cache=True, _nrt=False)
def _apply_delta(px, sz, st, bbo, key, ev):
    flags = ev["flags"]
    snap = 1 if flags & F_SNAPSHOT else 0
    same_run = (st[key, S_RUN_OPEN] != 0 and st[key, S_RUN_SNAPSHOT] == snap
                and st[key, S_RUN_FIRST] == ev["first_seq"] and st[key, S_RUN_SEQ] == ev["venue_seq"])
    if not same_run:
        st[key, S_RUN_OPEN] = 1
        st[key, S_RUN_SNAPSHOT] = snap
        st[key, S_RUN_FIRST] = ev["first_seq"]
        st[key, S_RUN_SEQ] = ev["venue_seq"]
        st[key, S_RUN_SKIP] = 0
        if snap:
            _clear(px, st, key)
            st[key, S_SYNCED] = 1
            st[key, S_LAST_SEQ] = ev["venue_seq"]
            st[key, S_BRIDGE] = 1 if ev["venue_seq"] != 0 and ev["first_seq"] >= ev["venue_seq"] else 0
            st[key, C_SNAPSHOTS] += 1
        else:
            st[key, S_RUN_SKIP] = _begin_message(st, key, ev)
    closes = flags & F_LAST
    if closes:
        st[key, S_RUN_OPEN] = 0
    if st[key, S_RUN_SKIP] != 0:
        st[key, C_STALE] += 1
        return IGNORED
    if not snap and flags & F_UNSYNCED:
        _lose_sync(st, key)
    price = ev["price"]
    size = ev["size"]
    side = ev["side"]
    if not (price > 0.0 and size >= 0.0 and math.isfinite(price) and math.isfinite(size)) or (
            side != BUY and side != SELL):
        st[key, C_BAD] += 1
        return IGNORED
    status = _set_level(px, sz, st, key, BID if side == BUY else ASK, price, size)
    st[key, C_DELTAS] += 1
    if closes and st[key, S_BBO_SEQ] == st[key, S_LAST_SEQ]:
        status = max(status, _check_bbo(px, sz, st, bbo, key))  # the venue's BBO at this id came first
    if st[key, S_SYNCED] == 0:
        return RESYNC_NEEDED
    return status


@njit(cache=True, _nrt=False)
def _valid_levels(vpx, vsz):
    """Leading levels of a view that are real (finite, positive price and size)."""
    m = 0
    while m < vpx.shape[0] and vpx[m] > 0.0 and vsz[m] > 0.0 and math.isfinite(vpx[m]) and math.isfinite(vsz[m]):
        m += 1
    return m


@njit(cache=True, _nrt=False)
def _apply_view(px, sz, st, key, ev):
    st[key, S_RUN_OPEN] = 0
    u = ev["venue_seq"]
    if st[key, S_SYNCED] != 0 and u != 0 and u <= st[key, S_LAST_SEQ]:
        st[key, C_STALE] += 1
        return IGNORED
    nb = _valid_levels(ev["bid_px"], ev["bid_sz"])
    na = _valid_levels(ev["ask_px"], ev["ask_sz"])
    if nb > 0 and na > 0 and ev["bid_px"][0] >= ev["ask_px"][0]:
        st[key, C_BAD] += 1
        return IGNORED
    # Cut both sides before inserting, so a view's bids never meet the asks it is about to replace.
    for s in range(2):
        vpx = ev["bid_px"] if s == BID else ev["ask_px"]
        m = nb if s == BID else na
        lo = st[key, S_LO + s]
        n = st[key, S_N + s]
        if m < BOOK_LEVELS:
            st[key, S_N + s] = 0
        else:
            sgn = 1.0 if s == BID else -1.0
            worst = vpx[0]
            for j in range(1, m):
                if sgn * vpx[j] < sgn * worst:
                    worst = vpx[j]
            # levels at or better than the view's worst: the prefix up to the first strictly worse one
            cut = _find(px, key, s, lo, n, sgn, worst)
            if cut < lo + n and px[key, s, cut] == worst:
                cut += 1
            st[key, S_LO + s] = cut
            st[key, S_N + s] = lo + n - cut
    status = OK
    for s in range(2):
        vpx = ev["bid_px"] if s == BID else ev["ask_px"]
        vsz = ev["bid_sz"] if s == BID else ev["ask_sz"]
        for j in range(nb if s == BID else na):
            status = max(status, _set_level(px, sz, st, key, s, vpx[j], vsz[j]))
    st[key, S_SYNCED] = 1
    st[key, S_LAST_SEQ] = u
    st[key, S_BRIDGE] = 0
    st[key, C_VIEWS] += 1
    return status


@njit(cache=True, _nrt=False)
def _apply_bbo(px, sz, st, bbo, key, ev):
    bbo[key, B_BID] = ev["bid_px"][0]
    bbo[key, B_BID_SZ] = ev["bid_sz"][0]
    bbo[key, B_ASK] = ev["ask_px"][0]
    bbo[key, B_ASK_SZ] = ev["ask_sz"][0]
    st[key, S_BBO_SEQ] = ev["venue_seq"]
    if ev["venue_seq"] == st[key, S_LAST_SEQ]:  # the book got to this id first
        return _check_bbo(px, sz, st, bbo, key)
    return OK


@njit(cache=True, _nrt=False)
def _apply(px, sz, st, bbo, ev):
    key = key_of(ev["venue"], ev["symbol"], st.shape[0])
    if key < 0:
        return IGNORED
    kind = ev["kind"]
    if kind == EV_BOOK_DELTA:
        return _apply_delta(px, sz, st, bbo, key, ev)
    if kind == EV_BBO:
        return _apply_bbo(px, sz, st, bbo, key, ev)
    if kind == EV_BOOK:
        return _apply_view(px, sz, st, key, ev)
    return IGNORED


@njit(cache=True, _nrt=False)
def apply(books, ev):
    """Fold one MARKET_EVENT into its key's book (see the module docstring); returns a status code.

    Single owner: the stage that holds ``books`` calls this from one thread."""
    return _apply(books.px, books.sz, books.state, books.bbo, ev)


@njit(cache=True, _nrt=False)
def apply_batch(books, events, n, status_counts):
    """apply() to events[0:n], adding one to status_counts[status] for each; returns how many were not
    IGNORED. Single owner, as apply()."""
    px, sz, st, bbo = books.px, books.sz, books.state, books.bbo
    applied = 0
    for i in range(min(n, events.shape[0])):
        status = _apply(px, sz, st, bbo, events[i])
        status_counts[status] += 1
        if status != IGNORED:
            applied += 1
    return applied


@njit(cache=True, _nrt=False)
def best(books, key):
    """(bid, bid_sz, ask, ask_sz) of the book; an empty side (or a key with no book) is (NaN, 0.0)."""
    if not 0 <= key < books.state.shape[0]:
        return np.nan, 0.0, np.nan, 0.0
    return _best(books.px, books.sz, books.state, key)


@njit(cache=True, _nrt=False)
def top(books, key, n, bid_px, bid_sz, ask_px, ask_sz):
    """Fill the best ``n`` levels per side, best first (bids descending, asks ascending); slots past a
    side's depth get NaN price and 0.0 size. Returns the levels filled on both sides (the thinner one)."""
    px, sz, st = books.px, books.sz, books.state
    n = max(0, min(n, bid_px.shape[0], bid_sz.shape[0], ask_px.shape[0], ask_sz.shape[0]))
    ok = 0 <= key < st.shape[0]
    filled = n
    for s in range(2):
        out_px = bid_px if s == BID else ask_px
        out_sz = bid_sz if s == BID else ask_sz
        levels = 0
        if ok:
            levels = min(n, st[key, S_N + s])
            lo = st[key, S_LO + s]
            for j in range(levels):
                out_px[j] = px[key, s, lo + j]
                out_sz[j] = sz[key, s, lo + j]
        for j in range(levels, n):
            out_px[j] = np.nan
            out_sz[j] = 0.0
        filled = min(filled, levels)
    return filled


@njit(cache=True, _nrt=False)
def depth(books, key, side):
    """Levels in use on ``side`` (BID or ASK) of the book."""
    if not 0 <= key < books.state.shape[0]:
        return 0
    return books.state[key, S_N + side]


@njit(cache=True, _nrt=False)
def is_synced(books, key):
    return 0 <= key < books.state.shape[0] and books.state[key, S_SYNCED] != 0


@njit(cache=True, _nrt=False)
def reset(books, key):
    """Empty the book and mark it unsynced, forgetting its sequence, before a resync; counters stay."""
    st = books.state
    if not 0 <= key < st.shape[0]:
        return
    _clear(books.px, st, key)
    for c in (S_SYNCED, S_LAST_SEQ, S_BRIDGE, S_RUN_OPEN, S_RUN_SNAPSHOT, S_RUN_FIRST, S_RUN_SEQ, S_RUN_SKIP):
        st[key, c] = 0
    st[key, C_RESETS] += 1


@njit(cache=True, _nrt=False)
def size_at(books, key, side, price):
    """The size resting at ``price`` on ``side`` (BID or ASK); 0.0 where the book has no such level."""
    px, st = books.px, books.state
    if not 0 <= key < st.shape[0]:
        return 0.0
    lo = st[key, S_LO + side]
    n = st[key, S_N + side]
    at = _find(px, key, side, lo, n, 1.0 if side == BID else -1.0, price)
    if at < lo + n and px[key, side, at] == price:
        return books.sz[key, side, at]
    return 0.0


@njit(cache=True, _nrt=False)
def level(books, key, side, j):
    """(price, size) of the j-th best level on ``side``; (NaN, 0.0) past the side's depth."""
    st = books.state
    if not 0 <= key < st.shape[0] or j >= st[key, S_N + side]:
        return np.nan, 0.0
    at = st[key, S_LO + side] + j
    return books.px[key, side, at], books.sz[key, side, at]


@njit(cache=True, _nrt=False)
def consume(books, key, side, price, qty):
    """Take ``qty`` off the level at ``price`` (removing it when nothing is left), leaving the book's sequence
    state alone: a simulated venue's own fills deplete its copy of the book until the market updates that level."""
    left = size_at(books, key, side, price) - qty
    _set_level(books.px, books.sz, books.state, key, side, price, left if left > 1e-12 * qty else 0.0)
