"""Validate stage: forward well-formed market events; quarantine the rest with a reason code.

Rules, in order (the first that fails names the reason): unknown instrument, NaN, non-positive price,
non-positive size, crossed or locked book, out-of-order venue sequence. Sequence gaps are counted and the
event forwarded (the feed decides on resync). Quarantined events are counted per reason and the latest
``QUARANTINE_KEEP`` are kept, with their reason, in the stage state for inspection.
"""
import math

import numpy as np
from numba import njit

from stages.feed import MAX_KEYS, MAX_SYMBOLS
from stages.records import BOOK_LEVELS, EV_BOOK, EV_TRADE, MARKET_EVENT

R_UNKNOWN_INSTRUMENT, R_NAN, R_NONPOSITIVE_PRICE, R_NONPOSITIVE_SIZE, R_CROSSED_BOOK, R_OUT_OF_ORDER, R_BAD_KIND = range(1, 8)
REASON_NAMES = {R_UNKNOWN_INSTRUMENT: "unknown instrument", R_NAN: "NaN", R_NONPOSITIVE_PRICE: "non-positive price",
                R_NONPOSITIVE_SIZE: "non-positive size", R_CROSSED_BOOK: "crossed book",
                R_OUT_OF_ORDER: "out-of-order sequence", R_BAD_KIND: "unknown event kind"}

STATS = ("forwarded", "quarantined", "unknown_instrument", "nan", "nonpositive_price", "nonpositive_size",
         "crossed_book", "out_of_order", "bad_kind", "sequence_gaps")
ST_FORWARDED, ST_QUARANTINED = 0, 1  # per-reason counter = 1 + reason
ST_GAPS = 9

P_N_VENUES, P_N_SYMBOLS = range(2)
QUARANTINE_KEEP = 256


def make_params(n_venues: int, n_symbols: int) -> np.ndarray:
    return np.array([n_venues, n_symbols, 0, 0], np.float64)


def make_state():
    """(last venue sequence per key, quarantine ring of the latest rejects, its count)."""
    return np.zeros(MAX_KEYS, np.int64), np.zeros(QUARANTINE_KEEP, MARKET_EVENT), np.zeros(1, np.int64)


@njit(cache=True)
def reason_of(ev, last_seq, n_venues, n_symbols):
    if ev["venue"] >= n_venues or ev["symbol"] >= n_symbols:
        return R_UNKNOWN_INSTRUMENT
    if ev["kind"] == EV_TRADE:
        if math.isnan(ev["price"]) or math.isnan(ev["size"]):
            return R_NAN
        if ev["price"] <= 0.0:
            return R_NONPOSITIVE_PRICE
        if ev["size"] <= 0.0:
            return R_NONPOSITIVE_SIZE
    elif ev["kind"] == EV_BOOK:
        for j in range(BOOK_LEVELS):
            if (math.isnan(ev["bid_px"][j]) or math.isnan(ev["ask_px"][j]) or math.isnan(ev["bid_sz"][j])
                    or math.isnan(ev["ask_sz"][j])):
                return R_NAN
        for j in range(BOOK_LEVELS):
            if ev["bid_px"][j] <= 0.0 or ev["ask_px"][j] <= 0.0:
                return R_NONPOSITIVE_PRICE
        for j in range(BOOK_LEVELS):
            if ev["bid_sz"][j] <= 0.0 or ev["ask_sz"][j] <= 0.0:
                return R_NONPOSITIVE_SIZE
        if ev["bid_px"][0] >= ev["ask_px"][0]:
            return R_CROSSED_BOOK
    else:
        return R_BAD_KIND
    if ev["venue_seq"] <= last_seq:
        return R_OUT_OF_ORDER
    return 0


@njit(cache=True)
def step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    last_seq, quarantine, quarantined = state
    n_venues = int(params[P_N_VENUES])
    n_symbols = int(params[P_N_SYMBOLS])
    n_out = 0
    for i in range(n_a):
        ev = in_a[i]
        key = int(ev["venue"]) * MAX_SYMBOLS + int(ev["symbol"])
        prev = last_seq[key] if key < MAX_KEYS else 0
        reason = reason_of(ev, prev, n_venues, n_symbols)
        if reason != 0:
            slot = quarantined[0] % QUARANTINE_KEEP
            quarantine[slot] = ev
            quarantine[slot]["reason"] = reason
            quarantined[0] += 1
            stats[ST_QUARANTINED] += 1
            stats[1 + reason] += 1
            continue
        if prev != 0 and ev["venue_seq"] != prev + 1:
            stats[ST_GAPS] += 1
        last_seq[key] = ev["venue_seq"]
        out[n_out] = ev
        n_out += 1
    stats[ST_FORWARDED] += n_out
    return n_out
