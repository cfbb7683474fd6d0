"""The loopback Binance's USDⓈ-M futures order endpoints, driven by the real ccxt binanceusdm client: orders by
client order id, positions and the wallet from fills, amend in place, cancel-all, the dead-man's switch
(countdownCancelAll), the venue's refusals and which ccxt exception each becomes, and the futures user-data
stream through ccxt.pro (watch_orders, watch_my_trades, watch_positions)."""
import asyncio
import time
from pathlib import Path

import ccxt
import ccxt.pro
import pytest

from pipeline.ccxt_origins import replace_origin
from tools.binance_loopback import LoopbackServer

CAPTURE = Path(__file__).resolve().parents[1] / "data" / "binance-ws-capture" / "usdm_btcusdt_20240808.gz"
KEY, SECRET = "test-key", "test-secret"  # the loopback's own test credentials: no real account anywhere
SYMBOL = "BTC/USDT:USDT"
OPTIONS = {"fetchCurrencies": False, "fetchMargins": False}


@pytest.fixture(scope="module")
def server():
    with LoopbackServer([CAPTURE], "usdm", speed=0, wait_streams=99,
                        orders=dict(api_key=KEY, secret=SECRET, balance=10_000.0, leverage=20)) as s:
        yield s


def client(server, venue_errors=False):
    """ccxt.binanceusdm on the loopback. ccxt picks its per-product error table (``exceptions["linear"]``) by the
    request URL's host (fapi.binance.com), so on a loopback URL only its generic table applies; with
    ``venue_errors`` the linear table is merged in, giving the exception classes ccxt raises on the venue."""
    ex = ccxt.binanceusdm({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False, "options": dict(OPTIONS)})
    api = dict(ex.urls["api"])
    api.pop("ws", None)
    ex.urls["api"] = replace_origin(api, server.rest_url)
    if venue_errors:
        ex.exceptions["exact"] = {**ex.exceptions["exact"], **ex.exceptions["linear"]["exact"]}
    ex.load_markets()
    return ex


def position(server):
    return server.account_snapshot()["positions"]["BTCUSDT"]


def flatten(ex, server):
    """Close whatever position earlier steps left (a reduce-only market order), so a test starts flat."""
    qty = position(server)["qty"]
    if abs(qty) > 1e-9:
        ex.create_order(SYMBOL, "market", "sell" if qty > 0 else "buy", abs(qty), None, {"reduceOnly": True})


def test_orders_by_client_order_id_open_orders_and_the_venues_refusals(server):
    ex = client(server)
    below = max(server.books["BTCUSDT"].bids) - 500.0
    order = ex.create_order(SYMBOL, "limit", "buy", 0.002, below, {"newClientOrderId": "bot4-f1-1"})
    assert order["status"] == "open" and order["clientOrderId"] == "bot4-f1-1" and order["amount"] == 0.002
    found = ex.fetch_order(None, SYMBOL, {"origClientOrderId": "bot4-f1-1"})
    assert found["id"] == order["id"] and found["price"] == pytest.approx(below)
    assert ex.fetch_open_order(order["id"], SYMBOL)["clientOrderId"] == "bot4-f1-1"  # GET /fapi/v1/openOrder
    assert [o["clientOrderId"] for o in ex.fetch_open_orders(SYMBOL)] == ["bot4-f1-1"]
    # an open order has that client id: -4116 (InvalidOrder on the venue; only ExchangeError on a loopback URL)
    with pytest.raises(ccxt.ExchangeError, match="-4116.*ClientOrderId is duplicated") as dup:
        ex.create_order(SYMBOL, "limit", "buy", 0.002, below, {"newClientOrderId": "bot4-f1-1"})
    assert dup.type is ccxt.ExchangeError
    with pytest.raises(ccxt.InvalidOrder, match="-4116"):
        client(server, venue_errors=True).create_order(SYMBOL, "limit", "buy", 0.002, below,
                                                        {"newClientOrderId": "bot4-f1-1"})
    cancelled = ex.cancel_order(None, SYMBOL, {"origClientOrderId": "bot4-f1-1"})
    assert cancelled["status"] == "canceled" and cancelled["clientOrderId"] == "bot4-f1-1"
    assert ex.fetch_open_orders(SYMBOL) == []
    with pytest.raises(ccxt.OrderNotFound):  # -2011
        ex.cancel_order(None, SYMBOL, {"origClientOrderId": "bot4-f1-1"})
    with pytest.raises(ccxt.OrderNotFound):  # -2013
        ex.fetch_order(None, SYMBOL, {"origClientOrderId": "never-sent"})
    # margin: 10,000 USDT at 20x carries ~200k notional; -2019 (InsufficientFunds on the venue)
    with pytest.raises(ccxt.ExchangeError, match="-2019.*Margin is insufficient"):
        ex.create_order(SYMBOL, "limit", "buy", 5.0, below, {"newClientOrderId": "bot4-f1-2"})
    with pytest.raises(ccxt.InsufficientFunds):
        client(server, venue_errors=True).create_order(SYMBOL, "limit", "buy", 5.0, below)
    best_bid, best_ask = max(server.books["BTCUSDT"].bids), min(server.books["BTCUSDT"].asks)
    with pytest.raises(ccxt.InvalidOrder, match="-5022"):  # post-only (GTX) that would take
        ex.create_order(SYMBOL, "limit", "buy", 0.001, best_ask, {"postOnly": True})
    with pytest.raises(ccxt.InvalidOrder, match="-5021"):  # FOK larger than what crosses
        ex.create_order(SYMBOL, "limit", "sell", 3.0, best_bid, {"timeInForce": "FOK"})
    with pytest.raises(ccxt.ExchangeError, match="-2022.*ReduceOnly"):  # nothing to reduce
        ex.create_order(SYMBOL, "limit", "sell", 0.001, best_ask + 100, {"reduceOnly": True})
    server.inject("reject_next")  # the gateway's rejected path: nothing placed
    with pytest.raises(ccxt.InvalidOrder, match="PRICE_FILTER"):
        ex.create_order(SYMBOL, "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-f1-3"})
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(None, SYMBOL, {"origClientOrderId": "bot4-f1-3"})
    assert server.account_snapshot()["open_orders"] == []


def test_fills_make_the_position_and_the_wallet_pays_fees_and_takes_realized_pnl(server):
    ex = client(server)
    flatten(ex, server)
    start = ex.fetch_balance()["info"]["totalWalletBalance"]
    book = server.books["BTCUSDT"]
    best_ask = min(book.asks)
    assert float(book.asks[best_ask][1]) >= 0.01  # the capture's top level covers it: one price
    bought = ex.create_order(SYMBOL, "market", "buy", 0.01, None, {"newClientOrderId": "bot4-f2-1"})
    assert bought["status"] == "closed" and bought["average"] == pytest.approx(best_ask)
    [pos] = ex.fetch_positions([SYMBOL])
    assert pos["side"] == "long" and pos["contracts"] == pytest.approx(0.01)
    assert pos["entryPrice"] == pytest.approx(best_ask) and pos["marginMode"] == "cross" and not pos["hedged"]
    [v2] = ex.fetch_positions([SYMBOL], {"useV2": True})  # /fapi/v2/positionRisk: leverage too
    assert v2["contracts"] == pytest.approx(0.01) and v2["leverage"] == 20
    [acct] = ex.fetch_positions([SYMBOL], {"method": "account"})  # /fapi/v3/account's positions
    assert acct["contracts"] == pytest.approx(0.01) and acct["side"] == "long"
    v2_balance = ex.fetch_balance({"useV2": True})["USDT"]  # /fapi/v2/account
    assert v2_balance["used"] == pytest.approx(0.01 * best_ask / 20, rel=1e-3)
    # a resting sell above the book fills on a print through it: part of the long is closed at a profit
    above = best_ask + 200.0
    ex.create_order(SYMBOL, "limit", "sell", 0.004, above, {"newClientOrderId": "bot4-f2-2"})
    server.trade("BTCUSDT", above + 1.0, 1.0)
    [pos] = ex.fetch_positions([SYMBOL])
    assert pos["contracts"] == pytest.approx(0.006) and pos["entryPrice"] == pytest.approx(best_ask)
    trades = {t["order"]: t for t in ex.fetch_my_trades(SYMBOL)}
    sold = trades[ex.fetch_order(None, SYMBOL, {"origClientOrderId": "bot4-f2-2"})["id"]]
    assert sold["takerOrMaker"] == "maker" and sold["price"] == pytest.approx(above)
    assert float(sold["info"]["realizedPnl"]) == pytest.approx(0.004 * 200.0)
    fees = 0.01 * best_ask * 0.0005 + 0.004 * above * 0.0005
    wallet = float(ex.fetch_balance()["info"]["totalWalletBalance"])
    assert wallet == pytest.approx(float(start) - fees + 0.8)
    # reduce-only closes the rest; the position is gone and the balance's free + used is the wallet
    ex.create_order(SYMBOL, "market", "sell", 0.006, None, {"reduceOnly": True, "newClientOrderId": "bot4-f2-3"})
    assert ex.fetch_positions([SYMBOL]) == []
    balance = ex.fetch_balance()
    assert balance["USDT"]["used"] == pytest.approx(0.0)
    assert balance["USDT"]["free"] == pytest.approx(float(balance["info"]["totalWalletBalance"]))
    snap = server.account_snapshot()
    assert snap["positions"]["BTCUSDT"]["qty"] == pytest.approx(0.0)
    mine = [t for t in snap["trades"] if t["clientOrderId"].startswith("bot4-f2-")]
    assert {t["clientOrderId"] for t in mine} == {"bot4-f2-1", "bot4-f2-2", "bot4-f2-3"}
    assert snap["balances"]["USDT"]["total"] == pytest.approx(float(balance["info"]["totalWalletBalance"]))


def test_edit_order_amends_in_place_at_the_back_of_the_queue(server):
    ex = client(server)
    below = max(server.books["BTCUSDT"].bids) - 300.0
    first = ex.create_order(SYMBOL, "limit", "buy", 0.002, below, {"newClientOrderId": "bot4-f3-1"})
    second = ex.create_order(SYMBOL, "limit", "buy", 0.002, below, {"newClientOrderId": "bot4-f3-2"})
    # ccxt sends PUT /fapi/v1/order (orderId, side, quantity, price): same id, new quantity, back of the queue
    edited = ex.edit_order(first["id"], SYMBOL, "limit", "buy", 0.003, below)
    assert edited["id"] == first["id"] and edited["clientOrderId"] == "bot4-f3-1"
    assert edited["amount"] == pytest.approx(0.003) and edited["status"] == "open"
    server.trade("BTCUSDT", below, 0.002)  # one print at the shared price: the unedited order is now first
    assert ex.fetch_order(second["id"], SYMBOL)["status"] == "closed"
    assert ex.fetch_order(first["id"], SYMBOL)["filled"] == 0
    with pytest.raises(ccxt.ExchangeError, match="-5027"):  # the same price and quantity
        ex.edit_order(first["id"], SYMBOL, "limit", "buy", 0.003, below)
    # amended through the book: it takes at once, as a new order would
    best_ask = min(server.books["BTCUSDT"].asks)
    taken = ex.edit_order(first["id"], SYMBOL, "limit", "buy", 0.001, best_ask)
    assert taken["status"] == "closed" and taken["average"] == pytest.approx(best_ask)
    with pytest.raises(ccxt.OrderNotFound):  # nothing open to amend
        ex.edit_order(first["id"], SYMBOL, "limit", "buy", 0.002, below)
    flatten(ex, server)


def test_cancel_all_orders_cancels_every_open_order_of_the_symbol(server):
    ex = client(server)
    below = max(server.books["BTCUSDT"].bids) - 400.0
    for i in range(3):
        ex.create_order(SYMBOL, "limit", "buy", 0.001, below - i, {"newClientOrderId": f"bot4-f4-{i}"})
    ex.cancel_all_orders(SYMBOL)
    assert ex.fetch_open_orders(SYMBOL) == []
    assert {ex.fetch_order(None, SYMBOL, {"origClientOrderId": f"bot4-f4-{i}"})["status"]
            for i in range(3)} == {"canceled"}
    ex.cancel_all_orders(SYMBOL)  # nothing open: the venue still answers 200


def test_the_dead_mans_switch_cancels_open_orders_when_not_refreshed_and_a_heartbeat_keeps_them(server):
    ex = client(server)
    below = max(server.books["BTCUSDT"].bids) - 450.0
    for i in range(2):
        ex.create_order(SYMBOL, "limit", "buy", 0.001, below - i, {"newClientOrderId": f"bot4-f5-{i}"})
    fired = server.order_routes.counts["countdowns_fired"]
    answer = ex.fapiPrivatePostCountdownCancelAll({"symbol": "BTCUSDT", "countdownTime": 800})
    assert answer == {"symbol": "BTCUSDT", "countdownTime": "800"}
    for _ in range(6):  # a heartbeat every 0.2 s keeps a 0.8 s countdown from ever elapsing
        time.sleep(0.2)
        ex.fapiPrivatePostCountdownCancelAll({"symbol": "BTCUSDT", "countdownTime": 800})
    assert len(ex.fetch_open_orders(SYMBOL)) == 2 and server.order_routes.counts["countdowns_fired"] == fired
    time.sleep(1.2)  # the heartbeat stopped (the host died): the venue cancels everything of the symbol
    assert ex.fetch_open_orders(SYMBOL) == []
    assert server.order_routes.counts["countdowns_fired"] == fired + 1
    # 0 disables a running countdown
    ex.create_order(SYMBOL, "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-f5-2"})
    ex.fapiPrivatePostCountdownCancelAll({"symbol": "BTCUSDT", "countdownTime": 300})
    ex.fapiPrivatePostCountdownCancelAll({"symbol": "BTCUSDT", "countdownTime": 0})
    time.sleep(0.5)
    assert [o["clientOrderId"] for o in ex.fetch_open_orders(SYMBOL)] == ["bot4-f5-2"]
    ex.cancel_all_orders(SYMBOL)


async def until(ex, client_id: str, status: str, timeout: float = 5.0) -> list:
    """watch_orders until the order reaches ``status``: every order update seen on the way (copies: ccxt updates
    its order objects in place). An update that arrives while no watch is pending resolves nothing (ccxt keeps it
    only in ``ex.orders``), so each short watch is followed by a look at that cache."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            batch = await asyncio.wait_for(ex.watch_orders(SYMBOL), max(0.0, min(0.25, deadline - time.monotonic())))
            seen += [dict(o) for o in batch]
        except asyncio.TimeoutError:
            if time.monotonic() >= deadline:
                raise
        cached = [dict(o) for o in (ex.orders or []) if o["clientOrderId"] == client_id]
        if any(o["clientOrderId"] == client_id and o["status"] == status for o in seen + cached):
            return seen + cached


def pro_client(server):
    """ccxt.pro.binanceusdm on the loopback (REST and the user stream)."""
    ex = ccxt.pro.binanceusdm({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False, "options": dict(OPTIONS)})
    api = dict(ex.urls["api"])
    ws = api.pop("ws")
    ex.urls["api"] = {**replace_origin(api, server.rest_url), "ws": replace_origin(ws, server.ws_url)}
    return ex


def test_ccxt_pro_watches_orders_trades_and_positions_on_the_futures_user_stream(server):
    async def scenario():
        ex = pro_client(server)
        loop = asyncio.get_running_loop()
        routes = server.order_routes
        try:
            await ex.load_markets()
            start = len(await ex.fetch_positions([SYMBOL]))
            orders = asyncio.ensure_future(ex.watch_orders(SYMBOL))
            for _ in range(200):  # listen key, then /private/ws?listenKey=...
                if routes.user_streams:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            below = max(server.books["BTCUSDT"].bids) - 350.0
            await ex.create_order(SYMBOL, "limit", "buy", 0.003, below, {"newClientOrderId": "bot4-f6-1"})
            seen = [dict(o) for o in await asyncio.wait_for(orders, 5)]
            orders = asyncio.ensure_future(ex.watch_orders(SYMBOL))
            trades = asyncio.ensure_future(ex.watch_my_trades(SYMBOL))
            positions = asyncio.ensure_future(ex.watch_positions([SYMBOL]))
            await asyncio.sleep(0.2)
            await loop.run_in_executor(None, server.trade, "BTCUSDT", below, 0.003)
            seen += [dict(o) for o in await asyncio.wait_for(orders, 5)]
            fills = [dict(t) for t in await asyncio.wait_for(trades, 5)]
            held = [dict(p) for p in await asyncio.wait_for(positions, 5)]
            # the dead-man's switch, seen on the stream
            await ex.create_order(SYMBOL, "limit", "buy", 0.001, below - 10, {"newClientOrderId": "bot4-f6-2"})
            orders = asyncio.ensure_future(until(ex, "bot4-f6-2", "canceled"))
            await asyncio.sleep(0.1)
            await ex.fapiPrivatePostCountdownCancelAll({"symbol": "BTCUSDT", "countdownTime": 200})
            seen += await orders
            # a dropped stream: the pending watch fails at once, a new one reconnects with the same key
            orders = asyncio.ensure_future(ex.watch_orders(SYMBOL))
            await asyncio.sleep(0.1)
            await loop.run_in_executor(None, server.inject, "drop_user_stream")
            with pytest.raises(ccxt.NetworkError):
                await asyncio.wait_for(orders, 5)
            orders = asyncio.ensure_future(until(ex, "bot4-f6-3", "closed"))
            for _ in range(100):
                if routes.user_streams:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.1)
            await ex.create_order(SYMBOL, "market", "sell", 0.003, None, {"reduceOnly": True,
                                                                         "newClientOrderId": "bot4-f6-3"})
            after_drop = await orders
            return start, seen, fills, held, after_drop
        finally:
            await ex.close()

    start, seen, fills, held, after_drop = asyncio.run(scenario())
    assert start == 0
    mine = [o for o in seen if o["clientOrderId"] == "bot4-f6-1"]
    assert [o["status"] for o in mine] == ["open", "closed"] and mine[-1]["filled"] == pytest.approx(0.003)
    assert [(t["amount"], t["takerOrMaker"]) for t in fills] == [(pytest.approx(0.003), "maker")]
    assert fills[0]["fee"]["currency"] == "USDT" and fills[0]["fee"]["cost"] > 0
    assert len(held) == 1 and held[0]["symbol"] == SYMBOL and held[0]["contracts"] == pytest.approx(0.003)
    assert held[0]["side"] == "long"
    assert any(o["clientOrderId"] == "bot4-f6-2" and o["status"] == "canceled" for o in seen)
    assert [o["status"] for o in after_drop if o["clientOrderId"] == "bot4-f6-3"][-1] == "closed"
    assert server.account_snapshot()["positions"]["BTCUSDT"]["qty"] == pytest.approx(0.0)


def test_an_amendment_finds_the_order_by_its_id_and_faults_can_be_aimed_at_amendments(server):
    ex = client(server)
    routes = server.order_routes
    below = max(server.books["BTCUSDT"].bids) - 320.0
    first = ex.create_order(SYMBOL, "limit", "buy", 0.002, below, {"newClientOrderId": "bot4-f7-1"})
    second = ex.create_order(SYMBOL, "limit", "buy", 0.002, below, {"newClientOrderId": "bot4-f7-2"})
    # ccxt's request always carries orderId: without an id it sends "orderId=None", which the venue refuses (-1100)
    with pytest.raises(ccxt.BadRequest, match="-1100"):
        ex.edit_order(None, SYMBOL, "limit", "buy", 0.003, below, {"origClientOrderId": "bot4-f7-1"})
    # both ids: the venue takes the order id
    edited = ex.edit_order(second["id"], SYMBOL, "limit", "buy", 0.003, below, {"origClientOrderId": "bot4-f7-1"})
    assert (edited["clientOrderId"], edited["amount"]) == ("bot4-f7-2", pytest.approx(0.003))
    assert ex.fetch_order(first["id"], SYMBOL)["amount"] == pytest.approx(0.002)
    # a fault for amendments only: a query passes it by; every amendment that arrives is counted, the refused too
    puts = routes.requests[("PUT", "/fapi/v1/order")]
    server.inject("503", amends_only=True)
    assert ex.fetch_order(first["id"], SYMBOL)["status"] == "open"
    with pytest.raises(ccxt.ExchangeNotAvailable):
        ex.edit_order(first["id"], SYMBOL, "limit", "buy", 0.004, below, {"origClientOrderId": "bot4-f7-1"})
    assert ex.fetch_order(first["id"], SYMBOL)["amount"] == pytest.approx(0.002)   # nothing done
    ex.edit_order(first["id"], SYMBOL, "limit", "buy", 0.004, below, {"origClientOrderId": "bot4-f7-1"})
    assert routes.requests[("PUT", "/fapi/v1/order")] - puts == 2
    # the venue's rule: an amendment to no more than what is filled cancels the order
    ex.cancel_order(second["id"], SYMBOL)
    server.trade("BTCUSDT", below, 0.001)
    assert ex.fetch_order(first["id"], SYMBOL)["filled"] == pytest.approx(0.001)
    ended = ex.edit_order(first["id"], SYMBOL, "limit", "buy", 0.001, below - 10)
    assert ended["status"] == "canceled" and ended["filled"] == pytest.approx(0.001)
    flatten(ex, server)


def test_ccxt_pro_takes_an_amendment_from_the_futures_user_stream(server):
    async def scenario():
        ex = pro_client(server)
        try:
            await ex.load_markets()
            below = max(server.books["BTCUSDT"].bids) - 360.0
            opened = asyncio.ensure_future(until(ex, "bot4-f8-1", "open"))
            for _ in range(200):
                if server.order_routes.user_streams:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            placed = await ex.create_order(SYMBOL, "limit", "buy", 0.002, below, {"newClientOrderId": "bot4-f8-1"})
            await opened
            updates = asyncio.ensure_future(ex.watch_orders(SYMBOL))
            await asyncio.sleep(0.1)
            await ex.edit_order(placed["id"], SYMBOL, "limit", "buy", 0.003, below + 5, {"origClientOrderId":
                                                                                        "bot4-f8-1"})
            seen = [dict(o) for o in await asyncio.wait_for(updates, 5)]
            await ex.cancel_order(placed["id"], SYMBOL)
            return placed, seen
        finally:
            await ex.close()

    placed, seen = asyncio.run(scenario())
    (update,) = [o for o in seen if o["clientOrderId"] == "bot4-f8-1"]
    assert update["id"] == placed["id"] and update["status"] == "open"
    assert (update["price"], update["amount"], update["filled"]) == (pytest.approx(placed["price"] + 5),
                                                                     pytest.approx(0.003), 0)
    assert (update["info"]["x"], update["info"]["X"]) == ("AMENDMENT", "NEW") and update["lastUpdateTimestamp"] > 0
