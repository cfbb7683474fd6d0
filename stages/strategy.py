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
"""

import numpy as np
from numba import njit
from numba.extending import register_jitable

from shm.atomics import load_acquire
from shm.control import G_TRADING_ENABLED
from stages import kelly
from stages.counters import Counters
from stages.records import (BUY, INTENT_IOC, INTENT_QUOTE, ORD_CANCELLED, ORD_FILLED, ORD_PARTIAL, ORD_REJECTED,
                            RISK_KELLY, SELL, STRAT_DIRECTIONAL, STRAT_QUOTER, STRAT_RISK_REDUCE)
from stages.universe import MAX_KEYS, instrument_key

(P_THRESHOLD, P_TAKE_USD, P_QUOTE_USD, P_HALF_SPREAD_BPS, P_REQUOTE_BPS, P_SKEW_BPS, P_COOLDOWN_NS, P_QUOTING,
 P_MAX_POSITION_USD, P_KELLY_FRACTION, P_KELLY_PAYOFF, P_KELLY_CONTINUOUS) = range(12)

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
STATS = _COUNTERS.labels

MAX_INTENTS_PER_PREDICTION = 3


@register_jitable
def out_capacity(batch: int) -> int:
    return batch * MAX_INTENTS_PER_PREDICTION


def make_params(*, threshold: float, take_usd: float, quote_usd: float, half_spread_bps: float,
                requote_bps: float, skew_bps: float, cooldown_ms: float, quoting: bool,
                max_position_usd: float, kelly_fraction: float, kelly_payoff_ratio: float,
                kelly_form: str) -> np.ndarray:
    """Every default is the config's (pipeline.config: StrategyConfig, and risk's position limit and Kelly)."""
    return np.array([threshold, take_usd, quote_usd, half_spread_bps, requote_bps, skew_bps,
                     cooldown_ms * 1e6, float(quoting), max_position_usd, kelly_fraction, kelly_payoff_ratio,
                     float(kelly_form == "continuous"), 0.0])


def make_state():
    keys = np.zeros((MAX_KEYS, 4))
    keys[:, K_LAST_TAKE_TS] = -1e18
    return keys, np.zeros(1, np.int64)


@njit(cache=True)
def write_intent(o, p, intent_ids, kind, side, price, qty, strategy, now_ns, kelly_f=0.0, extra_reasons=0):
    """Intent ``o`` answering prediction ``p``, carrying its risk inputs (every strategy kernel writes them so)."""
    intent_ids[0] += 1
    o["risk_reasons"] = p["reasons"] | extra_reasons
    o["kelly_f"] = kelly_f
    o["budget"] = p["buy_budget"] if side == BUY else p["sell_budget"]
    o["horizon_sigma_bps"] = p["horizon_sigma_bps"]
    o["heat"] = p["heat"]
    o["drawdown"] = p["drawdown"]
    o["origin_ts"] = p["origin_ts"]
    o["origin_seq"] = p["origin_seq"]
    o["stage_ts"] = now_ns
    o["intent_id"] = intent_ids[0]
    o["venue"] = p["venue"]
    o["symbol"] = p["symbol"]
    o["kind"] = kind
    o["side"] = side
    o["strategy"] = strategy
    o["price"] = price
    o["qty"] = qty


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
    keys, intent_ids = state
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
        quote_qty = params[P_QUOTE_USD] / mid
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
