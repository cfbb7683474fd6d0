"""Market making: Avellaneda-Stoikov quotes in their infinite-horizon form, inventory-skewed, on the tick grid.

Everything is in ticks of the instrument: the mid s, volatility sigma (ticks per sqrt second, from risk's GARCH
next-bar volatility), risk aversion gamma (per tick), and the order-arrival decay k (per tick of distance from
the mid), fitted online from the market's trades as lambda(delta) = A exp(-k delta) (stages.strategies.
avellaneda_stoikov; the fallback ``k_default`` until the fit has enough points). Inventory q is the strategy's
own position in units of its quote size; the quotes are the infinite-horizon reservation bid and ask minus /
plus the arrival half-spread, with the paper's discount omega = gamma^2 sigma_slow^2 (q_max + 1)^2 / 2 taken at
the instrument's slow-average volatility (so the quotes widen when sigma rises above it), and the side that
would take inventory past ``q_max`` is not quoted. An intent's ``signal`` is that inventory q.

The 100 ms loop (the seed's real-time loop): quotes are recomputed only on each ``interval`` of event time per
instrument; the spread around the reservation prices then widens by ``(sigma / sigma_slow) ** vol_widen`` when
volatility rose above its slow average (never narrows below 1x), and the inventory skew is the formula's own.
A side is re-quoted only when its price moved by at least ``requote_ticks``, so the order rate is at most two
per instrument per interval. Quotes are post-only in effect: never through the other side of the book.
"""
import math

import numpy as np
from numba import njit

from stages.records import BUY, EV_TRADE, INTENT_QUOTE, SELL, STRAT_MARKET_MAKING
from stages.strategies import avellaneda_stoikov as avs
from stages.strategies.intent import write_intent
from stages.universe import MAX_KEYS

(P_GAMMA, P_Q_MAX, P_K_DEFAULT, P_INTERVAL_NS, P_REQUOTE_TICKS, P_VOL_WIDEN, P_VOL_SLOW_NS, P_QUOTE_USD,
 P_FIT_HALF_LIFE_NS, P_FIT_MIN_COUNT, P_FIT_MIN_POINTS) = range(11)
N_PARAMS = 11
# state[0][key, Q_*]: the live quotes (tick index, 0: none), the next decision time, the slow volatility, the fit
Q_BID, Q_ASK, Q_NEXT_NS, Q_SIGMA_SLOW, Q_SIGMA_TS, Q_A, Q_K, Q_FIT_OK = range(8)
N_COLS = 8


def make_params(*, gamma: float, q_max: float, k_default: float, interval_ms: float,
                requote_ticks: float, vol_widen: float, vol_slow_s: float, quote_usd: float, fit_half_life_s: float,
                fit_min_count: float, fit_min_points: int) -> np.ndarray:
    return np.array([gamma, q_max, k_default, interval_ms * 1e6, requote_ticks, vol_widen,
                     vol_slow_s * 1e9, quote_usd, fit_half_life_s * 1e9, fit_min_count, float(fit_min_points)])


def make_state():
    """(per-key quote state, the order-arrival calibration)."""
    state = np.zeros((MAX_KEYS, N_COLS))
    state[:, Q_NEXT_NS] = -1.0
    return state, avs.make_calibration(MAX_KEYS)


@njit(cache=True, _nrt=False)
def on_trade(state, params, key, p, tick):
    """A market trade of ``key``: its distance from the mid goes into the arrival fit."""
    if p["kind"] != EV_TRADE or not (tick > 0.0) or not (p["price"] > 0.0):
        return
    cal = state[1]
    mid = 0.5 * (p["bid"] + p["ask"])
    avs.record_trade(cal.grid, cal.counts, cal.clock, key, float(p["origin_ts"]),
                     avs.trade_distance_ticks(p["price"], p["side"], mid, tick), params[P_FIT_HALF_LIFE_NS])


@njit(cache=True, _nrt=False)
def on_quote_end(state, key, side, price, tick):
    """A quote of ours ended (filled, cancelled, refused): its side is free when it was the live one."""
    col = Q_BID if side == BUY else Q_ASK
    q = state[0]
    if tick > 0.0 and q[key, col] != 0.0 and abs(price / tick - q[key, col]) < 0.5:
        q[key, col] = 0.0


@njit(cache=True)
def decide(state, params, key, p, mid, tick, weight, held, room_buy, room_sell, bar_s, out, n_out, intent_ids,
           now_ns, regime):
    """Quotes of the market maker for prediction ``p`` of ``key`` (``held``: its own position there)."""
    q = state[0]
    row = q[key]
    t = float(p["origin_ts"])
    if not (tick > 0.0):
        return n_out
    if row[Q_NEXT_NS] < 0.0:
        row[Q_NEXT_NS] = math.ceil(t / params[P_INTERVAL_NS]) * params[P_INTERVAL_NS]
    if t < row[Q_NEXT_NS]:
        return n_out
    row[Q_NEXT_NS] = (math.floor(t / params[P_INTERVAL_NS]) + 1.0) * params[P_INTERVAL_NS]
    qty = params[P_QUOTE_USD] * weight / mid
    sigma_bps = p["garch_sigma_bps"]
    if weight <= 0.0 or not (qty > 0.0) or not (sigma_bps > 0.0):
        for side in (BUY, SELL):
            col = Q_BID if side == BUY else Q_ASK
            if row[col] != 0.0:
                write_intent(out[n_out], p, intent_ids, INTENT_QUOTE, side, 0.0, 0.0, STRAT_MARKET_MAKING, now_ns,
                             0.0, 0, regime, 0.0)
                n_out += 1
                row[col] = 0.0
        return n_out
    sigma = mid / tick * sigma_bps * 1e-4 / math.sqrt(bar_s)  # ticks per sqrt second
    if row[Q_SIGMA_SLOW] <= 0.0:
        row[Q_SIGMA_SLOW], row[Q_SIGMA_TS] = sigma, t
    else:
        w = 1.0 - math.exp(-(t - row[Q_SIGMA_TS]) / params[P_VOL_SLOW_NS])
        row[Q_SIGMA_SLOW] += w * (sigma - row[Q_SIGMA_SLOW])
        row[Q_SIGMA_TS] = t
    cal = state[1]
    a, k, _, ok = avs.fit_intensity(cal.grid, cal.counts, cal.clock, key, t, params[P_FIT_HALF_LIFE_NS],
                                    params[P_FIT_MIN_COUNT], np.int64(params[P_FIT_MIN_POINTS]))
    row[Q_FIT_OK] = 1.0 if ok else 0.0
    if ok:
        row[Q_A], row[Q_K] = a, k
    else:
        k = params[P_K_DEFAULT]
    inventory = held / qty
    s = mid / tick
    # the paper's discount at the instrument's normal (slow) volatility: quotes widen when sigma is above it
    gamma, q_max = params[P_GAMMA], params[P_Q_MAX]
    omega = 0.5 * gamma * gamma * row[Q_SIGMA_SLOW] * row[Q_SIGMA_SLOW] * (q_max + 1.0) * (q_max + 1.0)
    bid, ask, usable = avs.infinite_horizon_quotes(s, inventory, gamma, sigma, k, omega)
    if not usable:
        return n_out
    widen = max(1.0, sigma / row[Q_SIGMA_SLOW]) ** params[P_VOL_WIDEN] if row[Q_SIGMA_SLOW] > 0.0 else 1.0
    r_mid = 0.5 * (bid + ask) if math.isfinite(bid) and math.isfinite(ask) else s
    if widen > 1.0:
        bid = r_mid - (r_mid - bid) * widen if math.isfinite(bid) else bid
        ask = r_mid + (ask - r_mid) * widen if math.isfinite(ask) else ask
    if inventory >= params[P_Q_MAX]:
        bid = -np.inf
    if inventory <= -params[P_Q_MAX]:
        ask = np.inf
    bid_t, ask_t = avs.on_grid(bid, ask, 1.0, p["bid"] / tick, p["ask"] / tick, avs.GRID_NO_CROSS)
    for side in (BUY, SELL):
        col = Q_BID if side == BUY else Q_ASK
        want = bid_t if side == BUY else ask_t
        size = min(qty, room_buy if side == BUY else room_sell, p["buy_budget"] if side == BUY else p["sell_budget"])
        if not math.isfinite(want) or want <= 0.0 or size <= 0.0:
            if row[col] != 0.0:
                write_intent(out[n_out], p, intent_ids, INTENT_QUOTE, side, 0.0, 0.0, STRAT_MARKET_MAKING, now_ns,
                             0.0, 0, regime, inventory)
                n_out += 1
                row[col] = 0.0
            continue
        if row[col] == 0.0 or abs(want - row[col]) >= params[P_REQUOTE_TICKS]:
            write_intent(out[n_out], p, intent_ids, INTENT_QUOTE, side, want * tick, size, STRAT_MARKET_MAKING,
                         now_ns, 0.0, 0, regime, inventory)
            n_out += 1
            row[col] = want
    return n_out
