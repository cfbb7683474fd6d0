"""The simulated venue: its own copy of each book, the orders resting on it, and the commands and answers in
flight between it and us. One model serves the backtest and the paper venue of a live run.

Clocks. A market event carries its venue time (``exch_ts``) and its local receive time (``origin_ts``). Per venue
``offset`` maps venue time onto the local clock: fixed (0 for the synthetic venue, whose clock is ours), or, when
the receive clock is behind the venue's (an event "received before it happened": the captures' host ran 1.27 s
behind), the smallest ``origin_ts - exch_ts`` seen, so the fastest event took no time: skew cannot be told from
delay. hftbacktest's converter shifts its local times the same way.

An order sent at local time ``s`` reaches the matching engine at venue time ``s - offset + entry`` and is matched
against the book as it stood then: every market event of its venue up to that time is applied first, and at equal
times the market data goes first. Answers (ack, fills, cancels, funding) come back ``response`` after the venue
acted, on the local clock. Latencies are constant or interpolated from a measured table (stages.venue.latency).

Market events reach the venue through a FIFO (:func:`push_market`). In a backtest the driver pushes ahead of the
local pipeline (``lookahead``), so :func:`advance` can apply the venue's market up to any local time. In a live
paper run the venue sees each event only once it arrived locally; an order whose venue time is past the latest
event waits for the next event of its venue, or at most ``hold`` (a quiet market: the book it would meet is the
current one). Both modes match an order against the same book, so a recorded paper session backtests to its fills.

Matching. A new order takes what it crosses, level by level at the book's prices (taker), consuming the venue's
copy of those levels until the market next updates them, so our orders never take the same displayed size twice;
the rest of an IOC is cancelled, the rest of a quote rests and joins the back of its level (stages.venue.queue).
Commands to a venue and answers back each travel one ordered connection: nothing overtakes what was sent before.
A resting order fills as maker at its own price when a trade goes through its price or the other side's best
reaches it (the whole remainder), or when trades at its price have eaten the queue ahead of it (the excess, or
the whole remainder in no-partial mode). Fees per venue in bps (negative = rebate). Funding: at each funding time
a perpetual position pays ``position * mark * rate`` (mark price where the stream has one, else the mid).

Single-threaded: the execute stage owns the state and calls every function from one thread.
"""
import numpy as np
from numba import njit

from stages import book
from stages.records import (ANS_ACK, ANS_CANCEL_REJECTED, ANS_CANCELLED, ANS_FILL, ANS_FUNDING, ANS_REJECTED,
                            EV_BBO, EV_BOOK, EV_BOOK_DELTA, EV_FUNDING, EV_MARK, EV_TRADE, INTENT_IOC,
                            MARKET_EVENT, BUY)
from stages.universe import MAX_KEYS, MAX_SYMBOLS, MAX_VENUES, instrument_key, key_venue
from stages.venue import latency, queue

(V_ENTRY_NS, V_RESPONSE_NS, V_QUEUE_MODEL, V_QUEUE_POWER, V_PARTIAL, V_FUNDING, V_HOLD_NS, V_LOOKAHEAD,
 V_OFFSET_AUTO) = range(9)
V_FEES = 10                       # + 2 * venue + (0 maker, 1 taker): bps
V_LOTS = V_FEES + 2 * MAX_VENUES  # + key: the quantity step fills are rounded to (0 = none)
N_PARAMS = V_LOTS + MAX_KEYS

MAX_VENUE_ORDERS = 512
CMD_CAPACITY = 1024        # per venue, in flight towards it
RESPONSE_CAPACITY = 16384  # in flight back to us

CMD_NEW, CMD_CANCEL = 1, 2
# the answer codes a live venue's gateway uses too (declared once, in stages.records)
R_ACK, R_FILL, R_CANCELLED, R_REJECTED, R_CANCEL_REJECTED, R_FUNDING = (ANS_ACK, ANS_FILL, ANS_CANCELLED, ANS_REJECTED,
                                                                   ANS_CANCEL_REJECTED, ANS_FUNDING)

VENUE_ORDER = np.dtype([
    ("order_id", np.int64), ("slot", np.int64), ("send_ts", np.int64), ("key", np.int64),
    ("side", np.int64), ("kind", np.int64), ("active", np.int64),
    ("price", np.float64), ("qty", np.float64), ("leaves", np.float64),
    ("front", np.float64),      # quantity ahead in the level's queue
    ("cum_trade", np.float64),  # traded at the price since the level last changed (probabilistic models)
    ("level_qty", np.float64),  # the level's size when the order last looked
], align=True)

COMMAND = np.dtype([
    ("arrive_ts", np.int64),    # venue time
    ("send_ts", np.int64), ("response_ns", np.int64), ("order_id", np.int64), ("slot", np.int64),
    ("key", np.int64), ("side", np.int64), ("kind", np.int64), ("order_kind", np.int64),
    ("price", np.float64), ("qty", np.float64),
], align=True)

RESPONSE = np.dtype([
    ("arrive_ts", np.int64),    # local time the answer is back
    ("exch_ts", np.int64), ("send_ts", np.int64), ("order_id", np.int64), ("slot", np.int64),
    ("key", np.int64), ("side", np.int64), ("kind", np.int64), ("liquidity", np.int64),
    ("price", np.float64), ("qty", np.float64), ("leaves", np.float64), ("fee", np.float64),
    ("trade_id", np.int64),     # always 0 here: the model never repeats a fill (a live gateway's answers can)
], align=True)

# ints
# VI_DROPPED: commands or answers there was no room for (execute shows it; a test asserts 0)
VI_RESP_HEAD, VI_RESP_N, VI_MKT_HEAD, VI_MKT_N, VI_ACTIVE_N, VI_DROPPED = range(6)
N_INTS = 16
# per key floats
KF_RATE, KF_NEXT_FUNDING, KF_SETTLED, KF_MARK, KF_POSITION, KF_HAS_LADDER = range(6)
N_KEYF = 8
# per venue ints
VC_CLOCK, VC_OFFSET, VC_OFFSET_KNOWN, VC_CMD_HEAD, VC_CMD_N, VC_LAST_ARRIVAL, VC_LAST_RESPONSE = range(7)
N_VENUE_INTS = 8


def make_params(*, entry_latency_ms: float, response_latency_ms: float, queue_model: str, queue_power: float,
                partial_fills: bool, funding: bool, hold_ms: float, lookahead: bool, offset_auto: bool,
                maker_fee_bps: dict, taker_fee_bps: dict, lot_by_key: dict | None = None) -> np.ndarray:
    """``*_fee_bps``: {venue index: bps}; ``lot_by_key``: {instrument key: lot}."""
    p = np.zeros(N_PARAMS)
    p[V_ENTRY_NS], p[V_RESPONSE_NS] = round(entry_latency_ms * 1e6), round(response_latency_ms * 1e6)
    p[V_QUEUE_MODEL], p[V_QUEUE_POWER] = queue.MODELS[queue_model], queue_power
    p[V_PARTIAL], p[V_FUNDING], p[V_HOLD_NS] = float(partial_fills), float(funding), round(hold_ms * 1e6)
    p[V_LOOKAHEAD], p[V_OFFSET_AUTO] = float(lookahead), float(offset_auto)
    for venue in range(MAX_VENUES):
        p[V_FEES + 2 * venue] = maker_fee_bps.get(venue, 0.0)
        p[V_FEES + 2 * venue + 1] = taker_fee_bps.get(venue, 0.0)
    for key, lot in (lot_by_key or {}).items():
        p[V_LOTS + key] = lot
    return p


def make_state(market_capacity: int = 1024, latency_table: np.ndarray | None = None,
               offsets_ns: dict | None = None):
    """``offsets_ns``: {venue: local minus venue clock, ns} known in advance (a backtest computes them from its
    data); other venues learn theirs from the stream when the params say so, else use 0."""
    venue_ints = np.zeros((MAX_VENUES, N_VENUE_INTS), np.int64)
    for venue, offset in (offsets_ns or {}).items():
        venue_ints[venue, VC_OFFSET], venue_ints[venue, VC_OFFSET_KNOWN] = offset, 1
    return (np.zeros(N_INTS, np.int64), book.make_books(), np.zeros(MAX_VENUE_ORDERS, VENUE_ORDER),
            np.zeros(MAX_VENUE_ORDERS, np.int64), np.zeros((MAX_VENUES, CMD_CAPACITY), COMMAND),
            np.zeros(RESPONSE_CAPACITY, RESPONSE), np.zeros(market_capacity, MARKET_EVENT),
            np.zeros((MAX_KEYS, N_KEYF)), venue_ints, np.zeros(1, MARKET_EVENT),
            latency_table if latency_table is not None else latency.empty_table())


@njit(cache=True, _nrt=False)
def _respond(vs, kind, order_id, slot, key, side, price, qty, leaves, fee, liquidity, exch_ts, send_ts, arrive_ts):
    """Queue an answer, in local arrival order. Each venue's way back is one ordered connection: its answer never
    overtakes an earlier one of the same venue (a shorter latency than the one before it waits behind it)."""
    ints, resps, vi = vs[0], vs[5], vs[8]
    cap = resps.shape[0]
    n = ints[VI_RESP_N]
    if n == cap:
        ints[VI_DROPPED] += 1
        return
    venue = key_venue(key)
    arrive_ts = max(arrive_ts, vi[venue, VC_LAST_RESPONSE])
    vi[venue, VC_LAST_RESPONSE] = arrive_ts
    head = ints[VI_RESP_HEAD]
    i = n
    while i > 0 and resps[(head + i - 1) % cap]["arrive_ts"] > arrive_ts:  # another venue's later answer
        resps[(head + i) % cap] = resps[(head + i - 1) % cap]
        i -= 1
    r = resps[(head + i) % cap]
    r["arrive_ts"], r["exch_ts"], r["send_ts"], r["order_id"], r["slot"] = arrive_ts, exch_ts, send_ts, order_id, slot
    r["key"], r["side"], r["kind"], r["liquidity"] = key, side, kind, liquidity
    r["price"], r["qty"], r["leaves"], r["fee"] = price, qty, leaves, fee
    ints[VI_RESP_N] = n + 1


@njit(cache=True, _nrt=False)
def _answer_at(vs, params, venue, exch_ts):
    """Local time an answer to something the venue did at ``exch_ts`` is back."""
    local = exch_ts + vs[8][venue, VC_OFFSET]
    return local + latency.response_latency(vs[10], np.int64(params[V_RESPONSE_NS]), local)


@njit(cache=True, _nrt=False)
def _command(vs, venue, kind, order_id, slot, key, side, order_kind, price, qty, send_ts, arrive_ts, response_ns):
    cmds, vi = vs[4], vs[8]
    cap = cmds.shape[1]
    n = vi[venue, VC_CMD_N]
    if n == cap:
        vs[0][VI_DROPPED] += 1
        return False
    # One ordered connection to each venue: a command never overtakes the one sent before it.
    arrive_ts = max(arrive_ts, vi[venue, VC_LAST_ARRIVAL])
    vi[venue, VC_LAST_ARRIVAL] = arrive_ts
    c = cmds[venue, (vi[venue, VC_CMD_HEAD] + n) % cap]
    c["arrive_ts"], c["send_ts"], c["response_ns"], c["order_id"], c["slot"] = arrive_ts, send_ts, response_ns, order_id, slot
    c["key"], c["side"], c["kind"], c["order_kind"], c["price"], c["qty"] = key, side, kind, order_kind, price, qty
    vi[venue, VC_CMD_N] = n + 1
    return True


@njit(cache=True, _nrt=False)
def _send(vs, params, kind, slot, order_id, key, side, order_kind, price, qty, send_ts):
    venue = key_venue(key)
    entry, back, rejected = latency.order_latency(vs[10], np.int64(params[V_ENTRY_NS]),
                                                  np.int64(params[V_RESPONSE_NS]), send_ts)
    if rejected:
        _respond(vs, R_REJECTED if kind == CMD_NEW else R_CANCEL_REJECTED, order_id, slot, key, side, price, qty,
                 0.0, 0.0, 0, 0, send_ts, send_ts + back)
        return
    arrive = send_ts - vs[8][venue, VC_OFFSET] + entry
    _command(vs, venue, kind, order_id, slot, key, side, order_kind, price, qty, send_ts, arrive, back)


@njit(cache=True, _nrt=False)
def submit(vs, params, slot, order_id, key, side, order_kind, price, qty, send_ts):
    """Send a new order (INTENT_IOC or INTENT_QUOTE) at local time ``send_ts``; ``slot`` comes back in every
    answer about it."""
    _send(vs, params, CMD_NEW, slot, order_id, key, side, order_kind, price, qty, send_ts)


@njit(cache=True, _nrt=False)
def cancel(vs, params, slot, order_id, key, side, send_ts):
    """Ask the venue to cancel an order; the answer is R_CANCELLED, or R_CANCEL_REJECTED when it had already
    filled (or never rested)."""
    _send(vs, params, CMD_CANCEL, slot, order_id, key, side, 0, 0.0, 0.0, send_ts)


@njit(cache=True, _nrt=False)
def market_room(vs):
    return vs[6].shape[0] - vs[0][VI_MKT_N]


@njit(cache=True, _nrt=False)
def push_market(vs, params, ev):
    """Hand the venue one market event (in stream order); False when its FIFO is full."""
    ints, mkt, vi = vs[0], vs[6], vs[8]
    cap = mkt.shape[0]
    if ints[VI_MKT_N] == cap:
        return False
    mkt[(ints[VI_MKT_HEAD] + ints[VI_MKT_N]) % cap] = ev
    ints[VI_MKT_N] += 1
    v = ev["venue"]
    if v < MAX_VENUES and params[V_OFFSET_AUTO] != 0.0 and ev["exch_ts"] > 0:
        d = min(ev["origin_ts"] - ev["exch_ts"], 0)  # a clock that is not behind the venue's is trusted
        if vi[v, VC_OFFSET_KNOWN] == 0 or d < vi[v, VC_OFFSET]:
            vi[v, VC_OFFSET], vi[v, VC_OFFSET_KNOWN] = d, 1
    return True


@njit(cache=True, _nrt=False)
def push_batch(vs, params, events, n):
    """Hand the venue ``events[:n]``; returns how many fitted in its FIFO."""
    for i in range(n):
        if not push_market(vs, params, events[i]):
            return i
    return n


@njit(cache=True, _nrt=False)
def _deactivate(vs, i):
    ints, orders, active = vs[0], vs[2], vs[3]
    orders[i]["active"] = 0
    n = ints[VI_ACTIVE_N]
    for j in range(n):
        if active[j] == i:
            active[j] = active[n - 1]
            ints[VI_ACTIVE_N] = n - 1
            return


@njit(cache=True, _nrt=False)
def _fill(vs, params, i, price, qty, liquidity, exch_ts):
    o = vs[2][i]
    venue = key_venue(o["key"])
    fee = qty * price * params[V_FEES + 2 * venue + (0 if liquidity > 0 else 1)] * 1e-4
    vs[7][o["key"], KF_POSITION] += o["side"] * qty
    o["leaves"] -= qty
    if o["leaves"] <= 1e-9 * o["qty"]:
        o["leaves"] = 0.0
    _respond(vs, R_FILL, o["order_id"], o["slot"], o["key"], o["side"], price, qty, o["leaves"], fee, liquidity,
             exch_ts, o["send_ts"], _answer_at(vs, params, venue, exch_ts))
    if o["leaves"] == 0.0:
        _deactivate(vs, i)


@njit(cache=True, _nrt=False)
def _free_order(orders):
    for i in range(orders.shape[0]):
        if orders[i]["active"] == 0:
            return i
    return -1


@njit(cache=True, _nrt=False)
def _arrive(vs, params, c):
    """A command reaches the matching engine at venue time c.arrive_ts."""
    orders, active, books = vs[2], vs[3], vs[1]
    key, venue, t = c["key"], key_venue(c["key"]), c["arrive_ts"]
    back = t + vs[8][venue, VC_OFFSET] + c["response_ns"]
    if c["kind"] == CMD_CANCEL:
        for j in range(vs[0][VI_ACTIVE_N]):
            i = active[j]
            if orders[i]["order_id"] == c["order_id"]:
                o = orders[i]
                _respond(vs, R_CANCELLED, o["order_id"], o["slot"], key, o["side"], o["price"], o["leaves"], 0.0,
                         0.0, 0, t, c["send_ts"], back)
                _deactivate(vs, i)
                return
        _respond(vs, R_CANCEL_REJECTED, c["order_id"], c["slot"], key, c["side"], c["price"], 0.0, 0.0, 0.0, 0, t,
                 c["send_ts"], back)
        return
    i = _free_order(orders)
    if i < 0:
        _respond(vs, R_REJECTED, c["order_id"], c["slot"], key, c["side"], c["price"], c["qty"], 0.0, 0.0, 0, t,
                 c["send_ts"], back)
        return
    o = orders[i]
    o["order_id"], o["slot"], o["send_ts"], o["key"], o["side"], o["kind"] = (c["order_id"], c["slot"], c["send_ts"],
                                                                           key, c["side"], c["order_kind"])
    o["price"], o["qty"], o["leaves"], o["front"], o["cum_trade"] = c["price"], c["qty"], c["qty"], 0.0, 0.0
    o["active"] = 1
    active[vs[0][VI_ACTIVE_N]] = i
    vs[0][VI_ACTIVE_N] += 1
    _respond(vs, R_ACK, o["order_id"], o["slot"], key, o["side"], o["price"], o["qty"], o["qty"], 0.0, 0, t,
             c["send_ts"], back)
    own = book.BID if o["side"] == BUY else book.ASK
    other = 1 - own
    while o["active"] != 0 and o["leaves"] > 0.0:
        px, sz = book.level(books, key, other, 0)
        if not (sz > 0.0) or (o["side"] == BUY and px > o["price"]) or (o["side"] != BUY and px < o["price"]):
            break
        q = min(o["leaves"], sz)
        book.consume(books, key, other, px, q)
        _fill(vs, params, i, px, q, -1, t)
    if o["active"] == 0:
        return
    if o["kind"] == INTENT_IOC:
        _respond(vs, R_CANCELLED, o["order_id"], o["slot"], key, o["side"], o["price"], o["leaves"], 0.0, 0.0, 0, t,
                 c["send_ts"], back)
        _deactivate(vs, i)
        return
    o["level_qty"] = book.size_at(books, key, own, o["price"])
    o["front"] = queue.joined(np.int64(params[V_QUEUE_MODEL]), o["level_qty"])


@njit(cache=True, _nrt=False)
def _arrive_until(vs, params, venue, until, inclusive):
    """Every command of ``venue`` that reaches it before venue time ``until`` (or at it, when inclusive)."""
    cmds, vi = vs[4], vs[8]
    cap = cmds.shape[1]
    while vi[venue, VC_CMD_N] > 0:
        head = vi[venue, VC_CMD_HEAD]
        t = cmds[venue, head]["arrive_ts"]
        if t > until or (t == until and not inclusive):
            return
        vi[venue, VC_CMD_HEAD] = (head + 1) % cap
        vi[venue, VC_CMD_N] -= 1
        _arrive(vs, params, cmds[venue, head])


@njit(cache=True, _nrt=False)
def _settle_funding(vs, params, key, t):
    kf = vs[7]
    kf[key, KF_SETTLED] = kf[key, KF_NEXT_FUNDING]
    kf[key, KF_NEXT_FUNDING] = 0.0
    position = kf[key, KF_POSITION]
    if position == 0.0 or params[V_FUNDING] == 0.0:
        return
    price = kf[key, KF_MARK]
    if not price > 0.0:
        bid, _, ask, _ = book.best(vs[1], key)
        price = 0.5 * (bid + ask)
    if not price > 0.0:
        return
    venue = key_venue(key)
    amount = position * price * kf[key, KF_RATE]
    _respond(vs, R_FUNDING, 0, -1, key, 0, kf[key, KF_RATE], position, 0.0, amount, 0, t, 0,
             _answer_at(vs, params, venue, t))


@njit(cache=True, _nrt=False)
def _check_resting(vs, params, key, t):
    """After the book of ``key`` changed: queue positions follow their levels; orders the other side reached fill."""
    orders, active, books = vs[2], vs[3], vs[1]
    model = np.int64(params[V_QUEUE_MODEL])
    bid, _, ask, _ = book.best(books, key)
    j = 0
    while j < vs[0][VI_ACTIVE_N]:
        i = active[j]
        o = orders[i]
        if o["key"] == key:
            own = book.BID if o["side"] == BUY else book.ASK
            now_qty = book.size_at(books, key, own, o["price"])
            if now_qty != o["level_qty"]:
                queue.on_depth(o, model, params[V_QUEUE_POWER], o["level_qty"], now_qty)
                o["level_qty"] = now_qty
            if (o["side"] == BUY and ask <= o["price"]) or (o["side"] != BUY and bid >= o["price"]):
                _fill(vs, params, i, o["price"], o["leaves"], 1, t)
                continue  # the order left the active list; what moved into slot j is next
        j += 1


@njit(cache=True, _nrt=False)
def _trade(vs, params, ev):
    """A trade: resting orders on the side it hit fill when it went through their price, or as far as it ate
    the queue ahead of them at their price."""
    orders, active = vs[2], vs[3]
    key = instrument_key(ev["venue"], ev["symbol"])
    aggressor = ev["side"]
    if aggressor == 0:
        return
    lot = params[V_LOTS + key]
    j = 0
    while j < vs[0][VI_ACTIVE_N]:
        i = active[j]
        o = orders[i]
        if o["key"] == key and o["side"] == -aggressor:
            through = ev["price"] < o["price"] if o["side"] == BUY else ev["price"] > o["price"]
            q = 0.0
            if through:
                q = o["leaves"]
            elif ev["price"] == o["price"]:
                queue.on_trade(o, ev["size"])
                q = queue.executable(o, lot)
                if q > 0.0 and (params[V_PARTIAL] == 0.0 or q > o["leaves"]):
                    q = o["leaves"]
            if q > 0.0:
                before = vs[0][VI_ACTIVE_N]
                _fill(vs, params, i, o["price"], q, 1, ev["exch_ts"])
                if vs[0][VI_ACTIVE_N] < before:
                    continue
        j += 1


@njit(cache=True, _nrt=False)
def _apply(vs, params, ev):
    """One market event at the venue, at its venue time."""
    kf, vi = vs[7], vs[8]
    venue = np.int64(ev["venue"])
    if venue >= MAX_VENUES or ev["symbol"] >= MAX_SYMBOLS:
        return
    key = instrument_key(venue, ev["symbol"])
    t = ev["exch_ts"]
    if t > vi[venue, VC_CLOCK]:
        vi[venue, VC_CLOCK] = t
    if kf[key, KF_NEXT_FUNDING] > 0.0 and t >= kf[key, KF_NEXT_FUNDING]:
        _settle_funding(vs, params, key, np.int64(kf[key, KF_NEXT_FUNDING]))
    kind = ev["kind"]
    if kind == EV_BOOK or kind == EV_BOOK_DELTA:
        book.apply(vs[1], ev)
        kf[key, KF_HAS_LADDER] = 1.0
        _check_resting(vs, params, key, t)
    elif kind == EV_BBO:
        if kf[key, KF_HAS_LADDER] == 0.0:  # a feed of BBOs only: the BBO is the whole book the venue shows
            view = vs[9][0]
            view["kind"], view["venue"], view["symbol"], view["exch_ts"] = EV_BOOK, ev["venue"], ev["symbol"], t
            view["first_seq"], view["venue_seq"], view["flags"] = 0, 0, 0
            for j in range(view["bid_px"].shape[0]):
                view["bid_px"][j], view["ask_px"][j], view["bid_sz"][j], view["ask_sz"][j] = np.nan, np.nan, 0.0, 0.0
            view["bid_px"][0], view["bid_sz"][0] = ev["bid_px"][0], ev["bid_sz"][0]
            view["ask_px"][0], view["ask_sz"][0] = ev["ask_px"][0], ev["ask_sz"][0]
            book.apply(vs[1], view)
            _check_resting(vs, params, key, t)
    elif kind == EV_TRADE:
        _trade(vs, params, ev)
    elif kind == EV_FUNDING:
        kf[key, KF_RATE] = ev["price"]
        if ev["aux"] > kf[key, KF_SETTLED]:
            kf[key, KF_NEXT_FUNDING] = ev["aux"]
    elif kind == EV_MARK:
        if ev["price"] > 0.0:
            kf[key, KF_MARK] = ev["price"]


@njit(cache=True, _nrt=False)
def advance(vs, params, local_ts, final):
    """Run the venue up to local time ``local_ts``: apply the market it has been handed (all of it live; up to
    ``local_ts`` on the venue's clock with lookahead), each event after the commands that reach the venue before
    it, then the commands due by then. ``final``: the market has ended, every command in flight arrives."""
    ints, mkt, vi = vs[0], vs[6], vs[8]
    cap = mkt.shape[0]
    lookahead = params[V_LOOKAHEAD] != 0.0
    while ints[VI_MKT_N] > 0:
        ev = mkt[ints[VI_MKT_HEAD]]
        venue = np.int64(ev["venue"])
        if venue < MAX_VENUES:
            if lookahead and ev["exch_ts"] + vi[venue, VC_OFFSET] > local_ts:
                break
            _arrive_until(vs, params, venue, ev["exch_ts"], False)
        _apply(vs, params, ev)
        ints[VI_MKT_HEAD] = (ints[VI_MKT_HEAD] + 1) % cap
        ints[VI_MKT_N] -= 1
    big = np.int64(1) << np.int64(62)
    for venue in range(MAX_VENUES):
        if vi[venue, VC_CMD_N] == 0:
            continue
        if final:
            until = big
        elif lookahead:
            until = local_ts - vi[venue, VC_OFFSET]
        else:  # live: the venue's clock, or a quiet market held long enough
            until = max(vi[venue, VC_CLOCK], local_ts - vi[venue, VC_OFFSET] - np.int64(params[V_HOLD_NS]))
        _arrive_until(vs, params, venue, until, True)


@njit(cache=True, _nrt=False)
def next_response(vs, local_ts):
    """Index into the response array of the next answer back by local time ``local_ts``, taken off the queue
    (read it before the venue is called again), or -1."""
    ints, resps = vs[0], vs[5]
    if ints[VI_RESP_N] == 0:
        return -1
    head = ints[VI_RESP_HEAD]
    if resps[head]["arrive_ts"] > local_ts:
        return -1
    ints[VI_RESP_HEAD] = (head + 1) % resps.shape[0]
    ints[VI_RESP_N] -= 1
    return head


def offsets_from(market: np.ndarray) -> dict:
    """{venue: min(0, min(origin_ts - exch_ts))} over a recording: the clock offsets a backtest fixes in advance. As
    hftbacktest's converter does, a receive clock that is behind the venue's (an event "received before it
    happened") is moved so the fastest event took no time; one that is not behind is trusted. Taken over the events
    the matching engine runs on (book and trade events; BBOs only where a venue has nothing else), so one stray
    BBO stamp does not shift the whole venue's clock."""
    found = {}
    has = market["exch_ts"] > 0
    matching = (market["kind"] == EV_BOOK) | (market["kind"] == EV_BOOK_DELTA) | (market["kind"] == EV_TRADE)
    for venue in np.unique(market["venue"][has]):
        mine = has & (market["venue"] == venue)
        rows = market[mine & matching] if np.any(mine & matching) else market[mine]
        found[int(venue)] = min(0, int((rows["origin_ts"] - rows["exch_ts"]).min()))
    return found
