"""Strategy stage: predictions and risk budgets in, order intents out.

Two simple, honest rules (deepened later): a directional taker that crosses the spread with an IOC when
the model's probability is far enough from one half (with a per-instrument cooldown in event time), and a
two-sided quoter around the mid, skewed against inventory, that re-quotes only when its desired price
moved by more than a threshold (so it does not spam cancels).
"""

import numpy as np
from numba import njit

from stages.feed import MAX_KEYS, MAX_SYMBOLS
from shm.atomics import load_acquire
from shm.control import G_TRADING_ENABLED
from stages.records import (BUY, INTENT_IOC, INTENT_QUOTE, ORD_CANCELLED, ORD_FILLED, ORD_PARTIAL, ORD_REJECTED, SELL,
                            STRAT_DIRECTIONAL, STRAT_QUOTER)

(P_THRESHOLD, P_TAKE_USD, P_QUOTE_USD, P_HALF_SPREAD_BPS, P_REQUOTE_BPS, P_SKEW_BPS, P_COOLDOWN_NS, P_QUOTING,
 P_MAX_POSITION_USD) = range(9)

K_QUOTE_BID, K_QUOTE_ASK, K_LAST_TAKE_TS, K_POSITION = range(4)

STATS = ("predictions", "takes", "quotes", "quote_cancels", "fills_seen", "no_market", "trading_disabled")
ST_PREDICTIONS, ST_TAKES, ST_QUOTES, ST_QUOTE_CANCELS, ST_FILLS, ST_NO_MARKET, ST_DISABLED = range(7)

MAX_INTENTS_PER_PREDICTION = 3


def out_capacity(batch: int) -> int:
    return batch * MAX_INTENTS_PER_PREDICTION


def make_params(threshold: float, take_usd: float, quote_usd: float, half_spread_bps: float,
                requote_bps: float, skew_bps: float, cooldown_ms: float, quoting: bool,
                max_position_usd: float) -> np.ndarray:
    return np.array([threshold, take_usd, quote_usd, half_spread_bps, requote_bps, skew_bps,
                     cooldown_ms * 1e6, float(quoting), max_position_usd, 0.0])


def make_state():
    keys = np.zeros((MAX_KEYS, 4))
    keys[:, K_LAST_TAKE_TS] = -1e18
    return keys, np.zeros(1, np.int64)


@njit(cache=True)
def _intent(o, p, intent_ids, kind, side, price, qty, strategy, now_ns):
    intent_ids[0] += 1
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
def step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    keys, intent_ids = state
    for i in range(n_b):
        r = in_b[i]
        k = int(r["venue"]) * MAX_SYMBOLS + int(r["symbol"])
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
        k = int(p["venue"]) * MAX_SYMBOLS + int(p["symbol"])
        bid = p["bid"]
        ask = p["ask"]
        if not (bid > 0.0 and ask > bid):
            stats[ST_NO_MARKET] += 1
            continue
        mid = 0.5 * (bid + ask)
        edge = p["prob_up"] - 0.5
        if p["origin_ts"] - keys[k, K_LAST_TAKE_TS] >= params[P_COOLDOWN_NS]:
            take_qty = params[P_TAKE_USD] / mid
            if edge > threshold and p["buy_budget"] > 0.0:
                _intent(out[n_out], p, intent_ids, INTENT_IOC, BUY, ask, min(take_qty, p["buy_budget"]),
                        STRAT_DIRECTIONAL, now_ns)
                n_out += 1
                keys[k, K_LAST_TAKE_TS] = p["origin_ts"]
                stats[ST_TAKES] += 1
            elif edge < -threshold and p["sell_budget"] > 0.0:
                _intent(out[n_out], p, intent_ids, INTENT_IOC, SELL, bid, min(take_qty, p["sell_budget"]),
                        STRAT_DIRECTIONAL, now_ns)
                n_out += 1
                keys[k, K_LAST_TAKE_TS] = p["origin_ts"]
                stats[ST_TAKES] += 1
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
                    _intent(out[n_out], p, intent_ids, INTENT_QUOTE, side, 0.0, 0.0, STRAT_QUOTER, now_ns)
                    n_out += 1
                    keys[k, col] = 0.0
                    stats[ST_QUOTE_CANCELS] += 1
            elif current == 0.0 or abs(want - current) > requote:
                _intent(out[n_out], p, intent_ids, INTENT_QUOTE, side, want, qty, STRAT_QUOTER, now_ns)
                n_out += 1
                keys[k, col] = want
                stats[ST_QUOTES] += 1
    stats[ST_PREDICTIONS] += n_a
    return n_out
