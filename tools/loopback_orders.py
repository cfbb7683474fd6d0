"""The loopback Binance's order endpoints (spot, ``/api/v3``): an account that matches orders against the
server's replayed book, behind the venue's own signed REST API, for the live venue gateway's tests. The parts
every product shares (matching, signing, faults, the user-data stream's plumbing) live here too;
``tools.loopback_futures`` builds USDⓈ-M futures on them.

Requests are checked the way Binance checks them: the ``X-MBX-APIKEY`` header names the key, ``signature`` is
the hex HMAC-SHA256 of the rest of the query string and body under the secret, ``timestamp`` lies within
``recvWindow`` (default 5,000 ms) of the server's clock. Answers and errors use the venue's JSON and codes:
-2014/-2015 bad key, -1022 bad signature, -1021 timestamp outside the window, -2010 "Duplicate order sent."
(an open order has that client order id) or "Account has insufficient balance for requested action." (the free
balance cannot pay), -2011 cancel of an unknown or closed order, -2013 query of an unknown order, -1102/-1013 a
missing or malformed parameter, -1100 an ``orderId`` that is not a number (ccxt sends ``orderId=None`` when asked
to find an order by client id where its request always carries the order id), -2021/-2022 a cancel-replace that
failed in part or in whole.

Spot endpoints (``/api/v3``): ``POST order`` (``newOrderRespType`` ACK/RESULT/FULL), ``DELETE order`` (by
``orderId`` or ``origClientOrderId``; the answer's ``clientOrderId`` is the cancel's own id, as on the venue,
the order's is ``origClientOrderId``), ``GET order``, ``GET openOrders``, ``DELETE openOrders`` (every open
order of a symbol; -2011 when there is none, as on the venue), ``POST order/cancelReplace`` (what ccxt's
``edit_order`` sends: STOP_ON_FAILURE or ALLOW_FAILURE; the new order is a new order id at the back of the
queue), ``GET account`` (``free`` and ``locked``: a resting buy locks price*quantity of the quote, a resting
sell its quantity of the base; placement needs the free balance), ``GET myTrades``, and the listen key
``POST/PUT/DELETE userDataStream`` (the API key only).

User-data stream: an ``executionReport`` (the venue's fields) for every change of every order (NEW, TRADE,
CANCELED, EXPIRED), each followed by an ``outboundAccountPosition`` with the symbol's assets' free and locked,
on the WebSocket API (``/ws-api/v3``, ``userDataStream.subscribe.signature``, as ccxt subscribes for spot) or
on ``/ws/<listen key>``.

Matching: a LIMIT order takes what crosses it on the opposite side of the current book, level by level, at the
levels' prices (the book is not changed by it: the replay owns the book); the rest rests (GTC), or ends
EXPIRED (IOC), or the whole order is EXPIRED when it cannot fill at once in full (FOK). LIMIT_MAKER that would
cross is rejected (-2010). MARKET takes by quantity. A resting order fills when a replayed trade prints at or
through its price, up to the trade's size, oldest in the queue first. Fees: ``fee_rate`` of the quote
notional, charged in the quote asset.

Faults on demand (:meth:`SignedRoutes.inject`, or ``LoopbackServer.inject`` from any thread):

- ``"429"``: the next ``times`` signed requests get HTTP 429, code -1003, ``Retry-After: seconds``.
- ``"503"``: the next ``times`` signed requests get HTTP 503, nothing done.
- ``"slow"``: the next ``times`` signed requests are done at once and answered ``seconds`` later (a client that
  times out first does not know the outcome until it queries the order by its client order id).
- These three with ``placements_only=True``: the next ``times`` order placements (new orders, cancel-replace), the
  other requests passing meanwhile (a client that also cancels and queries meets the fault on a create); with
  ``amends_only=True`` the next ``times`` amendments (futures' ``PUT order``) alike.
- ``"reject_next"``: the next ``times`` order placements (new orders, and a cancel-replace's new order) are
  refused with ``code``/``msg`` (default -1013 "Filter failure: PRICE_FILTER"); nothing is placed.
- ``"ack_after_fill"``: for each of the next ``times`` orders that fill on placement, the user stream gets its
  TRADE event(s) (and account updates) before its NEW one, and the REST answer comes ``seconds`` after them.
- ``"drop_user_stream"``: every user-data websocket is dropped now (no close frame: events while the client is
  away are lost to it, as on the venue), and new user-data connections are refused (HTTP 503) for ``seconds``.

``requests`` counts every signed request by (method, path) as it arrives, the faulted ones too (a client that
must never send a call twice is checked on it).

Concurrency: everything runs on the server's event loop; ``counts`` and ``requests`` are written there (ints: safe
to read).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import orjson
from aiohttp import WSMsgType, web

PREFIX = "/api/v3"
FAULTS = ("429", "503", "slow", "reject_next", "ack_after_fill", "drop_user_stream")
EPS = 1e-12


class VenueError(Exception):
    def __init__(self, status: int, code: int, msg: str, data: dict | None = None):
        super().__init__(msg)
        self.status, self.code, self.msg, self.data = status, code, msg, data

    def body(self) -> dict:
        out = {"code": self.code, "msg": self.msg}
        if self.data is not None:
            out["data"] = self.data
        return out


@dataclass
class Fill:
    """One execution of one order, in the loopback's own terms (each product formats it its way)."""
    trade_id: int
    order_id: int
    client_id: str
    symbol: str
    side: str
    price: float
    qty: float
    fee: float
    fee_asset: str
    maker: bool
    time_ms: int
    realized_pnl: float = 0.0

    def as_dict(self) -> dict:
        return {"tradeId": self.trade_id, "orderId": self.order_id, "clientOrderId": self.client_id,
                "symbol": self.symbol, "side": self.side, "price": self.price, "qty": self.qty, "fee": self.fee,
                "feeAsset": self.fee_asset, "maker": self.maker, "time": self.time_ms,
                "realizedPnl": self.realized_pnl}


@dataclass
class Order:
    symbol: str
    order_id: int
    client_id: str
    side: str                # BUY | SELL
    kind: str                # LIMIT | MARKET | LIMIT_MAKER
    tif: str                 # GTC | IOC | FOK | GTX ("" for MARKET)
    price: float
    qty: float
    created_ms: int
    seq: int = 0             # queue priority: lower fills first; an amendment moves it to the back
    reduce_only: bool = False
    executed: float = 0.0
    quote_done: float = 0.0
    status: str = "NEW"
    updated_ms: int = 0
    cancel_id: str = ""      # the client id of the request that cancelled it (spot reports it as "c")
    fills: list = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def left(self) -> float:
        return self.qty - self.executed

    @property
    def avg_price(self) -> float:
        return self.quote_done / self.executed if self.executed > 0 else 0.0

    def as_dict(self) -> dict:
        return {"symbol": self.symbol, "orderId": self.order_id, "clientOrderId": self.client_id, "side": self.side,
                "type": self.kind, "timeInForce": self.tif, "price": self.price, "qty": self.qty,
                "executed": self.executed, "quote": self.quote_done, "status": self.status,
                "reduceOnly": self.reduce_only, "time": self.created_ms, "updateTime": self.updated_ms}


def _num(x: float) -> str:
    return f"{x:.8f}"


def _crossing(book, side: str, limit: float | None) -> list[tuple[float, float]]:
    """(price, qty) of the opposite side's levels a BUY/SELL at ``limit`` (None: any price) would take."""
    if side == "BUY":
        levels = book.asks
        prices = sorted(p for p in levels if limit is None or p <= limit)
    else:
        levels = book.bids
        prices = sorted((p for p in levels if limit is None or p >= limit), reverse=True)
    return [(p, float(levels[p][1])) for p in prices]


def _worst(levels, qty: float) -> float:
    """The worst price a MARKET order of ``qty`` reaches (for the balance check)."""
    left = qty
    for p, q in levels:
        left -= q
        if left <= 0:
            return p
    return levels[-1][0] if levels else 0.0


class Matching:
    """Orders, their matching against a book and replayed trades, and the trades they made: what every product
    shares. A product says what an order must have to be accepted (:meth:`check_funds`) and what a fill does to
    the account (:meth:`settle`)."""

    # the venue's (status, code, msg) for each refusal
    duplicate = (400, -2010, "Duplicate order sent.")
    would_take = (400, -2010, "Order would immediately match and take.")
    fok_unfillable: tuple | None = None  # None: a FOK that cannot fill in full ends EXPIRED (spot)

    def __init__(self, instruments: dict[str, dict], fee_rate: float):
        self.instruments = instruments          # symbol -> {"base", "quote"}
        self.fee_rate = fee_rate
        self.orders: dict[int, Order] = {}
        self.by_client: dict[tuple, int] = {}   # (symbol, client id) -> the latest order id with it
        self.trades: list[Fill] = []
        self.listeners: list = []               # f(order, exec_type, fill or None, now_ms) on every change
        self._ids = itertools.count(1)
        self._trade_ids = itertools.count(1)
        self._seq = itertools.count(1)

    # --- what a product defines -------------------------------------------------------------------------

    def check_funds(self, symbol: str, side: str, kind: str, price: float, qty: float, levels,
                    reduce_only: bool) -> None:
        """Raise the venue's error when the account cannot carry this order."""
        raise NotImplementedError

    def settle(self, order: Order, price: float, qty: float, fee: float) -> float:
        """Apply one fill to balances or positions; returns the realized PnL."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------------

    def _emit(self, order: Order, exec_type: str, fill: Fill | None, now_ms: int) -> None:
        for listener in self.listeners:
            listener(order, exec_type, fill, now_ms)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [o for o in self.orders.values() if o.open and (symbol is None or o.symbol == symbol)]

    def place(self, book, symbol: str, side: str, kind: str, tif: str, price: float, qty: float, client_id: str,
              now_ms: int, reduce_only: bool = False) -> Order:
        key = (symbol, client_id)
        if key in self.by_client and self.orders[self.by_client[key]].open:
            raise VenueError(*self.duplicate)
        levels = _crossing(book, side, price if kind != "MARKET" else None)
        if levels and (kind == "LIMIT_MAKER" or tif == "GTX"):
            raise VenueError(*self.would_take)
        self.check_funds(symbol, side, kind, price, qty, levels, reduce_only)
        takeable = sum(q for _, q in levels)
        if tif == "FOK" and takeable + EPS < qty and self.fok_unfillable is not None:
            raise VenueError(*self.fok_unfillable)
        order = Order(symbol, next(self._ids), client_id, side, kind, tif if kind != "MARKET" else "", price, qty,
                      now_ms, next(self._seq), reduce_only, updated_ms=now_ms)
        self.orders[order.order_id] = order
        self.by_client[key] = order.order_id
        self._emit(order, "NEW", None, now_ms)
        if tif == "FOK" and takeable + EPS < qty:
            self.end(order, "EXPIRED", now_ms)
            return order
        self._take(order, levels, now_ms)
        if order.open and (tif in ("IOC", "FOK") or kind == "MARKET"):
            self.end(order, "EXPIRED", now_ms)
        return order

    def _take(self, order: Order, levels, now_ms: int) -> None:
        for px, q in levels:
            take = min(q, order.left)
            if take <= EPS:
                break
            self._fill(order, px, take, now_ms, maker=False)

    def amend(self, book, order: Order, price: float, qty: float, now_ms: int) -> Order:
        """Futures' modify: same order id, new price and quantity, back of the queue; crossing now takes."""
        if qty <= order.executed + EPS:
            self.end(order, "CANCELED", now_ms)  # the venue cancels what an amendment leaves nothing of
            return order
        levels = _crossing(book, order.side, price)
        if levels and order.tif == "GTX":
            self.end(order, "CANCELED", now_ms)  # a post-only order that would take is cancelled
            return order
        extra = max(0.0, (qty - order.executed) * price - order.left * order.price)
        if extra > 0:  # only an increase needs more room; the order itself stays counted until it changes
            self.check_funds(order.symbol, order.side, order.kind, price, extra / price, [], order.reduce_only)
        order.price, order.qty, order.seq, order.updated_ms = price, qty, next(self._seq), now_ms
        self._emit(order, "AMENDMENT", None, now_ms)
        self._take(order, levels, now_ms)
        return order

    def end(self, order: Order, status: str, now_ms: int, cancel_id: str = "") -> None:
        """CANCELED or EXPIRED: the order leaves the book."""
        order.status, order.updated_ms, order.cancel_id = status, now_ms, cancel_id
        self._emit(order, status, None, now_ms)

    def on_trade(self, symbol: str, price: float, size: float, now_ms: int) -> None:
        """A replayed trade: resting orders at or through its price fill, first in the queue first, up to its
        size, at their own prices."""
        left = size
        for order in sorted(self.open_orders(symbol), key=lambda o: o.seq):
            if left <= EPS:
                break
            through = price <= order.price if order.side == "BUY" else price >= order.price
            if not through:
                continue
            take = min(left, order.left)
            self._fill(order, order.price, take, now_ms, maker=True)
            left -= take

    def _fill(self, order: Order, price: float, qty: float, now_ms: int, maker: bool) -> None:
        fee = price * qty * self.fee_rate
        order.executed += qty
        order.quote_done += price * qty
        order.status = "FILLED" if order.executed >= order.qty - EPS else "PARTIALLY_FILLED"
        order.updated_ms = now_ms
        realized = self.settle(order, price, qty, fee)
        fill = Fill(next(self._trade_ids), order.order_id, order.client_id, order.symbol, order.side, price, qty,
                    fee, self.instruments[order.symbol]["quote"], maker, now_ms, realized)
        order.fills.append(fill)
        self.trades.append(fill)
        self._emit(order, "TRADE", fill, now_ms)

    def find(self, symbol: str, order_id: str | None, client_id: str | None, id_name: str = "orderId") -> Order | None:
        if order_id:  # the venue takes the order id when both come
            if not order_id.isdigit():
                raise VenueError(400, -1100, f"Illegal characters found in parameter '{id_name}'; legal range is "
                                             "'^[0-9]{1,20}$'.")
            order = self.orders.get(int(order_id))
            return order if order is not None and order.symbol == symbol else None
        oid = self.by_client.get((symbol, client_id))
        return self.orders.get(oid) if oid is not None else None


class Account(Matching):
    """Spot: balances per asset; an open LIMIT order locks what it could spend (buy: its remaining quantity at
    its price, in the quote; sell: its remaining quantity of the base). ``free`` = balance - locked."""

    def __init__(self, balances: dict[str, float], instruments: dict[str, dict], fee_rate: float = 0.001):
        super().__init__(instruments, fee_rate)
        self.balances = dict(balances)          # totals: free + locked

    def locked(self) -> dict[str, float]:
        # derived from the open orders, so a fill, a cancel or an expiry can never leave a stale lock behind
        out: dict[str, float] = {}
        for o in self.open_orders():
            inst = self.instruments[o.symbol]
            asset, amount = (inst["quote"], o.left * o.price) if o.side == "BUY" else (inst["base"], o.left)
            out[asset] = out.get(asset, 0.0) + amount
        return out

    def free(self, asset: str) -> float:
        return self.balances.get(asset, 0.0) - self.locked().get(asset, 0.0)

    def balance_view(self) -> dict[str, dict]:
        locked = self.locked()
        return {a: {"free": v - locked.get(a, 0.0), "locked": locked.get(a, 0.0), "total": v}
                for a, v in sorted(self.balances.items())}

    def check_funds(self, symbol, side, kind, price, qty, levels, reduce_only) -> None:
        inst = self.instruments[symbol]
        need_asset, need = ((inst["quote"], qty * (price if kind != "MARKET" else _worst(levels, qty)))
                            if side == "BUY" else (inst["base"], qty))
        if self.free(need_asset) + EPS < need:
            raise VenueError(400, -2010, "Account has insufficient balance for requested action.")

    def settle(self, order: Order, price: float, qty: float, fee: float) -> float:
        inst = self.instruments[order.symbol]
        sign = 1.0 if order.side == "BUY" else -1.0
        self.balances[inst["base"]] = self.balances.get(inst["base"], 0.0) + sign * qty
        self.balances[inst["quote"]] = self.balances.get(inst["quote"], 0.0) - sign * price * qty - fee
        return 0.0


def json_response(body, status: int = 200, headers: dict | None = None) -> web.Response:
    """Compact JSON, as the venue sends it (clients that search the body for text see what they would there)."""
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


async def _ws_error(ws, rid, exc: VenueError) -> None:
    await ws.send_str(orjson.dumps({"id": rid, "status": exc.status, "error": {"code": exc.code,
                                                                             "msg": exc.msg}}).decode())


async def _send_quietly(ws, text: str) -> None:
    try:
        await ws.send_str(text)
    except (ConnectionResetError, RuntimeError):
        pass  # the client went away: it loses the event, as it would on the venue


class SignedRoutes:
    """What every product's signed API shares: request signing and the time window, faults, placement with
    its faults applied, and the user-data streams' plumbing. Subclasses add their endpoints and event
    formats."""

    prefix = PREFIX
    listen_key_path = f"{PREFIX}/userDataStream"
    default_reject = (-1013, "Filter failure: PRICE_FILTER")
    time_in_force = ("GTC", "IOC", "FOK")

    def __init__(self, server, account: Matching, api_key: str, secret: str):
        self.server, self.api_key, self.secret = server, api_key, secret.encode()
        self.account = account
        self.account.listeners.append(self._on_change)
        self.counts = dict(orders=0, cancels=0, amends=0, queries=0, refused=0, user_events=0, user_drops=0,
                           user_refused=0, rejected=0, acks_after_fill=0)
        self.faults: list[tuple[str, float, str]] = []   # (kind, seconds, "" or the only requests it meets:
                                                         # "placement", "amend") for the next signed requests
        self.rejects: list[tuple[int, str]] = []   # reject_next: (code, msg) for the next placements
        self.acks_after_fill: list[float] = []     # ack_after_fill: answer delay for the next filled placements
        self.refuse_until = 0.0                    # drop_user_stream: monotonic time until which streams are refused
        self.requests: Counter = Counter()         # (method, path) -> signed requests arrived, faulted too
        self.listen_keys: set[str] = set()
        self.user_streams: list = []               # (websocket, subscription id or None: a listen-key stream, request)
        self._held: list | None = None             # user events held back during an ack_after_fill placement
        self._answer_wait: list = []               # sends the next answer waits for (ack_after_fill)
        self._answer_delay = 0.0
        # benchmarks: a list here gets (time.time_ns() when the request reached its handler, method, path,
        # newClientOrderId or origClientOrderId or "") of every signed request that passes the checks
        self.arrivals: list | None = None

    # --- faults ---------------------------------------------------------------------------------------

    def inject(self, kind: str, times: int = 1, seconds: float = 0.0, code: int | None = None,
               msg: str | None = None, placements_only: bool = False, amends_only: bool = False):
        """Arm a fault (see the module docstring); on the server's loop. ``drop_user_stream`` returns the
        coroutine that drops the streams (``LoopbackServer.inject`` runs it)."""
        if kind in ("429", "503", "slow"):
            self.faults += [(kind, seconds, "placement" if placements_only else "amend" if amends_only else "")] * times
        elif kind == "reject_next":
            default_code, default_msg = self.default_reject
            self.rejects += [(code if code is not None else default_code, msg or default_msg)] * times
        elif kind == "ack_after_fill":
            self.acks_after_fill += [seconds] * times
        elif kind == "drop_user_stream":
            return self.drop_user_streams(seconds)
        else:
            raise ValueError(f"fault {kind!r}: use one of {', '.join(FAULTS)}")
        return None

    async def drop_user_streams(self, seconds: float = 0.0) -> int:
        """Abort every user-data connection (no close frame) and refuse new ones for ``seconds``."""
        self.refuse_until = time.monotonic() + seconds
        dropped = {}
        for ws, _, request in list(self.user_streams):
            dropped[id(ws)] = request
        self.user_streams.clear()  # nothing more goes to them, even before their handlers notice
        for request in dropped.values():
            if request.transport is not None:
                request.transport.abort()
        self.counts["user_drops"] += len(dropped)
        await asyncio.sleep(0)
        return len(dropped)

    def refusing_user_streams(self) -> bool:
        return time.monotonic() < self.refuse_until

    # --- user-data streams ----------------------------------------------------------------------------

    def is_listen_key(self, name: str) -> bool:
        return name in self.listen_keys

    def _refused(self) -> web.Response:
        self.counts["user_refused"] += 1
        return web.Response(status=503, text="Service Unavailable")

    async def serve_user_stream(self, request: web.Request):
        """A listen key's stream (``/ws/<key>``, or futures' ``/private/ws?listenKey=``): events only."""
        if self.refusing_user_streams():
            return self._refused()
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        entry = (ws, None, request)
        self.user_streams.append(entry)
        try:
            async for _ in ws:  # the user stream takes no requests; keep it open until the client goes
                pass
        finally:
            if entry in self.user_streams:
                self.user_streams.remove(entry)
        return ws

    def send_user(self, kind: str, event: dict) -> None:
        """One user-data event to every stream; ``kind`` (NEW, TRADE, ACCOUNT, ...) orders held events."""
        if self._held is not None:
            self._held.append((kind, event))
        else:
            self._dispatch(event)

    def _dispatch(self, event: dict) -> list:
        raw = orjson.dumps(event).decode()
        sends = []
        for ws, subscription, _ in list(self.user_streams):
            if ws.closed:
                continue
            self.counts["user_events"] += 1
            text = raw if subscription is None else orjson.dumps({"subscriptionId": subscription,
                                                                  "event": event}).decode()
            sends.append(asyncio.ensure_future(_send_quietly(ws, text)))
        return sends

    def _on_change(self, order: Order, exec_type: str, fill: Fill | None, now_ms: int) -> None:
        raise NotImplementedError

    async def _listen_key(self, request: web.Request):
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            self.counts["refused"] += 1
            return json_response({"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."},
                                 status=401)
        if request.method == "POST":
            key = self._new_listen_key()
            self.listen_keys.add(key)
            return json_response({"listenKey": key})
        return json_response({})

    def _new_listen_key(self) -> str:
        return secrets.token_hex(32)

    # --- signed requests ------------------------------------------------------------------------------

    def _take_fault(self, target: str) -> tuple[str, float]:
        """The first armed fault a request of this target ("placement", "amend" or "") meets: (kind, seconds), or
        ("", 0.0)."""
        for i, (kind, seconds, only) in enumerate(self.faults):
            if not only or only == target:
                del self.faults[i]
                return kind, seconds
        return "", 0.0

    def _guard(self, handler):
        # what places an order (placements_only), what amends one (amends_only)
        name = handler.__name__
        target = "placement" if name in ("_new_order", "_cancel_replace") else "amend" if name == "_modify" else ""

        async def run(request: web.Request):
            arrived = time.time_ns()
            self.requests[(request.method, request.path)] += 1
            fault, seconds = self._take_fault(target)
            if fault == "429":
                self.counts["refused"] += 1
                return json_response({"code": -1003, "msg": "Too many requests; current limit is 1200 request "
                                      "weight per 1 MINUTE."}, status=429,
                                     headers={"Retry-After": str(max(1, round(seconds)))})
            if fault == "503":
                self.counts["refused"] += 1
                return web.Response(status=503, text="Service Unavailable")
            try:
                params = await self._verified(request)
                if self.arrivals is not None:
                    self.arrivals.append((arrived, request.method, request.path,
                                          params.get("newClientOrderId") or params.get("origClientOrderId") or ""))
                body, status = handler(params), 200
            except VenueError as exc:
                self.counts["refused"] += 1
                body, status = exc.body(), exc.status  # (a cancel-replace can fail after placing: still held back)
            finally:  # taken right after the handler, with no await between: no other request's
                wait, self._answer_wait = self._answer_wait, []
                delay, self._answer_delay = self._answer_delay, 0.0
            if wait:  # ack_after_fill: the events are on the wire before the answer
                await asyncio.gather(*wait, return_exceptions=True)
            if fault == "slow":
                delay = max(delay, seconds)
            if delay > 0:
                await asyncio.sleep(delay)
            return json_response(body, status=status)
        return run

    async def _verified(self, request: web.Request) -> dict:
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            raise VenueError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        body = (await request.text()) if request.can_read_body else ""
        raw = "&".join(x for x in (request.query_string, body) if x)
        pairs = parse_qsl(raw, keep_blank_values=True)
        signature = next((v for k, v in pairs if k == "signature"), None)
        if signature is None:
            raise VenueError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        signed = "&".join(part for part in raw.split("&") if not part.startswith("signature="))
        expected = hmac.new(self.secret, signed.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise VenueError(400, -1022, "Signature for this request is not valid.")
        params = {k: v for k, v in pairs if k != "signature"}
        self._check_time(params)
        return params

    def _check_time(self, params: dict) -> None:
        try:
            stamp, window = int(params["timestamp"]), int(params.get("recvWindow", 5000))
        except (KeyError, ValueError):
            raise VenueError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or "
                                         "malformed.") from None
        now = self.server.venue_now_ms()
        if not (stamp - 1000 <= now and now - stamp <= window):
            raise VenueError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def _symbol(self, params: dict) -> str:
        symbol = params.get("symbol", "")
        if symbol not in self.account.instruments:
            raise VenueError(400, -1121, "Invalid symbol.")
        return symbol

    def _order_params(self, params: dict, kinds: tuple) -> tuple:
        """(symbol, side, kind, tif, price, qty) of a new order's parameters, or the venue's error."""
        symbol = self._symbol(params)
        side, kind = params.get("side", ""), params.get("type", "")
        if side not in ("BUY", "SELL"):
            raise VenueError(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        if kind not in kinds:
            raise VenueError(400, -1116, "Invalid orderType.")
        try:
            qty = float(params["quantity"])
            price = float(params["price"]) if kind != "MARKET" else 0.0
        except (KeyError, ValueError):
            raise VenueError(400, -1102, "Mandatory parameter 'quantity' or 'price' was not sent, was empty/null, "
                                         "or malformed.") from None
        if not (qty > 0 and (kind == "MARKET" or price > 0)):
            raise VenueError(400, -1013, "Invalid quantity or price.")
        tif = params.get("timeInForce", "GTC" if kind == "LIMIT" else "")
        if kind == "LIMIT" and tif not in self.time_in_force:
            raise VenueError(400, -1115, "Invalid timeInForce.")
        return symbol, side, kind, tif, price, qty

    def _place(self, symbol: str, side: str, kind: str, tif: str, price: float, qty: float, client_id: str,
               reduce_only: bool = False) -> Order:
        """Place through the account with the placement faults applied (reject_next, ack_after_fill)."""
        if self.rejects:
            code, msg = self.rejects.pop(0)
            self.counts["rejected"] += 1
            raise VenueError(400, code, msg)
        armed = bool(self.acks_after_fill)
        if armed:
            self._held = []
        try:
            order = self.account.place(self.server.books[symbol], symbol, side, kind, tif, price, qty, client_id,
                                       self.server.venue_now_ms(), reduce_only)
        finally:
            held, self._held = self._held, None
            if held and not any(kind == "TRADE" for kind, _ in held):
                for _, event in held:  # no fill on placement: the fault waits for an order that has one
                    self._dispatch(event)
        if held and any(kind == "TRADE" for kind, _ in held):
            first = [e for k, e in held if k in ("TRADE", "ACCOUNT")]
            new = [e for k, e in held if k == "NEW"]
            rest = [e for k, e in held if k not in ("TRADE", "ACCOUNT", "NEW")]
            for event in first + new + rest:
                self._answer_wait += self._dispatch(event)
            self._answer_delay = self.acks_after_fill.pop(0)
            self.counts["acks_after_fill"] += 1
        self.counts["orders"] += 1
        return order

    def _find(self, params: dict, missing: VenueError) -> Order:
        symbol = self._symbol(params)
        order = self.account.find(symbol, params.get("orderId"), params.get("origClientOrderId"))
        if order is None:
            raise missing
        return order

    def _client_id(self, params: dict, key: str = "newClientOrderId") -> str:
        return params.get(key) or f"loopback{secrets.token_hex(8)}"

    # --- tests ----------------------------------------------------------------------------------------

    def balances_snapshot(self) -> dict:
        raise NotImplementedError

    def positions_snapshot(self) -> dict:
        return {}

    def snapshot(self) -> dict:
        """The account as plain data: every order, the open ones, every trade with its client order id,
        balances (and positions on futures)."""
        orders = [o.as_dict() for o in self.account.orders.values()]
        return {"orders": orders, "open_orders": [o for o in orders if o["status"] in ("NEW", "PARTIALLY_FILLED")],
                "trades": [t.as_dict() for t in self.account.trades], "balances": self.balances_snapshot(),
                "positions": self.positions_snapshot()}


def spot_order_json(order: Order) -> dict:
    return {"symbol": order.symbol, "orderId": order.order_id, "orderListId": -1, "clientOrderId": order.client_id,
            "price": _num(order.price), "origQty": _num(order.qty), "executedQty": _num(order.executed),
            "cummulativeQuoteQty": _num(order.quote_done), "status": order.status,
            "timeInForce": order.tif or "GTC", "type": order.kind, "side": order.side, "stopPrice": "0.00000000",
            "icebergQty": "0.00000000", "time": order.created_ms, "updateTime": order.updated_ms or order.created_ms,
            "isWorking": order.open, "workingTime": order.created_ms, "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "NONE"}


def spot_fill_json(fill: Fill) -> dict:
    return {"symbol": fill.symbol, "id": fill.trade_id, "orderId": fill.order_id, "orderListId": -1,
            "price": _num(fill.price), "qty": _num(fill.qty), "quoteQty": _num(fill.price * fill.qty),
            "commission": _num(fill.fee), "commissionAsset": fill.fee_asset, "time": fill.time_ms,
            "isBuyer": fill.side == "BUY", "isMaker": fill.maker, "isBestMatch": True}


class OrderRoutes(SignedRoutes):
    """Spot's signed order endpoints over ``server`` (a LoopbackServer: books, venue clock)."""

    def __init__(self, server, instruments: dict[str, dict], api_key: str, secret: str, balances: dict[str, float],
                 fee_rate: float = 0.001):
        """``instruments``: symbol -> {"base", "quote", ...} of the symbols ``server`` serves."""
        super().__init__(server, Account(balances, instruments, fee_rate), api_key, secret)
        self._subscription_ids = itertools.count(0)

    def add_to(self, app: web.Application) -> None:
        p = self.prefix
        app.router.add_post(f"{p}/order", self._guard(self._new_order))
        app.router.add_delete(f"{p}/order", self._guard(self._cancel))
        app.router.add_get(f"{p}/order", self._guard(self._query))
        app.router.add_post(f"{p}/order/cancelReplace", self._guard(self._cancel_replace))
        app.router.add_get(f"{p}/openOrders", self._guard(self._open_orders))
        app.router.add_delete(f"{p}/openOrders", self._guard(self._cancel_all))
        app.router.add_get(f"{p}/account", self._guard(self._account))
        app.router.add_get(f"{p}/myTrades", self._guard(self._my_trades))
        app.router.add_get("/ws-api/v3", self._ws_api)
        for method in ("POST", "PUT", "DELETE"):  # the user-data stream's listen key: the API key, no signature
            app.router.add_route(method, self.listen_key_path, self._listen_key)

    # --- user data ------------------------------------------------------------------------------------

    async def _ws_api(self, request: web.Request):
        """The WebSocket API (``/ws-api/v3``): ``userDataStream.subscribe.signature`` (what ccxt uses for spot's
        user data) answered as the venue answers; its events then come on this connection, wrapped as
        ``{"subscriptionId", "event"}``. Any other method is refused (-1020)."""
        if self.refusing_user_streams():
            return self._refused()
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        mine = []
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    req = orjson.loads(msg.data)
                    rid, method, params = req.get("id"), req.get("method"), dict(req.get("params") or {})
                    if method != "userDataStream.subscribe.signature":
                        raise VenueError(400, -1020, "This operation is not supported.")
                    self._check_ws_signature(params)
                except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                    await _ws_error(ws, None, VenueError(400, -1000, "Malformed request."))
                    continue
                except VenueError as exc:
                    self.counts["refused"] += 1
                    await _ws_error(ws, rid, exc)
                    continue
                entry = (ws, next(self._subscription_ids), request)
                mine.append(entry)
                self.user_streams.append(entry)
                await ws.send_str(orjson.dumps({"id": rid, "status": 200,
                                                "result": {"subscriptionId": entry[1]}}).decode())
        finally:
            for entry in mine:
                if entry in self.user_streams:
                    self.user_streams.remove(entry)
        return ws

    def _check_ws_signature(self, params: dict) -> None:
        """The WebSocket API's signature: HMAC-SHA256 of the other params sorted by name, ``k=v`` joined by &."""
        if params.get("apiKey") != self.api_key:
            raise VenueError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        signature = str(params.pop("signature", ""))
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
        expected = hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise VenueError(400, -1022, "Signature for this request is not valid.")
        self._check_time(params)

    def _on_change(self, order: Order, exec_type: str, fill: Fill | None, now_ms: int) -> None:
        """An executionReport (the venue's own fields), then the symbol's balances, to every user stream."""
        cancelled = exec_type == "CANCELED"
        event = {"e": "executionReport", "E": now_ms, "s": order.symbol,
                 "c": order.cancel_id if cancelled and order.cancel_id else order.client_id, "S": order.side,
                 "o": order.kind, "f": order.tif or "GTC", "q": _num(order.qty), "p": _num(order.price),
                 "P": "0.00000000", "F": "0.00000000", "g": -1,
                 "C": order.client_id if cancelled and order.cancel_id else "", "x": exec_type, "X": order.status,
                 "r": "NONE", "i": order.order_id, "l": _num(fill.qty) if fill else "0.00000000",
                 "z": _num(order.executed), "L": _num(fill.price) if fill else "0.00000000",
                 "n": _num(fill.fee) if fill else "0", "N": fill.fee_asset if fill else None,
                 "T": now_ms, "t": fill.trade_id if fill else -1, "I": 0, "w": order.open,
                 "m": bool(fill and fill.maker), "M": False, "O": order.created_ms, "Z": _num(order.quote_done),
                 "Y": _num(fill.price * fill.qty) if fill else "0.00000000", "Q": "0.00000000",
                 "W": order.created_ms, "V": "NONE"}
        self.send_user(exec_type, event)
        inst = self.account.instruments[order.symbol]
        view = self.account.balance_view()
        self.send_user("ACCOUNT", {"e": "outboundAccountPosition", "E": now_ms, "u": now_ms, "B": [
            {"a": a, "f": _num(view[a]["free"]), "l": _num(view[a]["locked"])}
            for a in (inst["base"], inst["quote"]) if a in view]})

    # --- endpoints ------------------------------------------------------------------------------------

    def _new_order(self, params: dict) -> dict:
        symbol, side, kind, tif, price, qty = self._order_params(params, ("LIMIT", "MARKET", "LIMIT_MAKER"))
        order = self._place(symbol, side, kind, tif, price, qty, self._client_id(params))
        return self._new_order_answer(order, params.get("newOrderRespType", "FULL"))

    @staticmethod
    def _new_order_answer(order: Order, resp_type: str) -> dict:
        if resp_type == "ACK":
            return {"symbol": order.symbol, "orderId": order.order_id, "orderListId": -1,
                    "clientOrderId": order.client_id, "transactTime": order.created_ms}
        out = spot_order_json(order)
        out["transactTime"] = order.created_ms
        if resp_type == "FULL":
            out["fills"] = [{"price": _num(f.price), "qty": _num(f.qty), "commission": _num(f.fee),
                             "commissionAsset": f.fee_asset, "tradeId": f.trade_id} for f in order.fills]
        return out

    def _cancel_answer(self, order: Order) -> dict:
        out = spot_order_json(order)
        for k in ("time", "updateTime", "isWorking", "workingTime", "stopPrice", "icebergQty", "origQuoteOrderQty"):
            out.pop(k)
        out["origClientOrderId"], out["clientOrderId"] = order.client_id, order.cancel_id
        out["transactTime"] = order.updated_ms
        return out

    def _cancel_one(self, order: Order, cancel_id: str) -> dict:
        if not order.open:
            raise VenueError(400, -2011, "Unknown order sent.")
        self.account.end(order, "CANCELED", self.server.venue_now_ms(), cancel_id)
        self.counts["cancels"] += 1
        return self._cancel_answer(order)

    def _cancel(self, params: dict) -> dict:
        order = self._find(params, VenueError(400, -2011, "Unknown order sent."))
        return self._cancel_one(order, self._client_id(params))

    def _cancel_all(self, params: dict) -> list:
        symbol = self._symbol(params)
        orders = sorted(self.account.open_orders(symbol), key=lambda o: o.order_id)
        if not orders:
            raise VenueError(400, -2011, "Unknown order sent.")
        return [self._cancel_one(o, self._client_id(params)) for o in orders]

    def _cancel_replace(self, params: dict) -> dict:
        """Cancel an order and place a new one (a new order id: the back of the queue). STOP_ON_FAILURE: a failed
        cancel places nothing (-2022); a cancel that worked and a new order that did not is -2021 (HTTP 409)."""
        mode = params.get("cancelReplaceMode", "")
        if mode not in ("STOP_ON_FAILURE", "ALLOW_FAILURE"):
            raise VenueError(400, -1102, "Mandatory parameter 'cancelReplaceMode' was not sent, was empty/null, or "
                                         "malformed.")
        new = self._order_params(params, ("LIMIT", "MARKET", "LIMIT_MAKER"))  # checked before anything is done
        symbol = new[0]
        cancel_result, cancel_answer = "SUCCESS", None
        order = self.account.find(symbol, params.get("cancelOrderId"), params.get("cancelOrigClientOrderId"),
                                  "cancelOrderId")
        try:
            if order is None:
                raise VenueError(400, -2011, "Unknown order sent.")
            cancel_answer = self._cancel_one(order, self._client_id(params, "cancelNewClientOrderId"))
        except VenueError as exc:
            cancel_result, cancel_answer = "FAILURE", {"code": exc.code, "msg": exc.msg}
            if mode == "STOP_ON_FAILURE":
                raise VenueError(400, -2022, "Order cancel-replace failed.", {
                    "cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED", "cancelResponse": cancel_answer,
                    "newOrderResponse": None}) from None
        try:
            placed = self._place(*new, self._client_id(params))
        except VenueError as exc:
            both = cancel_result == "FAILURE"
            raise VenueError(400 if both else 409, -2022 if both else -2021,
                             "Order cancel-replace failed." if both else "Order cancel-replace partially failed.",
                             {"cancelResult": cancel_result, "newOrderResult": "FAILURE",
                              "cancelResponse": cancel_answer,
                              "newOrderResponse": {"code": exc.code, "msg": exc.msg}}) from None
        answer = {"cancelResult": cancel_result, "newOrderResult": "SUCCESS", "cancelResponse": cancel_answer,
                  "newOrderResponse": self._new_order_answer(placed, params.get("newOrderRespType", "FULL"))}
        if cancel_result == "FAILURE":  # ALLOW_FAILURE: placed although the cancel failed
            raise VenueError(409, -2021, "Order cancel-replace partially failed.", answer)
        return answer

    def _query(self, params: dict) -> dict:
        order = self._find(params, VenueError(400, -2013, "Order does not exist."))
        self.counts["queries"] += 1
        return spot_order_json(order)

    def _open_orders(self, params: dict) -> list:
        symbol = params.get("symbol")
        if symbol is not None:
            self._symbol(params)
        return [spot_order_json(o) for o in self.account.open_orders(symbol)]

    def _account(self, params: dict) -> dict:
        balances = [{"asset": a, "free": _num(v["free"]), "locked": _num(v["locked"])}
                    for a, v in self.account.balance_view().items()]
        return {"makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
                "canTrade": True, "canWithdraw": False, "canDeposit": False, "updateTime": int(time.time() * 1000),
                "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"]}

    def _my_trades(self, params: dict) -> list:
        symbol = self._symbol(params)
        return [spot_fill_json(t) for t in self.account.trades if t.symbol == symbol]

    def balances_snapshot(self) -> dict:
        return self.account.balance_view()
