"""Feature stage: per (venue, symbol) incremental features, one vector per market event.

Book and BBO events update mid, spread, microprice and imbalances, and the return/volatility EWMAs; trade
events update the signed trade-flow EWMA; L2 deltas build the instrument's book (``stages.book``) and, at the
end of each venue message, the top levels feed the same book features; every other kind (funding, marks,
liquidations) re-emits the latest vector, so each event still yields exactly one. Horizons count events of the
same instrument (event time, never wall time).
"""
import math

import numpy as np
from numba import njit

from stages.feed import MAX_KEYS, MAX_SYMBOLS
from stages import book
from stages.records import (BOOK_LEVELS, EV_BBO, EV_BOOK, EV_BOOK_DELTA, EV_TRADE, F_LAST, FEATURE_SCHEMA_HASH,
                            N_FEATURES)

F_SPREAD_BPS, F_MICRO_DEV_BPS, F_IMBALANCE_1, F_IMBALANCE_5, F_RET_1_BPS, F_MOMENTUM_BPS, F_RVOL_BPS, F_TRADE_FLOW = range(8)

# key state columns beyond the feature values
K_MID, K_BID, K_ASK, K_BID_SZ, K_ASK_SZ, K_VAR, K_HAS_BOOK = range(N_FEATURES, N_FEATURES + 7)
KEY_COLUMNS = N_FEATURES + 8

P_MOMENTUM_ALPHA, P_VOL_ALPHA, P_FLOW_ALPHA = range(3)

STATS = ("vectors", "book_events", "trade_events", "before_first_book", "from_l2_books")  # book: views, BBO, deltas
ST_VECTORS, ST_BOOKS, ST_TRADES, ST_NO_BOOK, ST_BOOKS_BUILT = range(5)


def make_params(momentum_half_life: float = 10.0, vol_half_life: float = 50.0, flow_half_life: float = 20.0):
    alpha = lambda h: 1.0 - 0.5 ** (1.0 / h)  # noqa: E731
    return np.array([alpha(momentum_half_life), alpha(vol_half_life), alpha(flow_half_life), 0.0])


def make_state():
    """(feature state per key, L2 books built from deltas, top-of-book scratch [bid px, bid sz, ask px, ask sz])."""
    return np.zeros((MAX_KEYS, KEY_COLUMNS)), book.make_books(), np.zeros((4, BOOK_LEVELS))


@njit(cache=True)
def _imbalance(bid_sz, ask_sz, depth):
    b = 0.0
    a = 0.0
    for j in range(depth):
        b += bid_sz[j]
        a += ask_sz[j]
    total = b + a
    return (b - a) / total if total > 0.0 else 0.0


@njit(cache=True)
def update(ev, row, params):
    """Fold one market event into the instrument's state row; returns True if the row has a book."""
    if ev["kind"] == EV_BOOK or ev["kind"] == EV_BBO:  # a BBO is a one-level book (deeper sizes are 0)
        fold_book(row, ev["bid_px"], ev["bid_sz"], ev["ask_px"], ev["ask_sz"], params)
    elif ev["kind"] == EV_TRADE:
        signed = float(ev["side"])
        row[F_TRADE_FLOW] += params[P_FLOW_ALPHA] * (signed - row[F_TRADE_FLOW])
    return row[K_HAS_BOOK] != 0.0


@njit(cache=True)
def fold_book(row, bid_px, bid_sz, ask_px, ask_sz, params):
    """Book features from the top levels (best first), from an event's own levels or a built L2 book."""
    bid = bid_px[0]
    ask = ask_px[0]
    bid_sz0 = bid_sz[0]
    ask_sz0 = ask_sz[0]
    mid = 0.5 * (bid + ask)
    ret_bps = 0.0
    if row[K_HAS_BOOK] != 0.0:
        ret_bps = (mid / row[K_MID] - 1.0) * 1e4
    a_m = params[P_MOMENTUM_ALPHA]
    a_v = params[P_VOL_ALPHA]
    row[F_RET_1_BPS] = ret_bps
    row[F_MOMENTUM_BPS] += a_m * (ret_bps - row[F_MOMENTUM_BPS])
    row[K_VAR] += a_v * (ret_bps * ret_bps - row[K_VAR])
    row[F_RVOL_BPS] = math.sqrt(row[K_VAR])
    row[F_SPREAD_BPS] = (ask - bid) / mid * 1e4
    top_size = bid_sz0 + ask_sz0
    micro = (bid * ask_sz0 + ask * bid_sz0) / top_size if top_size > 0.0 else mid  # a BBO may show no size
    row[F_MICRO_DEV_BPS] = (micro - mid) / mid * 1e4
    row[F_IMBALANCE_1] = _imbalance(bid_sz, ask_sz, 1)
    row[F_IMBALANCE_5] = _imbalance(bid_sz, ask_sz, BOOK_LEVELS)
    row[K_MID] = mid
    row[K_BID] = bid
    row[K_ASK] = ask
    row[K_BID_SZ] = bid_sz0
    row[K_ASK_SZ] = ask_sz0
    row[K_HAS_BOOK] = 1.0


@njit(cache=True)
def step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    keys, books, top = state
    for i in range(n_a):
        ev = in_a[i]
        key = int(ev["venue"]) * MAX_SYMBOLS + int(ev["symbol"])
        row = keys[key]
        if ev["kind"] == EV_BOOK_DELTA:
            book.apply(books, ev)
            # A message's levels arrive as several records: features move once it is complete, and only
            # from a book that is in sync (an unsynced one re-emits the last vector).
            if ev["flags"] & F_LAST and book.is_synced(books, key) and \
                    book.top(books, key, BOOK_LEVELS, top[0], top[1], top[2], top[3]) > 0:
                fold_book(row, top[0], top[1], top[2], top[3], params)
                stats[ST_BOOKS_BUILT] += 1
            has_book = row[K_HAS_BOOK] != 0.0
        else:
            has_book = update(ev, row, params)
        o = out[i]
        o["origin_ts"] = ev["origin_ts"]
        o["origin_seq"] = ev["origin_seq"]
        o["stage_ts"] = now_ns
        o["venue"] = ev["venue"]
        o["symbol"] = ev["symbol"]
        o["kind"] = ev["kind"]
        o["schema_hash"] = FEATURE_SCHEMA_HASH
        if has_book:
            o["bid"] = row[K_BID]
            o["ask"] = row[K_ASK]
            o["bid_sz"] = row[K_BID_SZ]
            o["ask_sz"] = row[K_ASK_SZ]
        else:
            o["bid"] = math.nan
            o["ask"] = math.nan
            o["bid_sz"] = 0.0
            o["ask_sz"] = 0.0
            stats[ST_NO_BOOK] += 1
        for j in range(N_FEATURES):
            o["values"][j] = row[j]
        if ev["kind"] == EV_TRADE:
            stats[ST_TRADES] += 1
        elif ev["kind"] == EV_BOOK or ev["kind"] == EV_BBO or ev["kind"] == EV_BOOK_DELTA:
            stats[ST_BOOKS] += 1
    stats[ST_VECTORS] += n_a
    return n_a
