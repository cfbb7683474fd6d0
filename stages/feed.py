"""Feed stage: a seeded synthetic market (the embedded default source).

Per symbol a fundamental mid follows a random walk whose variance is GARCH(1,1) (volatility clusters) per
unit of time on the clock the events are stamped with, so a second of market moves alike at any emission
rate, inside a regime: trending (a persistent drift), range-bound (lower volatility, mean reversion to
the price the regime started at) or volatile (doubled shocks), switching as a Markov chain in event time.
Each venue quotes the fundamental with a small mean-reverting (Ornstein-Uhlenbeck) relative offset, so
venues differ by a few bps and cross-venue arbitrage exists. Events arrive as a Hawkes process (exponential
kernel, simulated exactly after Dassios & Zhao 2013): arrivals excite more arrivals, so activity comes in
bursts while the mean rate stays the configured one. Most events are a five-level book snapshot or a trade
on one (venue, symbol); each (venue, symbol) also publishes its funding rate (with the next funding time)
and its mark/index prices about once per ``info_interval``, and large moves liquidate someone (a forced
order on the side the move hurt). The next move drifts toward the side with more resting size (book
pressure, a persistent latent process that also tilts resting sizes and trade direction), so imbalance and
trade flow carry real, modest predictive power. A configurable fraction of book and trade events is
deliberately malformed (NaN, non-positive size, crossed book, out-of-order venue sequence) to exercise
validation. All randomness comes from a xorshift64* generator in the kernel state: same seed, same events.

Paced live, an event is emitted when its place on the synthetic clock (mean gap ``1 / rate``) has come in
wall time, so the bursts reach the pipeline; fused, the synthetic clock is the time.
"""
import math

import numpy as np
from numba import njit

from stages.counters import Counters
from stages.records import (BOOK_LEVELS, BUY, EV_BOOK, EV_FUNDING, EV_LIQUIDATION, EV_MARK, EV_TRADE,
                            F_SIM_REGIME_SHIFT, REGIME_RANGE, REGIME_TRENDING, REGIME_VOLATILE, SELL)
from stages.universe import MAX_KEYS, MAX_SYMBOLS, instrument_key

DEFAULT_MEAN_GAP_NS = 100_000.0  # the synthetic clock's mean gap between events when no rate is set (max rate)

# params (float64)
(P_RATE_EPS, P_MAX_EVENTS, P_N_VENUES, P_N_SYMBOLS, P_BAD_RATE, P_TRADE_PROB, P_SIM_CLOCK, P_MEAN_GAP_NS,
 P_BATCH, P_SIGMA_BPS, P_PRESSURE, P_VENUE_SPREAD_BPS, P_STALL_AFTER, P_CRASH_AFTER, P_CRASH_BPS, P_BURSTINESS,
 P_BURST_DECAY_NS, P_REGIME_MEAN_NS, P_INFO_INTERVAL_NS, P_LIQUIDATION_PROB, P_TREND_BPS_PER_S) = range(21)
N_PARAMS = 24

# ints state (I_CLOCK_BASE_NS: the first event's stamped time, so that times since it fit a float64 exactly)
I_EMITTED, I_START_NS, I_SIM_NS, I_PENDING_GAP_NS, I_CLOCK_BASE_NS = range(5)
# symbol state columns (Y_LAST_MOVE_NS: the symbol's last move, ns after I_CLOCK_BASE_NS; -1 before its first)
Y_MID, Y_VAR, Y_TICK, Y_LOT, Y_PRESSURE, Y_REGIME, Y_TREND_DIR, Y_ANCHOR, Y_LAST_MOVE_NS = range(9)
SYMBOL_COLUMNS = 9
# key state columns
K_OFFSET, K_IMBALANCE, K_BID, K_ASK, K_HAS_BOOK, K_NEXT_INFO_NS, K_INFO_TOGGLE = range(7)
# arrivals state: the Hawkes process's excess intensity (per ns) just after the last arrival
A_EXCITATION = 0

# GARCH(1,1) per mean time between a symbol's events at the configured rate: omega = (1 - persistence) x the
# regime's level, alpha = 0.10, beta = 0.85; over u such mean times the persistence is 0.95**u.
GARCH_PERSISTENCE = 0.95
GARCH_ALPHA = 0.10
RANGE_PULL = 0.02  # the range-bound regime's pull to its anchor per mean time between a symbol's events
FUNDING_PERIOD_NS = 8 * 3600 * 1_000_000_000

_COUNTERS = Counters()  # the stage's custom counters in slot-word order; STATS labels them
ST_EMITTED = _COUNTERS.add("emitted")
ST_MALFORMED = _COUNTERS.add("malformed_injected")
ST_BOOKS = _COUNTERS.add("books")
ST_TRADES = _COUNTERS.add("trades")
ST_FINISHED = _COUNTERS.add("finished")
ST_FUNDINGS = _COUNTERS.add("fundings")
ST_MARKS = _COUNTERS.add("marks")
ST_LIQUIDATIONS = _COUNTERS.add("liquidations")
ST_REGIME_SWITCHES = _COUNTERS.add("regime_switches")
STATS = _COUNTERS.labels

# The synthetic market's own instruments (name, price, tick, lot): only a synthetic run trades them, so they
# stay here rather than in stages.universe.
DEFAULT_SYMBOLS = (("BTC-USDT", 60_000.0, 0.1, 0.0001), ("ETH-USDT", 3_000.0, 0.01, 0.001),
                   ("SOL-USDT", 150.0, 0.001, 0.01))


def make_params(*, rate_eps: float, max_events: int, n_venues: int, n_symbols: int, bad_rate: float,
                sim_clock: bool, batch: int, trade_prob: float, stall_after: int, crash_after: int, crash_bps: float,
                burstiness: float, burst_decay_ms: float, regime_mean_s: float, info_interval_ms: float,
                liquidation_prob: float, trend_bps_per_s: float, mean_gap_ns: float = DEFAULT_MEAN_GAP_NS,
                sigma_bps: float = 1.0, pressure: float = 0.15, venue_spread_bps: float = 2.0) -> np.ndarray:
    """``stall_after`` (chaos): go silent after that many events, as a dead socket would (0 = never);
    ``crash_after``/``crash_bps``: from that event on, every mid steps down by ``crash_bps`` (a scripted crash).
    ``burstiness``: the Hawkes branching ratio (0 = Poisson arrivals, < 1), excitation decaying over
    ``burst_decay_ms``; ``regime_mean_s``: mean time a symbol stays in a regime; ``info_interval_ms``: mean
    time between a (venue, symbol)'s funding/mark events; ``liquidation_prob``: chance that a move beyond 3
    sigma liquidates someone (x3 when volatile); ``trend_bps_per_s``: a trend's drift.
    Times are on the synthetic clock, whose mean gap is ``1 / rate_eps`` when paced, ``mean_gap_ns`` otherwise."""
    if rate_eps > 0.0:
        mean_gap_ns = 1e9 / rate_eps
    p = np.zeros(N_PARAMS)
    p[P_BURSTINESS], p[P_BURST_DECAY_NS], p[P_REGIME_MEAN_NS] = burstiness, burst_decay_ms * 1e6, regime_mean_s * 1e9
    p[P_INFO_INTERVAL_NS], p[P_LIQUIDATION_PROB] = info_interval_ms * 1e6, liquidation_prob
    p[P_TREND_BPS_PER_S] = trend_bps_per_s
    p[P_STALL_AFTER], p[P_CRASH_AFTER], p[P_CRASH_BPS] = stall_after, crash_after, crash_bps
    p[P_RATE_EPS], p[P_MAX_EVENTS], p[P_N_VENUES], p[P_N_SYMBOLS] = rate_eps, max_events, n_venues, n_symbols
    p[P_BAD_RATE], p[P_TRADE_PROB], p[P_SIM_CLOCK], p[P_MEAN_GAP_NS] = bad_rate, trade_prob, sim_clock, mean_gap_ns
    p[P_BATCH], p[P_SIGMA_BPS], p[P_PRESSURE], p[P_VENUE_SPREAD_BPS] = batch, sigma_bps, pressure, venue_spread_bps
    return p


def make_state(seed: int, symbols=DEFAULT_SYMBOLS):
    """(ints, rng, symbol state, key state, venue sequences, arrivals) for ``symbols`` = (name, price, tick,
    lot). Every symbol starts range-bound around its price."""
    if len(symbols) > MAX_SYMBOLS:
        raise ValueError(f"at most {MAX_SYMBOLS} symbols, got {len(symbols)}")
    ints = np.zeros(8, np.int64)
    rng = np.array([(seed * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D) % 2**64 or 1], np.uint64)
    sym = np.zeros((MAX_SYMBOLS, SYMBOL_COLUMNS))
    sym[:, Y_LAST_MOVE_NS] = -1.0
    for i, (_, price, tick, lot) in enumerate(symbols):
        sym[i, Y_MID], sym[i, Y_VAR], sym[i, Y_TICK], sym[i, Y_LOT] = price, 1e-8, tick, lot
        sym[i, Y_REGIME], sym[i, Y_TREND_DIR], sym[i, Y_ANCHOR] = REGIME_RANGE, 1.0, price
    return ints, rng, sym, np.zeros((MAX_KEYS, 8)), np.zeros(MAX_KEYS, np.int64), np.zeros(2)


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
def _next_gap_ns(state, params):
    """Time to the next arrival of a Hawkes process with exponential kernel, exactly (Dassios & Zhao 2013):
    baseline mu = (1 - n) / mean_gap keeps the mean rate at 1 / mean_gap for branching ratio n."""
    rng, arrivals = state[1], state[5]
    n = params[P_BURSTINESS]
    beta = 1.0 / params[P_BURST_DECAY_NS]
    mu = (1.0 - n) / params[P_MEAN_GAP_NS]
    gap = -math.log(1.0 - _uniform(rng)) / mu
    excitation = arrivals[A_EXCITATION]
    if excitation > 0.0:
        d = 1.0 + beta * math.log(1.0 - _uniform(rng)) / excitation
        if d > 0.0:
            gap = min(gap, -math.log(d) / beta)
    arrivals[A_EXCITATION] = excitation * math.exp(-beta * gap) + n * beta
    return int(gap) + 1


@njit(cache=True)
def _emit_one(state, params, rec, seq, now_ns, stats):
    ints, rng, sym, key_state, venue_seq, arrivals = state
    n_venues = int(params[P_N_VENUES])
    n_symbols = int(params[P_N_SYMBOLS])
    drawn = int(_uniform(rng) * n_venues * n_symbols)
    venue = drawn // n_symbols
    s = drawn % n_symbols
    k = instrument_key(venue, s)
    if ints[I_PENDING_GAP_NS] == 0:
        ints[I_PENDING_GAP_NS] = _next_gap_ns(state, params)
    gap = ints[I_PENDING_GAP_NS]
    ints[I_PENDING_GAP_NS] = 0
    ints[I_SIM_NS] += gap
    rec["origin_ts"] = ints[I_SIM_NS] if params[P_SIM_CLOCK] != 0.0 else now_ns
    rec["origin_seq"] = seq
    # The synthetic venue sits next to us: its time is the receive time (the synthetic clock when fused).
    rec["exch_ts"] = rec["origin_ts"]
    rec["venue"] = venue
    rec["symbol"] = s
    rec["reason"] = 0
    rec["first_seq"] = 0
    rec["prev_seq"] = 0
    rec["aux"] = 0.0
    tick = sym[s, Y_TICK]
    lot = sym[s, Y_LOT]

    # Regimes switch as a Markov chain in event time: each symbol stays P_REGIME_MEAN_NS on average.
    if _uniform(rng) < gap * n_symbols / params[P_REGIME_MEAN_NS]:
        sym[s, Y_REGIME] = (sym[s, Y_REGIME] + 1.0 + math.floor(_uniform(rng) * 2.0)) % 3.0
        sym[s, Y_TREND_DIR] = 1.0 if _uniform(rng) < 0.5 else -1.0
        sym[s, Y_ANCHOR] = sym[s, Y_MID]
        stats[ST_REGIME_SWITCHES] += 1
    rec["flags"] = (1 + int(sym[s, Y_REGIME])) << F_SIM_REGIME_SHIFT  # the true regime (stages.records)
    regime = int(sym[s, Y_REGIME])
    # The regime sets the GARCH long-run level (through omega; scaling the shocks instead would push
    # alpha + beta past 1 and the variance would explode): sigma x2 volatile, x0.7 range-bound.
    level = 4.0 if regime == REGIME_VOLATILE else (0.5 if regime == REGIME_RANGE else 1.0)

    # Time since this symbol's last move on the clock its events are stamped with (synthetic when fused, wall
    # time live), in units of its mean time between events at the configured rate (mean gap x symbols): a
    # move's variance, drift and pull are in proportion to it, so a run at max rate (stamps close together)
    # moves prices per second as the configured rate does. A symbol's first move counts one unit.
    if ints[I_CLOCK_BASE_NS] == 0:
        ints[I_CLOCK_BASE_NS] = rec["origin_ts"]
    at_ns = float(rec["origin_ts"] - ints[I_CLOCK_BASE_NS])
    unit_ns = params[P_MEAN_GAP_NS] * n_symbols
    u = 1.0 if sym[s, Y_LAST_MOVE_NS] < 0.0 else max(0.0, at_ns - sym[s, Y_LAST_MOVE_NS]) / unit_ns
    sym[s, Y_LAST_MOVE_NS] = at_ns

    # GARCH(1,1) variance per unit (omega, alpha, beta keep the long-run sigma at P_SIGMA_BPS x the regime's).
    base_var = level * (params[P_SIGMA_BPS] * 1e-4) ** 2
    var = sym[s, Y_VAR]
    sigma = math.sqrt(var)
    # Latent book pressure: a persistent AR(1) per symbol that tilts resting sizes and drifts the mid.
    sym[s, Y_PRESSURE] = 0.97 * sym[s, Y_PRESSURE] + 0.25 * _normal(rng)
    tilt = math.tanh(sym[s, Y_PRESSURE])
    z = _normal(rng)
    # the shock's variance and the pressure's drift grow with the time elapsed (so each its sd and its mean)
    r = sigma * (math.sqrt(u) * z + u * params[P_PRESSURE] * tilt)
    if regime == REGIME_TRENDING:
        r += sym[s, Y_TREND_DIR] * params[P_TREND_BPS_PER_S] * 1e-4 * u * unit_ns * 1e-9  # drift/s x elapsed s
    elif regime == REGIME_RANGE:
        # the pull over u units, compounded (so a long gap closes the deviation rather than overshooting it)
        r -= (1.0 - (1.0 - RANGE_PULL) ** u) * math.log(sym[s, Y_MID] / sym[s, Y_ANCHOR])
    if params[P_CRASH_AFTER] > 0.0 and ints[I_EMITTED] >= params[P_CRASH_AFTER]:
        r -= params[P_CRASH_BPS] * 1e-4
    # The recursion over u units: the variance's excess over its level decays by persistence**u, and the
    # news, the move per unit (r*r / u), weighs alpha x (1 - decay) / (1 - persistence); at u = 1 that is
    # 0.05 level + 0.10 r*r + 0.85 var, the old per-event recursion. Flooring the decay at alpha /
    # (1 - persistence + alpha) (reached at u = 7.9) keeps the old variance's weight >= 0: stable and
    # positive for any gap. (1 - decay) / u tends to -ln(persistence) as u -> 0, where only a crash moves.
    decay = max(GARCH_PERSISTENCE ** u, GARCH_ALPHA / (1.0 - GARCH_PERSISTENCE + GARCH_ALPHA))
    lost = 1.0 - decay
    lost_per_unit = lost / u if u > 1e-9 else -math.log(GARCH_PERSISTENCE)
    alpha_per_lost = GARCH_ALPHA / (1.0 - GARCH_PERSISTENCE)
    sym[s, Y_VAR] = lost * base_var + (decay - alpha_per_lost * lost) * var + alpha_per_lost * lost_per_unit * r * r
    sym[s, Y_MID] *= math.exp(r)
    offset = key_state[k, K_OFFSET] * 0.98 + 0.2 * params[P_VENUE_SPREAD_BPS] * 1e-4 * _normal(rng)
    key_state[k, K_OFFSET] = offset
    venue_mid = sym[s, Y_MID] * (1.0 + offset)

    for j in range(BOOK_LEVELS):
        rec["bid_px"][j] = 0.0
        rec["bid_sz"][j] = 0.0
        rec["ask_px"][j] = 0.0
        rec["ask_sz"][j] = 0.0
    rec["venue_seq"] = 0  # funding, marks and liquidations carry no venue sequence
    has_book = key_state[k, K_HAS_BOOK] != 0.0
    liquidation_odds = params[P_LIQUIDATION_PROB] * (3.0 if regime == REGIME_VOLATILE else 1.0)
    if has_book and abs(z) > 3.0 and _uniform(rng) < liquidation_odds:
        # The move hurt one side: longs are sold out on a drop, shorts bought in on a rise, through the touch.
        side = SELL if r < 0.0 else BUY
        rec["kind"] = EV_LIQUIDATION
        rec["side"] = side
        rec["price"] = key_state[k, K_BID] - tick if side == SELL else key_state[k, K_ASK] + tick
        rec["size"] = max(lot, round(_exponential(rng, 200.0 * lot) / lot) * lot)
        stats[ST_LIQUIDATIONS] += 1
        return 0
    if has_book and ints[I_SIM_NS] >= key_state[k, K_NEXT_INFO_NS]:
        key_state[k, K_NEXT_INFO_NS] = ints[I_SIM_NS] + params[P_INFO_INTERVAL_NS] * (0.5 + _uniform(rng))
        key_state[k, K_INFO_TOGGLE] = 1.0 - key_state[k, K_INFO_TOGGLE]
        rec["side"] = 0
        rec["size"] = 0.0
        if key_state[k, K_INFO_TOGGLE] != 0.0:
            # Funding follows the venue's premium over the fundamental (clamped as venues do).
            rate = 0.0001 + 0.5 * offset + 0.00002 * _normal(rng)
            rec["kind"] = EV_FUNDING
            rec["price"] = min(0.0075, max(-0.0075, rate))
            rec["aux"] = float((rec["origin_ts"] // FUNDING_PERIOD_NS + 1) * FUNDING_PERIOD_NS)
            stats[ST_FUNDINGS] += 1
        else:
            rec["kind"] = EV_MARK
            rec["price"] = venue_mid
            rec["aux"] = sym[s, Y_MID]
            stats[ST_MARKS] += 1
        return 0

    is_trade = has_book and _uniform(rng) < params[P_TRADE_PROB]
    if is_trade:
        side = 1 if _uniform(rng) < 0.5 + 0.3 * math.tanh(sym[s, Y_PRESSURE]) else -1
        rec["kind"] = EV_TRADE
        rec["side"] = side
        rec["price"] = key_state[k, K_ASK] if side > 0 else key_state[k, K_BID]
        rec["size"] = max(lot, round(_exponential(rng, 20.0 * lot) / lot) * lot)
        stats[ST_TRADES] += 1
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
        stats[ST_BOOKS] += 1
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
    """Emit the events due by ``now_ns``: paced, those whose synthetic time has come; all of a batch when the
    rate is 0."""
    ints = state[0]
    want = int(params[P_BATCH])
    if want > out.shape[0]:
        want = out.shape[0]
    paced = params[P_RATE_EPS] > 0.0
    if paced and ints[I_START_NS] == 0:
        ints[I_START_NS] = now_ns
    limit = params[P_MAX_EVENTS]
    if params[P_STALL_AFTER] > 0.0 and (limit == 0.0 or params[P_STALL_AFTER] < limit):
        limit = params[P_STALL_AFTER]
    if limit > 0.0:
        left = int(limit) - ints[I_EMITTED]
        if left < want:
            want = left
    n = 0
    while n < want:
        if paced:
            if ints[I_PENDING_GAP_NS] == 0:
                ints[I_PENDING_GAP_NS] = _next_gap_ns(state, params)
            if ints[I_SIM_NS] + ints[I_PENDING_GAP_NS] > now_ns - ints[I_START_NS]:
                break
        ints[I_EMITTED] += 1
        stats[ST_MALFORMED] += _emit_one(state, params, out[n], ints[I_EMITTED], now_ns, stats)
        n += 1
    if params[P_MAX_EVENTS] > 0.0 and ints[I_EMITTED] >= params[P_MAX_EVENTS]:
        stats[ST_FINISHED] = 1
    stats[ST_EMITTED] = ints[I_EMITTED]
    return n
