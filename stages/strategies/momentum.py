"""Momentum: trend following on the multi-horizon momentum and the model's probability, a taker.

Signal (bps): ``w_10 * mom_10s + w_60 * mom_60s`` (the mid against its 10 s and 60 s EWMAs) plus the model's
lean ``w_model * (2 p - 1) * horizon_sigma``. Expected move over the holding horizon: ``beta * signal``. The
edge is that move **net of costs**: a round trip pays the taker fee twice, the spread once and a slippage
margin. Entry when the net edge exceeds ``entry_bps``; the position is held while the signal keeps its sign and
stays above ``exit_bps`` (hysteresis: exit is easier to meet than entry) and closed when it does not, or when
the allocator's weight drops to 0 (the regime left trending).

Size: fractional Kelly on the net edge, ``f = c * mu / sigma^2`` with mu the net expected return and sigma
risk's GARCH volatility over its horizon, times the allocator's weight, capped by the strategy's own position
limit and risk's budget. An order is an IOC at the touch toward the target, at most one per ``cooldown``.
"""
import numpy as np
from numba import njit

from stages.feature import F_MOM_1S_BPS
from stages.records import STRAT_MOMENTUM
from stages.strategies.intent import take_toward

F_MOM_10S, F_MOM_60S = F_MOM_1S_BPS + 1, F_MOM_1S_BPS + 2

(P_W10, P_W60, P_W_MODEL, P_BETA, P_ENTRY_BPS, P_EXIT_BPS, P_SLIPPAGE_BPS, P_KELLY, P_MIN_TRADE_USD,
 P_COOLDOWN_NS) = range(10)
N_PARAMS = 10
M_LAST_ORDER_NS, M_SIDE = range(2)  # state[key, M_*]: the position's direction (0 flat) kept for hysteresis
N_COLS = 2


def make_params(*, w_10s: float, w_60s: float, w_model: float, beta: float, entry_bps: float, exit_bps: float,
                slippage_bps: float, kelly_fraction: float, min_trade_usd: float, cooldown_ms: float) -> np.ndarray:
    return np.array([w_10s, w_60s, w_model, beta, entry_bps, exit_bps, slippage_bps, kelly_fraction,
                     min_trade_usd, cooldown_ms * 1e6])


def make_state(n_keys: int):
    state = np.zeros((n_keys, N_COLS))
    state[:, M_LAST_ORDER_NS] = -1e18
    return state


@njit(cache=True, _nrt=False)
def signal_bps(p, params):
    v = p["values"]
    lean = (2.0 * p["prob_up"] - 1.0) * p["horizon_sigma_bps"] if p["horizon_sigma_bps"] > 0.0 else 0.0
    return params[P_W10] * v[F_MOM_10S] + params[P_W60] * v[F_MOM_60S] + params[P_W_MODEL] * lean


@njit(cache=True, _nrt=False)
def net_edge_bps(signal, spread_bps, taker_fee_bps, params):
    """Expected move over the horizon in the signal's direction, after a round trip's costs (bps)."""
    return params[P_BETA] * abs(signal) - (2.0 * taker_fee_bps + spread_bps + params[P_SLIPPAGE_BPS])


@njit(cache=True)
def decide(state, params, key, p, mid, weight, held, room_buy, room_sell, equity, taker_fee_bps, out, n_out,
           intent_ids, now_ns, regime):
    """Intents of the momentum strategy for prediction ``p`` of ``key``; ``held``: its own position there."""
    row = state[key]
    if p["origin_ts"] - row[M_LAST_ORDER_NS] < params[P_COOLDOWN_NS]:
        return n_out
    spread_bps = (p["ask"] - p["bid"]) / mid * 1e4
    signal = signal_bps(p, params)
    if not np.isfinite(signal):
        return n_out
    direction = 1.0 if signal > 0.0 else -1.0
    edge = net_edge_bps(signal, spread_bps, taker_fee_bps, params)
    target = 0.0
    if weight > 0.0 and edge > params[P_ENTRY_BPS]:
        sigma = p["horizon_sigma_bps"] * 1e-4
        if sigma > 0.0:
            f = min(params[P_KELLY] * (edge * 1e-4) / (sigma * sigma), 1.0)
            target = direction * f * equity * weight / mid
            cap = held + room_buy if direction > 0.0 else held - room_sell
            target = min(target, cap) if direction > 0.0 else max(target, cap)
    elif weight > 0.0 and row[M_SIDE] == direction and abs(signal) >= params[P_EXIT_BPS]:
        target = held  # the trend holds: keep the position (hysteresis)
    before = n_out
    n_out = take_toward(out, n_out, p, intent_ids, target, held, params[P_MIN_TRADE_USD] / mid, p["buy_budget"],
                        p["sell_budget"], STRAT_MOMENTUM, now_ns, regime, signal)
    if n_out > before:
        row[M_LAST_ORDER_NS] = p["origin_ts"]
        row[M_SIDE] = 0.0 if target == 0.0 else (1.0 if target > 0.0 else -1.0)
    elif target == 0.0 and abs(held) < params[P_MIN_TRADE_USD] / mid:
        row[M_SIDE] = 0.0
    return n_out

