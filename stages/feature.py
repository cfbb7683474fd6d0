"""Feature stage: per (venue, symbol) incremental features, one vector per market event.

Book and BBO events update the book features (mid, microprice, spread, imbalances at depths 1, 5 and 10,
order-flow imbalance, returns, volatility, momentum); trade events the trade-flow and VWAP features;
funding events the funding rate and time to funding; liquidations their intensity. L2 deltas build the
instrument's book (``stages.book``) and, at the end of each synced venue message, its top ten levels feed
the same book features; a BBO on a synced book is its level 0 above the book's deeper levels. Marks
change nothing. Every event yields exactly one vector: the instrument's latest values as of that event
(before its first book, the book features are 0 and the vector's bid/ask NaN).

Two kinds of horizon:

- event-count EWMAs (the first eight features, kept as they were): ``x += alpha * (v - x)`` per event of
  the instrument;
- clock-based, by event time (``origin_ts``, never the wall clock): weights ``0.5 ** (age / h)`` with
  half-life ``h`` (the name's suffix). Each weighted sum ``S`` is decayed to the event's time before the
  event is folded in, so after any event ``S = sum over earlier-or-equal events of w_i * x_i``:
  ``ofi_h = S(e) / S(|e|)`` with ``e`` the Cont-Kukanov-Stoikov best-level flow of each book update;
  ``tfi_h = S(side * size) / S(size)`` over trades; ``rvol_h = sqrt(S(r^2))`` with ``r`` the mid return
  of each book update in bps; ``mom_h = mid / (S(mid) / S(1)) - 1`` over book updates;
  ``vwap_dev_h = mid / (S(p q) / S(q)) - 1`` over trades; ``liq_intensity_h = S(1) * ln 2 / h`` and
  ``liq_notional_h = S(p q) * ln 2 / h`` over liquidations (a kernel that integrates to one).
  A ratio with a zero denominator is 0. Time that goes backwards decays nothing.

``basis_bps`` compares the mid with the mean of the latest mids of the same symbol on the other venues
whose book moved within ``BASIS_MAX_AGE_S`` of event time (0 when none did: a venue whose feed stalled
would otherwise pin the basis to its last price); ``time_to_funding_s`` counts from the event's receive time to the next funding
time, carried from the venue's clock to the receive clock at the funding event.

Online store: at the end of each batch the latest vector of every instrument the batch touched is
written to a seqlock table (``shm.seqlock``; a local one in fused mode, shared memory in live mode).
"""
import math

import numpy as np
from numba import njit

from shm import seqlock
from stages import book
from stages.counters import Counters
from stages.records import (EV_BBO, EV_BOOK, EV_BOOK_DELTA, EV_FUNDING, EV_LIQUIDATION, EV_TRADE, F_LAST, FEATURE_NAMES,
                            FEATURE_SCHEMA_HASH, FEATURE_VECTOR, N_FEATURES)
from stages.universe import MAX_KEYS, MAX_VENUES, instrument_key, key_symbol, key_venue

F_SPREAD_BPS, F_MICRO_DEV_BPS, F_IMBALANCE_1, F_IMBALANCE_5, F_RET_1_BPS, F_MOMENTUM_BPS, F_RVOL_BPS, F_TRADE_FLOW = range(8)
F_MID = FEATURE_NAMES.index("mid")
F_MICROPRICE = FEATURE_NAMES.index("microprice")
F_IMBALANCE_10 = FEATURE_NAMES.index("imbalance_10")
F_OFI_1S, F_OFI_10S = FEATURE_NAMES.index("ofi_1s"), FEATURE_NAMES.index("ofi_10s")
F_TFI_1S, F_TFI_10S = FEATURE_NAMES.index("tfi_1s"), FEATURE_NAMES.index("tfi_10s")
F_RVOL_1S_BPS = FEATURE_NAMES.index("rvol_1s_bps")      # then 10 s, 60 s
F_MOM_1S_BPS = FEATURE_NAMES.index("mom_1s_bps")        # then 10 s, 60 s
F_VWAP_DEV_10S_BPS = FEATURE_NAMES.index("vwap_dev_10s_bps")  # then 60 s
F_BASIS_BPS = FEATURE_NAMES.index("basis_bps")
F_FUNDING_RATE_BPS = FEATURE_NAMES.index("funding_rate_bps")
F_TIME_TO_FUNDING_S = FEATURE_NAMES.index("time_to_funding_s")
F_LIQ_INTENSITY_60S = FEATURE_NAMES.index("liq_intensity_60s")
F_LIQ_NOTIONAL_60S = FEATURE_NAMES.index("liq_notional_60s")
assert FEATURE_NAMES[F_RVOL_1S_BPS:F_RVOL_1S_BPS + 3] == ("rvol_1s_bps", "rvol_10s_bps", "rvol_60s_bps")
assert FEATURE_NAMES[F_MOM_1S_BPS:F_MOM_1S_BPS + 3] == ("mom_1s_bps", "mom_10s_bps", "mom_60s_bps")

DEPTH_LEVELS = 10  # levels read from a built L2 book (imbalance_10); MARKET_EVENT views stay BOOK_LEVELS deep

HALF_LIVES_S = (1.0, 10.0, 60.0)  # the clock horizons, in the names' suffixes
H_1S, H_10S, H_60S = range(3)
N_HORIZONS = 3

# key state columns beyond the feature values
K_MID, K_BID, K_ASK, K_BID_SZ, K_ASK_SZ, K_VAR, K_HAS_BOOK, K_BOOK_FOLDS = range(N_FEATURES, N_FEATURES + 8)
# weighted sums per horizon: column A_FIRST + h * N_SUMS + A_*
(A_OFI, A_OFI_ABS, A_TF_SIGNED, A_TF_VOL, A_RET_SQ, A_MID, A_MID_W, A_VWAP_PQ, A_VWAP_Q, A_LIQ_N,
 A_LIQ_NOTIONAL) = range(11)
N_SUMS = 11
A_FIRST = N_FEATURES + 8
KEY_COLUMNS = A_FIRST + N_HORIZONS * N_SUMS

# key times (int64: float64 cannot hold a ns timestamp exactly)
T_LAST, T_FUNDING, T_BOOK = range(3)  # T_BOOK: event time the key's book last moved (its mid is as of then)
N_TIMES = 3
BASIS_MAX_AGE_S = 1.0  # part of basis_bps's definition (FEATURE_SCHEMA_VERSION), so not a config key
BASIS_MAX_AGE_NS = int(BASIS_MAX_AGE_S * 1e9)

P_MOMENTUM_ALPHA, P_VOL_ALPHA, P_FLOW_ALPHA = range(3)
P_DECAY_PER_NS = 4  # + horizon: ln 2 / half-life in ns
N_PARAMS = P_DECAY_PER_NS + N_HORIZONS

_COUNTERS = Counters()  # the stage's custom counters in slot-word order; STATS labels them
ST_VECTORS = _COUNTERS.add("vectors")
ST_BOOKS = _COUNTERS.add("book_events")
ST_TRADES = _COUNTERS.add("trade_events")
ST_NO_BOOK = _COUNTERS.add("before_first_book")
ST_BOOKS_BUILT = _COUNTERS.add("from_l2_books")
ST_STORE_WRITES = _COUNTERS.add("store_writes")
STATS = _COUNTERS.labels

LN2 = math.log(2.0)

# Why _nrt=False on every kernel (as in stages/book.py): numba otherwise increfs and decrefs each array a
# non-inlined call receives, and the per-key row view, with atomic instructions; without them the stage
# measured 231 -> 161 ns/event on BBO and trades (bench/feature_throughput). Nothing here allocates.


def make_params(momentum_half_life: float = 10.0, vol_half_life: float = 50.0, flow_half_life: float = 20.0):
    """Event-count half-lives for the first eight features; the clock half-lives are HALF_LIVES_S (they
    are part of the feature names, so of the schema)."""
    alpha = lambda h: 1.0 - 0.5 ** (1.0 / h)  # noqa: E731
    p = np.zeros(N_PARAMS)
    p[P_MOMENTUM_ALPHA], p[P_VOL_ALPHA], p[P_FLOW_ALPHA] = alpha(momentum_half_life), alpha(vol_half_life), \
        alpha(flow_half_life)
    for h, half_life_s in enumerate(HALF_LIVES_S):
        p[P_DECAY_PER_NS + h] = LN2 / (half_life_s * 1e9)
    return p


def make_store(n_keys: int = MAX_KEYS):
    """A process-local online store (fused mode, tools); live mode maps the same arrays from shared memory."""
    return seqlock.local_table(FEATURE_VECTOR, n_keys)


def make_state(store=None):
    """(feature state per key, L2 books built from deltas, book-view scratch [bid px, bid sz, ask px, ask sz]
    (rows 0-3: the view folded, rows 4-7: the L2 book's top under a BBO), key times, online store (seqs,
    records), the batch's last output row per key (-1 = untouched))."""
    seqs, slots = store if store is not None else make_store()
    if len(slots) < MAX_KEYS:
        raise ValueError(f"feature store has {len(slots)} slots; it needs MAX_KEYS={MAX_KEYS}")
    return (np.zeros((MAX_KEYS, KEY_COLUMNS)), book.make_books(), np.zeros((8, DEPTH_LEVELS)),
            np.zeros((MAX_KEYS, N_TIMES), np.int64), seqs, slots, np.full(MAX_KEYS, -1, np.int64))


@njit(cache=True, _nrt=False)
def _imbalance(bid_sz, ask_sz, depth):
    b = 0.0
    a = 0.0
    for j in range(min(depth, bid_sz.shape[0], ask_sz.shape[0])):
        b += bid_sz[j]
        a += ask_sz[j]
    total = b + a
    return (b - a) / total if total > 0.0 else 0.0


@njit(cache=True, _nrt=False)
def _ratio(num, den):
    if not den > 0.0:
        return 0.0
    return min(1.0, max(-1.0, num / den))


@njit(cache=True, _nrt=False)
def decay(row, times, key, ts, params):
    """Age every weighted sum of the key to event time ``ts``."""
    dt = ts - times[key, T_LAST]
    if times[key, T_LAST] == 0 or dt <= 0:
        if ts > times[key, T_LAST]:
            times[key, T_LAST] = ts
        return
    times[key, T_LAST] = ts
    for h in range(N_HORIZONS):
        f = math.exp(-float(dt) * params[P_DECAY_PER_NS + h])
        base = A_FIRST + h * N_SUMS
        for c in range(N_SUMS):
            row[base + c] *= f


@njit(cache=True, _nrt=False)
def update(ev, row, params):
    """Fold one book, BBO or trade event into the instrument's row (no clock features); True if it has a book."""
    if ev["kind"] == EV_BOOK or ev["kind"] == EV_BBO:  # a BBO is a one-level book (deeper sizes are 0)
        fold_book(row, ev["bid_px"], ev["bid_sz"], ev["ask_px"], ev["ask_sz"], params)
    elif ev["kind"] == EV_TRADE:
        fold_trade(row, float(ev["side"]), ev["price"], ev["size"], params)
    return row[K_HAS_BOOK] != 0.0


@njit(cache=True, _nrt=False)
def fold_trade(row, side, price, size, params):
    row[F_TRADE_FLOW] += params[P_FLOW_ALPHA] * (side - row[F_TRADE_FLOW])
    for h in range(N_HORIZONS):
        base = A_FIRST + h * N_SUMS
        row[base + A_TF_SIGNED] += side * size
        row[base + A_TF_VOL] += size
        row[base + A_VWAP_PQ] += price * size
        row[base + A_VWAP_Q] += size


@njit(cache=True, _nrt=False)
def fold_book(row, bid_px, bid_sz, ask_px, ask_sz, params):
    """Book features from the top levels (best first), from an event's own levels or a built L2 book."""
    bid = bid_px[0]
    ask = ask_px[0]
    bid_sz0 = bid_sz[0]
    ask_sz0 = ask_sz[0]
    mid = 0.5 * (bid + ask)
    ret_bps = 0.0
    ofi = 0.0
    had_book = row[K_HAS_BOOK] != 0.0
    if had_book:
        ret_bps = (mid / row[K_MID] - 1.0) * 1e4
        # Cont, Kukanov & Stoikov (2014), eq. 2: the best-level size change each side contributes.
        pbid, pask = row[K_BID], row[K_ASK]
        if bid >= pbid:
            ofi += bid_sz0
        if bid <= pbid:
            ofi -= row[K_BID_SZ]
        if ask <= pask:
            ofi -= ask_sz0
        if ask >= pask:
            ofi += row[K_ASK_SZ]
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
    row[F_MID] = mid
    row[F_MICROPRICE] = micro
    row[F_IMBALANCE_1] = _imbalance(bid_sz, ask_sz, 1)
    row[F_IMBALANCE_5] = _imbalance(bid_sz, ask_sz, 5)
    row[F_IMBALANCE_10] = _imbalance(bid_sz, ask_sz, 10)
    for h in range(N_HORIZONS):
        base = A_FIRST + h * N_SUMS
        row[base + A_OFI] += ofi
        row[base + A_OFI_ABS] += abs(ofi)
        row[base + A_RET_SQ] += ret_bps * ret_bps
        row[base + A_MID] += mid
        row[base + A_MID_W] += 1.0
    row[K_MID] = mid
    row[K_BID] = bid
    row[K_ASK] = ask
    row[K_BID_SZ] = bid_sz0
    row[K_ASK_SZ] = ask_sz0
    row[K_HAS_BOOK] = 1.0
    row[K_BOOK_FOLDS] += 1.0


@njit(cache=True, _nrt=False)
def merge_bbo(ev, top):
    """The view under a BBO: the BBO as level 0, then the L2 book's levels (``top[4:8]``) strictly behind
    it. The BBO is fresher than the last depth message, so book levels at or through it are gone."""
    for s in range(2):
        px, sz, deep_px, deep_sz = top[2 * s], top[2 * s + 1], top[4 + 2 * s], top[5 + 2 * s]
        best = ev["bid_px"][0] if s == 0 else ev["ask_px"][0]
        px[0] = best
        sz[0] = ev["bid_sz"][0] if s == 0 else ev["ask_sz"][0]
        k = 1
        for j in range(deep_px.shape[0]):
            if k == px.shape[0]:
                break
            p = deep_px[j]
            if (s == 0 and p < best) or (s == 1 and p > best):  # NaN (past the book's depth) never is
                px[k] = p
                sz[k] = deep_sz[j]
                k += 1
        for j in range(k, px.shape[0]):
            px[j] = math.nan
            sz[j] = 0.0


@njit(cache=True, _nrt=False)
def fold_funding(row, times, key, ev):
    row[F_FUNDING_RATE_BPS] = ev["price"] * 1e4
    next_ns = int(ev["aux"])
    if ev["exch_ts"] > 0:  # the funding time is on the venue's clock: carry it to the receive clock
        next_ns = next_ns - int(ev["exch_ts"]) + int(ev["origin_ts"])
    times[key, T_FUNDING] = next_ns


@njit(cache=True, _nrt=False)
def fold_liquidation(row, price, size):
    for h in range(N_HORIZONS):
        base = A_FIRST + h * N_SUMS
        row[base + A_LIQ_N] += 1.0
        row[base + A_LIQ_NOTIONAL] += price * size


@njit(cache=True, _nrt=False)
def derive(keys, times, key, ts, params):
    """The clock-based and cross-venue features of the key as of event time ``ts`` (after decay and fold)."""
    row = keys[key]
    has_book = row[K_HAS_BOOK] != 0.0
    mid = row[K_MID]
    for h in range(N_HORIZONS):
        base = A_FIRST + h * N_SUMS
        if h < 2:
            row[F_OFI_1S + h] = _ratio(row[base + A_OFI], row[base + A_OFI_ABS])
            row[F_TFI_1S + h] = _ratio(row[base + A_TF_SIGNED], row[base + A_TF_VOL])
        row[F_RVOL_1S_BPS + h] = math.sqrt(row[base + A_RET_SQ])
        ewma = row[base + A_MID] / row[base + A_MID_W] if row[base + A_MID_W] > 0.0 else 0.0
        row[F_MOM_1S_BPS + h] = (mid / ewma - 1.0) * 1e4 if has_book and ewma > 0.0 else 0.0
        if h > 0:
            vwap = row[base + A_VWAP_PQ] / row[base + A_VWAP_Q] if row[base + A_VWAP_Q] > 0.0 else 0.0
            row[F_VWAP_DEV_10S_BPS + h - 1] = (mid / vwap - 1.0) * 1e4 if has_book and vwap > 0.0 else 0.0
    per_s = params[P_DECAY_PER_NS + H_60S] * 1e9
    row[F_LIQ_INTENSITY_60S] = row[A_FIRST + H_60S * N_SUMS + A_LIQ_N] * per_s
    row[F_LIQ_NOTIONAL_60S] = row[A_FIRST + H_60S * N_SUMS + A_LIQ_NOTIONAL] * per_s
    funding = times[key, T_FUNDING]
    row[F_TIME_TO_FUNDING_S] = max(0.0, (funding - ts) * 1e-9) if funding != 0 else 0.0
    venue = key_venue(key)
    symbol = key_symbol(key)
    total = 0.0
    others = 0
    oldest = ts - BASIS_MAX_AGE_NS
    for v in range(MAX_VENUES):
        other = instrument_key(v, symbol)
        if v != venue and keys[other, K_HAS_BOOK] != 0.0 and times[other, T_BOOK] >= oldest:
            total += keys[other, K_MID]
            others += 1
    row[F_BASIS_BPS] = (mid / (total / others) - 1.0) * 1e4 if has_book and others > 0 else 0.0


@njit(cache=True, _nrt=False)
def step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    keys, books, top, times, store_seqs, store_slots, last_row = state
    for i in range(n_a):
        ev = in_a[i]
        key = instrument_key(ev["venue"], ev["symbol"])
        row = keys[key]
        ts = ev["origin_ts"]
        decay(row, times, key, ts, params)
        folds = row[K_BOOK_FOLDS]
        kind = ev["kind"]
        if kind == EV_BOOK_DELTA:
            book.apply(books, ev)
            # A message's levels arrive as several records: features move once it is complete, and only
            # from a book that is in sync (an unsynced one re-emits the last vector).
            if ev["flags"] & F_LAST and book.is_synced(books, key) and \
                    book.top(books, key, DEPTH_LEVELS, top[0], top[1], top[2], top[3]) > 0:
                fold_book(row, top[0], top[1], top[2], top[3], params)
                stats[ST_BOOKS_BUILT] += 1
        elif kind == EV_BBO:
            # The book checks the BBO against itself (a mismatch unsyncs it); a synced book lends its
            # deeper levels, else the BBO is a one-level book.
            book.apply(books, ev)
            if book.is_synced(books, key) and book.top(books, key, DEPTH_LEVELS, top[4], top[5], top[6], top[7]) > 0:
                merge_bbo(ev, top)
                fold_book(row, top[0], top[1], top[2], top[3], params)
            else:
                update(ev, row, params)
        elif kind == EV_FUNDING:
            fold_funding(row, times, key, ev)
        elif kind == EV_LIQUIDATION:
            fold_liquidation(row, ev["price"], ev["size"])
        else:
            update(ev, row, params)
        if row[K_BOOK_FOLDS] != folds:
            times[key, T_BOOK] = ts
        has_book = row[K_HAS_BOOK] != 0.0
        derive(keys, times, key, ts, params)
        o = out[i]
        o["origin_ts"] = ev["origin_ts"]
        o["origin_seq"] = ev["origin_seq"]
        o["stage_ts"] = now_ns
        o["venue"] = ev["venue"]
        o["symbol"] = ev["symbol"]
        o["kind"] = kind
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
        if kind == EV_TRADE or kind == EV_LIQUIDATION:
            o["side"], o["price"], o["size"] = ev["side"], ev["price"], ev["size"]
        else:
            o["side"], o["price"], o["size"] = 0, 0.0, 0.0
        last_row[key] = i
        if kind == EV_TRADE:
            stats[ST_TRADES] += 1
        elif kind == EV_BOOK or kind == EV_BBO or kind == EV_BOOK_DELTA:
            stats[ST_BOOKS] += 1
    for key in range(last_row.shape[0]):
        if last_row[key] >= 0:
            seqlock.write(store_seqs, store_slots, key, out, last_row[key])
            last_row[key] = -1
            stats[ST_STORE_WRITES] += 1
    stats[ST_VECTORS] += n_a
    return n_a
