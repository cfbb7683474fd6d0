"""Strategy stage: predictions and risk budgets in, order intents out.

Two simple, honest rules (deepened later): a directional taker that crosses the spread with an IOC when
the model's probability is far enough from one half (with a per-instrument cooldown in event time), and a
two-sided quoter around the mid, skewed against inventory, that re-quotes only when its desired price
moved by more than a threshold (so it does not spam cancels).

The taker sizes by fractional Kelly, here because the probability is first known here: the target position
is ``f * equity`` with ``f = c * (p - q / b)`` (binary) or ``c * mu / sigma^2`` (continuous, ``mu = (2p - 1)
sigma`` over the risk horizon, ``sigma`` risk's GARCH horizon volatility); an order takes the step towards
the target, capped by ``take_usd`` and by risk's budget. When risk asks for a reduction (liquidation
distance) that comes first, as a reduce-only IOC. Every intent carries the decision's inputs and reasons.
The prediction's ``size_scale`` (the sizer's, 1 without one) multiplies the taker's and the quoter's quantities;
0 sends no take and cancels the live quotes (a quote whose price holds keeps the size it was placed with).
"""

import numpy as np
from numba import njit
from numba.extending import register_jitable

from shm.atomics import load_acquire
from shm.control import G_TRADING_ENABLED
from stages import kelly
from stages.counters import Counters
from stages.records import (BUY, INTENT_IOC, INTENT_QUOTE, ORD_CANCELLED, ORD_FILLED, ORD_PARTIAL, ORD_REJECTED,
                            PREDICTION, RISK_KELLY, SELL, STRAT_DIRECTIONAL, STRAT_QUOTER, STRAT_RISK_REDUCE)
from stages.strategies import allocator, arbitrage, market_making, mean_reversion, momentum, regime
from stages.strategies.allocator import S_ARBITRAGE, S_MARKET_MAKING, S_MEAN_REVERSION, S_MOMENTUM
from stages.strategies.intent import write_intent
from stages.universe import MAX_KEYS, MAX_VENUES, instrument_key, key_venue

(P_THRESHOLD, P_TAKE_USD, P_QUOTE_USD, P_HALF_SPREAD_BPS, P_REQUOTE_BPS, P_SKEW_BPS, P_COOLDOWN_NS, P_QUOTING,
 P_MAX_POSITION_USD, P_KELLY_FRACTION, P_KELLY_PAYOFF, P_KELLY_CONTINUOUS, P_MODE, P_BAR_S) = range(14)
MODE_SIGNAL, MODE_REGIME = 0, 1  # P_MODE: the model's taker and quoter below | the strategies allocated by regime
# The regime mode's params, after the scalars: taker fees per venue, ticks per key, then each part's own block
P_TAKER_FEE_BPS = 16
P_TICKS = P_TAKER_FEE_BPS + MAX_VENUES
P_REGIME = P_TICKS + MAX_KEYS
P_ALLOCATOR = P_REGIME + regime.N_PARAMS
P_MOMENTUM = P_ALLOCATOR + allocator.N_PARAMS
P_MEAN_REVERSION = P_MOMENTUM + momentum.N_PARAMS
P_MARKET_MAKING = P_MEAN_REVERSION + mean_reversion.N_PARAMS
P_ARBITRAGE = P_MARKET_MAKING + market_making.N_PARAMS
N_PARAMS = P_ARBITRAGE + arbitrage.N_PARAMS

K_QUOTE_BID, K_QUOTE_ASK, K_LAST_TAKE_TS, K_POSITION = range(4)

_COUNTERS = Counters()  # the stage's custom counters in slot-word order; STATS labels them
ST_PREDICTIONS = _COUNTERS.add("predictions")
ST_TAKES = _COUNTERS.add("takes")
ST_QUOTES = _COUNTERS.add("quotes")
ST_QUOTE_CANCELS = _COUNTERS.add("quote_cancels")
ST_FILLS = _COUNTERS.add("fills_seen")
ST_NO_MARKET = _COUNTERS.add("no_market")
ST_DISABLED = _COUNTERS.add("trading_disabled")
ST_KELLY_SIZED = _COUNTERS.add("kelly_sized")
ST_KELLY_NO_EDGE = _COUNTERS.add("kelly_no_edge")
ST_RISK_REDUCTIONS = _COUNTERS.add("risk_reductions")
# regime mode: decisions per detected regime (REGIME_* order), intents per strategy (allocator S_* order)
ST_REGIME_BASE = _COUNTERS.add_range(("regime_trending", "regime_range", "regime_volatile"))
ST_INTENTS_BASE = _COUNTERS.add_range(name + "_intents" for name in allocator.STRATEGY_KEYS)
ST_STRATEGY_RATE_LIMITED = _COUNTERS.add("strategy_rate_limited")  # a strategy's own order-rate bucket was empty
ST_LOSS_STOPS = _COUNTERS.add("loss_stops")                        # strategies switched off by their loss limit
ST_MM_A = _COUNTERS.add("mm_fit_a_per_s")        # the latest order-arrival fit of market making: A (per second)
ST_MM_K_MILLI = _COUNTERS.add("mm_fit_k_milli")  # and k x 1000 (per tick of distance from the mid)
ST_WEIGHTS_VERSION = _COUNTERS.add("weights_version")  # the published allocator weights in force (0: the config's)
ST_WEIGHTS_REFUSED = _COUNTERS.add("weights_refused")  # published tables refused (a weight outside [0, 10])
STATS = _COUNTERS.labels

MAX_INTENTS_PER_PREDICTION = 7  # regime mode: momentum, mean reversion, two quotes, two arbitrage legs, a residual


@register_jitable
def out_capacity(batch: int) -> int:
    return batch * MAX_INTENTS_PER_PREDICTION


def make_params(*, threshold: float, take_usd: float, quote_usd: float, half_spread_bps: float,
                requote_bps: float, skew_bps: float, cooldown_ms: float, quoting: bool,
                max_position_usd: float, kelly_fraction: float, kelly_payoff_ratio: float,
                kelly_form: str, mode: str = "signal", bar_s: float = 1.0, taker_fee_bps_by_venue: dict | None = None,
                ticks_by_key: dict | None = None, blocks: dict | None = None) -> np.ndarray:
    """Every default is the config's (pipeline.config: StrategyConfig, and risk's position limit and Kelly).
    ``mode``: "signal" or "regime"; the regime mode reads the taker fee of each venue index, the tick of each
    instrument key (a key without one is not quoted) and ``blocks``: each part's params by module name
    ("regime", "allocator", "momentum", "mean_reversion", "market_making", "arbitrage")."""
    p = np.zeros(N_PARAMS)
    p[:P_MODE] = [threshold, take_usd, quote_usd, half_spread_bps, requote_bps, skew_bps, cooldown_ms * 1e6,
                  float(quoting), max_position_usd, kelly_fraction, kelly_payoff_ratio,
                  float(kelly_form == "continuous")]
    p[P_MODE] = MODE_REGIME if mode == "regime" else MODE_SIGNAL
    p[P_BAR_S] = bar_s
    for venue, fee in (taker_fee_bps_by_venue or {}).items():
        p[P_TAKER_FEE_BPS + venue] = fee
    for key, tick in (ticks_by_key or {}).items():
        p[P_TICKS + key] = tick
    for name, start, module in (("regime", P_REGIME, regime), ("allocator", P_ALLOCATOR, allocator),
                                ("momentum", P_MOMENTUM, momentum), ("mean_reversion", P_MEAN_REVERSION, mean_reversion),
                                ("market_making", P_MARKET_MAKING, market_making),
                                ("arbitrage", P_ARBITRAGE, arbitrage)):
        block = (blocks or {}).get(name)
        if block is not None:
            assert len(block) == module.N_PARAMS, name
            p[start:start + module.N_PARAMS] = block
        elif mode == "regime":
            raise ValueError(f"strategy.make_params: mode='regime' needs the {name} params")
    return p


def make_state(published_weights: tuple | None = None):
    """(legacy per-key columns, intent ids, regime detector, allocator (buckets, own books, published weights),
    momentum, mean reversion, market making, arbitrage, each key's latest prediction, its time (0: none)); the
    detector's state holds each key's regime. ``published_weights``: a live run's allocator weights table
    (``pipeline.store.weights_store``)."""
    keys = np.zeros((MAX_KEYS, 4))
    keys[:, K_LAST_TAKE_TS] = -1e18
    return (keys, np.zeros(1, np.int64), regime.make_state(), allocator.make_state(published_weights),
            momentum.make_state(MAX_KEYS),
            mean_reversion.make_state(MAX_KEYS), market_making.make_state(), arbitrage.make_state(),
            np.zeros(MAX_KEYS, PREDICTION), np.zeros(MAX_KEYS, np.int64))


@njit(cache=True)
def kelly_target(p, side, params):
    """Fractional Kelly target position notional over equity on ``side`` (>= 0: no edge, no position)."""
    prob = p["prob_up"] if side == BUY else 1.0 - p["prob_up"]
    c = params[P_KELLY_FRACTION]
    if params[P_KELLY_CONTINUOUS] != 0.0:
        sigma = p["horizon_sigma_bps"] * 1e-4
        f = kelly.continuous((2.0 * prob - 1.0) * sigma, sigma * sigma, c)
    else:
        f = kelly.binary(prob, params[P_KELLY_PAYOFF], c)
    return max(f, 0.0)


@njit(cache=True)
def step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    keys, intent_ids = state[0], state[1]
    allocated = params[P_MODE] == MODE_REGIME
    if allocated:
        _absorb_own(state, params, in_b, n_b)
    for i in range(n_b):
        r = in_b[i]
        k = instrument_key(r["venue"], r["symbol"])
        if (r["state"] == ORD_PARTIAL or r["state"] == ORD_FILLED) and r["liquidity"] != 0:
            keys[k, K_POSITION] = r["position"]
            stats[ST_FILLS] += 1
        if r["strategy"] == STRAT_QUOTER and (r["state"] == ORD_FILLED or r["state"] == ORD_CANCELLED
                                              or r["state"] == ORD_REJECTED):
            col = K_QUOTE_BID if r["side"] == BUY else K_QUOTE_ASK
            # Only the live quote's end frees the side; a replaced quote's cancel arrives after the new one.
            if abs(keys[k, col] - r["price"]) <= 1e-12 * abs(r["price"]):
                keys[k, col] = 0.0
    n_out = 0
    if load_acquire(ctl, G_TRADING_ENABLED) == 0:
        stats[ST_DISABLED] += n_a
        stats[ST_PREDICTIONS] += n_a
        return 0
    if allocated:
        return _allocated(in_a, n_a, state, params, stats, out, now_ns)
    threshold = params[P_THRESHOLD]
    for i in range(n_a):
        p = in_a[i]
        k = instrument_key(p["venue"], p["symbol"])
        bid = p["bid"]
        ask = p["ask"]
        if not (bid > 0.0 and ask > bid):
            stats[ST_NO_MARKET] += 1
            continue
        mid = 0.5 * (bid + ask)
        edge = p["prob_up"] - 0.5
        if p["origin_ts"] - keys[k, K_LAST_TAKE_TS] >= params[P_COOLDOWN_NS]:
            reduce = p["reduce_qty"]
            side = BUY if edge > threshold else (SELL if edge < -threshold else 0)
            if reduce != 0.0:
                side = BUY if reduce > 0.0 else SELL
                qty = min(abs(reduce), abs(keys[k, K_POSITION]))  # reduce-only, against strategy's own view too
                if qty > 0.0 and keys[k, K_POSITION] * reduce < 0.0:
                    write_intent(out[n_out], p, intent_ids, INTENT_IOC, side, ask if side == BUY else bid, qty,
                            STRAT_RISK_REDUCE, now_ns)
                    n_out += 1
                    keys[k, K_LAST_TAKE_TS] = p["origin_ts"]
                    stats[ST_RISK_REDUCTIONS] += 1
            elif side != 0:
                budget = p["buy_budget"] if side == BUY else p["sell_budget"]
                f = kelly_target(p, side, params)
                # the step from the current position to the Kelly target, on this side
                want_usd = f * p["equity"] - side * keys[k, K_POSITION] * mid
                qty = min(params[P_TAKE_USD] / mid, budget)
                kelly_qty = max(want_usd / mid, 0.0)
                extra = 0
                if kelly_qty < qty:
                    qty = kelly_qty
                    extra = RISK_KELLY
                qty *= p["size_scale"]  # the sizer's choice (0: no order), inside risk's budget and Kelly's step
                if qty > 0.0:
                    write_intent(out[n_out], p, intent_ids, INTENT_IOC, side, ask if side == BUY else bid, qty,
                            STRAT_DIRECTIONAL, now_ns, side * f, extra)
                    n_out += 1
                    keys[k, K_LAST_TAKE_TS] = p["origin_ts"]
                    stats[ST_TAKES] += 1
                    if extra:
                        stats[ST_KELLY_SIZED] += 1
                elif f <= 0.0:
                    stats[ST_KELLY_NO_EDGE] += 1
        if params[P_QUOTING] == 0.0:
            continue
        inventory = keys[k, K_POSITION] * mid / params[P_MAX_POSITION_USD]
        skew = params[P_SKEW_BPS] * inventory
        half = params[P_HALF_SPREAD_BPS]
        want_bid = min(mid * (1.0 - (half + skew) * 1e-4), bid)
        want_ask = max(mid * (1.0 + (half - skew) * 1e-4), ask)
        quote_qty = params[P_QUOTE_USD] / mid * p["size_scale"]
        requote = params[P_REQUOTE_BPS] * 1e-4 * mid
        for side in (BUY, SELL):
            col = K_QUOTE_BID if side == BUY else K_QUOTE_ASK
            want = want_bid if side == BUY else want_ask
            budget = p["buy_budget"] if side == BUY else p["sell_budget"]
            qty = min(quote_qty, budget)
            current = keys[k, col]
            if qty <= 0.0:
                if current != 0.0:
                    write_intent(out[n_out], p, intent_ids, INTENT_QUOTE, side, 0.0, 0.0, STRAT_QUOTER, now_ns)
                    n_out += 1
                    keys[k, col] = 0.0
                    stats[ST_QUOTE_CANCELS] += 1
            elif current == 0.0 or abs(want - current) > requote:
                write_intent(out[n_out], p, intent_ids, INTENT_QUOTE, side, want, qty, STRAT_QUOTER, now_ns)
                n_out += 1
                keys[k, col] = want
                stats[ST_QUOTES] += 1
    stats[ST_PREDICTIONS] += n_a
    return n_out


@njit(cache=True)
def _absorb_own(state, params, in_b, n_b):
    """Regime mode: each strategy's own fills into its books; a market maker's quote that ended frees its side."""
    alloc, mm = state[3], state[6]
    for i in range(n_b):
        r = in_b[i]
        s = allocator.index_of(r["strategy"])
        if s < 0:
            continue
        k = instrument_key(r["venue"], r["symbol"])
        if (r["state"] == ORD_PARTIAL or r["state"] == ORD_FILLED) and r["liquidity"] != 0:
            allocator.on_fill(alloc, s, k, r["side"], r["qty"], r["price"], r["fee"])
        if s == S_MARKET_MAKING and (r["state"] == ORD_FILLED or r["state"] == ORD_CANCELLED
                                     or r["state"] == ORD_REJECTED):
            market_making.on_quote_end(mm, k, r["side"], r["price"], params[P_TICKS + k])


@njit(cache=True)
def _allocated(in_a, n_a, state, params, stats, out, now_ns):
    """Regime mode: per prediction, the regime, then each strategy the allocator weights for it (its own limits
    and order rate first), in a fixed order: momentum, mean reversion, market making, arbitrage."""
    rstate, alloc, mom, mr, mm, arb, latest, fresh_ns = (state[2], state[3], state[4], state[5], state[6], state[7],
                                                          state[8], state[9])
    intent_ids = state[1]
    rparams = params[P_REGIME:P_ALLOCATOR]
    aparams = params[P_ALLOCATOR:P_MOMENTUM]
    allocator.apply_published(alloc)
    stats[ST_WEIGHTS_VERSION] = allocator.weights_version(alloc)
    stats[ST_WEIGHTS_REFUSED] = allocator.weights_refused(alloc)
    n_out = 0
    for i in range(n_a):
        p = in_a[i]
        k = instrument_key(p["venue"], p["symbol"])
        bid, ask = p["bid"], p["ask"]
        if not (bid > 0.0 and ask > bid):
            stats[ST_NO_MARKET] += 1
            continue
        mid = 0.5 * (bid + ask)
        t = p["origin_ts"]
        latest[k] = p
        fresh_ns[k] = t
        allocator.mark(alloc, k, mid)
        tick = params[P_TICKS + k]
        market_making.on_trade(mm, params[P_MARKET_MAKING:P_ARBITRAGE], k, p, tick)
        reg = regime.update(rstate, rparams, k, t, mid, p["values"], p["garch_sigma_bps"])
        stats[ST_REGIME_BASE + reg] += 1
        code = 1 + reg
        fee = params[P_TAKER_FEE_BPS + key_venue(k)]
        for s in range(allocator.N_STRATEGIES):
            if allocator.check_loss(alloc, aparams, s):
                stats[ST_LOSS_STOPS] += 1
            w = allocator.weight(alloc, aparams, reg, s)
            held = allocator.position(alloc, s, k)
            if w <= 0.0 and held == 0.0 and s != S_MARKET_MAKING and s != S_ARBITRAGE:
                continue  # off and flat: nothing to do (the maker withdraws quotes, arbitrage closes legs)
            if not allocator.has_token(alloc, aparams, s, t):
                stats[ST_STRATEGY_RATE_LIMITED] += 1
                continue
            room_buy = allocator.room(alloc, aparams, s, k, BUY, mid)
            room_sell = allocator.room(alloc, aparams, s, k, SELL, mid)
            before = n_out
            if s == S_MOMENTUM:
                n_out = momentum.decide(mom, params[P_MOMENTUM:P_MEAN_REVERSION], k, p, mid, w, held, room_buy,
                                        room_sell, p["equity"], fee, out, n_out, intent_ids, now_ns, code)
            elif s == S_MEAN_REVERSION:
                n_out = mean_reversion.decide(mr, params[P_MEAN_REVERSION:P_MARKET_MAKING], k, p, mid, w, held,
                                              room_buy, room_sell, fee, out, n_out, intent_ids, now_ns, code)
            elif s == S_MARKET_MAKING:
                n_out = market_making.decide(mm, params[P_MARKET_MAKING:P_ARBITRAGE], k, p, mid, tick, w, held,
                                             room_buy, room_sell, params[P_BAR_S], out, n_out, intent_ids, now_ns,
                                             code)
            else:
                n_out = arbitrage.decide(arb, params[P_ARBITRAGE:N_PARAMS], p, latest, fresh_ns, alloc[1], s, w,
                                         params[P_TAKER_FEE_BPS:P_TICKS], out, n_out, intent_ids, now_ns, code)
            if n_out > before:
                allocator.spend_tokens(alloc, aparams, s, t, n_out - before)
                stats[ST_INTENTS_BASE + s] += n_out - before
    quotes = mm[0]
    for k in range(MAX_KEYS):  # status shows the first instrument's fit (keys in order)
        if quotes[k, market_making.Q_FIT_OK] != 0.0:
            stats[ST_MM_A] = int(quotes[k, market_making.Q_A])
            stats[ST_MM_K_MILLI] = int(1000.0 * quotes[k, market_making.Q_K])
            break
    stats[ST_PREDICTIONS] += n_a
    return n_out
