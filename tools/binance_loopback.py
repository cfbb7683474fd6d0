"""A loopback Binance: serves captured websocket messages in the venue's own format, for the live source.

One server is one Binance product (``spot``, ``usdm`` or ``coinm``) with the instruments of its capture
files (``<receive ns> <JSON>`` lines, as in ``tests/data/binance-ws-capture``). It answers what a ccxt.pro
client needs, on the venue's own paths:

- REST: ``exchangeInfo`` for the served symbols (real 2024 filters), ``time``, ``ping`` and ``depth``
  (spot ``/api/v3/*``, USDⓈ-M ``/fapi/v1/*``, COIN-M ``/dapi/v1/*``). A depth snapshot is the server's
  book at the last update id it has replayed (``lastUpdateId`` = that u), so it is consistent with the
  diffs it serves next, as the venue's is.
- Websocket: raw streams (``/ws``, ``/ws/<n>``, ``/ws/<stream>``; futures also ``/public/ws`` and
  ``/market/ws``, which ccxt uses) with ``SUBSCRIBE``/``UNSUBSCRIBE`` requests, and combined streams
  (``/stream?streams=a/b``, payloads wrapped as ``{"stream", "data"}``). ``<sym>@depth`` at any rate gets
  the captured diffs, ``@trade`` the trades, ``@bookTicker`` the tickers.

The replay: each symbol's book starts at its capture's REST snapshot line; the stream starts at the first
diff that bridges it (earlier lines of that symbol are skipped). The replay clock starts when
``wait_streams`` distinct streams are subscribed; messages go out at ``speed`` times the recorded pace
(0 = as fast as the clients take them). With ``restamp`` the venue times (E, T) move by the same amount as
the receive time, keeping the recorded venue-minus-receive skew, so a paced replay looks live.

With ``orders`` it also serves the signed order endpoints, matching against this server's book and filling
resting orders on its trades: spot's (``tools.loopback_orders``: ``api_key``, ``secret``, ``balances``) or
USDⓈ-M's (``tools.loopback_futures``: ``api_key``, ``secret``, ``balance`` in USDT, ``leverage``), with their
user-data streams, faults on demand (:meth:`LoopbackServer.inject`) and :meth:`LoopbackServer.account_snapshot`.

Fault injection: ``drop_after`` closes each of the first ``drops`` connections abruptly after sending it
that many messages; ``gap_at`` withholds from every client the ``gap_at``-th depth diff of a symbol after
each snapshot of it served (``gaps`` times per symbol) while the server's book still applies it: a
sequence gap in a book the client has just synced. ``snapshot_delay_ms`` holds each depth snapshot that
long after taking it while the stream goes on, as a venue's REST lags its stream: the client must bridge
the diffs it buffered meanwhile. ``counts`` says what was served (connections, snapshots, messages, drops,
gaps), for tests and operators.

Concurrency: everything runs on the server's own event loop (its thread when started with
:meth:`LoopbackServer.start`); ``counts`` and ``snapshot_ids`` are written there and read elsewhere (ints, and
lists only appended to: safe to read).

    python -m tools.binance_loopback --product spot --port 8765 \
        tests/data/binance-ws-capture/spot_btcusdt_20240808.gz
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiohttp import WSMsgType, web

PRODUCTS = {"spot": "/api/v3", "usdm": "/fapi/v1", "coinm": "/dapi/v1"}
MAX_SNAPSHOT_DELAY_MS = 60_000.0
CHANNELS = ("depth", "trade", "bookTicker")

# Real exchangeInfo filters of the captured instruments (August 2024): tick, step, and futures contract data.
INSTRUMENTS = {
    ("spot", "BTCUSDT"): dict(base="BTC", quote="USDT", tick="0.01", step="0.00001"),
    ("spot", "ETHUSDT"): dict(base="ETH", quote="USDT", tick="0.01", step="0.0001"),
    ("usdm", "BTCUSDT"): dict(base="BTC", quote="USDT", tick="0.10", step="0.001", pair="BTCUSDT"),
    ("usdm", "ETHUSDT"): dict(base="ETH", quote="USDT", tick="0.01", step="0.001", pair="ETHUSDT"),
    ("coinm", "BTCUSD_PERP"): dict(base="BTC", quote="USD", tick="0.1", step="1", pair="BTCUSD", contract_size=100),
}


@dataclass
class Event:
    recv_ns: int
    symbol: str          # venue id, upper case (BTCUSDT)
    channel: str         # depth | trade | bookTicker
    data: dict


@dataclass
class Book:
    bids: dict = field(default_factory=dict)   # float price -> (price str, qty str)
    asks: dict = field(default_factory=dict)
    last_u: int = 0
    exch_ms: int = 0

    def apply(self, data: dict) -> None:
        for side, levels in ((self.bids, data.get("b", ())), (self.asks, data.get("a", ()))):
            for p, q in levels:
                if float(q) == 0.0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = (p, q)
        self.last_u = data["u"]

    def snapshot(self, limit: int) -> tuple[list, list]:
        bids = [self.bids[k] for k in sorted(self.bids, reverse=True)[:limit]]
        asks = [self.asks[k] for k in sorted(self.asks)[:limit]]
        return [list(x) for x in bids], [list(x) for x in asks]


class CaptureError(ValueError):
    pass


def _channel(stream: str) -> str | None:
    parts = stream.split("@")
    return parts[1] if len(parts) >= 2 and parts[1] in CHANNELS else None


def load_capture(paths, product: str) -> tuple[list[Event], dict[str, Book]]:
    """The events to serve, merged by receive time, and each symbol's book at its snapshot."""
    events: list[Event] = []
    books: dict[str, Book] = {}
    for path in paths:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        file_symbols: set = set()
        for line in raw.split(b"\n"):
            sp = line.find(b" ")
            if sp <= 0:
                continue
            recv, msg = int(line[:sp]), orjson.loads(line[sp + 1:])
            if "stream" in msg:
                data = msg["data"]
                channel = _channel(msg["stream"])
                if channel is None:
                    continue
                symbol = data["s"]
                file_symbols.add(symbol)
                events.append(Event(recv, symbol, channel, data))
            elif "lastUpdateId" in msg:
                symbol = msg.get("symbol") or (next(iter(file_symbols)) if len(file_symbols) == 1 else None)
                if symbol is None:
                    raise CaptureError(f"{path}: a snapshot line names no symbol and the file has {file_symbols}")
                if symbol in books:
                    continue  # a later snapshot: the book is already built from the first
                book = Book(last_u=msg["lastUpdateId"], exch_ms=msg.get("E", 0))
                book.bids = {float(p): (p, q) for p, q in msg["bids"]}
                book.asks = {float(p): (p, q) for p, q in msg["asks"]}
                books[symbol] = book
    events.sort(key=lambda e: e.recv_ns)
    for symbol in {e.symbol for e in events}:
        if (product, symbol) not in INSTRUMENTS:
            raise CaptureError(f"{symbol} on {product}: no exchangeInfo filters known; add it to INSTRUMENTS")
        if symbol not in books:
            raise CaptureError(f"{symbol}: the capture has no REST depth snapshot line to start its book from")
    start: dict[str, int] = {}
    kept = []
    for i, e in enumerate(events):
        if e.symbol not in start:
            # a symbol's stream starts at the first diff past its snapshot (it bridges it, or it is a gap
            # the client will detect, as on the venue)
            if e.channel != "depth" or e.data["u"] <= books[e.symbol].last_u:
                continue
            start[e.symbol] = i
        elif e.channel == "depth" and e.data["u"] <= books[e.symbol].last_u:
            continue
        kept.append(e)
    return kept, books


class OptionError(ValueError):
    """An option out of its range: ``option`` (as the keyword spells it) and what is wrong with its value."""

    def __init__(self, option: str, text: str):
        super().__init__(f"{option} {text}")
        self.option, self.text = option, text


@dataclass
class Faults:
    drop_after: int = 0     # close a connection abruptly after sending it this many messages (0 = never)
    drops: int = 1          # ...for this many connections
    gap_at: int = 0         # withhold the gap_at-th depth diff after each snapshot served (0 = never)
    gaps: int = 1           # ...this many times per symbol
    snapshot_delay_ms: float = 0.0  # hold each depth snapshot this long after taking it; the stream goes on

    def check(self) -> None:
        """OptionError naming the first option out of its range."""
        for name in ("drop_after", "drops", "gap_at", "gaps"):
            if getattr(self, name) < 0:
                raise OptionError(name, f"must be 0 or more, not {getattr(self, name)}")
        if not 0 <= self.snapshot_delay_ms <= MAX_SNAPSHOT_DELAY_MS:  # also false for nan
            raise OptionError("snapshot_delay_ms", f"must be 0 to {MAX_SNAPSHOT_DELAY_MS:g} ms, not "
                                                   f"{self.snapshot_delay_ms}")


class Connection:
    def __init__(self, request: web.Request, ws: web.WebSocketResponse, combined: bool, drop_after: int):
        self.request = request
        self.ws = ws
        self.combined = combined
        self.streams: dict[tuple, str] = {}   # (symbol, channel) -> the stream name as subscribed
        self.sent = 0
        self.drop_after = drop_after


class LoopbackServer:
    def __init__(self, files, product: str = "spot", speed: float = 1.0, restamp: bool = True,
                 faults: Faults | None = None, wait_streams: int = 1, host: str = "127.0.0.1", port: int = 0,
                 orders: dict | None = None):
        if product not in PRODUCTS:
            raise ValueError(f"product must be one of {list(PRODUCTS)}, not {product!r}")
        if not math.isfinite(speed) or speed < 0:
            raise OptionError("speed", f"must be 0 (as fast as possible) or a positive finite number, not {speed}")
        self.product, self.speed, self.restamp = product, speed, restamp
        self.faults = faults or Faults()
        self.faults.check()
        self.wait_streams = max(1, wait_streams)
        self.host, self.port = host, port
        self.events, self.books = load_capture(files, product)
        self.symbols = sorted({e.symbol for e in self.events})
        self.skew_ms = self._recorded_skew_ms()
        self.counts = dict(connections=0, subscriptions=0, snapshots=0, exchange_info=0, time=0, messages=0,
                           drops=0, gaps=0, replayed=0)
        self.finished = threading.Event()
        self.shift_ms = 0            # venue-time shift of the message being served (restamp)
        self._connections: list[Connection] = []
        self._subscribed: set = set()
        self._start = None           # asyncio.Event, made on the server's loop
        self._since_snapshot: dict[str, int | None] = {}  # diffs served since the symbol's last snapshot
        self.snapshot_ids: dict[str, list[int]] = {}  # lastUpdateId of each depth snapshot served, per symbol
        self._gaps_done: dict[str, int] = {}
        self._drops_left = self.faults.drops
        self._loop = None
        self._thread = None
        self._runner = None
        self._replay_task = None
        self._ready = threading.Event()
        self.order_routes = None     # the signed order endpoints, when asked for (spot and usdm)
        if orders is not None:
            instruments = {s: INSTRUMENTS[(product, s)] for s in self.symbols}
            if product == "spot":
                from tools.loopback_orders import OrderRoutes
                self.order_routes = OrderRoutes(self, instruments, **orders)
            elif product == "usdm":
                from tools.loopback_futures import FuturesRoutes
                self.order_routes = FuturesRoutes(self, instruments, **orders)
            else:
                raise ValueError("the loopback's order endpoints are spot's (/api/v3) and USD-M's (/fapi) only")

    def _recorded_skew_ms(self) -> int:
        """Median venue-minus-receive time in the capture: how far the venue's clock ran from the recorder's."""
        skews = sorted(e.data["E"] - e.recv_ns // 1_000_000 for e in self.events if "E" in e.data)
        return skews[len(skews) // 2] if skews else 0

    # --- HTTP -----------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        prefix = PRODUCTS[self.product]
        app.router.add_get(f"{prefix}/exchangeInfo", self._exchange_info)
        app.router.add_get(f"{prefix}/depth", self._depth)
        app.router.add_get(f"{prefix}/time", self._time)
        app.router.add_get(f"{prefix}/ping", self._ping)
        if self.order_routes is not None:
            self.order_routes.add_to(app)
        roots = ("", "/public", "/market", "/private") if self.product != "spot" else ("",)
        for root in roots:
            app.router.add_get(f"{root}/ws", self._ws_raw)
            app.router.add_get(f"{root}/ws/{{name}}", self._ws_raw)
            app.router.add_get(f"{root}/stream", self._ws_combined)
        return app

    def venue_now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.skew_ms

    async def _time(self, request):
        self.counts["time"] += 1
        return web.json_response({"serverTime": self.venue_now_ms()})

    async def _ping(self, request):
        return web.json_response({})

    async def _exchange_info(self, request):
        self.counts["exchange_info"] += 1
        symbols = [self._symbol_info(s) for s in self.symbols]
        body = {"timezone": "UTC", "serverTime": self.venue_now_ms(), "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}],
            "exchangeFilters": [], "symbols": symbols}
        if self.product != "spot":
            assets = sorted({INSTRUMENTS[(self.product, s)]["quote" if self.product == "usdm" else "base"]
                             for s in self.symbols})
            body["assets"] = [{"asset": a, "marginAvailable": True, "autoAssetExchange": "0"} for a in assets]
        return web.json_response(body)

    def _symbol_info(self, symbol: str) -> dict:
        spec = INSTRUMENTS[(self.product, symbol)]
        decimals = lambda s: len(s.partition(".")[2].rstrip("0")) if "." in s else 0  # noqa: E731
        filters = [{"filterType": "PRICE_FILTER", "minPrice": spec["tick"], "maxPrice": "4529764",
                    "tickSize": spec["tick"]},
                   {"filterType": "LOT_SIZE", "minQty": spec["step"], "maxQty": "9000", "stepSize": spec["step"]},
                   {"filterType": "MARKET_LOT_SIZE", "minQty": spec["step"], "maxQty": "120",
                    "stepSize": spec["step"]}]
        if self.product == "spot":
            return {"symbol": symbol, "status": "TRADING", "baseAsset": spec["base"], "baseAssetPrecision": 8,
                    "quoteAsset": spec["quote"], "quotePrecision": 8, "quoteAssetPrecision": 8,
                    "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                    "icebergAllowed": True, "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True,
                    "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": True, "filters": filters, "permissions": [],
                    "permissionSets": [["SPOT", "MARGIN"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                    "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]}
        info = {"symbol": symbol, "pair": spec["pair"], "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000, "baseAsset": spec["base"], "quoteAsset": spec["quote"],
                "marginAsset": spec["quote"] if self.product == "usdm" else spec["base"],
                "pricePrecision": decimals(spec["tick"]), "quantityPrecision": decimals(spec["step"]),
                "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
                "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
                "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000", "filters": filters,
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                               "TRAILING_STOP_MARKET"], "timeInForce": ["GTC", "IOC", "FOK", "GTX"]}
        if self.product == "usdm":
            info["status"] = "TRADING"
        else:
            info["contractStatus"] = "TRADING"
            info["contractSize"] = spec["contract_size"]
            info["equalQtyPrecision"] = 4
        return info

    async def _depth(self, request):
        symbol = request.query.get("symbol", "").upper()
        book = self.books.get(symbol)
        if book is None:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return web.json_response({"code": -1100, "msg": "Illegal characters found in parameter 'limit'."},
                                     status=400)
        self.counts["snapshots"] += 1
        self._since_snapshot[symbol] = 0
        self.snapshot_ids.setdefault(symbol, []).append(book.last_u)
        bids, asks = book.snapshot(max(1, min(limit, 5000)))
        body = {"lastUpdateId": book.last_u}
        if self.product != "spot":
            exch = book.exch_ms + self.shift_ms
            body.update({"E": exch, "T": exch})
            if self.product == "coinm":
                body.update({"symbol": symbol, "pair": INSTRUMENTS[(self.product, symbol)]["pair"]})
        body.update({"bids": bids, "asks": asks})
        if self.faults.snapshot_delay_ms > 0:
            await asyncio.sleep(self.faults.snapshot_delay_ms / 1e3)
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    # --- websockets -----------------------------------------------------------------------------------

    async def _ws_raw(self, request):
        name = request.match_info.get("name", "") or request.query.get("listenKey", "")
        if self.order_routes is not None and self.order_routes.is_listen_key(name):
            return await self.order_routes.serve_user_stream(request)
        return await self._serve_ws(request, combined=False, initial=[name] if "@" in name else [])

    async def _ws_combined(self, request):
        streams = [s for s in request.query.get("streams", "").split("/") if s]
        return await self._serve_ws(request, combined=True, initial=streams)

    def _subscribe(self, conn: Connection, streams) -> bool:
        for stream in streams:
            parts = stream.split("@") if isinstance(stream, str) else ()
            if len(parts) < 2 or parts[0].upper() not in self.books:
                return False
            # any channel of a served symbol is accepted; only the captured ones carry data
            symbol, channel = parts[0].upper(), _channel(stream) or parts[1]
            conn.streams[(symbol, channel)] = stream
            self.counts["subscriptions"] += 1
            self._subscribed.add((symbol, channel))
        if len(self._subscribed) >= self.wait_streams:
            self._start.set()
        return True

    async def _serve_ws(self, request, combined: bool, initial: list):
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=0)
        await ws.prepare(request)
        self.counts["connections"] += 1
        drop_after = 0
        if self.faults.drop_after and self._drops_left > 0:
            self._drops_left -= 1
            drop_after = self.faults.drop_after
        conn = Connection(request, ws, combined, drop_after)
        self._connections.append(conn)
        try:
            if initial and not self._subscribe(conn, initial):
                await ws.close(code=1008, message=b"Invalid stream name")
                return ws
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                await self._control(conn, msg.data)
        finally:
            self._connections.remove(conn)
        return ws

    async def _control(self, conn: Connection, text: str) -> None:
        try:
            req = orjson.loads(text)
            method, params, req_id = req.get("method"), req.get("params", []), req.get("id")
        except (orjson.JSONDecodeError, AttributeError):
            await conn.ws.send_str('{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}')
            return
        if method == "SUBSCRIBE":
            if not isinstance(params, list) or not self._subscribe(conn, params):
                await conn.ws.send_bytes(orjson.dumps({"error": {"code": 2, "msg": f"Invalid request: {params}"},
                                                      "id": req_id}))
                return
            await conn.ws.send_str(orjson.dumps({"result": None, "id": req_id}).decode())
        elif method == "UNSUBSCRIBE":
            for stream in params if isinstance(params, list) else ():
                parts = str(stream).split("@")
                conn.streams.pop((parts[0].upper(), _channel(stream) or parts[-1]), None)
            await conn.ws.send_str(orjson.dumps({"result": None, "id": req_id}).decode())
        elif method == "LIST_SUBSCRIPTIONS":
            await conn.ws.send_str(orjson.dumps({"result": list(conn.streams.values()), "id": req_id}).decode())
        else:
            await conn.ws.send_str(orjson.dumps({"error": {"code": 2, "msg": f"Unknown method {method}"},
                                                 "id": req_id}).decode())

    # --- the replay -----------------------------------------------------------------------------------

    def _withhold(self, e: Event) -> bool:
        """Fault injection: is this depth diff the one to leave out (the server's book still applies it)?
        The gap_at-th diff after each snapshot served, so each gap lands in a book a client has synced."""
        n = self._since_snapshot.get(e.symbol)
        if not self.faults.gap_at or n is None or self._gaps_done.get(e.symbol, 0) >= self.faults.gaps:
            return False
        self._since_snapshot[e.symbol] = n + 1
        if n + 1 < self.faults.gap_at:
            return False
        self._since_snapshot[e.symbol] = None  # the next gap waits for the next snapshot
        self._gaps_done[e.symbol] = self._gaps_done.get(e.symbol, 0) + 1
        self.counts["gaps"] += 1
        return True

    def _payload(self, e: Event, now_ns: int) -> dict:
        if not self.restamp:
            return e.data
        shift = now_ns // 1_000_000 - e.recv_ns // 1_000_000
        data = dict(e.data)
        for k in ("E", "T"):
            if k in data:
                data[k] += shift
        return data

    async def _replay(self) -> None:
        await self._start.wait()
        t0 = time.monotonic_ns()
        first = self.events[0].recv_ns if self.events else 0
        for e in self.events:
            if self.speed > 0:
                wait = (t0 + (e.recv_ns - first) / self.speed - time.monotonic_ns()) / 1e9
                if wait > 0.0005:  # sleeping per message would cost more than the pacing is worth
                    await asyncio.sleep(wait)
            withheld = False
            if e.channel == "depth":
                withheld = self._withhold(e)
                book = self.books[e.symbol]
                book.apply(e.data)
                book.exch_ms = e.data.get("T", e.data.get("E", 0))
                self.shift_ms = time.time_ns() // 1_000_000 - e.recv_ns // 1_000_000 if self.restamp else 0
            elif e.channel == "trade" and self.order_routes is not None and e.data.get("X", "MARKET") == "MARKET":
                # (futures prints liquidations and ADL too, as X = INSURANCE_FUND / ADL: not the book's trades)
                self.order_routes.account.on_trade(e.symbol, float(e.data["p"]), float(e.data["q"]),
                                                   self.venue_now_ms())
            self.counts["replayed"] += 1
            if not withheld and any((e.symbol, e.channel) in c.streams for c in self._connections):
                await self._send(e, self._payload(e, time.time_ns()))
            if self.speed == 0:
                await asyncio.sleep(0)
        self.finished.set()

    async def _send(self, e: Event, data: dict) -> None:
        raw = None
        for conn in list(self._connections):
            stream = conn.streams.get((e.symbol, e.channel))
            if stream is None or conn.ws.closed:
                continue
            if conn.combined:
                text = orjson.dumps({"stream": stream, "data": data})
            else:
                raw = raw or orjson.dumps(data)
                text = raw
            try:
                await conn.ws.send_str(text.decode())
            except (ConnectionResetError, RuntimeError):
                continue
            conn.sent += 1
            self.counts["messages"] += 1
            if conn.drop_after and conn.sent >= conn.drop_after:
                self.counts["drops"] += 1
                conn.drop_after = 0
                if conn.request.transport is not None:
                    conn.request.transport.abort()  # no close frame: the client sees a dropped connection

    def publish(self, symbol: str, channel: str, data: dict) -> None:
        """Send one message of the venue's format to the subscribers of (symbol, channel), from any thread:
        for streams the capture does not have (mark price, liquidations) and for operators' experiments."""
        future = asyncio.run_coroutine_threadsafe(self._send(Event(0, symbol, channel, data), data), self._loop)
        future.result(10)

    def _routes(self):
        if self.order_routes is None:
            raise ValueError("this server has no order endpoints (orders=...)")
        return self.order_routes

    def trade(self, symbol: str, price: float, size: float) -> None:
        """A print the capture does not have, from any thread: resting orders of the order endpoints at or through
        ``price`` fill as they would on a replayed trade (the market streams do not see it)."""
        self._routes()
        async def fill():
            self.order_routes.account.on_trade(symbol, price, size, self.venue_now_ms())
        asyncio.run_coroutine_threadsafe(fill(), self._loop).result(10)

    def inject(self, kind: str, times: int = 1, seconds: float = 0.0, code: int | None = None,
               msg: str | None = None, placements_only: bool = False, amends_only: bool = False) -> None:
        """Arm a fault of the order endpoints (tools.loopback_orders: 429, 503, slow, reject_next, ack_after_fill,
        drop_user_stream; the first three for order placements only with ``placements_only``, for amendments only
        with ``amends_only``), from any thread but the server's own; returns once it is armed (or, for
        drop_user_stream, done)."""
        routes = self._routes()
        async def arm():
            dropping = routes.inject(kind, times, seconds, code, msg, placements_only, amends_only)
            if dropping is not None:
                await dropping
        asyncio.run_coroutine_threadsafe(arm(), self._loop).result(10)

    def account_snapshot(self) -> dict:
        """The order endpoints' account as plain data, from any thread: ``orders`` and ``open_orders`` (dicts
        with symbol, orderId, clientOrderId, side, type, timeInForce, price, qty, executed, quote, status,
        reduceOnly, time, updateTime), ``trades`` (tradeId, orderId, clientOrderId, symbol, side, price, qty, fee,
        feeAsset, maker, time, realizedPnl), ``balances`` (asset -> free, locked, total) and ``positions``
        (futures: symbol -> qty signed, entry_price, realized_pnl; empty on spot)."""
        routes = self._routes()
        async def take():
            return routes.snapshot()
        return asyncio.run_coroutine_threadsafe(take(), self._loop).result(10)

    def credit(self, asset: str, amount: float) -> None:
        """Change the spot account's ``asset`` balance by ``amount`` behind the trading's back (a deposit, a
        withdrawal, a trade by hand elsewhere), from any thread but the server's own."""
        routes = self._routes()
        async def change():
            routes.account.balances[asset] = routes.account.balances.get(asset, 0.0) + amount
        asyncio.run_coroutine_threadsafe(change(), self._loop).result(10)

    def subscribed(self, symbol: str, channel: str) -> bool:
        return (symbol, channel) in self._subscribed

    # --- lifecycle ------------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Bind and replay on the running loop until cancelled."""
        self._start = asyncio.Event()
        self._runner = web.AppRunner(self.app(), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._replay_task = asyncio.ensure_future(self._replay())
        self._ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            self._replay_task.cancel()
            await self._runner.cleanup()

    def start(self) -> "LoopbackServer":
        """Serve from a background thread; returns once the port is bound."""
        def main():
            self._loop = asyncio.new_event_loop()
            self._main = self._loop.create_task(self.serve())
            try:
                self._loop.run_until_complete(self._main)
            except asyncio.CancelledError:
                pass
            finally:
                self._loop.close()
        self._thread = threading.Thread(target=main, name="binance-loopback", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("loopback server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._main.cancel)
            self._thread.join(10)

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.binance_loopback", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="capture files of one product")
    ap.add_argument("--product", default="spot", choices=sorted(PRODUCTS))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port (printed)")
    ap.add_argument("--speed", type=float, default=1.0, help="1 = as recorded, N = N times faster, 0 = max")
    ap.add_argument("--no-restamp", action="store_true", help="serve the recorded venue times unchanged")
    ap.add_argument("--wait-streams", type=int, default=1,
                    help="start the replay once this many streams are subscribed")
    ap.add_argument("--drop-after", type=int, default=0, help="drop a connection after sending it N messages")
    ap.add_argument("--drops", type=int, default=1, help="...for this many connections")
    ap.add_argument("--gap-at", type=int, default=0,
                    help="withhold the Nth depth diff after each snapshot (a sequence gap)")
    ap.add_argument("--gaps", type=int, default=1, help="...this many times per symbol")
    ap.add_argument("--snapshot-delay-ms", type=float, default=0.0,
                    help="hold each depth snapshot this long while the stream goes on (a slow REST)")
    args = ap.parse_args(argv)
    try:
        server = LoopbackServer(args.files, args.product, args.speed, not args.no_restamp,
                                Faults(args.drop_after, args.drops, args.gap_at, args.gaps, args.snapshot_delay_ms),
                                args.wait_streams,
                                args.host, args.port)
    except (CaptureError, OSError) as exc:
        print(f"binance_loopback: {exc}")
        return 2
    except OptionError as exc:
        print(f"binance_loopback: --{exc.option.replace('_', '-')} {exc.text}")
        return 2
    server.start()
    signal.signal(signal.SIGTERM, _interrupt)  # a supervisor's stop is a clean stop, like Ctrl-C
    exchange = {"spot": "binance", "usdm": "binanceusdm", "coinm": "binancecoinm"}[args.product]
    v = args.product
    print(f"binance loopback ({v}: {', '.join(server.symbols)}) on {server.rest_url}; a feed for it:\n"
          f'[feed]\nsource = "ccxt"\nvenues = ["{v}"]\nsymbols = {orjson.dumps(server.symbols).decode()}\n'
          f'ccxt_exchanges = ["{v}={exchange}"]\nccxt_rest_urls = ["{v}={server.rest_url}"]\n'
          f'ccxt_ws_urls = ["{v}={server.ws_url}"]', flush=True)
    try:
        while not server.finished.wait(1.0):
            pass
        print(f"replay finished: {server.counts}", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print(f"served: {server.counts}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
