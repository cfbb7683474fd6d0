"""Validate stage: forward well-formed market events; quarantine the rest with a reason code.

Rules, in order (the first that fails names the reason): a stand-in for a line the source could not parse,
unknown instrument, unknown kind, NaN, non-positive price, non-positive size (a book delta may carry size 0: it removes the level), crossed or
locked book (snapshots and BBO), out-of-order venue sequence, stale or future venue time (against the
venue's tracked clock offset, see ``track_clock``), an outlier jump
from the instrument's last accepted price, and a price or size off the instrument's tick/lot grid.

Sequences are checked per instrument and per sequence space, only where the venue gives one (> 0):
books and trades of the synthetic feed share one counter (its venue does), L2 deltas may repeat their
message's id (one message, many levels) but never go back, BBO ids only rise. A book view taken from a
venue's L2 book (EV_BOOK with ``first_seq`` > 0: the live ccxt source) carries that book's update ids, so it
is checked in the L2 space, apart from the venue's trade ids. Trade-id gaps are counted
and forwarded (the source decides on resync; L2 gaps arrive already marked F_UNSYNCED by the source and
are counted as such). Quarantined events are counted per reason and the latest (at least a batch) are
kept, with their reason, in the stage state; the host copies each batch's quarantined events to the journal's
``quarantine`` stream (``take_quarantined``), counting any it could not keep.
"""
import math

import numpy as np
from numba import njit

from stages.counters import Counters
from stages.records import (BOOK_LEVELS, EV_BBO, EV_BOOK, EV_BOOK_DELTA, EV_FUNDING, EV_LIQUIDATION, EV_MARK, EV_TRADE,
                            EV_UNPARSABLE, F_UNSYNCED, MARKET_EVENT)
from stages.universe import MAX_KEYS, MAX_SYMBOLS, MAX_VENUES, instrument_key

(R_UNKNOWN_INSTRUMENT, R_NAN, R_NONPOSITIVE_PRICE, R_NONPOSITIVE_SIZE, R_CROSSED_BOOK, R_OUT_OF_ORDER, R_BAD_KIND,
 R_STALE, R_FUTURE, R_OUTLIER, R_OFF_GRID, R_UNPARSABLE) = range(1, 13)
# R_UNPARSABLE: an EV_UNPARSABLE stand-in for an input line the source could not parse (pipeline.sources).
REASONS = {  # code: (its counter's label, its name in reports)
    R_UNKNOWN_INSTRUMENT: ("unknown_instrument", "unknown instrument"), R_NAN: ("nan", "NaN"),
    R_NONPOSITIVE_PRICE: ("nonpositive_price", "non-positive price"),
    R_NONPOSITIVE_SIZE: ("nonpositive_size", "non-positive size"), R_CROSSED_BOOK: ("crossed_book", "crossed book"),
    R_OUT_OF_ORDER: ("out_of_order", "out-of-order sequence"), R_BAD_KIND: ("bad_kind", "unknown event kind"),
    R_STALE: ("stale", "stale venue time"), R_FUTURE: ("future", "venue time in the future"),
    R_OUTLIER: ("outlier", "outlier jump"), R_OFF_GRID: ("off_grid", "off the tick/lot grid"),
    R_UNPARSABLE: ("unparsable", "unparsable")}
REASON_NAMES = {code: name for code, (_, name) in REASONS.items()}
assert sorted(REASONS) == list(range(1, len(REASONS) + 1))

_COUNTERS = Counters()  # the stage's custom counters in slot-word order; STATS labels them
ST_FORWARDED = _COUNTERS.add("forwarded")
ST_QUARANTINED = _COUNTERS.add("quarantined")
# one counter per reason, R_* code order: stats[ST_REASON_BASE + reason - 1]
ST_REASON_BASE = _COUNTERS.add_range(REASONS[code][0] for code in sorted(REASONS))
ST_GAPS = _COUNTERS.add("sequence_gaps")
ST_UNSYNCED = _COUNTERS.add("unsynced")
STATS = _COUNTERS.labels

P_N_VENUES, P_N_SYMBOLS, P_MAX_STALE_NS, P_MAX_FUTURE_NS, P_MAX_JUMP = range(5)
P_TICK = 8                     # P_TICK + symbol: tick size (0 = not checked)
P_LOT = P_TICK + MAX_SYMBOLS   # P_LOT + symbol: lot size (0 = not checked)
N_PARAMS = P_LOT + MAX_SYMBOLS
QUARANTINE_KEEP = 256

# sequence spaces (columns of the last-sequence table)
SEQ_BOOK_TRADE, SEQ_DELTA, SEQ_BBO = range(3)


def make_params(n_venues: int, n_symbols: int, *, max_stale_ms: float, max_future_ms: float, max_jump_pct: float,
                ticks=(), lots=()) -> np.ndarray:
    """The limits' defaults are the config's (pipeline.config.ValidateConfig); ``ticks``/``lots`` per symbol, () =
    no grid check."""
    p = np.zeros(N_PARAMS)
    p[P_N_VENUES], p[P_N_SYMBOLS] = n_venues, n_symbols
    p[P_MAX_STALE_NS], p[P_MAX_FUTURE_NS], p[P_MAX_JUMP] = max_stale_ms * 1e6, max_future_ms * 1e6, max_jump_pct / 100
    p[P_TICK:P_TICK + len(ticks)] = ticks
    p[P_LOT:P_LOT + len(lots)] = lots
    return p


def make_state(batch: int = QUARANTINE_KEEP):
    """(last sequence per key and space, last accepted price per key, quarantine ring, its counts
    [quarantined, taken by the host], per-venue clock offset [offset ns, events seen])."""
    return (np.zeros((MAX_KEYS, 3), np.int64), np.zeros(MAX_KEYS), np.zeros(max(QUARANTINE_KEEP, batch), MARKET_EVENT),
            np.zeros(2, np.int64), np.zeros((MAX_VENUES, 2)))


OFFSET_ALPHA = 0.01  # the venue-clock offset follows drift over ~100 events


@njit(cache=True)
def _finite(*values):
    for v in values:
        if math.isnan(v) or math.isinf(v):
            return False
    return True


@njit(cache=True)
def _off_grid(value, step):
    if step <= 0.0:
        return False
    units = value / step
    return abs(units - round(units)) > 1e-6 * max(1.0, abs(units))


@njit(cache=True)
def _content(ev, tick, lot):
    """Kind-specific checks of the values themselves; 0 if fine."""
    kind = ev["kind"]
    if kind == EV_BOOK:
        for j in range(BOOK_LEVELS):
            if not _finite(ev["bid_px"][j], ev["ask_px"][j], ev["bid_sz"][j], ev["ask_sz"][j]):
                return R_NAN
        for j in range(BOOK_LEVELS):
            if ev["bid_px"][j] <= 0.0 or ev["ask_px"][j] <= 0.0:
                return R_NONPOSITIVE_PRICE
        for j in range(BOOK_LEVELS):
            if ev["bid_sz"][j] <= 0.0 or ev["ask_sz"][j] <= 0.0:
                return R_NONPOSITIVE_SIZE
        if ev["bid_px"][0] >= ev["ask_px"][0]:
            return R_CROSSED_BOOK
    elif kind == EV_TRADE or kind == EV_LIQUIDATION or kind == EV_BOOK_DELTA:
        if not _finite(ev["price"], ev["size"]):
            return R_NAN
        if ev["price"] <= 0.0:
            return R_NONPOSITIVE_PRICE
        if ev["size"] < 0.0 or (ev["size"] == 0.0 and kind != EV_BOOK_DELTA):
            return R_NONPOSITIVE_SIZE
    elif kind == EV_BBO:
        if not _finite(ev["bid_px"][0], ev["ask_px"][0], ev["bid_sz"][0], ev["ask_sz"][0]):
            return R_NAN
        if ev["bid_px"][0] <= 0.0 or ev["ask_px"][0] <= 0.0:
            return R_NONPOSITIVE_PRICE
        if ev["bid_sz"][0] < 0.0 or ev["ask_sz"][0] < 0.0:
            return R_NONPOSITIVE_SIZE
        if ev["bid_px"][0] >= ev["ask_px"][0]:
            return R_CROSSED_BOOK
    elif kind == EV_FUNDING:
        if not _finite(ev["price"], ev["aux"]):
            return R_NAN
    elif kind == EV_MARK:
        if not _finite(ev["price"], ev["aux"]):
            return R_NAN
        if ev["price"] <= 0.0:
            return R_NONPOSITIVE_PRICE
    else:
        return R_BAD_KIND
    return 0


@njit(cache=True)
def _reference_price(ev):
    kind = ev["kind"]
    if kind == EV_BOOK or kind == EV_BBO:
        return 0.5 * (ev["bid_px"][0] + ev["ask_px"][0])
    if kind == EV_TRADE:
        return ev["price"]
    return 0.0  # deltas can sit far from the touch; funding and marks are not prices of the book


@njit(cache=True)
def track_clock(ev, clock):
    """Venue time minus receive time, tracked per venue: a constant skew (a venue's clock, the recording
    host's) is learned, so stale/future judge the change against it, not the raw difference. Every event
    moves the estimate (accepted or not), so a bad first event cannot poison it for long."""
    if ev["exch_ts"] <= 0:
        return
    lag = float(ev["exch_ts"] - ev["origin_ts"])
    if clock[1] == 0.0:
        clock[0] = lag
    else:
        clock[0] += OFFSET_ALPHA * (lag - clock[0])
    clock[1] += 1.0


@njit(cache=True)
def reason_of(ev, last_seq, last_price, params, clock_offset_ns=0.0):
    """The quarantine reason for ``ev`` (0 = valid). ``last_seq`` is the instrument's row of sequences;
    ``clock_offset_ns`` the venue's usual venue-minus-receive time."""
    if ev["kind"] == EV_UNPARSABLE:
        return R_UNPARSABLE
    if ev["venue"] >= params[P_N_VENUES] or ev["symbol"] >= params[P_N_SYMBOLS]:
        return R_UNKNOWN_INSTRUMENT
    symbol = int(ev["symbol"])
    reason = _content(ev, params[P_TICK + symbol], params[P_LOT + symbol])
    if reason != 0:
        return reason
    kind = ev["kind"]
    seq = ev["venue_seq"]
    if seq > 0:
        if kind == EV_TRADE or (kind == EV_BOOK and ev["first_seq"] == 0):
            if seq <= last_seq[SEQ_BOOK_TRADE]:
                return R_OUT_OF_ORDER
        elif kind == EV_BOOK_DELTA or kind == EV_BOOK:  # a view of a venue's L2 book: its update ids
            if seq < last_seq[SEQ_DELTA]:
                return R_OUT_OF_ORDER
        elif kind == EV_BBO:
            if seq <= last_seq[SEQ_BBO]:
                return R_OUT_OF_ORDER
    if ev["exch_ts"] > 0:
        lag = float(ev["origin_ts"] - ev["exch_ts"]) + clock_offset_ns
        if lag > params[P_MAX_STALE_NS]:
            return R_STALE
        if -lag > params[P_MAX_FUTURE_NS]:
            return R_FUTURE
    price = _reference_price(ev)
    if price > 0.0 and last_price > 0.0 and abs(price / last_price - 1.0) > params[P_MAX_JUMP]:
        return R_OUTLIER
    tick = params[P_TICK + symbol]
    lot = params[P_LOT + symbol]
    if kind == EV_BOOK:
        for j in range(BOOK_LEVELS):
            if _off_grid(ev["bid_px"][j], tick) or _off_grid(ev["ask_px"][j], tick) or \
                    _off_grid(ev["bid_sz"][j], lot) or _off_grid(ev["ask_sz"][j], lot):
                return R_OFF_GRID
    elif kind == EV_TRADE or kind == EV_BOOK_DELTA or kind == EV_LIQUIDATION:
        if _off_grid(ev["price"], tick) or _off_grid(ev["size"], lot):
            return R_OFF_GRID
    return 0


@njit(cache=True)
def step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    last_seq, last_price, quarantine, quarantined, clocks = state
    n_out = 0
    for i in range(n_a):
        ev = in_a[i]
        key = instrument_key(ev["venue"], ev["symbol"])
        known = ev["venue"] < params[P_N_VENUES] and ev["symbol"] < params[P_N_SYMBOLS] and key < MAX_KEYS
        row = last_seq[key] if known else last_seq[0]
        clock = clocks[int(ev["venue"])] if known else clocks[0]
        seeding = known and clock[1] == 0.0
        if seeding:  # the venue's first timed event sets the offset: nothing to judge it against yet
            track_clock(ev, clock)
        reason = reason_of(ev, row, last_price[key] if known else 0.0, params, clock[0])
        if known and not seeding:
            track_clock(ev, clock)
        if reason != 0:
            slot = quarantined[0] % quarantine.shape[0]
            quarantine[slot] = ev
            quarantine[slot]["reason"] = reason
            quarantined[0] += 1
            stats[ST_QUARANTINED] += 1
            stats[ST_REASON_BASE + reason - 1] += 1
            continue
        kind = ev["kind"]
        seq = ev["venue_seq"]
        if seq > 0:
            if kind == EV_TRADE or (kind == EV_BOOK and ev["first_seq"] == 0):
                if row[SEQ_BOOK_TRADE] != 0 and seq != row[SEQ_BOOK_TRADE] + 1:
                    stats[ST_GAPS] += 1
                row[SEQ_BOOK_TRADE] = seq
            elif kind == EV_BOOK_DELTA or kind == EV_BOOK:
                row[SEQ_DELTA] = seq
            elif kind == EV_BBO:
                row[SEQ_BBO] = seq
        if ev["flags"] & F_UNSYNCED:
            stats[ST_UNSYNCED] += 1
        price = _reference_price(ev)
        if price > 0.0:
            last_price[key] = price
        out[n_out] = ev
        n_out += 1
    stats[ST_FORWARDED] += n_out
    return n_out


@njit(cache=True)
def take_quarantined(state, out):
    """Copy the events quarantined since the last call into ``out`` (oldest first); returns (n, missed):
    ``missed`` were overwritten in the keep ring before anyone took them (the host skipped calls) or did
    not fit in ``out``. Single caller: the stage's own host, between steps."""
    quarantine, counts = state[2], state[3]
    total = counts[0]
    start = counts[1]
    missed = 0
    keep = quarantine.shape[0]
    if total - start > keep:
        missed = total - start - keep
        start = total - keep
    n = min(total - start, out.shape[0])
    missed += total - start - n
    for i in range(n):
        out[i] = quarantine[(start + i) % keep]
    counts[1] = total
    return n, missed
