"""Risk stage: a size budget per feature vector from position, notional limits, volatility and drawdown.

Positions follow the execute stage's reports (its view is authoritative). The budget on each side is the
room left under the position limit, capped by the per-order notional scaled down by volatility above the
reference level, and halved while equity is more than the soft drawdown below its peak (the hard stop is
the watchdog's, from the equity figures published here); every reduction sets a reason bit on the
decision so an order can be explained later.
"""

import numpy as np
from numba import njit

from stages.feed import MAX_KEYS, MAX_SYMBOLS
from stages.records import (FEATURE_SCHEMA_HASH, N_FEATURES, ORD_FILLED, ORD_PARTIAL, RISK_DRAWDOWN, RISK_NO_MARKET,
                            RISK_NOTIONAL_LIMIT, RISK_POSITION_LIMIT, RISK_VOLATILITY)
from stages.feature import F_RVOL_BPS

P_MAX_POSITION_USD, P_MAX_ORDER_USD, P_VOL_REF_BPS, P_CAPITAL_USD, P_SOFT_DRAWDOWN = range(5)

STATS = ("decisions", "fills_seen", "schema_mismatch", "no_market", "position_limited", "vol_scaled",
         "equity_cents", "peak_equity_cents", "drawdown_bps", "drawdown_halved")
(ST_DECISIONS, ST_FILLS, ST_SCHEMA, ST_NO_MARKET, ST_POSITION_LIMITED, ST_VOL_SCALED, ST_EQUITY_CENTS,
 ST_PEAK_CENTS, ST_DRAWDOWN_BPS, ST_DRAWDOWN_HALVED) = range(10)


def make_params(max_position_usd: float, max_order_usd: float, vol_ref_bps: float, capital_usd: float = 100_000.0,
                soft_drawdown_pct: float = 15.0) -> np.ndarray:
    return np.array([max_position_usd, max_order_usd, vol_ref_bps, capital_usd, soft_drawdown_pct / 100.0, 0.0])


def make_state():
    """(positions, cash per instrument, last mid per instrument, [peak equity])."""
    return np.zeros(MAX_KEYS), np.zeros(MAX_KEYS), np.zeros(MAX_KEYS), np.zeros(1)


@njit(cache=True)
def absorb_reports(reports, n, positions, cash, stats):
    for i in range(n):
        r = reports[i]
        if (r["state"] == ORD_PARTIAL or r["state"] == ORD_FILLED) and r["liquidity"] != 0:
            k = int(r["venue"]) * MAX_SYMBOLS + int(r["symbol"])
            positions[k] = r["position"]
            cash[k] -= r["side"] * r["qty"] * r["price"] + r["fee"]
            stats[ST_FILLS] += 1


@njit(cache=True)
def mark_equity(positions, cash, mids, peak, capital, stats):
    """Equity marked to the latest mids; drawdown from the running peak (the watchdog's hard stop reads it)."""
    equity = capital
    for k in range(positions.shape[0]):
        equity += cash[k] + positions[k] * mids[k]
    if equity > peak[0]:
        peak[0] = equity
    drawdown = 1.0 - equity / peak[0] if peak[0] > 0.0 else 0.0
    stats[ST_EQUITY_CENTS] = int(round(equity * 100.0))
    stats[ST_PEAK_CENTS] = int(round(peak[0] * 100.0))
    stats[ST_DRAWDOWN_BPS] = int(round(drawdown * 1e4))
    return drawdown


@njit(cache=True)
def step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    positions, cash, mids, peak = state
    absorb_reports(in_b, n_b, positions, cash, stats)
    max_pos = params[P_MAX_POSITION_USD]
    max_order = params[P_MAX_ORDER_USD]
    vol_ref = params[P_VOL_REF_BPS]
    for i in range(n_a):
        f = in_a[i]
        key = int(f["venue"]) * MAX_SYMBOLS + int(f["symbol"])
        if f["ask"] > f["bid"] > 0.0:
            mids[key] = 0.5 * (f["bid"] + f["ask"])
    drawdown = mark_equity(positions, cash, mids, peak, params[P_CAPITAL_USD], stats)
    halve = drawdown >= params[P_SOFT_DRAWDOWN]
    for i in range(n_a):
        f = in_a[i]
        d = out[i]
        key = int(f["venue"]) * MAX_SYMBOLS + int(f["symbol"])
        d["origin_ts"] = f["origin_ts"]
        d["origin_seq"] = f["origin_seq"]
        d["stage_ts"] = now_ns
        d["venue"] = f["venue"]
        d["symbol"] = f["symbol"]
        d["bid"] = f["bid"]
        d["ask"] = f["ask"]
        for j in range(N_FEATURES):
            d["values"][j] = f["values"][j]
        position = positions[key]
        d["position"] = position
        sigma = f["values"][F_RVOL_BPS]
        d["sigma_bps"] = sigma
        reasons = 0
        mid = 0.5 * (f["bid"] + f["ask"])
        if f["schema_hash"] != FEATURE_SCHEMA_HASH or not (mid > 0.0):
            reasons |= RISK_NO_MARKET
            stats[ST_NO_MARKET if f["schema_hash"] == FEATURE_SCHEMA_HASH else ST_SCHEMA] += 1
            d["buy_budget"] = 0.0
            d["sell_budget"] = 0.0
            d["reasons"] = reasons
            continue
        order_usd = max_order
        reasons |= RISK_NOTIONAL_LIMIT
        if halve:
            order_usd *= 0.5
            reasons |= RISK_DRAWDOWN
            stats[ST_DRAWDOWN_HALVED] += 1
        if sigma > vol_ref:
            order_usd *= vol_ref / sigma
            reasons |= RISK_VOLATILITY
            stats[ST_VOL_SCALED] += 1
        room_buy = max(0.0, max_pos - position * mid)
        room_sell = max(0.0, max_pos + position * mid)
        if room_buy < order_usd or room_sell < order_usd:
            reasons |= RISK_POSITION_LIMIT
            stats[ST_POSITION_LIMITED] += 1
        d["buy_budget"] = min(order_usd, room_buy) / mid
        d["sell_budget"] = min(order_usd, room_sell) / mid
        d["reasons"] = reasons
    stats[ST_DECISIONS] += n_a
    return n_a
