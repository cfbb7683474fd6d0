"""Mean reversion: fade the mid's deviation from its fair value, a taker.

Fair value is the mid's 60 s time-weighted EWMA (the feature stage's ``mom_60s_bps`` is the mid against it, in
bps); the deviation in units of its volatility is ``z = mom_60s / rvol_60s``. Entry against the deviation when
``|z| >= entry_z`` and the expected reversion, ``reversion * |deviation|``, pays a round trip's costs (two
taker fees, the spread, a slippage margin) by ``min_edge_bps``; exit when ``|z| <= exit_z`` (reverted) or
the allocator's weight drops to 0; a stop closes it when the deviation grows on against the position to
``stop_z``, and the instrument then waits ``cooldown`` before a new entry. Size: ``order_usd`` times the
weight, capped by the strategy's own position limit and risk's budget.
"""
import numpy as np
from numba import njit

from stages.feature import F_MOM_1S_BPS, F_RVOL_1S_BPS
from stages.records import STRAT_MEAN_REVERSION
from stages.strategies.intent import take_toward

F_MOM_60S, F_RVOL_60S = F_MOM_1S_BPS + 2, F_RVOL_1S_BPS + 2

(P_ENTRY_Z, P_EXIT_Z, P_STOP_Z, P_REVERSION, P_MIN_EDGE_BPS, P_SLIPPAGE_BPS, P_ORDER_USD, P_COOLDOWN_NS,
 P_MIN_TRADE_USD) = range(9)
N_PARAMS = 9
R_LAST_ORDER_NS, R_SIDE, R_STOPPED_NS = range(3)
N_COLS = 3


def make_params(*, entry_z: float, exit_z: float, stop_z: float, reversion: float, min_edge_bps: float,
                slippage_bps: float, order_usd: float, cooldown_ms: float, min_trade_usd: float) -> np.ndarray:
    return np.array([entry_z, exit_z, stop_z, reversion, min_edge_bps, slippage_bps, order_usd,
                     cooldown_ms * 1e6, min_trade_usd])


def make_state(n_keys: int):
    state = np.zeros((n_keys, N_COLS))
    state[:, R_LAST_ORDER_NS] = -1e18
    state[:, R_STOPPED_NS] = -1e18
    return state


@njit(cache=True, _nrt=False)
def z_score(p):
    v = p["values"]
    vol = v[F_RVOL_60S]
    if not (vol > 0.0):
        return np.nan
    return v[F_MOM_60S] / vol


@njit(cache=True)
def decide(state, params, key, p, mid, weight, held, room_buy, room_sell, taker_fee_bps, out, n_out, intent_ids,
           now_ns, regime):
    """Intents of the mean-reversion strategy for prediction ``p`` of ``key``; ``held``: its own position."""
    row = state[key]
    t = p["origin_ts"]
    if t - row[R_LAST_ORDER_NS] < params[P_COOLDOWN_NS]:
        return n_out
    z = z_score(p)
    if not np.isfinite(z):
        return n_out
    deviation_bps = abs(p["values"][F_MOM_60S])
    spread_bps = (p["ask"] - p["bid"]) / mid * 1e4
    costs = 2.0 * taker_fee_bps + spread_bps + params[P_SLIPPAGE_BPS]
    min_qty = params[P_MIN_TRADE_USD] / mid
    target = held
    if abs(held) >= min_qty:
        against = -1.0 if held > 0.0 else 1.0  # the deviation sign that hurts this position: long hurts below
        if weight <= 0.0 or abs(z) <= params[P_EXIT_Z]:
            target = 0.0
        elif z * against >= params[P_STOP_Z]:
            target = 0.0
            row[R_STOPPED_NS] = t
    elif weight > 0.0 and abs(z) >= params[P_ENTRY_Z] and t - row[R_STOPPED_NS] >= params[P_COOLDOWN_NS] \
            and params[P_REVERSION] * deviation_bps - costs >= params[P_MIN_EDGE_BPS]:
        side = -1.0 if z > 0.0 else 1.0  # above fair value: sell
        qty = params[P_ORDER_USD] * weight / mid
        qty = min(qty, room_buy) if side > 0.0 else min(qty, room_sell)
        target = side * qty
    before = n_out
    n_out = take_toward(out, n_out, p, intent_ids, target, held, min_qty, p["buy_budget"], p["sell_budget"],
                        STRAT_MEAN_REVERSION, now_ns, regime, z)
    if n_out > before:
        row[R_LAST_ORDER_NS] = t
        row[R_SIDE] = 0.0 if target == 0.0 else (1.0 if target > 0.0 else -1.0)
    return n_out
