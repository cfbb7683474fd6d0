"""Fixed quoting strategy: the strategy of the hftbacktest peer check (bench/hftbacktest_peer.py), on our side.

Predictions and execution reports in, INTENT_QUOTE intents out; no model, no Kelly, no risk budgets (the risk
decision's fields are only carried). Per instrument, at interval boundaries (absolute multiples of
``interval_ms`` of event time), it wants

    bid = floor((mid - distance_ticks * tick) / tick) * tick
    ask = ceil((mid + distance_ticks * tick) / tick) * tick

and quotes ``qty`` on a side only when that side's desired price differs from its live quote (a quote replaces
that side's previous one in execute) or the side has no live quote (its quote filled, was cancelled or refused).
Bids are kept only while ``position < max_position``, asks while ``position > -max_position`` (the position of
execute's reports); a side beyond that gets a zero-qty quote (a cancel) if it has a live one.

How this differs from the peer, by construction:
- Decision time. The peer decides exactly at each boundary ``T`` of its local clock, with the book after every
  row with ``local_ts <= T``. This kernel decides at the first prediction of the instrument whose ``origin_ts`` is
  at or past the next boundary, with that prediction's bid/ask (the book as of that event, which is after ``T``);
  boundaries with no prediction are skipped, and the next boundary is the first multiple after that event.
  The first decision is at the first prediction at or past a multiple (the peer: its first boundary at or after
  its first row). The peer's local clock is the capture's shifted by the converter's offset
  (``Converted.local_offset_ns``); run the peer with ``clock_offset_ns`` equal to it so both use multiples of the
  same clock.
- Mid. The peer's mid is from its own L2 book (built by hftbacktest from the depth diffs); ours is
  ``(bid + ask) / 2`` of the prediction (our book stage's touch).
- In-flight requests. The peer leaves a side alone while its live order waits for an ack (hftbacktest refuses
  a cancel then); this kernel does not see acks and may replace at once. Equal when latency < interval.
- Live side. The peer frees a side when its local order record stops working; here when a report of this
  strategy says FILLED, CANCELLED or REJECTED at the side's live price (a replaced quote's cancel carries the
  old price and frees nothing).
Both round with the same 1e-9 tick epsilon.
"""

import numpy as np
from numba import njit

from shm.atomics import load_acquire
from shm.control import G_TRADING_ENABLED
from stages.counters import Counters
from stages.records import BUY, INTENT_QUOTE, ORD_CANCELLED, ORD_FILLED, ORD_PARTIAL, ORD_REJECTED, SELL, STRAT_QUOTER
from stages.strategies.intent import write_intent
from stages.universe import MAX_KEYS, instrument_key

P_INTERVAL_NS, P_DISTANCE_TICKS, P_QTY, P_MAX_POSITION, P_AT_TOUCH = range(5)
P_TICKS = 5  # params[P_TICKS + key]: the tick of each instrument key; 0 = not quoted

K_NEXT_NS, K_BID_TICK, K_ASK_TICK, K_POSITION = range(4)  # next boundary (-1: none yet); live tick 0: no quote

TICK_EPS = 1e-9  # so a mid exactly on the grid is not pushed a tick away by float error

_COUNTERS = Counters()
ST_PREDICTIONS = _COUNTERS.add("predictions")
ST_DECISIONS = _COUNTERS.add("decisions")
ST_QUOTES = _COUNTERS.add("quotes")
ST_QUOTE_CANCELS = _COUNTERS.add("quote_cancels")
ST_FILLS = _COUNTERS.add("fills_seen")
ST_NO_MARKET = _COUNTERS.add("no_market")
ST_NO_TICK = _COUNTERS.add("no_tick")
ST_DISABLED = _COUNTERS.add("trading_disabled")
STATS = _COUNTERS.labels

MAX_INTENTS_PER_PREDICTION = 2


def out_capacity(batch: int) -> int:
    return batch * MAX_INTENTS_PER_PREDICTION


def make_params(*, interval_ms: float, distance_ticks: float, qty: float, max_position: float,
                ticks_by_key: dict, reference: str = "mid") -> np.ndarray:
    """``ticks_by_key``: {instrument key: tick size}; an instrument without one is never quoted. ``reference``:
    "mid" (the peer check's rule) or "touch": ``distance_ticks`` behind the best bid and ask (0 = join them)."""
    params = np.zeros(P_TICKS + MAX_KEYS)
    params[P_AT_TOUCH] = float(reference == "touch")
    params[P_INTERVAL_NS] = interval_ms * 1e6
    params[P_DISTANCE_TICKS] = distance_ticks
    params[P_QTY] = qty
    params[P_MAX_POSITION] = max_position
    for key, tick in ticks_by_key.items():
        params[P_TICKS + key] = tick
    return params


def make_state():
    keys = np.zeros((MAX_KEYS, 4))
    keys[:, K_NEXT_NS] = -1.0  # no event seen yet
    return keys, np.zeros(1, np.int64)


@njit(cache=True)
def desired_ticks(mid, tick, distance_ticks):
    """(bid tick, ask tick) the quoter wants around ``mid``."""
    bid = np.floor((mid - distance_ticks * tick) / tick + TICK_EPS)
    ask = np.ceil((mid + distance_ticks * tick) / tick - TICK_EPS)
    return bid, ask


@njit(cache=True)
def next_boundary(t, interval_ns):
    """The first multiple of ``interval_ns`` strictly after ``t``."""
    return (np.floor(t / interval_ns) + 1.0) * interval_ns


@njit(cache=True)
def step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    keys, intent_ids = state
    for i in range(n_b):
        r = in_b[i]
        k = instrument_key(r["venue"], r["symbol"])
        if (r["state"] == ORD_PARTIAL or r["state"] == ORD_FILLED) and r["liquidity"] != 0:
            keys[k, K_POSITION] = r["position"]
            stats[ST_FILLS] += 1
        tick = params[P_TICKS + k]
        if tick > 0.0 and r["strategy"] == STRAT_QUOTER and (
                r["state"] == ORD_FILLED or r["state"] == ORD_CANCELLED or r["state"] == ORD_REJECTED):
            col = K_BID_TICK if r["side"] == BUY else K_ASK_TICK
            if keys[k, col] != 0.0 and abs(r["price"] / tick - keys[k, col]) < 0.5:
                keys[k, col] = 0.0
    stats[ST_PREDICTIONS] += n_a
    if load_acquire(ctl, G_TRADING_ENABLED) == 0:
        stats[ST_DISABLED] += n_a
        return 0
    interval = params[P_INTERVAL_NS]
    distance = params[P_DISTANCE_TICKS]
    qty = params[P_QTY]
    limit = params[P_MAX_POSITION]
    n_out = 0
    for i in range(n_a):
        p = in_a[i]
        k = instrument_key(p["venue"], p["symbol"])
        t = float(p["origin_ts"])
        if keys[k, K_NEXT_NS] < 0.0:
            # the first boundary is the first multiple at or after the instrument's first event
            keys[k, K_NEXT_NS] = np.ceil(t / interval) * interval
        if t < keys[k, K_NEXT_NS]:
            continue
        tick = params[P_TICKS + k]
        if tick <= 0.0:
            stats[ST_NO_TICK] += 1
            continue
        bid = p["bid"]
        ask = p["ask"]
        if not (bid > 0.0 and ask > bid):
            stats[ST_NO_MARKET] += 1  # the boundary stays due: the next event with a market decides
            continue
        keys[k, K_NEXT_NS] = next_boundary(t, interval)
        stats[ST_DECISIONS] += 1
        if params[P_AT_TOUCH] != 0.0:
            want_bid, want_ask = np.floor(bid / tick + TICK_EPS) - distance, np.ceil(ask / tick - TICK_EPS) + distance
        else:
            want_bid, want_ask = desired_ticks(0.5 * (bid + ask), tick, distance)
        position = keys[k, K_POSITION]
        for side in (BUY, SELL):
            col = K_BID_TICK if side == BUY else K_ASK_TICK
            want = want_bid if side == BUY else want_ask
            allowed = position < limit if side == BUY else position > -limit
            if allowed:
                if keys[k, col] != want:
                    write_intent(out[n_out], p, intent_ids, INTENT_QUOTE, side, want * tick, qty, STRAT_QUOTER,
                                 now_ns)
                    n_out += 1
                    keys[k, col] = want
                    stats[ST_QUOTES] += 1
            elif keys[k, col] != 0.0:
                write_intent(out[n_out], p, intent_ids, INTENT_QUOTE, side, 0.0, 0.0, STRAT_QUOTER, now_ns)
                n_out += 1
                keys[k, col] = 0.0
                stats[ST_QUOTE_CANCELS] += 1
    return n_out
