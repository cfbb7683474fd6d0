"""Cross-venue arbitrage: the same symbol on two venues, both legs at once, takers.

On each prediction of an instrument, every other venue quoting the same symbol (its quote at most ``max_age``
old) is a candidate: buying here at the ask and selling there at the bid earns ``(bid_there - ask_here) / mid``
minus both legs' taker fees and a latency-slippage margin (the book can move before both legs arrive), plus the
funding carry of the pair over the expected holding time (short the leg whose funding rate is higher: a perp
short receives a positive rate, spot pays none). Above ``entry_bps`` both IOCs go out in the same step, the
second on the other venue at its touch (its intent carries that venue's last risk budget). The pair is unwound
when the gap has closed to ``exit_bps`` or after ``max_hold``.

Leg risk: the strategy's net position across the symbol's venues must be flat; a residual (one leg filled, the
other not, or only in part) older than ``leg_timeout`` is closed on the venue holding it.
"""
import numpy as np
from numba import njit

from stages.feature import F_FUNDING_RATE_BPS
from stages.records import BUY, INTENT_IOC, SELL, STRAT_ARBITRAGE
from stages.strategies.allocator import O_POSITION
from stages.strategies.intent import take_toward, write_intent
from stages.universe import MAX_SYMBOLS, MAX_VENUES, instrument_key

(P_ENTRY_BPS, P_EXIT_BPS, P_SLIPPAGE_BPS, P_ORDER_USD, P_MAX_AGE_NS, P_LEG_TIMEOUT_NS, P_MAX_HOLD_NS,
 P_HOLD_S, P_MIN_TRADE_USD) = range(9)
N_PARAMS = 9
FUNDING_PERIOD_S = 8 * 3600.0
# per symbol: when the pair was opened, when a residual leg was first seen (0: none), and the pair's legs
Y_OPENED_NS, Y_RESIDUAL_NS, Y_LONG_KEY, Y_SHORT_KEY = range(4)
N_COLS = 4


def make_params(*, entry_bps: float, exit_bps: float, slippage_bps: float, order_usd: float, max_age_ms: float,
                leg_timeout_ms: float, max_hold_s: float, expected_hold_s: float,
                min_trade_usd: float) -> np.ndarray:
    return np.array([entry_bps, exit_bps, slippage_bps, order_usd, max_age_ms * 1e6, leg_timeout_ms * 1e6,
                     max_hold_s * 1e9, expected_hold_s, min_trade_usd])


def make_state():
    state = np.zeros((MAX_SYMBOLS, N_COLS))
    state[:, Y_LONG_KEY] = -1.0
    state[:, Y_SHORT_KEY] = -1.0
    return state


@njit(cache=True, _nrt=False)
def gap_bps(buy, sell, fee_buy_bps, fee_sell_bps, params):
    """What buying at ``buy``'s ask and selling at ``sell``'s bid earns after fees, slippage and the funding carry
    over the expected hold (bps of the mid); ``buy``/``sell`` are the venues' latest predictions."""
    mid = 0.5 * (buy["bid"] + buy["ask"])
    gross = (sell["bid"] - buy["ask"]) / mid * 1e4
    carry = (sell["values"][F_FUNDING_RATE_BPS] - buy["values"][F_FUNDING_RATE_BPS]) \
        * params[P_HOLD_S] / FUNDING_PERIOD_S
    return gross - fee_buy_bps - fee_sell_bps - 2.0 * params[P_SLIPPAGE_BPS] + carry


@njit(cache=True)
def _leg(out, n_out, p_now, p_leg, intent_ids, side, qty, now_ns, regime, signal):
    """An IOC on ``p_leg``'s instrument at its touch, stamped with the current prediction's origin."""
    o = out[n_out]
    write_intent(o, p_leg, intent_ids, INTENT_IOC, side, p_leg["ask"] if side == BUY else p_leg["bid"], qty,
                 STRAT_ARBITRAGE, now_ns, 0.0, 0, regime, signal)
    o["origin_ts"] = p_now["origin_ts"]
    o["origin_seq"] = p_now["origin_seq"]
    return n_out + 1


@njit(cache=True)
def decide(state, params, p, latest, fresh_ns, own, s_index, weight, taker_fee_bps, out, n_out, intent_ids, now_ns,
           regime):
    """Intents of the arbitrage strategy for prediction ``p``. ``latest[key]``: each instrument's latest
    prediction, ``fresh_ns[key]``: its time (0: none); ``own[key, s_index, O_POSITION]``: the strategy's positions (allocator's books);
    ``taker_fee_bps[venue]``."""
    symbol = p["symbol"]
    t = p["origin_ts"]
    row = state[symbol]
    mid = 0.5 * (p["bid"] + p["ask"])
    min_qty = params[P_MIN_TRADE_USD] / mid
    net = 0.0
    for v in range(MAX_VENUES):
        net += own[instrument_key(v, symbol), s_index, O_POSITION]
    if abs(net) >= min_qty:  # leg risk: a residual across the venues
        if row[Y_RESIDUAL_NS] == 0.0:
            row[Y_RESIDUAL_NS] = t
        elif t - row[Y_RESIDUAL_NS] >= params[P_LEG_TIMEOUT_NS]:
            k = instrument_key(p["venue"], symbol)
            if own[k, s_index, O_POSITION] * net > 0.0:  # this venue holds (part of) the residual: close it here
                held = own[k, s_index, O_POSITION]
                before = n_out
                n_out = take_toward(out, n_out, p, intent_ids, held - min(abs(net), abs(held)) * np.sign(held),
                                    held, min_qty, p["buy_budget"], p["sell_budget"], STRAT_ARBITRAGE, now_ns,
                                    regime, net)
                if n_out > before:
                    row[Y_RESIDUAL_NS] = 0.0
        return n_out
    row[Y_RESIDUAL_NS] = 0.0
    long_key, short_key = np.int64(row[Y_LONG_KEY]), np.int64(row[Y_SHORT_KEY])
    if long_key >= 0 and abs(own[long_key, s_index, O_POSITION]) >= min_qty:
        # a pair is open: unwind when the gap closed (selling the long, buying the short back) or held too long
        a, b = latest[long_key], latest[short_key]
        if fresh_ns[long_key] == 0 or fresh_ns[short_key] == 0:
            return n_out
        back = gap_bps(b, a, taker_fee_bps[np.int64(b["venue"])], taker_fee_bps[np.int64(a["venue"])], params)
        if back >= -params[P_EXIT_BPS] or t - row[Y_OPENED_NS] >= params[P_MAX_HOLD_NS] or weight <= 0.0:
            qty_long, qty_short = own[long_key, s_index, O_POSITION], -own[short_key, s_index, O_POSITION]
            if qty_long > 0.0:
                n_out = _leg(out, n_out, p, a, intent_ids, SELL, qty_long, now_ns, regime, back)
            if qty_short > 0.0:
                n_out = _leg(out, n_out, p, b, intent_ids, BUY, qty_short, now_ns, regime, back)
            row[Y_LONG_KEY], row[Y_SHORT_KEY] = -1.0, -1.0
        return n_out
    if weight <= 0.0:
        return n_out
    here = instrument_key(p["venue"], symbol)
    for v in range(MAX_VENUES):
        there = instrument_key(v, symbol)
        if there == here or fresh_ns[there] == 0 or t - fresh_ns[there] > params[P_MAX_AGE_NS]:
            continue
        other = latest[there]
        if not (other["bid"] > 0.0 and other["ask"] > other["bid"]):
            continue
        for buy_here in (True, False):
            a = p if buy_here else other        # the leg bought at its ask
            b = other if buy_here else p        # the leg sold at its bid
            edge = gap_bps(a, b, taker_fee_bps[np.int64(a["venue"])], taker_fee_bps[np.int64(b["venue"])], params)
            if edge < params[P_ENTRY_BPS]:
                continue
            qty = min(params[P_ORDER_USD] * weight / mid, a["buy_budget"], b["sell_budget"])
            if qty < min_qty:
                continue
            n_out = _leg(out, n_out, p, a, intent_ids, BUY, qty, now_ns, regime, edge)
            n_out = _leg(out, n_out, p, b, intent_ids, SELL, qty, now_ns, regime, edge)
            row[Y_OPENED_NS] = t
            row[Y_LONG_KEY] = instrument_key(a["venue"], symbol)
            row[Y_SHORT_KEY] = instrument_key(b["venue"], symbol)
            return n_out
    return n_out
