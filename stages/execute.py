"""Execute stage: the paper venue, order states, and the trading gate.

Before every order the kernel reads ``trading_enabled`` from the control block (acquire load); when it is
0 it cancels every open order, rejects new intents and (unless configured cancel-only) flattens every
position with reduce-only IOC orders inside a price collar, retrying a remainder. It polls the flag even
without input, so a kill acts within one duty cycle. The paper venue matches an order against the
latest book of its (venue, symbol): marketable quantity fills level by level at the book's prices (taker;
the book copy is depleted so later orders in the same window see less size), the rest rests (quotes) or
is cancelled (IOC). Resting quotes fill as maker at their own price when a later book or trade trades
through them. Queue position and venue latency are not modelled yet.

Order states: new -> acknowledged -> partially filled -> filled, or -> cancelled / rejected. Every state
change is an execution report; fills carry fee and the position after the fill.

The pre-trade gate (in the spirit of SEC Rule 15c3-5) checks every intent before it can become an order:
``trading_enabled``, quantity and price sanity, a market to price against, max quantity and notional per
order, a price collar around the mid, duplicates (an identical open order, or an identical IOC within the
window), the position after a full fill of this and the side's open orders (reductions always pass), max
open orders, and an order-rate token bucket refilled in event time (only orders that pass everything
spend a token). The quantity, notional and position limits are per instrument (a table in the params,
see P_LIMITS). A rejection is an execution report with a REJ_* reason, counted per reason; it never
becomes an order. Execute's own reduce-only flatten orders after a kill do not pass the gate.
"""
import numpy as np
from numba import njit

from shm.atomics import load_acquire
from shm.control import G_TRADING_ENABLED
from stages.counters import Counters
from stages.records import (BOOK_LEVELS, BUY, EV_BBO, EV_BOOK, EV_TRADE, INTENT_CANCEL_ALL, INTENT_IOC, INTENT_QUOTE,
                            MARKET_EVENT, ORD_ACKED, ORD_CANCELLED, ORD_FILLED, ORD_PARTIAL, ORD_REJECTED, ORDER,
                            REJ_BAD_QTY, REJ_DUPLICATE, REJ_MAX_NOTIONAL, REJ_MAX_QTY, REJ_NAMES, REJ_NO_MARKET,
                            REJ_POSITION_LIMIT, REJ_PRICE_COLLAR, REJ_RATE_LIMIT, REJ_TOO_MANY_ORDERS,
                            REJ_TRADING_DISABLED, SELL, STRAT_FLATTEN)
from stages.universe import MAX_KEYS, instrument_key, key_symbol, key_venue

MAX_ORDERS = 256

(P_MAKER_FEE_BPS, P_TAKER_FEE_BPS, P_MAX_OPEN_ORDERS, P_FLATTEN, P_FLATTEN_COLLAR_BPS, P_FLATTEN_RETRY_NS,
 P_MAX_ORDER_QTY, P_MAX_ORDER_USD, P_COLLAR_BPS, P_RATE_PER_NS, P_BURST, P_DUP_WINDOW_NS,
 P_MAX_POSITION_USD) = range(13)
# The gate's limits per instrument: params[P_LIMITS + key * N_LIMITS + LIMIT_*] by instrument key. make_params
# fills every key with the global P_MAX_ORDER_QTY / _USD / P_MAX_POSITION_USD, then applies the per-instrument
# values: one base-unit quantity cap cannot suit BTC and SOL alike.
LIMIT_QTY, LIMIT_USD, LIMIT_POSITION_USD = range(3)
N_LIMITS = 3
P_LIMITS = 14

I_NEXT_ORDER_ID, I_OPEN, I_BUCKET_NS = range(3)   # I_BUCKET_NS: event time of the last token refill (0 = full)
GATE_TOKENS = 0   # gate[0, GATE_TOKENS]; rows 1 + key * 2 + side: the last accepted IOC (price, qty, time ns)

_COUNTERS = Counters()  # the stage's custom counters in slot-word order; STATS labels them
ST_ORDERS = _COUNTERS.add("orders")
ST_FILLS = _COUNTERS.add("fills")
ST_CANCELS = _COUNTERS.add("cancels")
ST_REJECTS = _COUNTERS.add("rejects")
ST_OPEN = _COUNTERS.add("open_orders")
ST_GROSS_USD = _COUNTERS.add("gross_position_usd")
ST_PNL_CENTS = _COUNTERS.add("pnl_cents")
ST_FEES_CENTS = _COUNTERS.add("fees_cents")
ST_MARKET = _COUNTERS.add("market_events")
ST_INTENTS = _COUNTERS.add("intents")
ST_DISABLED_REJECTS = _COUNTERS.add("disabled_rejects")
ST_FLATTEN_ORDERS = _COUNTERS.add("flatten_orders")
ST_LAST_CANCEL_ALL_NS = _COUNTERS.add("last_cancel_all_ns")
ST_LAST_ORDER_NS = _COUNTERS.add("last_order_ns")
# one counter per rejection reason, REJ_* code order: stats[ST_REJ_BASE + code - 1]
ST_REJ_BASE = _COUNTERS.add_range("rej_" + REJ_NAMES[code].replace(" ", "_") for code in sorted(REJ_NAMES))
STATS = _COUNTERS.labels
assert sorted(REJ_NAMES) == list(range(1, len(REJ_NAMES) + 1))


def out_capacity(batch: int) -> int:
    # per intent: a cancel of the replaced quote, an ack, a fill per level, a cancel of the rest;
    # per market event: one fill per resting quote of that instrument; plus a cancel-all.
    return batch * (BOOK_LEVELS + 3) + batch * 2 + MAX_ORDERS


def make_params(*, maker_fee_bps: float, taker_fee_bps: float, max_open_orders: int, flatten: bool,
                flatten_collar_bps: float, flatten_retry_ms: float, max_order_qty: float, max_order_usd: float,
                price_collar_bps: float, max_orders_per_s: float, order_burst: int, duplicate_window_ms: float,
                max_position_usd: float, max_order_qty_by_key: dict | None = None,
                max_order_usd_by_key: dict | None = None, max_position_usd_by_key: dict | None = None) -> np.ndarray:
    """The ``*_by_key`` dicts map an instrument key (stages.universe.instrument_key) to its own limit; keys
    without one get the global limit."""
    scalars = [maker_fee_bps, taker_fee_bps, float(min(max_open_orders, MAX_ORDERS)), float(flatten),
               flatten_collar_bps, flatten_retry_ms * 1e6, max_order_qty, max_order_usd, price_collar_bps,
               max_orders_per_s * 1e-9, float(order_burst), duplicate_window_ms * 1e6, max_position_usd, 0.0]
    assert len(scalars) == P_LIMITS
    limits = np.empty((MAX_KEYS, N_LIMITS))
    limits[:, LIMIT_QTY], limits[:, LIMIT_USD], limits[:, LIMIT_POSITION_USD] = (max_order_qty, max_order_usd,
                                                                                 max_position_usd)
    for column, by_key in ((LIMIT_QTY, max_order_qty_by_key), (LIMIT_USD, max_order_usd_by_key),
                           (LIMIT_POSITION_USD, max_position_usd_by_key)):
        for key, value in (by_key or {}).items():
            if not 0 <= key < MAX_KEYS:
                raise ValueError(f"instrument key={key} is outside 0..{MAX_KEYS - 1}")
            limits[key, column] = value
    return np.concatenate((np.array(scalars), limits.ravel()))


def gate_limits(params: np.ndarray, key: int) -> tuple[float, float, float]:
    """(max order qty, max order usd, max position usd) the gate applies to instrument ``key``."""
    base = P_LIMITS + key * N_LIMITS
    return (float(params[base + LIMIT_QTY]), float(params[base + LIMIT_USD]),
            float(params[base + LIMIT_POSITION_USD]))


def make_state():
    """(ints, books, has_book, orders, quote slots [key, side], positions, cash, fees, last flatten ns, gate)."""
    quote_slot = np.full((MAX_KEYS, 2), -1, np.int64)
    gate = np.zeros((1 + 2 * MAX_KEYS, 3))
    gate[0, GATE_TOKENS] = -1.0  # the bucket starts full at the first order
    return (np.zeros(4, np.int64), np.zeros(MAX_KEYS, MARKET_EVENT), np.zeros(MAX_KEYS, np.int64),
            np.zeros(MAX_ORDERS, ORDER), quote_slot, np.zeros(MAX_KEYS), np.zeros(MAX_KEYS), np.zeros(MAX_KEYS),
            np.full(MAX_KEYS, -(1 << 62), np.int64), gate)


@njit(cache=True)
def _report(out, n, order, state_code, price, qty, fee, liquidity, position, reject, now_ns):
    r = out[n]
    r["origin_ts"] = order["origin_ts"]
    r["origin_seq"] = order["origin_seq"]
    r["stage_ts"] = now_ns
    r["order_id"] = order["order_id"]
    r["venue"] = order["venue"]
    r["symbol"] = order["symbol"]
    r["side"] = order["side"]
    r["state"] = state_code
    r["liquidity"] = liquidity
    r["strategy"] = order["strategy"]
    r["reject_reason"] = reject
    r["price"] = price
    r["qty"] = qty
    r["leaves"] = order["qty"] - order["filled"]
    r["fee"] = fee
    r["position"] = position
    return n + 1


@njit(cache=True)
def _fill(state, params, out, n, order, price, qty, liquidity, stats, now_ns):
    ints, books, has_book, orders, quote_slot, positions, cash, fees, flatten_ns, gate = state
    k = instrument_key(order["venue"], order["symbol"])
    fee_bps = params[P_MAKER_FEE_BPS] if liquidity > 0 else params[P_TAKER_FEE_BPS]
    fee = qty * price * fee_bps * 1e-4
    positions[k] += order["side"] * qty
    cash[k] -= order["side"] * qty * price + fee
    fees[k] += fee
    order["filled"] += qty
    done = order["qty"] - order["filled"] <= 1e-12 * order["qty"]
    if done:
        order["filled"] = order["qty"]
    order["state"] = ORD_FILLED if done else ORD_PARTIAL
    stats[ST_FILLS] += 1
    return _report(out, n, order, order["state"], price, qty, fee, liquidity, positions[k], 0, now_ns)


@njit(cache=True)
def _close(state, slot, out, n, state_code, stats, now_ns, origin_ts):
    ints, books, has_book, orders, quote_slot, positions, cash, fees, flatten_ns, gate = state
    order = orders[slot]
    if state_code == ORD_CANCELLED:
        order["origin_ts"] = origin_ts
        n = _report(out, n, order, ORD_CANCELLED, order["price"], order["qty"] - order["filled"], 0.0, 0,
                    positions[instrument_key(order["venue"], order["symbol"])], 0, now_ns)
        stats[ST_CANCELS] += 1
    order["state"] = state_code
    k = instrument_key(order["venue"], order["symbol"])
    side_col = 0 if order["side"] == BUY else 1
    if quote_slot[k, side_col] == slot:
        quote_slot[k, side_col] = -1
    order["order_id"] = 0  # free the slot
    ints[I_OPEN] -= 1
    return n


@njit(cache=True)
def _is_open(order):
    return order["order_id"] != 0


@njit(cache=True)
def _take(state, params, out, n, order, stats, now_ns):
    """Match ``order`` against the book as taker, depleting the book copy."""
    ints, books, has_book, orders, quote_slot, positions, cash, fees, flatten_ns, gate = state
    k = instrument_key(order["venue"], order["symbol"])
    book = books[k]
    for j in range(BOOK_LEVELS):
        leaves = order["qty"] - order["filled"]
        if leaves <= 0.0:
            break
        if order["side"] == BUY:
            px = book["ask_px"][j]
            avail = book["ask_sz"][j]
            if px > order["price"] or avail <= 0.0:
                break
            q = min(leaves, avail)
            book["ask_sz"][j] = avail - q
        else:
            px = book["bid_px"][j]
            avail = book["bid_sz"][j]
            if px < order["price"] or avail <= 0.0:
                break
            q = min(leaves, avail)
            book["bid_sz"][j] = avail - q
        n = _fill(state, params, out, n, order, px, q, -1, stats, now_ns)
    return n


@njit(cache=True)
def _on_market(state, params, ev, out, n, stats, now_ns):
    ints, books, has_book, orders, quote_slot, positions, cash, fees, flatten_ns, gate = state
    k = instrument_key(ev["venue"], ev["symbol"])
    if ev["kind"] == EV_BOOK or ev["kind"] == EV_BBO:  # a BBO matches as a one-level book
        books[k] = ev
        has_book[k] = 1
    for side_col in range(2):
        slot = quote_slot[k, side_col]
        if slot < 0:
            continue
        order = orders[slot]
        order["origin_ts"] = ev["origin_ts"]
        order["origin_seq"] = ev["origin_seq"]
        price = order["price"]
        avail = 0.0
        if ev["kind"] == EV_BOOK:
            for j in range(BOOK_LEVELS):
                if order["side"] == BUY and ev["ask_px"][j] <= price:
                    avail += ev["ask_sz"][j]
                elif order["side"] == SELL and ev["bid_px"][j] >= price:
                    avail += ev["bid_sz"][j]
        elif ev["kind"] == EV_TRADE:
            if (order["side"] == BUY and ev["side"] < 0 and ev["price"] <= price) or \
                    (order["side"] == SELL and ev["side"] > 0 and ev["price"] >= price):
                avail = ev["size"]
        if avail > 0.0:
            q = min(avail, order["qty"] - order["filled"])
            n = _fill(state, params, out, n, order, price, q, 1, stats, now_ns)
            if order["state"] == ORD_FILLED:
                n = _close(state, slot, out, n, ORD_FILLED, stats, now_ns, ev["origin_ts"])
    return n


@njit(cache=True)
def _free_slot(orders):
    for s in range(orders.shape[0]):
        if not _is_open(orders[s]):
            return s
    return -1


@njit(cache=True)
def _reject(out, n, intent, reason, position, stats, now_ns):
    r = out[n]
    r["origin_ts"] = intent["origin_ts"]
    r["origin_seq"] = intent["origin_seq"]
    r["stage_ts"] = now_ns
    r["order_id"] = 0
    r["venue"] = intent["venue"]
    r["symbol"] = intent["symbol"]
    r["side"] = intent["side"]
    r["state"] = ORD_REJECTED
    r["liquidity"] = 0
    r["strategy"] = intent["strategy"]
    r["reject_reason"] = reason
    r["price"] = intent["price"]
    r["qty"] = intent["qty"]
    r["leaves"] = 0.0
    r["fee"] = 0.0
    r["position"] = position
    stats[ST_REJECTS] += 1
    stats[ST_REJ_BASE + reason - 1] += 1
    return n + 1


@njit(cache=True)
def cancel_all(state, out, n, stats, now_ns):
    orders = state[3]
    for slot in range(orders.shape[0]):
        if _is_open(orders[slot]):
            n = _close(state, slot, out, n, ORD_CANCELLED, stats, now_ns, 0)
    return n


@njit(cache=True)
def gate_check(state, params, intent, k, now_ns):
    """The pre-trade checks that need no order slot or token; 0 = pass, else a REJ_* code."""
    ints, books, has_book, orders, quote_slot, positions, cash, fees, flatten_ns, gate = state
    qty = intent["qty"]
    price = intent["price"]
    side = intent["side"]
    limits = P_LIMITS + k * N_LIMITS
    if qty > params[limits + LIMIT_QTY]:
        return REJ_MAX_QTY
    if qty * price > params[limits + LIMIT_USD]:
        return REJ_MAX_NOTIONAL
    book = books[k]
    mid = 0.5 * (book["bid_px"][0] + book["ask_px"][0])
    if not (mid > 0.0) or abs(price - mid) > params[P_COLLAR_BPS] * 1e-4 * mid:
        return REJ_PRICE_COLLAR
    open_same_side = 0.0
    for s in range(orders.shape[0]):
        o = orders[s]
        if _is_open(o) and instrument_key(o["venue"], o["symbol"]) == k and o["side"] == side:
            if o["price"] == price and o["qty"] - o["filled"] == qty:
                return REJ_DUPLICATE
            open_same_side += o["qty"] - o["filled"]
    if intent["kind"] == INTENT_IOC:
        last = gate[1 + 2 * k + (0 if side == BUY else 1)]
        if last[1] > 0.0 and last[0] == price and last[1] == qty and now_ns - last[2] < params[P_DUP_WINDOW_NS]:
            return REJ_DUPLICATE
    after = positions[k] + side * (qty + open_same_side)
    if abs(after) * mid > params[limits + LIMIT_POSITION_USD] and abs(after) > abs(positions[k]):
        return REJ_POSITION_LIMIT
    return 0


@njit(cache=True)
def _spend_token(ints, gate, params, now_ns):
    """Token bucket in event time: refill at P_RATE_PER_NS up to P_BURST, spend one per accepted order."""
    burst = params[P_BURST]
    tokens = gate[0, GATE_TOKENS]
    if tokens < 0.0:
        tokens = burst
    else:
        tokens = min(burst, tokens + max(now_ns - ints[I_BUCKET_NS], 0) * params[P_RATE_PER_NS])
    ints[I_BUCKET_NS] = now_ns
    if tokens < 1.0:
        gate[0, GATE_TOKENS] = tokens
        return False
    gate[0, GATE_TOKENS] = tokens - 1.0
    return True


@njit(cache=True)
def _on_intent(state, params, intent, out, n, stats, now_ns):
    ints, books, has_book, orders, quote_slot, positions, cash, fees, flatten_ns, gate = state
    k = instrument_key(intent["venue"], intent["symbol"])
    side_col = 0 if intent["side"] == BUY else 1
    if intent["kind"] == INTENT_CANCEL_ALL:
        return cancel_all(state, out, n, stats, now_ns)
    if intent["kind"] == INTENT_QUOTE and quote_slot[k, side_col] >= 0:
        n = _close(state, quote_slot[k, side_col], out, n, ORD_CANCELLED, stats, now_ns, intent["origin_ts"])
        if intent["qty"] <= 0.0:
            return n
    if intent["kind"] == INTENT_QUOTE and intent["qty"] <= 0.0:
        return n
    if not (intent["qty"] > 0.0) or not (intent["price"] > 0.0):
        return _reject(out, n, intent, REJ_BAD_QTY, positions[k], stats, now_ns)
    if has_book[k] == 0:
        return _reject(out, n, intent, REJ_NO_MARKET, positions[k], stats, now_ns)
    reason = gate_check(state, params, intent, k, now_ns)
    if reason != 0:
        return _reject(out, n, intent, reason, positions[k], stats, now_ns)
    slot = _free_slot(orders) if ints[I_OPEN] < params[P_MAX_OPEN_ORDERS] else -1
    if slot < 0:
        return _reject(out, n, intent, REJ_TOO_MANY_ORDERS, positions[k], stats, now_ns)
    if not _spend_token(ints, gate, params, now_ns):
        return _reject(out, n, intent, REJ_RATE_LIMIT, positions[k], stats, now_ns)
    if intent["kind"] == INTENT_IOC:
        last = gate[1 + 2 * k + side_col]
        last[0] = intent["price"]
        last[1] = intent["qty"]
        last[2] = now_ns
    ints[I_NEXT_ORDER_ID] += 1
    ints[I_OPEN] += 1
    order = orders[slot]
    order["order_id"] = ints[I_NEXT_ORDER_ID]
    order["intent_id"] = intent["intent_id"]
    order["origin_ts"] = intent["origin_ts"]
    order["origin_seq"] = intent["origin_seq"]
    order["created_ts"] = now_ns
    order["venue"] = intent["venue"]
    order["symbol"] = intent["symbol"]
    order["side"] = intent["side"]
    order["kind"] = intent["kind"]
    order["strategy"] = intent["strategy"]
    order["price"] = intent["price"]
    order["qty"] = intent["qty"]
    order["filled"] = 0.0
    order["state"] = ORD_ACKED
    stats[ST_ORDERS] += 1
    stats[ST_LAST_ORDER_NS] = now_ns  # an audit can check no order was accepted after a kill
    n = _report(out, n, order, ORD_ACKED, order["price"], order["qty"], 0.0, 0, positions[k], 0, now_ns)
    n = _take(state, params, out, n, order, stats, now_ns)
    if order["state"] == ORD_FILLED:
        return _close(state, slot, out, n, ORD_FILLED, stats, now_ns, intent["origin_ts"])
    if intent["kind"] == INTENT_IOC:
        return _close(state, slot, out, n, ORD_CANCELLED, stats, now_ns, intent["origin_ts"])
    quote_slot[k, side_col] = slot
    return n


@njit(cache=True)
def flatten(state, params, out, n, stats, now_ns):
    """Reduce-only IOC orders that close every position against the book, within a price collar; a
    remainder (thin book) is retried every P_FLATTEN_RETRY_NS. Runs only while trading is disabled."""
    ints, books, has_book, orders, quote_slot, positions, cash, fees, flatten_ns, gate = state
    for k in range(positions.shape[0]):
        position = positions[k]
        if position == 0.0 or has_book[k] == 0 or now_ns - flatten_ns[k] < params[P_FLATTEN_RETRY_NS]:
            continue
        slot = _free_slot(orders)
        if slot < 0:
            break
        flatten_ns[k] = now_ns
        book = books[k]
        collar = params[P_FLATTEN_COLLAR_BPS] * 1e-4
        ints[I_NEXT_ORDER_ID] += 1
        ints[I_OPEN] += 1
        order = orders[slot]
        order["order_id"] = ints[I_NEXT_ORDER_ID]
        order["intent_id"] = 0
        order["origin_ts"] = 0
        order["origin_seq"] = 0
        order["created_ts"] = now_ns
        order["venue"] = key_venue(k)
        order["symbol"] = key_symbol(k)
        order["side"] = SELL if position > 0.0 else BUY
        order["kind"] = INTENT_IOC
        order["strategy"] = STRAT_FLATTEN
        order["price"] = book["bid_px"][0] * (1.0 - collar) if position > 0.0 else book["ask_px"][0] * (1.0 + collar)
        order["qty"] = abs(position)  # reduce-only: never more than the position
        order["filled"] = 0.0
        order["state"] = ORD_ACKED
        stats[ST_FLATTEN_ORDERS] += 1
        n = _report(out, n, order, ORD_ACKED, order["price"], order["qty"], 0.0, 0, position, 0, now_ns)
        n = _take(state, params, out, n, order, stats, now_ns)
        n = _close(state, slot, out, n, ORD_FILLED if order["state"] == ORD_FILLED else ORD_CANCELLED, stats,
                   now_ns, 0)
    return n


@njit(cache=True)
def _on_disabled(state, params, out, n, stats, now_ns):
    ints = state[0]
    if ints[I_OPEN] > 0:
        n = cancel_all(state, out, n, stats, now_ns)
        stats[ST_LAST_CANCEL_ALL_NS] = now_ns
    if params[P_FLATTEN] != 0.0:
        n = flatten(state, params, out, n, stats, now_ns)
    return n


@njit(cache=True)
def _publish_stats(state, stats):
    ints, books, has_book, orders, quote_slot, positions, cash, fees, flatten_ns, gate = state
    gross = 0.0
    pnl = 0.0
    for k in range(positions.shape[0]):
        if has_book[k] != 0:
            mid = 0.5 * (books[k]["bid_px"][0] + books[k]["ask_px"][0])
            gross += abs(positions[k]) * mid
            pnl += cash[k] + positions[k] * mid
    stats[ST_OPEN] = ints[I_OPEN]
    stats[ST_GROSS_USD] = int(gross)
    stats[ST_PNL_CENTS] = int(round(pnl * 100.0))
    stats[ST_FEES_CENTS] = int(round(fees.sum() * 100.0))


@njit(cache=True)
def step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    """in_a: order intents; in_b: validated market events. Market first: intents react to earlier books."""
    n = 0
    for i in range(n_b):
        n = _on_market(state, params, in_b[i], out, n, stats, now_ns)
    stats[ST_MARKET] += n_b
    for i in range(n_a):
        stats[ST_INTENTS] += 1
        # The gate: checked before every order, not once per batch.
        if load_acquire(ctl, G_TRADING_ENABLED) == 0:
            n = _on_disabled(state, params, out, n, stats, now_ns)
            k = instrument_key(in_a[i]["venue"], in_a[i]["symbol"])
            n = _reject(out, n, in_a[i], REJ_TRADING_DISABLED, state[5][k], stats, now_ns)
            stats[ST_DISABLED_REJECTS] += 1
            continue
        n = _on_intent(state, params, in_a[i], out, n, stats, now_ns)
    if load_acquire(ctl, G_TRADING_ENABLED) == 0:
        n = _on_disabled(state, params, out, n, stats, now_ns)
    if n > 0 or n_a + n_b > 0:
        _publish_stats(state, stats)
    return n
