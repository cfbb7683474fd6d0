"""Feed stage: a seeded synthetic market (the embedded default source).

Per symbol a fundamental mid follows a random walk whose per-event variance is GARCH(1,1) (volatility
clusters); each venue quotes it with a small mean-reverting (Ornstein-Uhlenbeck) relative offset, so
venues differ by a few bps and cross-venue arbitrage exists. Each event is a five-level book snapshot or
a trade on one (venue, symbol). The next move drifts toward the side with more resting size (book
pressure, a persistent latent process that also tilts resting sizes and trade direction), so
imbalance and trade flow carry real, modest predictive power. A configurable fraction of events is
deliberately malformed (NaN, non-positive size, crossed book, out-of-order venue sequence) to exercise
validation. All randomness comes from a xorshift64* generator in the kernel state: same seed, same events.
"""
import math

import numpy as np
from numba import njit

from stages.records import BOOK_LEVELS, EV_BOOK, EV_TRADE

MAX_VENUES = 4
MAX_SYMBOLS = 8
MAX_KEYS = MAX_VENUES * MAX_SYMBOLS

# params (float64)
(P_RATE_EPS, P_MAX_EVENTS, P_N_VENUES, P_N_SYMBOLS, P_BAD_RATE, P_TRADE_PROB, P_SIM_CLOCK, P_MEAN_GAP_NS,
 P_BATCH, P_SIGMA_BPS, P_PRESSURE, P_VENUE_SPREAD_BPS, P_STALL_AFTER, P_CRASH_AFTER, P_CRASH_BPS) = range(15)
N_PARAMS = 16

# ints state
I_EMITTED, I_START_NS, I_SIM_NS = range(3)
# symbol state columns
Y_MID, Y_VAR, Y_TICK, Y_LOT, Y_PRESSURE = range(5)
# key state columns
K_OFFSET, K_IMBALANCE, K_BID, K_ASK, K_HAS_BOOK = range(5)

# stats (the stage's custom counters)
STATS = ("emitted", "malformed_injected", "books", "trades", "finished")
ST_EMITTED, ST_MALFORMED, ST_BOOKS, ST_TRADES, ST_FINISHED = range(5)

DEFAULT_SYMBOLS = (("BTC-USDT", 60_000.0, 0.1, 0.0001), ("ETH-USDT", 3_000.0, 0.01, 0.001),
                   ("SOL-USDT", 150.0, 0.001, 0.01))


def make_params(rate_eps: float, max_events: int, n_venues: int, n_symbols: int, bad_rate: float,
                sim_clock: bool, batch: int, trade_prob: float = 0.2, mean_gap_ns: float = 100_000.0,
                sigma_bps: float = 1.0, pressure: float = 0.15, venue_spread_bps: float = 2.0,
                stall_after: int = 0, crash_after: int = 0, crash_bps: float = 0.0) -> np.ndarray:
    """``stall_after`` (chaos): go silent after that many events, as a dead socket would (0 = never);
    ``crash_after``/``crash_bps``: from that event on, every mid steps down by ``crash_bps`` (a scripted crash)."""
    p = np.zeros(N_PARAMS)
    p[P_STALL_AFTER], p[P_CRASH_AFTER], p[P_CRASH_BPS] = stall_after, crash_after, crash_bps
    p[P_RATE_EPS], p[P_MAX_EVENTS], p[P_N_VENUES], p[P_N_SYMBOLS] = rate_eps, max_events, n_venues, n_symbols
    p[P_BAD_RATE], p[P_TRADE_PROB], p[P_SIM_CLOCK], p[P_MEAN_GAP_NS] = bad_rate, trade_prob, sim_clock, mean_gap_ns
    p[P_BATCH], p[P_SIGMA_BPS], p[P_PRESSURE], p[P_VENUE_SPREAD_BPS] = batch, sigma_bps, pressure, venue_spread_bps
    return p


def make_state(seed: int, symbols=DEFAULT_SYMBOLS):
    """(ints, rng, symbol state, key state, venue sequences) for ``symbols`` = (name, price, tick, lot)."""
    if len(symbols) > MAX_SYMBOLS:
        raise ValueError(f"at most {MAX_SYMBOLS} symbols, got {len(symbols)}")
    ints = np.zeros(4, np.int64)
    rng = np.array([(seed * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D) % 2**64 or 1], np.uint64)
    sym = np.zeros((MAX_SYMBOLS, 5))
    for i, (_, price, tick, lot) in enumerate(symbols):
        sym[i, Y_MID], sym[i, Y_VAR], sym[i, Y_TICK], sym[i, Y_LOT] = price, 1e-8, tick, lot
    return ints, rng, sym, np.zeros((MAX_KEYS, 8)), np.zeros(MAX_KEYS, np.int64)


@njit(cache=True)
def _next_u64(rng):
    x = rng[0]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    rng[0] = x
    return x * np.uint64(0x2545F4914F6CDD1D)


@njit(cache=True)
def _uniform(rng):
    return float(_next_u64(rng) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _normal(rng):
    u1 = _uniform(rng)
    u2 = _uniform(rng)
    return math.sqrt(-2.0 * math.log(u1 + 1e-300)) * math.cos(2.0 * math.pi * u2)


@njit(cache=True)
def _exponential(rng, mean):
    return -mean * math.log(1.0 - _uniform(rng))


@njit(cache=True)
def _emit_one(state, params, rec, seq, now_ns):
    ints, rng, sym, key_state, venue_seq = state
    n_venues = int(params[P_N_VENUES])
    n_symbols = int(params[P_N_SYMBOLS])
    k = int(_uniform(rng) * n_venues * n_symbols)
    venue = k // n_symbols
    s = k % n_symbols
    ints[I_SIM_NS] += int(_exponential(rng, params[P_MEAN_GAP_NS])) + 1
    rec["origin_ts"] = ints[I_SIM_NS] if params[P_SIM_CLOCK] != 0.0 else now_ns
    rec["origin_seq"] = seq
    # The synthetic venue sits next to us: its time is the receive time (the synthetic clock when fused).
    rec["exch_ts"] = rec["origin_ts"]
    rec["venue"] = venue
    rec["symbol"] = s
    rec["reason"] = 0
    tick = sym[s, Y_TICK]
    lot = sym[s, Y_LOT]

    # GARCH(1,1) per-event variance (omega, alpha, beta keep the long-run sigma at P_SIGMA_BPS).
    base_var = (params[P_SIGMA_BPS] * 1e-4) ** 2
    var = sym[s, Y_VAR]
    # Latent book pressure: a persistent AR(1) per symbol that tilts resting sizes and drifts the mid.
    sym[s, Y_PRESSURE] = 0.97 * sym[s, Y_PRESSURE] + 0.25 * _normal(rng)
    tilt = math.tanh(sym[s, Y_PRESSURE])
    r = math.sqrt(var) * (_normal(rng) + params[P_PRESSURE] * tilt)
    if params[P_CRASH_AFTER] > 0.0 and ints[I_EMITTED] >= params[P_CRASH_AFTER]:
        r -= params[P_CRASH_BPS] * 1e-4
    sym[s, Y_VAR] = 0.05 * base_var + 0.10 * r * r + 0.85 * var
    sym[s, Y_MID] *= math.exp(r)
    offset = key_state[k, K_OFFSET] * 0.98 + 0.2 * params[P_VENUE_SPREAD_BPS] * 1e-4 * _normal(rng)
    key_state[k, K_OFFSET] = offset
    venue_mid = sym[s, Y_MID] * (1.0 + offset)

    is_trade = key_state[k, K_HAS_BOOK] != 0.0 and _uniform(rng) < params[P_TRADE_PROB]
    for j in range(BOOK_LEVELS):
        rec["bid_px"][j] = 0.0
        rec["bid_sz"][j] = 0.0
        rec["ask_px"][j] = 0.0
        rec["ask_sz"][j] = 0.0
    if is_trade:
        side = 1 if _uniform(rng) < 0.5 + 0.3 * math.tanh(sym[s, Y_PRESSURE]) else -1
        rec["kind"] = EV_TRADE
        rec["side"] = side
        rec["price"] = key_state[k, K_ASK] if side > 0 else key_state[k, K_BID]
        rec["size"] = max(lot, round(_exponential(rng, 20.0 * lot) / lot) * lot)
    else:
        half_ticks = 1.0 + math.floor(_uniform(rng) * 2.0)
        best_bid = (math.floor(venue_mid / tick) - half_ticks + 1.0) * tick
        best_ask = best_bid + (2.0 * half_ticks - 1.0) * tick
        rec["kind"] = EV_BOOK
        rec["side"] = 0
        rec["price"] = 0.0
        rec["size"] = 0.0
        for j in range(BOOK_LEVELS):
            rec["bid_px"][j] = best_bid - j * tick
            rec["ask_px"][j] = best_ask + j * tick
            rec["bid_sz"][j] = max(lot, round(_exponential(rng, 50.0 * lot * (1.0 + 0.8 * tilt)) / lot) * lot)
            rec["ask_sz"][j] = max(lot, round(_exponential(rng, 50.0 * lot * (1.0 - 0.8 * tilt)) / lot) * lot)
        b0 = rec["bid_sz"][0]
        a0 = rec["ask_sz"][0]
        key_state[k, K_IMBALANCE] = (b0 - a0) / (b0 + a0)
        key_state[k, K_BID] = best_bid
        key_state[k, K_ASK] = best_ask
        key_state[k, K_HAS_BOOK] = 1.0
    venue_seq[k] += 1
    rec["venue_seq"] = venue_seq[k]

    if _uniform(rng) < params[P_BAD_RATE]:
        flaw = int(_uniform(rng) * 4.0)
        if flaw == 0:
            rec["price"] = math.nan
            rec["bid_px"][0] = math.nan
        elif flaw == 1:
            rec["size"] = -1.0
            rec["ask_sz"][0] = -1.0
        elif flaw == 2:
            rec["kind"] = EV_BOOK
            for j in range(BOOK_LEVELS):
                rec["bid_px"][j] = venue_mid * 1.01 - j * tick
                rec["ask_px"][j] = venue_mid * 0.99 + j * tick
                rec["bid_sz"][j] = lot
                rec["ask_sz"][j] = lot
        else:
            rec["venue_seq"] = venue_seq[k] - 3
        return 1
    return 0


@njit(cache=True)
def step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    """Emit the events due by ``now_ns`` (paced at P_RATE_EPS; all of a batch when the rate is 0)."""
    ints = state[0]
    want = int(params[P_BATCH])
    if want > out.shape[0]:
        want = out.shape[0]
    if params[P_RATE_EPS] > 0.0:
        if ints[I_START_NS] == 0:
            ints[I_START_NS] = now_ns
        due = int((now_ns - ints[I_START_NS]) * params[P_RATE_EPS] * 1e-9) - ints[I_EMITTED]
        if due < want:
            want = due
    limit = params[P_MAX_EVENTS]
    if params[P_STALL_AFTER] > 0.0 and (limit == 0.0 or params[P_STALL_AFTER] < limit):
        limit = params[P_STALL_AFTER]
    if limit > 0.0:
        left = int(limit) - ints[I_EMITTED]
        if left < want:
            want = left
    for i in range(want):
        ints[I_EMITTED] += 1
        stats[ST_MALFORMED] += _emit_one(state, params, out[i], ints[I_EMITTED], now_ns)
        if out[i]["kind"] == EV_TRADE:
            stats[ST_TRADES] += 1
        else:
            stats[ST_BOOKS] += 1
    if params[P_MAX_EVENTS] > 0.0 and ints[I_EMITTED] >= params[P_MAX_EVENTS]:
        stats[ST_FINISHED] = 1
    if want < 0:
        return 0
    stats[ST_EMITTED] = ints[I_EMITTED]
    return want
