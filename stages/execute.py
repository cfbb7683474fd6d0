"""Execute stage: the trading gate, our side of every order, and the paper venue (stages.venue).

Before every order the kernel reads ``trading_enabled`` from the control block (acquire load); when it is
0 it cancels every open order, rejects new intents and (unless configured cancel-only) flattens every
position with reduce-only IOC orders inside a price collar, retrying a remainder. It polls the flag even
without input, so a kill acts within one duty cycle.

Orders go to the venue model (stages.venue.exchange), which answers after its latency: an order is new when
sent, acknowledged, partially filled, filled, cancelled or rejected as the venue's answers come back; every state
change is an execution report (fills carry fee and the position after the fill). A quote replaces this side's
previous quote: the new one passes the gate first (not counting the one it replaces), and only then is the old
one cancelled, so a refused replacement leaves the old quote working. A cancel is a request: the order is open
(and can fill) until the venue's answer arrives.

Market events and intents are taken in feed-sequence order (an intent after the event that caused it). The
clock is the wall clock live; in a backtest or fused run (``event_clock``) it is each record's own event time.

The pre-trade gate (in the spirit of SEC Rule 15c3-5) checks every intent before it can become an order:
``trading_enabled``, quantity and price sanity, a market to price against, max quantity and notional per
order, a price collar around the mid, duplicates (an identical open order, or an identical IOC within the
window), the position after a full fill of this and the side's open orders (reductions always pass), max
open orders, and an order-rate token bucket refilled in event time (only orders that pass everything
spend a token). The quantity, notional and position limits are per instrument (a table in the params,
see P_LIMITS). A rejection is an execution report with a REJ_* reason, counted per reason; it never
becomes an order. Execute's own reduce-only flatten orders after a kill do not pass the gate.

A taker intent can ask for more than one order on its venue (stages.routing; the config can ask for every taker or
every one above a notional): ``route`` lets the smart order router split it across the venues that list the symbol
and across their levels, by price after taker fees at the size, depth, measured ack latency and venue health; ``algo``
makes it a parent order (TWAP, POV, iceberg) worked on event time. Each child order passes the gate on its own and
its reports name the parent (``parent_id``, ``algo``). Execute measures every venue's ack latency and counts its
rejects and late acks for the router.
"""
import numpy as np
from numba import njit
from numba.extending import register_jitable

from shm.atomics import load_acquire
from shm.control import G_TRADING_ENABLED
from stages import book, order_state, routing
from stages.counters import Counters
from stages.records import (ALGO_ICEBERG, ALGO_NONE, ANS_AMEND_REJECTED, ANS_AMENDED, BOOK_LEVELS, BUY, EV_BBO,
                            EV_BOOK, EV_BOOK_DELTA, EV_TRADE, INTENT_CANCEL_ALL, ORD_AMEND_REJECTED, ORD_AMENDED,
                            ORD_PENDING_AMEND, ORD_PENDING_CANCEL, INTENT_IOC, INTENT_QUOTE,
                            MARKET_EVENT, ORD_ACKED, ORD_CANCELLED, ORD_FILLED, ORD_NEW, ORD_PARTIAL, ORD_REJECTED,
                            ORDER, REJ_BAD_QTY, REJ_DUPLICATE, REJ_MAX_NOTIONAL, REJ_MAX_QTY, REJ_NAMES,
                            REJ_NO_MARKET, REJ_POSITION_LIMIT, REJ_PRICE_COLLAR, REJ_RATE_LIMIT, REJ_TOO_MANY_ORDERS,
                            REJ_GATEWAY, REJ_TRADING_DISABLED, REJ_VENUE, REP_FUNDING, SELL, STRAT_FLATTEN)
from stages.routing import algos, router
from stages.universe import MAX_KEYS, MAX_VENUES, instrument_key, key_symbol, key_venue
from stages.venue import exchange, link
from stages.venue.exchange import (R_ACK, R_CANCEL_REJECTED, R_CANCELLED, R_FILL, R_FUNDING, R_REJECTED,
                                   VI_DROPPED)

MAX_ORDERS = 256

(P_MAX_OPEN_ORDERS, P_FLATTEN, P_FLATTEN_COLLAR_BPS, P_FLATTEN_RETRY_NS, P_MAX_ORDER_QTY, P_MAX_ORDER_USD,
 P_COLLAR_BPS, P_RATE_PER_NS, P_BURST, P_DUP_WINDOW_NS, P_MAX_POSITION_USD, P_EVENT_CLOCK,
 P_FLATTEN_MIN_USD) = range(13)
# The gate's limits per instrument: params[P_LIMITS + key * N_LIMITS + LIMIT_*] by instrument key. make_params
# fills every key with the global P_MAX_ORDER_QTY / _USD / P_MAX_POSITION_USD, then applies the per-instrument
# values: one base-unit quantity cap cannot suit BTC and SOL alike.
LIMIT_QTY, LIMIT_USD, LIMIT_POSITION_USD = range(3)
N_LIMITS = 3
P_LIMITS = 13
P_VENUE = P_LIMITS + MAX_KEYS * N_LIMITS  # the venue model's params (stages.venue.exchange) from here on
P_ROUTING = P_VENUE + exchange.N_PARAMS    # then the routing block (stages.routing)

# I_BUCKET_NS: event time of the last token refill (0 = full); I_CLOCK_NS: on the event clock, the latest record's time;
# I_LATE_TRADES: late fills taken so far (the next row of the late-trade table is this modulo its length)
I_NEXT_ORDER_ID, I_OPEN, I_BUCKET_NS, I_CLOCK_NS, I_LATE_TRADES = range(5)
# make_state's tuple, by position (numba indexes a heterogeneous tuple by constants only)
(X_INTS, X_BOOKS, X_HAS_BOOK, X_ORDERS, X_QUOTE_SLOT, X_POSITIONS, X_CASH, X_FEES, X_FLATTEN_NS, X_GATE, X_VENUE,
 X_LADDERS, X_ORDER_FSM, X_ROUTING, X_LINKS, X_FLATTEN_REJECTS, X_LATE_TRADES) = range(17)
HAS_LADDER, HAS_TOP = 1, 2  # has_book[key]: a top from our L2 ladder of its deltas; a BBO or book view
# A live venue that refuses a cancel of an order still open here is asked again after CANCEL_RETRY_NS, doubling,
# CANCEL_RESENDS times at most; by then its gateway's queries settle the order (and a trip cancels all at the venue).
CANCEL_RETRY_NS = 500_000_000
CANCEL_RESENDS = 3
# Flatten orders the venue refused this many times in a row for one instrument: it is left (the operator is told)
# rather than sent again every flatten_retry_ms until the run's flatten timeout.
FLATTEN_REJECTS_MAX = 3
LATE_TRADES_KEPT = 256  # (order id, trade id) of recent late fills, for de-duplication
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
ST_CANCEL_REQUESTS = _COUNTERS.add("cancel_requests")
ST_CANCEL_REJECTS = _COUNTERS.add("cancel_rejects")      # the venue had no such order left (it had filled)
ST_VENUE_REJECTS = _COUNTERS.add("venue_rejects")
ST_FUNDING_CENTS = _COUNTERS.add("funding_cents")        # paid (negative: received)
ST_IN_FLIGHT_DROPPED = _COUNTERS.add("venue_dropped")    # commands or answers the venue model had no room for
ST_STRAY_ANSWERS = _COUNTERS.add("stray_answers")        # answers about an order no longer open here
ST_TRANSITIONS_REFUSED = _COUNTERS.add("transitions_refused")  # answers the order state machine refused (unapplied)
ST_LINK_COMMANDS = _COUNTERS.add("gateway_commands")     # commands to live venues' gateways
ST_LINK_ANSWERS = _COUNTERS.add("gateway_answers")       # answers from them
ST_LINK_FULL = _COUNTERS.add("gateway_full")             # a command a gateway's ring had no room for (retried)
ST_LATE_FILLS = _COUNTERS.add("late_fills")              # fills of an order already ended here (accounted)
ST_DUPLICATE_TRADES = _COUNTERS.add("duplicate_trades")  # a venue trade id already applied (ignored)
ST_AMENDS = _COUNTERS.add("amends")                      # quotes amended in place at a live venue: sent,
ST_AMENDED = _COUNTERS.add("amends_applied")             # applied by the venue,
ST_AMEND_REJECTS = _COUNTERS.add("amend_rejects")        # refused by it (the order stood as it was)
ST_CANCELS_GIVEN_UP = _COUNTERS.add("cancels_given_up")  # orders whose cancel a live venue refused CANCEL_RESENDS+1 times
ST_TO_FLATTEN = _COUNTERS.add("to_flatten")              # instruments with a position flatten still works on
ST_DUST_POSITIONS = _COUNTERS.add("dust_positions")      # positions worth less than execute.flatten_min_usd: not flattened
ST_FLATTEN_GIVEN_UP = _COUNTERS.add("flatten_given_up")  # instruments whose flatten orders the venue kept refusing
# the routing state's counters (parents active, started, done; intents routed, split; children, refused children)
ST_ROUTING_BASE = _COUNTERS.add_range("routing_" + name for name in algos.COUNTER_NAMES)
N_ROUTING_COUNTERS = len(algos.COUNTER_NAMES)
# one counter per rejection reason, REJ_* code order: stats[ST_REJ_BASE + code - 1]
ST_REJ_BASE = _COUNTERS.add_range("rej_" + REJ_NAMES[code].replace(" ", "_") for code in sorted(REJ_NAMES))
STATS = _COUNTERS.labels
assert sorted(REJ_NAMES) == list(range(1, len(REJ_NAMES) + 1))


@register_jitable
def out_capacity(batch: int) -> int:
    # per input record: its own reports (new or rejected, a replaced quote's pending cancel) and the venue's answers
    # that come due with it (an ack, a fill per level, a cancel); plus a cancel-all's and the flatten orders.
    return batch * (BOOK_LEVELS + 5) + 4 * MAX_ORDERS


def make_params(*, max_open_orders: int, flatten: bool,
                flatten_collar_bps: float, flatten_retry_ms: float, max_order_qty: float, max_order_usd: float,
                price_collar_bps: float, max_orders_per_s: float, order_burst: int, duplicate_window_ms: float,
                max_position_usd: float, venue: np.ndarray, routing: np.ndarray, event_clock: bool,
                flatten_min_usd: float = 1.0, max_order_qty_by_key: dict | None = None, max_order_usd_by_key: dict | None = None,
                max_position_usd_by_key: dict | None = None) -> np.ndarray:
    """``venue``: the venue model's params (stages.venue.exchange.make_params); ``routing``: the router's and the
    algos' (stages.routing.make_params). The ``*_by_key`` dicts map an
    instrument key (stages.universe.instrument_key) to its own limit; keys without one get the global limit.
    Fees are the venue model's (per venue)."""
    scalars = [float(min(max_open_orders, MAX_ORDERS)), float(flatten),
               flatten_collar_bps, flatten_retry_ms * 1e6, max_order_qty, max_order_usd, price_collar_bps,
               max_orders_per_s * 1e-9, float(order_burst), duplicate_window_ms * 1e6, max_position_usd,
               float(event_clock), flatten_min_usd]
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
    assert len(venue) == exchange.N_PARAMS and len(routing) == algos.N_PARAMS
    return np.concatenate((np.array(scalars), limits.ravel(), venue, routing))


def gate_limits(params: np.ndarray, key: int) -> tuple[float, float, float]:
    """(max order qty, max order usd, max position usd) the gate applies to instrument ``key``."""
    base = P_LIMITS + key * N_LIMITS
    return (float(params[base + LIMIT_QTY]), float(params[base + LIMIT_USD]),
            float(params[base + LIMIT_POSITION_USD]))


def make_state(venue_state=None, links=None):
    """(ints, books, has_book, orders, quote slots [key, side], positions, cash, fees, last flatten ns, gate,
    venue model state, L2 ladders of delta-only venues, the order state machine per order slot
    (stages.order_state), routing: venue measurements and parent orders (stages.routing), the live venues'
    links, flatten orders the venue refused in a row per key, recent late fills' (order id, trade id)). ``venue_state``: stages.venue.exchange.make_state(...) (default: no latency table, clock offsets learnt
    or fixed as the params say); ``links``: stages.venue.link.make_links(...) (default: every venue is the paper
    venue)."""
    quote_slot = np.full((MAX_KEYS, 2), -1, np.int64)
    gate = np.zeros((1 + 2 * MAX_KEYS, 3))
    gate[0, GATE_TOKENS] = -1.0  # the bucket starts full at the first order
    return (np.zeros(5, np.int64), np.zeros(MAX_KEYS, MARKET_EVENT), np.zeros(MAX_KEYS, np.int64),
            np.zeros(MAX_ORDERS, ORDER), quote_slot, np.zeros(MAX_KEYS), np.zeros(MAX_KEYS), np.zeros(MAX_KEYS),
            np.full(MAX_KEYS, -(1 << 62), np.int64), gate,
            venue_state if venue_state is not None else exchange.make_state(), book.make_books(),
            order_state.make_state(MAX_ORDERS), routing.make_state(),
            links if links is not None else link.make_links(), np.zeros(MAX_KEYS, np.int64),
            np.zeros((LATE_TRADES_KEPT, 2), np.int64))


def seed_order_ids(state, last_id: int) -> None:
    """Number the next orders from ``last_id + 1``: a live run seeds the wall clock in microseconds at the stage's
    start, so a restarted stage (or a later run of the same name) never reuses a client order id."""
    state[X_INTS][I_NEXT_ORDER_ID] = last_id


@njit(cache=True, _nrt=False)
def _report(out, n, order, state_code, price, qty, fee, liquidity, position, reject, now_ns, exch_ts):
    r = out[n]
    r["origin_ts"] = order["origin_ts"]
    r["origin_seq"] = order["origin_seq"]
    r["stage_ts"] = now_ns
    r["exch_ts"] = exch_ts
    r["send_ts"] = order["send_ts"]
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
    r["parent_id"] = order["intent_id"] & 0xFFFFFFFF if order["parent"] != 0 else 0
    r["algo"] = order["algo"]
    return n + 1


@njit(cache=True, _nrt=False)
def _is_open(order):
    return order["order_id"] != 0


@njit(cache=True, _nrt=False)
def _free(state, slot):
    """The order is done: its slot and, if it was the side's quote, the quote slot are free again."""
    ints = state[X_INTS]
    orders = state[X_ORDERS]
    quote_slot = state[X_QUOTE_SLOT]
    order = orders[slot]
    k = instrument_key(order["venue"], order["symbol"])
    side_col = 0 if order["side"] == BUY else 1
    if quote_slot[k, side_col] == slot:
        quote_slot[k, side_col] = -1
    order["order_id"] = 0
    ints[I_OPEN] -= 1


@njit(cache=True, _nrt=False)
def _request_cancel(state, params, vparams, slot, out, n, stats, now_ns):
    """Ask the venue to cancel, reported pending cancel; the order stays open (and can fill) until the answer."""
    orders = state[X_ORDERS]
    quote_slot = state[X_QUOTE_SLOT]
    positions = state[X_POSITIONS]
    vs = state[X_VENUE]
    fsm = state[X_ORDER_FSM]
    links = state[X_LINKS]
    order = orders[slot]
    if order["cancel_ts"] != 0 or now_ns < order["cancel_after_ts"] or order["cancel_rejects"] > CANCEL_RESENDS:
        return n
    live = link.is_live(links, order["venue"])
    if live and not link.has_room(links, order["venue"], 1):
        stats[ST_LINK_FULL] += 1  # nothing changed: a cancel-all or the next replacement asks again
        return n
    if order_state.apply(fsm, slot, order_state.OE_CANCEL_REQUEST) == order_state.REFUSED:
        stats[ST_TRANSITIONS_REFUSED] += 1
        return n
    order["cancel_ts"] = now_ns
    k = instrument_key(order["venue"], order["symbol"])
    side_col = 0 if order["side"] == BUY else 1
    if quote_slot[k, side_col] == slot:
        quote_slot[k, side_col] = -1
    if live:
        link.send_cancel(links, order["venue"], order["order_id"], slot, k, order["side"], now_ns)
        stats[ST_LINK_COMMANDS] += 1
    else:
        exchange.cancel(vs, vparams, slot, order["order_id"], k, order["side"], now_ns)
    stats[ST_CANCEL_REQUESTS] += 1
    return _report(out, n, order, ORD_PENDING_CANCEL, order["price"], order["qty"] - order["filled"], 0.0, 0,
                   positions[k], 0, now_ns, 0)


@njit(cache=True, _nrt=False)
def cancel_all(state, params, vparams, out, n, stats, now_ns):
    """Cancel every open order but execute's own flatten IOCs (they end by themselves); no parent order sends
    another child."""
    orders = state[X_ORDERS]
    algos.end_all(state[X_ROUTING][routing.RS_PARENTS], state[X_ROUTING][routing.RS_INTS])
    for slot in range(orders.shape[0]):
        if _is_open(orders[slot]) and orders[slot]["strategy"] != STRAT_FLATTEN:
            n = _request_cancel(state, params, vparams, slot, out, n, stats, now_ns)
    return n


@njit(cache=True, _nrt=False)
def _slot_of(orders, order_id):
    for s in range(orders.shape[0]):
        if order_id != 0 and orders[s]["order_id"] == order_id:
            return s
    return -1


@njit(cache=True, _nrt=False)
def _event_of(kind, leaves):
    """The order state machine's event of a venue answer (R_FUNDING is not about an order)."""
    if kind == R_ACK:
        return order_state.OE_ACCEPT
    if kind == R_FILL:
        return order_state.OE_FILL if leaves <= 0.0 else order_state.OE_PARTIAL_FILL
    if kind == R_CANCELLED:
        return order_state.OE_CANCELLED
    if kind == R_REJECTED:
        return order_state.OE_REJECT
    if kind == ANS_AMENDED:
        return order_state.OE_UPDATED
    if kind == ANS_AMEND_REJECTED:
        return order_state.OE_UPDATE_REJECTED
    return order_state.OE_CANCEL_REJECTED


@njit(cache=True, _nrt=False)
def _on_answer(state, params, vparams, a, out, n, stats, now_ns):
    """One answer from the venue."""
    orders = state[X_ORDERS]
    positions = state[X_POSITIONS]
    cash = state[X_CASH]
    fees = state[X_FEES]
    fsm = state[X_ORDER_FSM]
    k = a["key"]
    if a["kind"] == R_FUNDING:
        cash[k] -= a["fee"]
        stats[ST_FUNDING_CENTS] += int(round(a["fee"] * 100.0))
        r = out[n]
        r["origin_ts"], r["origin_seq"], r["stage_ts"], r["exch_ts"], r["send_ts"] = 0, 0, now_ns, a["exch_ts"], 0
        r["order_id"], r["venue"], r["symbol"], r["side"], r["state"] = 0, key_venue(k), key_symbol(k), 0, REP_FUNDING
        r["liquidity"], r["strategy"], r["reject_reason"], r["parent_id"], r["algo"] = 0, 0, 0, 0, 0
        r["price"], r["qty"], r["leaves"], r["fee"], r["position"] = a["price"], a["qty"], 0.0, a["fee"], positions[k]
        return n + 1
    slot = a["slot"]
    if slot < 0:  # a live gateway that did not send it (restarted, reconciling): the order by its id
        slot = _slot_of(orders, a["order_id"])
    if slot < 0 or not _is_open(orders[slot]) or orders[slot]["order_id"] != a["order_id"]:
        if a["kind"] == R_FILL and link.is_live(state[X_LINKS], key_venue(k)):
            return _late_fill(state, a, out, n, stats, now_ns)
        if a["kind"] == R_CANCEL_REJECTED:
            stats[ST_CANCEL_REJECTS] += 1  # it filled (or ended) before the cancel arrived: already reported
        else:
            stats[ST_STRAY_ANSWERS] += 1
        return n
    order = orders[slot]
    kind = a["kind"]
    if kind == R_FILL and a["trade_id"] > 0 and order_state.seen_trade(fsm, slot, a["trade_id"]):
        stats[ST_DUPLICATE_TRADES] += 1  # the stream and a query both reported it: applied once
        return n
    if order_state.apply(fsm, slot, _event_of(kind, a["leaves"])) == order_state.REFUSED:
        stats[ST_TRANSITIONS_REFUSED] += 1  # never applied: no report, no position change
        return n
    rs = state[X_ROUTING]
    rparams = params[P_ROUTING:]
    parents = rs[routing.RS_PARENTS]
    row = order["parent"] - 1  # the child's parent order, or < 0
    if kind == R_ACK:
        router.on_ack(rs[routing.RS_VENUES], rparams, order["venue"], now_ns - order["send_ts"], now_ns)
        if order["state"] == ORD_NEW:
            order["state"] = ORD_ACKED
        return _report(out, n, order, ORD_ACKED, order["price"], order["qty"], 0.0, 0, positions[k], 0, now_ns,
                       a["exch_ts"])
    if kind == R_FILL:
        qty, price, fee = a["qty"], a["price"], a["fee"]
        positions[k] += order["side"] * qty
        cash[k] -= order["side"] * qty * price + fee
        fees[k] += fee
        order["filled"] += qty
        done = a["leaves"] <= 0.0
        if done:
            order["filled"] = order["qty"]
        order["state"] = ORD_FILLED if done else ORD_PARTIAL
        stats[ST_FILLS] += 1
        if order["strategy"] == STRAT_FLATTEN:
            state[X_FLATTEN_REJECTS][k] = 0
        n = _report(out, n, order, order["state"], price, qty, fee, a["liquidity"], positions[k], 0, now_ns,
                    a["exch_ts"])
        if row >= 0:
            algos.child_filled(parents[row], slot, qty, price, done)
        if done:
            _free(state, slot)
        return n
    if kind == R_CANCELLED:
        order["state"] = ORD_CANCELLED
        stats[ST_CANCELS] += 1
        n = _report(out, n, order, ORD_CANCELLED, order["price"], order["qty"] - order["filled"], 0.0, 0,
                    positions[k], 0, now_ns, a["exch_ts"])
        if row >= 0:
            algos.child_ended(parents[row], slot, order["qty"] - order["filled"], False)
        _free(state, slot)
        return n
    if kind == R_REJECTED:
        order["state"] = ORD_REJECTED
        stats[ST_REJECTS] += 1
        stats[ST_VENUE_REJECTS] += 1
        stats[ST_REJ_BASE + REJ_VENUE - 1] += 1
        if order["strategy"] == STRAT_FLATTEN:
            state[X_FLATTEN_REJECTS][k] += 1
        n = _report(out, n, order, ORD_REJECTED, order["price"], order["qty"], 0.0, 0, positions[k], REJ_VENUE,
                    now_ns, a["exch_ts"])
        router.on_reject(rs[routing.RS_VENUES], rparams, order["venue"], now_ns)
        if row >= 0:
            algos.child_ended(parents[row], slot, order["qty"] - order["filled"], True)
        _free(state, slot)
        return n
    if kind == ANS_AMENDED:
        order["price"], order["qty"] = a["price"], max(a["qty"], order["filled"])
        stats[ST_AMENDED] += 1
        return _report(out, n, order, ORD_AMENDED, order["price"], order["qty"], 0.0, 0, positions[k], 0, now_ns,
                       a["exch_ts"])
    if kind == ANS_AMEND_REJECTED:
        stats[ST_AMEND_REJECTS] += 1
        return _report(out, n, order, ORD_AMEND_REJECTED, order["price"], order["qty"], 0.0, 0, positions[k],
                       REJ_VENUE, now_ns, a["exch_ts"])
    # R_CANCEL_REJECTED for an order still open here: on the paper venue the cancel overtook the order (latencies
    # vary), so it goes again; a live gateway refuses a cancel only once the venue's answer is definitive and the
    # order's own end usually follows from its query, so it is asked again only after a growing pause, a few times.
    stats[ST_CANCEL_REJECTS] += 1
    order["cancel_ts"] = 0
    if link.is_live(state[X_LINKS], order["venue"]):
        order["cancel_rejects"] += 1
        if order["cancel_rejects"] > CANCEL_RESENDS:
            stats[ST_CANCELS_GIVEN_UP] += 1
        else:
            order["cancel_after_ts"] = now_ns + (CANCEL_RETRY_NS << (order["cancel_rejects"] - 1))
        return n
    return _request_cancel(state, params, vparams, slot, out, n, stats, now_ns)


@njit(cache=True, _nrt=False)
def _late_fill(state, a, out, n, stats, now_ns):
    """A live venue's fill of an order that has ended here (it filled after its cancel was acknowledged, or it is
    an order of a previous incarnation the gateway found): the position is real, so it is accounted and reported
    as a fill (partially filled, nothing left) of that order id."""
    positions, cash, fees = state[X_POSITIONS], state[X_CASH], state[X_FEES]
    if a["trade_id"] > 0:  # the order's slot is gone, and with it its trade ids: the late ones are kept here
        ints, late = state[X_INTS], state[X_LATE_TRADES]
        for i in range(min(ints[I_LATE_TRADES], LATE_TRADES_KEPT)):
            if late[i, 0] == a["order_id"] and late[i, 1] == a["trade_id"]:
                stats[ST_DUPLICATE_TRADES] += 1
                return n
        row = ints[I_LATE_TRADES] % LATE_TRADES_KEPT
        late[row, 0], late[row, 1] = a["order_id"], a["trade_id"]
        ints[I_LATE_TRADES] += 1
    k = a["key"]
    qty, price, fee = a["qty"], a["price"], a["fee"]
    positions[k] += a["side"] * qty
    cash[k] -= a["side"] * qty * price + fee
    fees[k] += fee
    stats[ST_FILLS] += 1
    stats[ST_LATE_FILLS] += 1
    r = out[n]
    r["origin_ts"], r["origin_seq"], r["stage_ts"], r["exch_ts"], r["send_ts"] = 0, 0, now_ns, a["exch_ts"], 0
    r["order_id"], r["venue"], r["symbol"], r["side"] = a["order_id"], key_venue(k), key_symbol(k), a["side"]
    r["state"], r["liquidity"], r["strategy"], r["reject_reason"] = ORD_PARTIAL, a["liquidity"], 0, 0
    r["price"], r["qty"], r["leaves"], r["fee"], r["position"] = price, qty, 0.0, fee, positions[k]
    return n + 1


@njit(cache=True, _nrt=False)
def _take_live_answers(state, params, vparams, out, n, stats, now_ns, room):
    """Answers of the live venues' gateways, as many as ``out`` has room for (the rest wait in their rings)."""
    links = state[X_LINKS]
    if not link.any_live(links):
        return n
    scratch = links[link.L_ANSWER_SCRATCH]
    for venue in range(links[link.L_LIVE].shape[0]):
        if not link.is_live(links, venue):
            continue
        while n < room:
            got = link.take_answers(links, venue, room - n)
            for i in range(got):
                n = _on_answer(state, params, vparams, scratch[i], out, n, stats, now_ns)
            stats[ST_LINK_ANSWERS] += got
            if got == 0:
                break
    return n


@njit(cache=True, _nrt=False)
def _deliver(state, params, vparams, out, n, stats, now_ns, reserve):
    """Run the venue up to ``now_ns`` and take in its answers due by then (as many as ``out`` has room for,
    keeping ``reserve`` records free; the rest come with the next call)."""
    vs = state[X_VENUE]
    exchange.advance(vs, vparams, now_ns, False)
    room = out.shape[0] - reserve
    event_clock = params[P_EVENT_CLOCK] != 0.0
    while n < room:
        i = exchange.next_response(vs, now_ns)
        if i < 0:
            break
        a = vs[5][i]
        n = _on_answer(state, params, vparams, a, out, n, stats, a["arrive_ts"] if event_clock else now_ns)
    return _take_live_answers(state, params, vparams, out, n, stats, now_ns, room)


@njit(cache=True, _nrt=False)
def _on_market(state, ev):
    """Our view of the market: the latest book of each instrument, for the gate's mid and the flatten collar. A
    venue that sends L2 deltas only (no BBO or book view) gets its top from a book built from them."""
    k = instrument_key(ev["venue"], ev["symbol"])
    has_book = state[X_HAS_BOOK]
    if ev["kind"] == EV_BOOK or ev["kind"] == EV_BBO:
        state[X_BOOKS][k] = ev
        has_book[k] = HAS_TOP
    elif ev["kind"] == EV_BOOK_DELTA and has_book[k] != HAS_TOP and k < MAX_KEYS:
        ladders = state[X_LADDERS]
        book.apply(ladders, ev)
        bid, bid_sz, ask, ask_sz = book.best(ladders, k)
        if bid > 0.0 and ask > bid:
            top = state[X_BOOKS][k]
            top["bid_px"][0], top["bid_sz"][0], top["ask_px"][0], top["ask_sz"][0] = bid, bid_sz, ask, ask_sz
            has_book[k] = HAS_LADDER


@njit(cache=True, _nrt=False)
def _free_slot(orders):
    for s in range(orders.shape[0]):
        if not _is_open(orders[s]):
            return s
    return -1


@njit(cache=True, _nrt=False)
def _reject(out, n, intent, reason, position, stats, now_ns, parent_id=0, algo=0):
    """A rejection report; ``parent_id``, ``algo``: a child's or a refused parent's (stages.records EXEC_REPORT)."""
    r = out[n]
    r["origin_ts"] = intent["origin_ts"]
    r["origin_seq"] = intent["origin_seq"]
    r["stage_ts"] = now_ns
    r["exch_ts"] = 0
    r["send_ts"] = 0
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
    r["parent_id"] = parent_id & 0xFFFFFFFF
    r["algo"] = algo
    stats[ST_REJECTS] += 1
    stats[ST_REJ_BASE + reason - 1] += 1
    return n + 1


@njit(cache=True, _nrt=False)
def gate_check(state, params, intent, k, now_ns, replaced=-1):
    """The pre-trade checks that need no order slot or token; 0 = pass, else a REJ_* code."""
    books = state[X_BOOKS]
    orders = state[X_ORDERS]
    positions = state[X_POSITIONS]
    gate = state[X_GATE]
    qty = intent["qty"]
    price = intent["price"]
    side = intent["side"]
    limits = P_LIMITS + k * N_LIMITS
    if qty > params[limits + LIMIT_QTY]:
        return REJ_MAX_QTY
    if qty * price > params[limits + LIMIT_USD]:
        return REJ_MAX_NOTIONAL
    top = books[k]
    mid = 0.5 * (top["bid_px"][0] + top["ask_px"][0])
    if not (mid > 0.0) or abs(price - mid) > params[P_COLLAR_BPS] * 1e-4 * mid:
        return REJ_PRICE_COLLAR
    open_same_side = 0.0
    for s in range(orders.shape[0]):
        o = orders[s]
        if s != replaced and _is_open(o) and instrument_key(o["venue"], o["symbol"]) == k and o["side"] == side:
            if o["cancel_ts"] == 0 and o["price"] == price and o["qty"] - o["filled"] == qty:
                return REJ_DUPLICATE
            open_same_side += o["qty"] - o["filled"]  # an order being cancelled can still fill
    if intent["kind"] == INTENT_IOC:
        last = gate[1 + 2 * k + (0 if side == BUY else 1)]
        if last[1] > 0.0 and last[0] == price and last[1] == qty and now_ns - last[2] < params[P_DUP_WINDOW_NS]:
            return REJ_DUPLICATE
    after = positions[k] + side * (qty + open_same_side)
    if abs(after) * mid > params[limits + LIMIT_POSITION_USD] and abs(after) > abs(positions[k]):
        return REJ_POSITION_LIMIT
    return 0


@njit(cache=True, _nrt=False)
def _checked(state, params, intent, k, now_ns, replaced):
    """0 when ``intent`` has a quantity, a price and a market and passes the gate; else the REJ_* code."""
    if not (intent["qty"] > 0.0) or not (intent["price"] > 0.0):
        return REJ_BAD_QTY
    if state[X_HAS_BOOK][k] == 0:
        return REJ_NO_MARKET
    return gate_check(state, params, intent, k, now_ns, replaced)


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
def _send(state, params, vparams, slot, intent_id, origin_ts, origin_seq, k, side, kind, strategy, price, qty, out, n,
          position, stats, now_ns, parent=0, algo=0):
    """A new order in ``slot``: reported new, sent to the venue. ``parent``, ``algo``: a child's (records.ORDER)."""
    ints = state[X_INTS]
    orders = state[X_ORDERS]
    vs = state[X_VENUE]
    fsm = state[X_ORDER_FSM]
    ints[I_NEXT_ORDER_ID] += 1
    ints[I_OPEN] += 1
    order = orders[slot]
    order["order_id"] = ints[I_NEXT_ORDER_ID]
    order["intent_id"] = intent_id
    order["origin_ts"] = origin_ts
    order["origin_seq"] = origin_seq
    order["created_ts"] = now_ns
    order["send_ts"] = now_ns
    order["cancel_ts"] = 0
    order["cancel_after_ts"] = 0
    order["cancel_rejects"] = 0
    order["venue"] = key_venue(k)
    order["symbol"] = key_symbol(k)
    order["side"] = side
    order["kind"] = kind
    order["strategy"] = strategy
    order["price"] = price
    order["qty"] = qty
    order["filled"] = 0.0
    order["state"] = ORD_NEW
    order["parent"] = parent
    order["algo"] = algo
    order_state.reset(fsm, slot)
    order_state.apply(fsm, slot, order_state.OE_SUBMIT)
    stats[ST_ORDERS] += 1
    if strategy != STRAT_FLATTEN:  # an audit checks no order was sent after a kill; flatten orders are its answer
        stats[ST_LAST_ORDER_NS] = now_ns
    n = _report(out, n, order, ORD_NEW, price, qty, 0.0, 0, position, 0, now_ns, 0)
    links = state[X_LINKS]
    if link.is_live(links, order["venue"]):  # the caller made sure its ring has room
        link.send_new(links, order["venue"], order["order_id"], slot, k, kind, side, price, qty, origin_ts,
                      origin_seq, now_ns)
        stats[ST_LINK_COMMANDS] += 1
    else:
        exchange.submit(vs, vparams, slot, order["order_id"], k, side, kind, price, qty, now_ns)
    return n


@njit(cache=True, _nrt=False)
def _place(state, params, vparams, intent, replaced, parent, algo, out, n, stats, now_ns):
    """The gate, then one order of ``intent`` on its own venue. Returns (n, the order's slot; -1: refused).
    ``replaced``: the slot of the quote a quote replaces (-1: none); ``parent``, ``algo``: a child's (records.ORDER)."""
    ints = state[X_INTS]
    orders = state[X_ORDERS]
    positions = state[X_POSITIONS]
    gate = state[X_GATE]
    k = instrument_key(intent["venue"], intent["symbol"])
    side_col = 0 if intent["side"] == BUY else 1
    parent_id = intent["intent_id"] if parent != 0 else 0
    reason = _checked(state, params, intent, k, now_ns, replaced)
    slot = -1
    if reason == 0:
        slot = _free_slot(orders) if ints[I_OPEN] < params[P_MAX_OPEN_ORDERS] else -1
        links = state[X_LINKS]
        if slot < 0:
            reason = REJ_TOO_MANY_ORDERS
        elif link.is_live(links, intent["venue"]) and not link.has_room(links, intent["venue"], 2):
            stats[ST_LINK_FULL] += 1  # room for it and a replaced quote's cancel: else the gateway is behind or down
            reason = REJ_GATEWAY
        elif not _spend_token(ints, gate, params, now_ns):
            reason = REJ_RATE_LIMIT
    if reason != 0:
        return _reject(out, n, intent, reason, positions[k], stats, now_ns, parent_id, algo), -1
    if intent["kind"] == INTENT_IOC:
        last = gate[1 + 2 * k + side_col]
        last[0] = intent["price"]
        last[1] = intent["qty"]
        last[2] = now_ns
    if replaced >= 0:  # the replacement passed: only now does the old quote go
        n = _request_cancel(state, params, vparams, replaced, out, n, stats, now_ns)
    n = _send(state, params, vparams, slot, intent["intent_id"], intent["origin_ts"], intent["origin_seq"], k,
              intent["side"], intent["kind"], intent["strategy"], intent["price"], intent["qty"], out, n,
              positions[k], stats, now_ns, parent, algo)
    return n, slot


@njit(cache=True, _nrt=False)
def _amendable(state, slot):
    """The quote in ``slot`` is at a venue that amends in place, working there, with nothing else asked of it."""
    order = state[X_ORDERS][slot]
    fsm_state = state[X_ORDER_FSM][0][slot]
    return (link.amends(state[X_LINKS], order["venue"]) and order["cancel_ts"] == 0
            and (fsm_state == order_state.OS_ACCEPTED or fsm_state == order_state.OS_PARTIALLY_FILLED))


@njit(cache=True, _nrt=False)
def _amend(state, params, intent, slot, out, n, stats, now_ns):
    """A quote's new price and size as an amend of the working quote in ``slot``: the same gate as a new order
    (the old quote left out of it); refused -> the old quote stands. ``intent["qty"]``: what should be open."""
    ints = state[X_INTS]
    positions = state[X_POSITIONS]
    links = state[X_LINKS]
    order = state[X_ORDERS][slot]
    k = instrument_key(intent["venue"], intent["symbol"])
    reason = _checked(state, params, intent, k, now_ns, slot)
    if reason == 0:
        if not link.has_room(links, order["venue"], 1):
            stats[ST_LINK_FULL] += 1
            reason = REJ_GATEWAY
        elif not _spend_token(ints, state[X_GATE], params, now_ns):
            reason = REJ_RATE_LIMIT
    if reason != 0:
        return _reject(out, n, intent, reason, positions[k], stats, now_ns)
    if order_state.apply(state[X_ORDER_FSM], slot, order_state.OE_UPDATE_REQUEST) == order_state.REFUSED:
        stats[ST_TRANSITIONS_REFUSED] += 1
        return n
    # the order answers this intent now: its reports carry the intent's market event (tick-to-order latency)
    order["intent_id"], order["origin_ts"], order["origin_seq"] = (intent["intent_id"], intent["origin_ts"],
                                                                  intent["origin_seq"])
    order["strategy"] = intent["strategy"]
    order["amend_price"], order["amend_qty"] = intent["price"], order["filled"] + intent["qty"]
    link.send_amend(links, order["venue"], order["order_id"], slot, k, order["kind"], order["side"],
                    order["amend_price"], order["amend_qty"], intent["origin_ts"], intent["origin_seq"], now_ns)
    stats[ST_LINK_COMMANDS] += 1
    stats[ST_AMENDS] += 1
    stats[ST_LAST_ORDER_NS] = now_ns
    return _report(out, n, order, ORD_PENDING_AMEND, order["amend_price"], order["amend_qty"], 0.0, 0, positions[k],
                   0, now_ns, 0)


@njit(cache=True, _nrt=False)
def _on_intent(state, params, vparams, intent, out, n, stats, now_ns):
    quote_slot = state[X_QUOTE_SLOT]
    k = instrument_key(intent["venue"], intent["symbol"])
    side_col = 0 if intent["side"] == BUY else 1
    if intent["kind"] == INTENT_CANCEL_ALL:
        return cancel_all(state, params, vparams, out, n, stats, now_ns)
    asks = intent["route"] != 0 or intent["algo"] != ALGO_NONE
    if asks or params[P_ROUTING + router.RP_ACTIVE] != 0.0:
        if intent["kind"] == INTENT_IOC:
            return _on_taker(state, params, vparams, intent, out, n, stats, now_ns)
        if asks:  # a quote is neither routed nor worked: the fields it set are not valid for it
            return _reject(out, n, intent, REJ_BAD_QTY, state[X_POSITIONS][k], stats, now_ns)
    replaced = quote_slot[k, side_col] if intent["kind"] == INTENT_QUOTE else -1
    if intent["kind"] == INTENT_QUOTE and intent["qty"] <= 0.0:  # withdraw this side's quote
        if replaced >= 0:
            n = _request_cancel(state, params, vparams, replaced, out, n, stats, now_ns)
        return n
    if replaced >= 0 and _amendable(state, replaced):
        return _amend(state, params, intent, replaced, out, n, stats, now_ns)
    n, slot = _place(state, params, vparams, intent, replaced, 0, 0, out, n, stats, now_ns)
    if slot >= 0 and intent["kind"] == INTENT_QUOTE:
        quote_slot[k, side_col] = slot
    return n


@njit(cache=True, _nrt=False)
def _own_reports(intent, rparams):
    """Reports an intent can write before any venue answer: new and a replaced quote's pending cancel; a routed or
    worked one a child per venue (or a refusal) and a parent's pending cancel."""
    if intent["route"] == 0 and intent["algo"] == ALGO_NONE and rparams[router.RP_ACTIVE] == 0.0:
        return 2
    return MAX_VENUES + 2


@njit(cache=True, _nrt=False)
def _on_taker(state, params, vparams, intent, out, n, stats, now_ns):
    """A taker intent that the routing block or its own fields route across venues or work as a parent order."""
    rparams = params[P_ROUTING:]
    rs = state[X_ROUTING]
    k = instrument_key(intent["venue"], intent["symbol"])
    route = intent["route"] != 0 or rparams[router.RP_ROUTE_TAKERS] != 0.0
    algo, horizon_ns, param, max_child = algos.chosen(intent, rparams)
    if algo == ALGO_NONE:
        if not route:
            n, _ = _place(state, params, vparams, intent, -1, 0, 0, out, n, stats, now_ns)
            return n
        rs[routing.RS_INTS][algos.RI_ROUTED] += 1
        return _route(state, params, vparams, intent, -1, ALGO_NONE, out, n, stats, now_ns)
    if (not (intent["qty"] > 0.0) or not (intent["price"] > 0.0)
            or not algos.valid(algo, horizon_ns, param, max_child)):
        return _reject(out, n, intent, REJ_BAD_QTY, state[X_POSITIONS][k], stats, now_ns, intent["intent_id"], algo)
    parents = rs[routing.RS_PARENTS]
    row = algos.free_row(parents)
    if row < 0:
        return _reject(out, n, intent, REJ_TOO_MANY_ORDERS, state[X_POSITIONS][k], stats, now_ns,
                       intent["intent_id"], algo)
    top = state[X_BOOKS][k]
    mid = 0.5 * (top["bid_px"][0] + top["ask_px"][0]) if state[X_HAS_BOOK][k] != 0 else 0.0
    algos.start(parents, rs[routing.RS_INTENTS], rs[routing.RS_INTS], row, intent, k, algo, horizon_ns, param,
                max_child, 1 if route and algo != ALGO_ICEBERG else 0, mid, now_ns)  # an iceberg rests on its venue
    return _work_parent(state, params, vparams, row, out, n, stats, now_ns, intent["origin_ts"], intent["origin_seq"])


@njit(cache=True, _nrt=False)
def _gather(state, symbol, side, home, levels, n_levels):
    """What a taker of ``side`` could take on each venue listing ``symbol`` (router.split's levels; -1: no book);
    returns the reference mid: venue ``home``'s, else the first venue's with one (0: none)."""
    books = state[X_BOOKS]
    has_book = state[X_HAS_BOOK]
    ladders = state[X_LADDERS]
    other = book.ASK if side == BUY else book.BID
    ref = 0.0
    for v in range(MAX_VENUES):
        k = instrument_key(v, symbol)
        n_levels[v] = -1
        if has_book[k] == 0:
            continue
        top = books[k]
        mid = 0.5 * (top["bid_px"][0] + top["ask_px"][0])
        if mid > 0.0 and (v == home or ref == 0.0):
            ref = mid
        depth = BOOK_LEVELS if has_book[k] == HAS_LADDER or top["kind"] == EV_BOOK else 1  # a BBO is one level
        m = 0
        for j in range(depth):
            if has_book[k] == HAS_LADDER:
                px, sz = book.level(ladders, k, other, j)
            elif side == BUY:
                px, sz = top["ask_px"][j], top["ask_sz"][j]
            else:
                px, sz = top["bid_px"][j], top["bid_sz"][j]
            if not (px > 0.0) or not (sz > 0.0):
                break
            levels[v, m, 0] = px
            levels[v, m, 1] = sz
            m += 1
        n_levels[v] = m
    return ref


@njit(cache=True, _nrt=False)
def _child(state, params, vparams, child, parent, algo, out, n, stats, now_ns):
    """One child order through the gate, counted on its parent when it has a row (``parent`` > 0: 1 + the row)."""
    rs = state[X_ROUTING]
    ints = rs[routing.RS_INTS]
    qty = child["qty"]
    n, slot = _place(state, params, vparams, child, -1, parent, algo, out, n, stats, now_ns)
    ints[algos.RI_CHILDREN if slot >= 0 else algos.RI_CHILD_REFUSED] += 1
    if parent > 0:
        p = rs[routing.RS_PARENTS][parent - 1]
        if slot >= 0:
            algos.child_sent(p, slot, qty, now_ns)
        else:
            algos.child_refused(p, now_ns)
    return n


@njit(cache=True, _nrt=False)
def _route(state, params, vparams, intent, parent, algo, out, n, stats, now_ns):
    """A taker order split by the router across the venues listing its symbol: a child per venue given a share,
    best-ranked first, each through the gate. ``parent``: 1 + the parent's row, or -1 (an intent's own split)."""
    rs = state[X_ROUTING]
    levels, n_levels, alloc, order = rs[routing.RS_LEVELS], rs[routing.RS_N_LEVELS], rs[routing.RS_ALLOC], rs[routing.RS_ORDER]
    side, qty, price, home = intent["side"], intent["qty"], intent["price"], np.int64(intent["venue"])
    ref = _gather(state, intent["symbol"], side, home, levels, n_levels)
    children = rs[routing.RS_CHILD]
    children[0] = intent  # ``intent`` may be this very record (a parent's child): read above, written below
    child = children[0]
    if not (ref > 0.0) or not (qty > 0.0) or not (price > 0.0):  # nothing to route on: the gate says why
        return _child(state, params, vparams, child, parent, algo, out, n, stats, now_ns)
    count = router.split(levels, n_levels, vparams, rs[routing.RS_VENUES], params[P_ROUTING:], side, qty, price,
                         ref, home, now_ns, rs[routing.RS_SCORES], order, rs[routing.RS_CHUNKS], alloc)
    if count > 1:
        rs[routing.RS_INTS][algos.RI_SPLIT] += 1
    for i in range(MAX_VENUES):
        v = order[i]
        if alloc[v, router.AL_QTY] > 0.0:
            child["venue"] = v
            child["qty"] = alloc[v, router.AL_QTY]
            child["price"] = alloc[v, router.AL_PRICE]
            n = _child(state, params, vparams, child, parent, algo, out, n, stats, now_ns)
    return n


@njit(cache=True, _nrt=False)
def _work_parent(state, params, vparams, row, out, n, stats, now_ns, origin_ts, origin_seq):
    """Parent ``row`` at ``now_ns``: stop it when it is over, send its due child (caused by the record with
    ``origin_*``), free it once its children have ended."""
    rs = state[X_ROUTING]
    orders = state[X_ORDERS]
    p = rs[routing.RS_PARENTS][row]
    if algos.settle(p, now_ns) and p["algo"] == ALGO_ICEBERG and p["child_slot"] >= 0:
        slot = p["child_slot"]  # the shown part rests: take it down
        if _is_open(orders[slot]) and orders[slot]["parent"] == row + 1:
            n = _request_cancel(state, params, vparams, slot, out, n, stats, now_ns)
    q = algos.due(p, params[P_ROUTING:], now_ns, params[P_DUP_WINDOW_NS])
    if q > 0.0:
        children = rs[routing.RS_CHILD]
        children[0] = rs[routing.RS_INTENTS][row]
        child = children[0]
        child["origin_ts"], child["origin_seq"], child["qty"] = origin_ts, origin_seq, q
        if p["algo"] == ALGO_ICEBERG:
            child["kind"] = INTENT_QUOTE
            n = _child(state, params, vparams, child, row + 1, p["algo"], out, n, stats, now_ns)
        elif p["route"] != 0:
            n = _route(state, params, vparams, child, row + 1, p["algo"], out, n, stats, now_ns)
        else:
            n = _child(state, params, vparams, child, row + 1, p["algo"], out, n, stats, now_ns)
        algos.settle(p, now_ns)  # a TWAP's last slice
    algos.release(p, rs[routing.RS_INTS])
    return n


@njit(cache=True, _nrt=False)
def _work_parents(state, params, vparams, out, n, stats, now_ns, origin_ts, origin_seq, room):
    """Every parent at ``now_ns`` while ``out`` has room below ``room`` for a child's reports (else the next call)."""
    parents = state[X_ROUTING][routing.RS_PARENTS]
    for row in range(parents.shape[0]):
        if parents[row]["state"] == algos.FREE:
            continue
        if n + MAX_VENUES + 1 > room:
            break
        n = _work_parent(state, params, vparams, row, out, n, stats, now_ns, origin_ts, origin_seq)
    return n


@njit(cache=True, _nrt=False)
def _is_dust(top, position, params):
    return abs(position) * 0.5 * (top["bid_px"][0] + top["ask_px"][0]) < params[P_FLATTEN_MIN_USD]


@njit(cache=True, _nrt=False)
def flatten(state, params, vparams, out, n, stats, now_ns):
    """Reduce-only IOC orders that close every position against the book, within a price collar; a
    remainder (thin book) is retried every P_FLATTEN_RETRY_NS once the last one has ended. Runs only while
    trading is disabled. Dust (worth less than P_FLATTEN_MIN_USD: a venue refuses an order that small) is left,
    and so is an instrument whose flatten orders the venue refused FLATTEN_REJECTS_MAX times in a row."""
    books = state[X_BOOKS]
    has_book = state[X_HAS_BOOK]
    orders = state[X_ORDERS]
    positions = state[X_POSITIONS]
    flatten_ns = state[X_FLATTEN_NS]
    for k in range(positions.shape[0]):
        position = positions[k]
        if position == 0.0 or has_book[k] == 0 or now_ns - flatten_ns[k] < params[P_FLATTEN_RETRY_NS]:
            continue
        if _is_dust(books[k], position, params) or state[X_FLATTEN_REJECTS][k] >= FLATTEN_REJECTS_MAX:
            continue
        in_flight = False
        for s in range(orders.shape[0]):
            o = orders[s]
            if _is_open(o) and o["strategy"] == STRAT_FLATTEN and instrument_key(o["venue"], o["symbol"]) == k:
                in_flight = True
        if in_flight:
            continue
        slot = _free_slot(orders)
        if slot < 0:
            break
        if link.is_live(state[X_LINKS], key_venue(k)) and not link.has_room(state[X_LINKS], key_venue(k), 1):
            stats[ST_LINK_FULL] += 1  # tried again at the next step
            continue
        flatten_ns[k] = now_ns
        top = books[k]
        collar = params[P_FLATTEN_COLLAR_BPS] * 1e-4
        price = top["bid_px"][0] * (1.0 - collar) if position > 0.0 else top["ask_px"][0] * (1.0 + collar)
        stats[ST_FLATTEN_ORDERS] += 1
        # reduce-only: never more than the position
        n = _send(state, params, vparams, slot, 0, 0, 0, k, SELL if position > 0.0 else BUY, INTENT_IOC, STRAT_FLATTEN,
                  price, abs(position), out, n, position, stats, now_ns)
    return n


@njit(cache=True, _nrt=False)
def _on_disabled(state, params, vparams, out, n, stats, now_ns):
    orders = state[X_ORDERS]
    algos.end_all(state[X_ROUTING][routing.RS_PARENTS], state[X_ROUTING][routing.RS_INTS])
    pending = False
    for slot in range(orders.shape[0]):
        if _is_open(orders[slot]) and orders[slot]["cancel_ts"] == 0 and orders[slot]["strategy"] != STRAT_FLATTEN:
            pending = True
    if pending:
        n = cancel_all(state, params, vparams, out, n, stats, now_ns)
        stats[ST_LAST_CANCEL_ALL_NS] = now_ns
    if params[P_FLATTEN] != 0.0:
        n = flatten(state, params, vparams, out, n, stats, now_ns)
    return n


@njit(cache=True, _nrt=False)
def _publish_stats(state, params, stats):
    ints = state[X_INTS]
    books = state[X_BOOKS]
    has_book = state[X_HAS_BOOK]
    positions = state[X_POSITIONS]
    cash = state[X_CASH]
    fees = state[X_FEES]
    vs = state[X_VENUE]
    flatten_rejects = state[X_FLATTEN_REJECTS]
    gross = 0.0
    pnl = 0.0
    to_flatten, dust, given_up = 0, 0, 0
    for k in range(positions.shape[0]):
        if has_book[k] != 0:
            mid = 0.5 * (books[k]["bid_px"][0] + books[k]["ask_px"][0])
            gross += abs(positions[k]) * mid
            pnl += cash[k] + positions[k] * mid
        if positions[k] == 0.0:
            continue
        if has_book[k] != 0 and _is_dust(books[k], positions[k], params):
            dust += 1
        elif flatten_rejects[k] >= FLATTEN_REJECTS_MAX:
            given_up += 1
        else:
            to_flatten += 1  # without a book too: flatten waits for one
    stats[ST_TO_FLATTEN] = to_flatten
    stats[ST_DUST_POSITIONS] = dust
    stats[ST_FLATTEN_GIVEN_UP] = given_up
    stats[ST_OPEN] = ints[I_OPEN]
    stats[ST_GROSS_USD] = int(gross)
    stats[ST_PNL_CENTS] = int(round(pnl * 100.0))
    stats[ST_FEES_CENTS] = int(round(fees.sum() * 100.0))
    vints = vs[0]
    stats[ST_IN_FLIGHT_DROPPED] = vints[VI_DROPPED]
    routing_ints = state[X_ROUTING][routing.RS_INTS]
    for i in range(N_ROUTING_COUNTERS):
        stats[ST_ROUTING_BASE + i] = routing_ints[i]


@njit(cache=True, _nrt=False)
def step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    """in_a: order intents; in_b: validated market events, merged in feed-sequence order (an intent after the
    event it answers). Without the backtest's lookahead, each market event is also handed to the venue here."""
    vs = state[X_VENUE]
    vparams = params[P_VENUE:]
    rparams = params[P_ROUTING:]
    parents = state[X_ROUTING][routing.RS_PARENTS]
    parent_ints = state[X_ROUTING][routing.RS_INTS]
    event_clock = params[P_EVENT_CLOCK] != 0.0
    lookahead = vparams[exchange.V_LOOKAHEAD] != 0.0
    reserve = MAX_ORDERS + 8  # room for the intents' own reports (new, pending cancel, children), a cancel-all's
    for i in range(n_a):
        reserve += _own_reports(in_a[i], rparams)
    origin_ts, origin_seq = 0, 0  # the last record taken: the cause of a parent's child at the step's end
    n = 0
    i = 0
    j = 0
    ints = state[X_INTS]
    t = ints[I_CLOCK_NS] if event_clock else now_ns  # the event clock stands still between records
    if not lookahead:
        # Commands whose hold ran out by now meet the book as it is, before this step's market: a step with no
        # input and no output must change nothing (a live journal does not record it), so they wait for here.
        n = _deliver(state, params, vparams, out, n, stats, t, reserve)
    while i < n_a or j < n_b:
        if j < n_b and (i >= n_a or in_b[j]["origin_seq"] <= in_a[i]["origin_seq"]):
            ev = in_b[j]
            if event_clock:
                t = max(t, ev["origin_ts"])
            if not lookahead:
                if not exchange.push_market(vs, vparams, ev):
                    n = _deliver(state, params, vparams, out, n, stats, t, reserve)
                    exchange.push_market(vs, vparams, ev)
            n = _deliver(state, params, vparams, out, n, stats, t, reserve)
            _on_market(state, ev)
            origin_ts, origin_seq = ev["origin_ts"], ev["origin_seq"]
            if parent_ints[algos.RI_ACTIVE] > 0:  # parent orders work on the event clock
                if ev["kind"] == EV_TRADE:
                    algos.on_trade(parents, parent_ints, ev)
                if load_acquire(ctl, G_TRADING_ENABLED) == 0:
                    algos.end_all(parents, parent_ints)
                n = _work_parents(state, params, vparams, out, n, stats, t, origin_ts, origin_seq,
                                  out.shape[0] - reserve)
            j += 1
            continue
        intent = in_a[i]
        if event_clock:
            t = max(t, intent["origin_ts"])
        n = _deliver(state, params, vparams, out, n, stats, t, reserve)
        stats[ST_INTENTS] += 1
        # The gate: checked before every order, not once per batch.
        if load_acquire(ctl, G_TRADING_ENABLED) == 0:
            n = _on_disabled(state, params, vparams, out, n, stats, t)
            k = instrument_key(intent["venue"], intent["symbol"])
            n = _reject(out, n, intent, REJ_TRADING_DISABLED, state[X_POSITIONS][k], stats, t)
            stats[ST_DISABLED_REJECTS] += 1
        else:
            n = _on_intent(state, params, vparams, intent, out, n, stats, t)
        origin_ts, origin_seq = intent["origin_ts"], intent["origin_seq"]
        reserve -= _own_reports(intent, rparams)
        i += 1
    stats[ST_MARKET] += n_b
    if event_clock:
        ints[I_CLOCK_NS] = max(ints[I_CLOCK_NS], t)
        t = ints[I_CLOCK_NS]
    if load_acquire(ctl, G_TRADING_ENABLED) == 0:
        n = _on_disabled(state, params, vparams, out, n, stats, t)
    if lookahead or n_a + n_b > 0:
        n = _deliver(state, params, vparams, out, n, stats, t, MAX_ORDERS)
    if parent_ints[algos.RI_ACTIVE] > 0:  # after the answers: an iceberg shows its next part, live TWAP slices
        n = _work_parents(state, params, vparams, out, n, stats, t, origin_ts, origin_seq, out.shape[0] - MAX_ORDERS)
    if n > 0 or n_a + n_b > 0:
        _publish_stats(state, params, stats)
    return n


@njit(cache=True)
def finish(state, params, stats, out, now_ns):
    """The market has ended (a backtest): every command in flight reaches the venue and every answer comes back.
    Returns the reports written to ``out``."""
    vs = state[X_VENUE]
    vparams = params[P_VENUE:]
    exchange.advance(vs, vparams, now_ns, True)
    n = 0
    while n < out.shape[0]:
        i = exchange.next_response(vs, np.int64(1) << np.int64(62))
        if i < 0:
            break
        a = vs[5][i]
        n = _on_answer(state, params, vparams, a, out, n, stats, a["arrive_ts"])
    return n
