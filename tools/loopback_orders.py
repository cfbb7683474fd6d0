"""The loopback Binance's order endpoints (spot, ``/api/v3``): an account that matches orders against the
server's replayed book, behind the venue's own signed REST API, for the live venue gateway's tests.

Requests are checked the way Binance checks them: the ``X-MBX-APIKEY`` header names the key, ``signature`` is
the hex HMAC-SHA256 of the rest of the query string and body under the secret, ``timestamp`` lies within
``recvWindow`` (default 5,000 ms) of the server's clock. Answers and errors use the venue's JSON and codes:
-2014/-2015 bad key, -1022 bad signature, -1021 timestamp outside the window, -2010 duplicate client order id
or insufficient balance, -2011 cancel of an unknown order, -2013 query of an unknown order, -1102/-1013 a
missing or malformed parameter.

User-data stream: an ``executionReport`` (the venue's fields) for every change of every order (NEW, TRADE,
CANCELED, EXPIRED), on the WebSocket API (``/ws-api/v3``, ``userDataStream.subscribe.signature``, as ccxt
subscribes for spot) or on ``/ws/<listen key>`` after ``POST /api/v3/userDataStream`` (the API key only).

Matching: a LIMIT order takes what crosses it on the opposite side of the current book, level by level, at the
levels' prices (the book is not changed by it: the replay owns the book); the rest rests (GTC), or ends
EXPIRED (IOC), or the whole order is EXPIRED when it cannot fill at once in full (FOK). LIMIT_MAKER that would
cross is rejected (-2010). MARKET takes by quantity. A resting order fills when a replayed trade prints at or
through its price, up to the trade's size. Fees: ``fee_rate`` of the quote notional, charged in the quote asset.

Faults on demand (:meth:`OrderRoutes.inject`): HTTP 429 with Retry-After, 503, and an answer that comes only
after the client's timeout although the order was placed (its outcome is unknown to the client until it queries
the order by its client order id).

Concurrency: everything runs on the server's event loop; ``counts`` is written there (ints: safe to read).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import orjson
from aiohttp import WSMsgType, web

PREFIX = "/api/v3"


class VenueError(Exception):
    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class Order:
    symbol: str
    order_id: int
    client_id: str
    side: str                # BUY | SELL
    kind: str                # LIMIT | MARKET | LIMIT_MAKER
    tif: str                 # GTC | IOC | FOK ("" for MARKET)
    price: float
    qty: float
    created_ms: int
    executed: float = 0.0
    quote_done: float = 0.0
    status: str = "NEW"
    updated_ms: int = 0
    fills: list = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def as_json(self) -> dict:
        return {"symbol": self.symbol, "orderId": self.order_id, "orderListId": -1, "clientOrderId": self.client_id,
                "price": _num(self.price), "origQty": _num(self.qty), "executedQty": _num(self.executed),
                "cummulativeQuoteQty": _num(self.quote_done), "status": self.status, "timeInForce": self.tif or "GTC",
                "type": self.kind, "side": self.side, "stopPrice": "0.00000000", "icebergQty": "0.00000000",
                "time": self.created_ms, "updateTime": self.updated_ms or self.created_ms,
                "isWorking": self.open, "workingTime": self.created_ms, "origQuoteOrderQty": "0.00000000",
                "selfTradePreventionMode": "NONE"}


def _num(x: float) -> str:
    return f"{x:.8f}"


class Account:
    """Balances, orders and trades of the one test account."""

    def __init__(self, balances: dict[str, float], instruments: dict[str, dict], fee_rate: float = 0.001):
        self.balances = dict(balances)
        self.instruments = instruments          # symbol -> {"base", "quote"}
        self.fee_rate = fee_rate
        self.orders: dict[int, Order] = {}
        self.by_client: dict[tuple, int] = {}   # (symbol, client id) -> order id
        self.trades: list[dict] = []
        self.listeners: list = []               # f(order, exec_type, fill or None, now_ms) on every change
        self._ids = itertools.count(1)
        self._trade_ids = itertools.count(1)

    def _emit(self, order: Order, exec_type: str, fill: dict | None, now_ms: int) -> None:
        for listener in self.listeners:
            listener(order, exec_type, fill, now_ms)

    def place(self, book, symbol: str, side: str, kind: str, tif: str, price: float, qty: float, client_id: str,
              now_ms: int) -> Order:
        if (symbol, client_id) in self.by_client and self.orders[self.by_client[(symbol, client_id)]].open:
            raise VenueError(400, -2010, "Duplicate order sent.")
        inst = self.instruments[symbol]
        levels = _crossing(book, side, price if kind != "MARKET" else None)
        if kind == "LIMIT_MAKER" and levels:
            raise VenueError(400, -2010, "Order would immediately match and take.")
        need_asset, need = ((inst["quote"], qty * (price if kind != "MARKET" else _worst(levels, qty)))
                            if side == "BUY" else (inst["base"], qty))
        if self.balances.get(need_asset, 0.0) + 1e-12 < need:
            raise VenueError(400, -2010, "Account has insufficient balance for requested action.")
        order = Order(symbol, next(self._ids), client_id, side, kind, tif if kind != "MARKET" else "", price, qty,
                      now_ms)
        self.orders[order.order_id] = order
        self.by_client[(symbol, client_id)] = order.order_id
        self._emit(order, "NEW", None, now_ms)
        takeable = sum(q for _, q in levels)
        if tif == "FOK" and takeable + 1e-12 < qty:
            self.end(order, "EXPIRED", now_ms)
            return order
        for px, q in levels:
            take = min(q, order.qty - order.executed)
            if take <= 0:
                break
            self._fill(order, px, take, now_ms, maker=False)
        if order.open and (tif == "IOC" or kind == "MARKET"):
            self.end(order, "EXPIRED", now_ms)
        order.updated_ms = now_ms
        return order

    def end(self, order: Order, status: str, now_ms: int) -> None:
        """CANCELED or EXPIRED: the order leaves the book."""
        order.status, order.updated_ms = status, now_ms
        self._emit(order, status, None, now_ms)

    def on_trade(self, symbol: str, price: float, size: float, now_ms: int) -> None:
        """A replayed trade: resting orders at or through its price fill, oldest first, up to its size."""
        left = size
        for order in sorted((o for o in self.orders.values() if o.symbol == symbol and o.open),
                            key=lambda o: o.order_id):
            if left <= 0:
                break
            through = price <= order.price if order.side == "BUY" else price >= order.price
            if not through:
                continue
            take = min(left, order.qty - order.executed)
            self._fill(order, order.price, take, now_ms, maker=True)
            left -= take

    def _fill(self, order: Order, price: float, qty: float, now_ms: int, maker: bool) -> None:
        inst = self.instruments[order.symbol]
        notional = price * qty
        fee = notional * self.fee_rate
        sign = 1.0 if order.side == "BUY" else -1.0
        self.balances[inst["base"]] = self.balances.get(inst["base"], 0.0) + sign * qty
        self.balances[inst["quote"]] = self.balances.get(inst["quote"], 0.0) - sign * notional - fee
        order.executed += qty
        order.quote_done += notional
        order.status = "FILLED" if order.executed >= order.qty - 1e-12 else "PARTIALLY_FILLED"
        order.updated_ms = now_ms
        trade = {"symbol": order.symbol, "id": next(self._trade_ids), "orderId": order.order_id, "orderListId": -1,
                 "price": _num(price), "qty": _num(qty), "quoteQty": _num(notional), "commission": _num(fee),
                 "commissionAsset": inst["quote"], "time": now_ms, "isBuyer": order.side == "BUY",
                 "isMaker": maker, "isBestMatch": True}
        order.fills.append({"price": _num(price), "qty": _num(qty), "commission": _num(fee),
                            "commissionAsset": inst["quote"], "tradeId": trade["id"]})
        self.trades.append(trade)
        self._emit(order, "TRADE", trade, now_ms)

    def find(self, symbol: str, order_id: str | None, client_id: str | None) -> Order | None:
        if order_id:
            order = self.orders.get(int(order_id))
            return order if order is not None and order.symbol == symbol else None
        oid = self.by_client.get((symbol, client_id))
        return self.orders.get(oid) if oid is not None else None


async def _ws_error(ws, rid, exc: VenueError) -> None:
    await ws.send_str(orjson.dumps({"id": rid, "status": exc.status, "error": {"code": exc.code,
                                                                             "msg": exc.msg}}).decode())


def _crossing(book, side: str, limit: float | None) -> list[tuple[float, float]]:
    """(price, qty) of the opposite side's levels a BUY/SELL at ``limit`` (None: any price) would take."""
    if side == "BUY":
        prices = sorted(book.asks)
        ok = (lambda p: p <= limit) if limit is not None else (lambda p: True)
        levels = book.asks
    else:
        prices = sorted(book.bids, reverse=True)
        ok = (lambda p: p >= limit) if limit is not None else (lambda p: True)
        levels = book.bids
    return [(p, float(levels[p][1])) for p in prices if ok(p)]


def _worst(levels, qty: float) -> float:
    """The worst price a MARKET order of ``qty`` reaches (for the balance check)."""
    left = qty
    for p, q in levels:
        left -= q
        if left <= 0:
            return p
    return levels[-1][0] if levels else 0.0


class OrderRoutes:
    """The signed order endpoints over ``server`` (a LoopbackServer: books, venue clock)."""

    def __init__(self, server, instruments: dict[str, dict], api_key: str, secret: str, balances: dict[str, float],
                 fee_rate: float = 0.001):
        """``instruments``: symbol -> {"base", "quote", ...} of the symbols ``server`` serves."""
        self.server, self.api_key, self.secret = server, api_key, secret.encode()
        self.account = Account(balances, instruments, fee_rate)
        self.account.listeners.append(self._on_change)
        self.counts = dict(orders=0, cancels=0, queries=0, refused=0, user_events=0)
        self.faults: list[tuple[str, float]] = []  # (kind, seconds) for the next signed requests, in order
        self.listen_keys: set[str] = set()
        self.user_streams: list = []            # (websocket, subscription id or None: a listen-key stream)
        self._subscription_ids = itertools.count(0)

    def is_listen_key(self, name: str) -> bool:
        return name in self.listen_keys

    async def serve_user_stream(self, request: web.Request):
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        entry = (ws, None)
        self.user_streams.append(entry)
        try:
            async for _ in ws:  # the user stream takes no requests; keep it open until the client goes
                pass
        finally:
            self.user_streams.remove(entry)
        return ws

    async def _ws_api(self, request: web.Request):
        """The WebSocket API (``/ws-api/v3``): ``userDataStream.subscribe.signature`` (what ccxt uses for spot's
        user data) answered as the venue answers; its events then come on this connection, wrapped as
        ``{"subscriptionId", "event"}``. Any other method is refused (-1020)."""
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
                entry = (ws, next(self._subscription_ids))
                mine.append(entry)
                self.user_streams.append(entry)
                await ws.send_str(orjson.dumps({"id": rid, "status": 200,
                                                "result": {"subscriptionId": entry[1]}}).decode())
        finally:
            for entry in mine:
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

    def _check_time(self, params: dict) -> None:
        try:
            stamp, window = int(params["timestamp"]), int(params.get("recvWindow", 5000))
        except (KeyError, ValueError):
            raise VenueError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or "
                                         "malformed.") from None
        now = self.server.venue_now_ms()
        if not (stamp - 1000 <= now and now - stamp <= window):
            raise VenueError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def _on_change(self, order: Order, exec_type: str, fill: dict | None, now_ms: int) -> None:
        """An executionReport (the venue's own fields) to every user stream, on the server's loop."""
        event = {"e": "executionReport", "E": now_ms, "s": order.symbol, "c": order.client_id, "S": order.side,
                 "o": order.kind, "f": order.tif or "GTC", "q": _num(order.qty), "p": _num(order.price),
                 "P": "0.00000000", "F": "0.00000000", "g": -1, "C": "", "x": exec_type, "X": order.status,
                 "r": "NONE", "i": order.order_id, "l": fill["qty"] if fill else "0.00000000",
                 "z": _num(order.executed), "L": fill["price"] if fill else "0.00000000",
                 "n": fill["commission"] if fill else "0", "N": fill["commissionAsset"] if fill else None,
                 "T": now_ms, "t": fill["id"] if fill else -1, "I": 0, "w": order.open,
                 "m": bool(fill and fill["isMaker"]), "M": False, "O": order.created_ms, "Z": _num(order.quote_done),
                 "Y": fill["quoteQty"] if fill else "0.00000000", "Q": "0.00000000", "W": order.created_ms,
                 "V": "NONE"}
        raw = orjson.dumps(event).decode()
        for ws, subscription in list(self.user_streams):
            if not ws.closed:
                self.counts["user_events"] += 1
                text = raw if subscription is None else orjson.dumps({"subscriptionId": subscription,
                                                                      "event": event}).decode()
                asyncio.ensure_future(ws.send_str(text))

    def add_to(self, app: web.Application) -> None:
        app.router.add_post(f"{PREFIX}/order", self._guard(self._new_order))
        app.router.add_delete(f"{PREFIX}/order", self._guard(self._cancel))
        app.router.add_get(f"{PREFIX}/order", self._guard(self._query))
        app.router.add_get(f"{PREFIX}/openOrders", self._guard(self._open_orders))
        app.router.add_get(f"{PREFIX}/account", self._guard(self._account))
        app.router.add_get(f"{PREFIX}/myTrades", self._guard(self._my_trades))
        app.router.add_get("/ws-api/v3", self._ws_api)
        for method in ("POST", "PUT", "DELETE"):  # the user-data stream's listen key: the API key, no signature
            app.router.add_route(method, f"{PREFIX}/userDataStream", self._listen_key)

    async def _listen_key(self, request: web.Request):
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            self.counts["refused"] += 1
            return web.json_response({"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."},
                                     status=401)
        if request.method == "POST":
            key = secrets.token_hex(32)
            self.listen_keys.add(key)
            return web.json_response({"listenKey": key})
        return web.json_response({})

    def inject(self, kind: str, times: int = 1, seconds: float = 0.0) -> None:
        """Faults for the next ``times`` signed requests: "429" (rate limited, Retry-After ``seconds``), "503"
        (unavailable, nothing done), "slow" (done at once, answered ``seconds`` later: a client that times out
        first does not know the outcome). Call on the server's loop or before it serves."""
        if kind not in ("429", "503", "slow"):
            raise ValueError(f"fault {kind!r}: use 429, 503 or slow")
        self.faults += [(kind, seconds)] * times

    def _guard(self, handler):
        async def run(request: web.Request):
            fault, seconds = self.faults.pop(0) if self.faults else ("", 0.0)
            if fault == "429":
                self.counts["refused"] += 1
                return web.json_response({"code": -1003, "msg": "Too many requests; current limit is 1200 request "
                                          "weight per 1 MINUTE."}, status=429,
                                         headers={"Retry-After": str(max(1, round(seconds)))})
            if fault == "503":
                self.counts["refused"] += 1
                return web.Response(status=503, text="Service Unavailable")
            try:
                params = await self._verified(request)
                body = handler(params)
                if fault == "slow":
                    await asyncio.sleep(seconds)
                return web.json_response(body)
            except VenueError as exc:
                self.counts["refused"] += 1
                return web.json_response({"code": exc.code, "msg": exc.msg}, status=exc.status)
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

    def _symbol(self, params: dict) -> str:
        symbol = params.get("symbol", "")
        if symbol not in self.account.instruments:
            raise VenueError(400, -1121, "Invalid symbol.")
        return symbol

    def _new_order(self, params: dict) -> dict:
        symbol = self._symbol(params)
        side, kind = params.get("side", ""), params.get("type", "")
        if side not in ("BUY", "SELL") or kind not in ("LIMIT", "MARKET", "LIMIT_MAKER"):
            raise VenueError(400, -1102, "Mandatory parameter 'side' or 'type' was not sent or is not supported.")
        try:
            qty = float(params["quantity"])
            price = float(params["price"]) if kind != "MARKET" else 0.0
        except (KeyError, ValueError):
            raise VenueError(400, -1102, "Mandatory parameter 'quantity' or 'price' was not sent, was empty/null, "
                                         "or malformed.") from None
        if not (qty > 0 and (kind == "MARKET" or price > 0)):
            raise VenueError(400, -1013, "Invalid quantity or price.")
        tif = params.get("timeInForce", "GTC" if kind == "LIMIT" else "")
        client_id = params.get("newClientOrderId") or f"loopback{len(self.account.orders) + 1}"
        order = self.account.place(self.server.books[symbol], symbol, side, kind, tif, price, qty, client_id,
                                   self.server.venue_now_ms())
        self.counts["orders"] += 1
        out = order.as_json()
        out["transactTime"] = order.created_ms
        out["fills"] = list(order.fills)
        return out

    def _cancel(self, params: dict) -> dict:
        symbol = self._symbol(params)
        order = self.account.find(symbol, params.get("orderId"), params.get("origClientOrderId"))
        if order is None or not order.open:
            raise VenueError(400, -2011, "Unknown order sent.")
        self.account.end(order, "CANCELED", self.server.venue_now_ms())
        self.counts["cancels"] += 1
        return order.as_json()

    def _query(self, params: dict) -> dict:
        symbol = self._symbol(params)
        order = self.account.find(symbol, params.get("orderId"), params.get("origClientOrderId"))
        if order is None:
            raise VenueError(400, -2013, "Order does not exist.")
        self.counts["queries"] += 1
        return order.as_json()

    def _open_orders(self, params: dict) -> list:
        symbol = params.get("symbol")
        return [o.as_json() for o in self.account.orders.values() if o.open and (symbol is None or o.symbol == symbol)]

    def _account(self, params: dict) -> dict:
        balances = [{"asset": a, "free": _num(v), "locked": "0.00000000"} for a, v in sorted(self.account.balances.items())]
        return {"makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
                "canTrade": True, "canWithdraw": False, "canDeposit": False, "updateTime": int(time.time() * 1000),
                "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"]}

    def _my_trades(self, params: dict) -> list:
        symbol = self._symbol(params)
        return [t for t in self.account.trades if t["symbol"] == symbol]
