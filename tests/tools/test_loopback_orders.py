"""The loopback Binance's spot order endpoints, driven by the real ccxt and ccxt.pro clients: place, query, cancel
by client order id, fills against the replayed book, balances locked by resting orders, edit_order as
cancel-replace, cancel-all, the venue's own errors (bad signature, duplicate client order id, insufficient
balance, unknown orders) with the ccxt exception each becomes, the faults (429, 503, a slow answer,
reject_next, ack_after_fill, drop_user_stream) and the account snapshot tests read."""
import asyncio
import time
from pathlib import Path

import ccxt
import ccxt.pro
import pytest

from pipeline.ccxt_origins import replace_origin
from tools.binance_loopback import LoopbackServer

CAPTURE = Path(__file__).resolve().parents[1] / "data" / "binance-ws-capture" / "spot_btcusdt_20240808.gz"
KEY, SECRET = "test-key", "test-secret"  # the loopback's own test credentials: no real account anywhere
OPTIONS = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}


@pytest.fixture(scope="module")
def server():
    with LoopbackServer([CAPTURE], "spot", speed=0, wait_streams=99,
                        orders=dict(api_key=KEY, secret=SECRET, balances={"USDT": 100_000.0, "BTC": 1.0})) as s:
        yield s


def client(server, secret=SECRET):
    ex = ccxt.binance({"apiKey": KEY, "secret": secret, "enableRateLimit": False, "options": OPTIONS})
    api = dict(ex.urls["api"])
    api.pop("ws", None)
    ex.urls["api"] = replace_origin(api, server.rest_url)
    ex.load_markets()
    return ex


def test_an_ioc_buy_takes_the_book_level_by_level_and_the_balances_follow(server):
    ex = client(server)
    book = server.books["BTCUSDT"]
    best_ask = min(book.asks)
    order = ex.create_order("BTC/USDT", "limit", "buy", 0.001, best_ask, {"timeInForce": "IOC",
                                                                           "newClientOrderId": "bot4-t1-1"})
    assert order["clientOrderId"] == "bot4-t1-1" and order["status"] == "closed"
    assert order["filled"] == pytest.approx(min(0.001, float(book.asks[best_ask][1])))
    assert order["average"] == pytest.approx(best_ask)
    again = ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "bot4-t1-1"})
    assert again["id"] == order["id"] and again["filled"] == order["filled"]
    trades = ex.fetch_my_trades("BTC/USDT")
    assert sum(t["amount"] for t in trades if t["order"] == order["id"]) == pytest.approx(order["filled"])
    usdt = ex.fetch_balance()["USDT"]["free"]
    assert usdt == pytest.approx(100_000.0 - order["filled"] * best_ask * 1.001)


def test_a_resting_order_is_open_until_cancelled_by_its_client_order_id(server):
    ex = client(server)
    below = max(server.books["BTCUSDT"].bids) - 500.0
    order = ex.create_order("BTC/USDT", "limit", "buy", 0.002, below, {"newClientOrderId": "bot4-t1-2"})
    assert order["status"] == "open" and order["filled"] == 0
    assert [o["clientOrderId"] for o in ex.fetch_open_orders("BTC/USDT")] == ["bot4-t1-2"]
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):  # the same client id while it is open
        ex.create_order("BTC/USDT", "limit", "buy", 0.002, below, {"newClientOrderId": "bot4-t1-2"})
    cancelled = ex.cancel_order(None, "BTC/USDT", {"origClientOrderId": "bot4-t1-2"})
    assert cancelled["status"] == "canceled" and ex.fetch_open_orders("BTC/USDT") == []
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(None, "BTC/USDT", {"origClientOrderId": "bot4-t1-2"})  # already cancelled
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "never-sent"})


def test_the_venue_refuses_a_bad_signature_and_an_order_the_balance_cannot_pay(server):
    with pytest.raises(ccxt.AuthenticationError, match="Signature for this request is not valid"):
        client(server, secret="wrong").create_order("BTC/USDT", "limit", "buy", 0.001, 1000.0)
    ex = client(server)
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order("BTC/USDT", "limit", "sell", 5.0, 1_000_000.0)  # holds 1 BTC
    refused = server.order_routes.counts["refused"]
    assert refused >= 2


def test_the_matching_engine_fills_resting_orders_on_trades_through_them_and_fok_all_or_nothing():
    from tools.binance_loopback import Book
    from tools.loopback_orders import Account, VenueError
    book = Book(bids={99.0: ("99.0", "1.0")}, asks={101.0: ("101.0", "0.5"), 102.0: ("102.0", "0.5")})
    acct = Account({"USDT": 10_000.0, "BTC": 0.0}, {"BTCUSDT": {"base": "BTC", "quote": "USDT"}}, fee_rate=0.0)
    rest = acct.place(book, "BTCUSDT", "BUY", "LIMIT", "GTC", 100.0, 1.0, "a", 1)
    assert rest.status == "NEW"
    acct.on_trade("BTCUSDT", 100.5, 5.0, 2)  # above its price: no fill
    acct.on_trade("BTCUSDT", 100.0, 0.4, 3)  # at its price: 0.4 of it
    assert rest.status == "PARTIALLY_FILLED" and rest.executed == pytest.approx(0.4)
    acct.on_trade("BTCUSDT", 99.0, 5.0, 4)   # through it: the rest, at its own price
    assert rest.status == "FILLED" and rest.quote_done == pytest.approx(100.0)
    fok = acct.place(book, "BTCUSDT", "BUY", "LIMIT", "FOK", 102.0, 1.5, "b", 5)  # only 1.0 to take
    assert fok.status == "EXPIRED" and fok.executed == 0
    ioc = acct.place(book, "BTCUSDT", "BUY", "LIMIT", "IOC", 102.0, 1.5, "c", 6)
    assert ioc.status == "EXPIRED" and ioc.executed == pytest.approx(1.0) and ioc.quote_done == pytest.approx(101.5)
    with pytest.raises(VenueError, match="immediately match"):
        acct.place(book, "BTCUSDT", "BUY", "LIMIT_MAKER", "GTC", 101.0, 0.1, "d", 7)
    assert acct.balances["BTC"] == pytest.approx(2.0)


class Recording(ccxt.pro.binance):
    """The real ccxt.pro client, with every user-data message it handles kept (time, message) in ``seen``."""

    def handle_message(self, client, message):
        self.seen.append((time.monotonic(), message))
        return super().handle_message(client, message)


def pro_client(server):
    ex = Recording({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False, "options": OPTIONS})
    ex.seen = []
    api = dict(ex.urls["api"])
    ws = api.pop("ws")
    ex.urls["api"] = {**replace_origin(api, server.rest_url), "ws": replace_origin(ws, server.ws_url)}
    return ex


async def subscribed(server, before=0):
    for _ in range(200):  # until subscribed (userDataStream.subscribe.signature on /ws-api/v3)
        if len(server.order_routes.user_streams) > before:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)  # ccxt has the subscription's answer


def reports(ex, client_id):
    """The executionReports the client received for one client order id, in arrival order: (time, x, X)."""
    out = []
    for t, msg in ex.seen:
        event = msg.get("event", msg) if isinstance(msg, dict) else {}
        if event.get("e") == "executionReport" and client_id in (event.get("c"), event.get("C")):
            out.append((t, event["x"], event["X"]))
    return out


def test_ccxt_pro_watches_every_order_change_on_the_user_data_stream_and_its_fills_are_the_venues_trades(server):
    async def scenario():
        ex = pro_client(server)
        try:
            await ex.load_markets()
            seen = []
            watcher = asyncio.ensure_future(ex.watch_orders("BTC/USDT"))
            await subscribed(server)
            below = max(server.books["BTCUSDT"].bids) - 400.0
            await ex.create_order("BTC/USDT", "limit", "buy", 0.003, below, {"newClientOrderId": "bot4-t1-w1"})
            seen += [dict(o) for o in await asyncio.wait_for(watcher, 5)]  # ccxt updates its objects in place
            for price, size in ((below - 1.0, 0.001), (below, 0.01)):  # through it, then at it: two fills
                # a change that arrives while no watch is pending waits for the next one: watch first, then print
                watcher = asyncio.ensure_future(ex.watch_orders("BTC/USDT"))
                await asyncio.sleep(0.1)
                await asyncio.get_running_loop().run_in_executor(None, server.trade, "BTCUSDT", price, size)
                seen += [dict(o) for o in await asyncio.wait_for(watcher, 5)]
            trades = await ex.fetch_my_trades("BTC/USDT")
            return seen, trades
        finally:
            await ex.close()

    seen, trades = asyncio.run(scenario())
    mine = [o for o in seen if o["clientOrderId"] == "bot4-t1-w1"]
    assert [o["status"] for o in mine] == ["open", "open", "closed"]
    assert mine[-1]["filled"] == pytest.approx(0.003)
    venue_fills = [t for t in trades if t["order"] == mine[-1]["id"]]
    assert [t["amount"] for t in venue_fills] == pytest.approx([0.001, 0.002])  # the two prints, as the venue has them


def test_faults_the_venue_produces_and_a_timed_out_order_found_by_its_client_order_id(server):
    ex = client(server)
    below = max(server.books["BTCUSDT"].bids) - 600.0
    server.inject("429", seconds=2)
    with pytest.raises(ccxt.DDoSProtection):  # ccxt's class for HTTP 429
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-t1-f1"})
    server.inject("503")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-t1-f1"})
    with pytest.raises(ccxt.OrderNotFound):  # neither placed anything
        ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "bot4-t1-f1"})
    server.inject("slow", seconds=1.5)
    ex.timeout = 500  # ms: the client gives up before the venue answers
    with pytest.raises(ccxt.RequestTimeout):
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-t1-f2"})
    ex.timeout = 10_000
    found = ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "bot4-t1-f2"})  # the unknown outcome, settled
    assert found["status"] == "open" and found["clientOrderId"] == "bot4-t1-f2"
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate"):  # a blind retry would be refused, not doubled
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-t1-f2"})
    ex.cancel_order(None, "BTC/USDT", {"origClientOrderId": "bot4-t1-f2"})
    # for placements only: the query and the cancel pass, the next create meets it
    server.inject("503", placements_only=True)
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "bot4-t1-f3"})
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(None, "BTC/USDT", {"origClientOrderId": "bot4-t1-f2"})
    with pytest.raises(ccxt.ExchangeNotAvailable):
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-t1-f3"})
    assert server.order_routes.faults == []


def test_a_resting_order_locks_what_it_could_spend_until_a_fill_or_a_cancel_releases_it(server):
    ex = client(server)
    before = ex.fetch_balance()
    below = max(server.books["BTCUSDT"].bids) - 700.0
    above = min(server.books["BTCUSDT"].asks) + 700.0
    ex.create_order("BTC/USDT", "limit", "buy", 0.01, below, {"newClientOrderId": "bot4-t1-l1"})
    sell_qty = round(before["BTC"]["free"] / 2, 5)
    ex.create_order("BTC/USDT", "limit", "sell", sell_qty, above, {"newClientOrderId": "bot4-t1-l2"})
    held = ex.fetch_balance()
    assert held["USDT"]["used"] == pytest.approx(before["USDT"]["used"] + 0.01 * below)
    assert held["USDT"]["free"] == pytest.approx(before["USDT"]["free"] - 0.01 * below)
    assert held["USDT"]["total"] == pytest.approx(before["USDT"]["total"])
    assert held["BTC"]["used"] == pytest.approx(before["BTC"]["used"] + sell_qty)
    # the total could pay these, the free balance cannot: refused, nothing placed
    with pytest.raises(ccxt.InsufficientFunds, match="insufficient balance"):
        ex.create_order("BTC/USDT", "limit", "buy", round((held["USDT"]["free"] + 300.0) / below, 5), below)
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order("BTC/USDT", "limit", "sell", round(held["BTC"]["free"] + sell_qty / 2, 5), above)
    server.trade("BTCUSDT", below, 0.004)  # a print at its price: 0.004 of the buy fills, its lock shrinks
    filled = ex.fetch_balance()
    assert filled["USDT"]["used"] == pytest.approx(held["USDT"]["used"] - 0.004 * below)
    assert filled["USDT"]["total"] == pytest.approx(held["USDT"]["total"] - 0.004 * below * 1.001)
    assert filled["BTC"]["total"] == pytest.approx(held["BTC"]["total"] + 0.004)
    for cid in ("bot4-t1-l1", "bot4-t1-l2"):
        ex.cancel_order(None, "BTC/USDT", {"origClientOrderId": cid})
    after = ex.fetch_balance()
    assert after["USDT"]["used"] == pytest.approx(before["USDT"]["used"])
    assert after["BTC"]["used"] == pytest.approx(before["BTC"]["used"])
    assert after["USDT"]["free"] == pytest.approx(filled["USDT"]["total"] - before["USDT"]["used"])


def test_a_dropped_user_stream_loses_what_happens_while_it_is_down_and_ccxt_pro_resubscribes(server):
    async def scenario():
        ex = pro_client(server)
        loop = asyncio.get_running_loop()
        try:
            await ex.load_markets()
            watcher = asyncio.ensure_future(ex.watch_orders("BTC/USDT"))
            await subscribed(server)
            await loop.run_in_executor(None, lambda: server.inject("drop_user_stream", seconds=1.0))
            with pytest.raises(ccxt.NetworkError):  # the pending watch learns of the drop at once
                await asyncio.wait_for(watcher, 5)
            below = max(server.books["BTCUSDT"].bids) - 800.0
            await ex.create_order("BTC/USDT", "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-t1-d1"})
            with pytest.raises(ccxt.NetworkError):  # refused while the window lasts (HTTP 503 on the upgrade)
                await asyncio.wait_for(ex.watch_orders("BTC/USDT"), 5)
            await asyncio.sleep(1.0)
            watcher = asyncio.ensure_future(ex.watch_orders("BTC/USDT"))
            await subscribed(server)
            await ex.cancel_order(None, "BTC/USDT", {"origClientOrderId": "bot4-t1-d1"})
            await asyncio.wait_for(watcher, 5)
            await asyncio.sleep(0.1)
            state = await ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "bot4-t1-d1"})
            return reports(ex, "bot4-t1-d1"), state
        finally:
            await ex.close()

    seen, state = asyncio.run(scenario())
    assert [x for _, x, _ in seen] == ["CANCELED"]  # its NEW went out while the stream was down: lost to it
    assert state["status"] == "canceled"
    assert server.order_routes.counts["user_drops"] >= 1 and server.order_routes.counts["user_refused"] >= 1


def test_ack_after_fill_the_client_hears_of_the_fill_before_the_new_and_before_the_rest_answer(server):
    async def scenario():
        ex = pro_client(server)
        loop = asyncio.get_running_loop()
        try:
            await ex.load_markets()
            watcher = asyncio.ensure_future(ex.watch_orders("BTC/USDT"))
            await subscribed(server)
            await loop.run_in_executor(None, lambda: server.inject("ack_after_fill", seconds=0.5))
            below = max(server.books["BTCUSDT"].bids) - 900.0
            rest = await ex.create_order("BTC/USDT", "limit", "buy", 0.001, below,  # no fill: the fault waits
                                         {"newClientOrderId": "bot4-t1-a0"})
            best_ask = min(server.books["BTCUSDT"].asks)
            qty = min(0.001, float(server.books["BTCUSDT"].asks[best_ask][1]))
            order = await ex.create_order("BTC/USDT", "limit", "buy", qty, best_ask,
                                          {"newClientOrderId": "bot4-t1-a1", "timeInForce": "IOC"})
            answered = time.monotonic()
            await asyncio.wait_for(watcher, 5)
            await ex.cancel_order(rest["id"], "BTC/USDT")
            return reports(ex, "bot4-t1-a0"), reports(ex, "bot4-t1-a1"), order, answered
        finally:
            await ex.close()

    unfilled, seen, order, answered = asyncio.run(scenario())
    assert [x for _, x, _ in unfilled][:1] == ["NEW"]
    assert [(x, status) for _, x, status in seen] == [("TRADE", "FILLED"), ("NEW", "NEW")]
    assert all(t < answered - 0.3 for t, _, _ in seen)  # both on the stream well before the REST answer
    assert order["status"] == "closed" and order["clientOrderId"] == "bot4-t1-a1"


def test_reject_next_refuses_one_placement_with_the_venues_error_and_places_nothing(server):
    ex = client(server)
    below = max(server.books["BTCUSDT"].bids) - 650.0
    server.inject("reject_next")  # -1013 "Filter failure: PRICE_FILTER": ccxt reads PRICE_FILTER in the body
    with pytest.raises(ccxt.InvalidOrder, match="Filter failure: PRICE_FILTER"):
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-t1-r1"})
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "bot4-t1-r1"})
    server.inject("reject_next", code=-1013, msg="Invalid quantity.")  # no filter name: ccxt maps the code
    with pytest.raises(ccxt.BadRequest, match="Invalid quantity"):
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-t1-r1"})
    placed = ex.create_order("BTC/USDT", "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-t1-r1"})
    assert placed["status"] == "open"  # the fault was for one placement each
    ex.cancel_order(placed["id"], "BTC/USDT")
    assert server.order_routes.counts["rejected"] >= 2


def test_edit_order_is_cancel_replace_a_new_order_id_at_the_back_of_the_queue(server):
    ex = client(server)
    below = max(server.books["BTCUSDT"].bids) - 750.0
    first = ex.create_order("BTC/USDT", "limit", "buy", 0.002, below, {"newClientOrderId": "bot4-t1-e1"})
    second = ex.create_order("BTC/USDT", "limit", "buy", 0.002, below, {"newClientOrderId": "bot4-t1-e2"})
    # ccxt sends POST /api/v3/order/cancelReplace, cancelReplaceMode=STOP_ON_FAILURE, cancelOrderId=the id
    edited = ex.edit_order(first["id"], "BTC/USDT", "limit", "buy", 0.003, below,
                           {"newClientOrderId": "bot4-t1-e1b"})
    assert edited["id"] != first["id"] and edited["clientOrderId"] == "bot4-t1-e1b"
    assert edited["status"] == "open" and edited["amount"] == pytest.approx(0.003)
    assert ex.fetch_order(first["id"], "BTC/USDT")["status"] == "canceled"
    server.trade("BTCUSDT", below, 0.002)  # one print at the shared price: the unedited order was first in line
    assert ex.fetch_order(second["id"], "BTC/USDT")["status"] == "closed"
    assert ex.fetch_order(edited["id"], "BTC/USDT")["filled"] == 0
    # STOP_ON_FAILURE, the cancel fails: nothing placed, -2022 (ccxt has no class for it on a non-binance.com URL)
    with pytest.raises(ccxt.ExchangeError, match='-2022.*"newOrderResult":"NOT_ATTEMPTED"') as failed:
        ex.edit_order(first["id"], "BTC/USDT", "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-t1-e3"})
    assert failed.type is ccxt.ExchangeError  # (on api.binance.com ccxt's spot table makes it BadResponse)
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "bot4-t1-e3"})
    # the cancel works, the new order does not: the old order is gone and nothing replaces it (-2021, HTTP 409)
    with pytest.raises(ccxt.ExchangeError, match='-2021.*"cancelResult":"SUCCESS".*insufficient balance') as half:
        ex.edit_order(edited["id"], "BTC/USDT", "limit", "buy", 100.0, below, {"newClientOrderId": "bot4-t1-e4"})
    assert half.type is ccxt.ExchangeError
    assert ex.fetch_order(edited["id"], "BTC/USDT")["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(None, "BTC/USDT", {"origClientOrderId": "bot4-t1-e4"})
    # a filter failure of the new order reads as a plain InvalidOrder: ccxt finds PRICE_FILTER in the body
    again = ex.create_order("BTC/USDT", "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-t1-e5"})
    server.inject("reject_next")
    with pytest.raises(ccxt.InvalidOrder, match='-2021.*PRICE_FILTER'):
        ex.edit_order(again["id"], "BTC/USDT", "limit", "buy", 0.001, below - 1, {"newClientOrderId": "bot4-t1-e6"})
    assert ex.fetch_order(again["id"], "BTC/USDT")["status"] == "canceled"
    assert all(o["clientOrderId"] not in ("bot4-t1-e1b", "bot4-t1-e5") for o in ex.fetch_open_orders("BTC/USDT"))


def test_the_account_snapshot_is_what_ccxt_reads_and_cancel_all_orders_empties_the_book(server):
    ex = client(server)
    below = max(server.books["BTCUSDT"].bids) - 850.0
    for i in range(2):
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, below - i, {"newClientOrderId": f"bot4-t1-s{i}"})
    snap = server.account_snapshot()
    opened = ex.fetch_open_orders("BTC/USDT")
    assert {o["clientOrderId"] for o in snap["open_orders"]} == {o["clientOrderId"] for o in opened}
    assert {"bot4-t1-s0", "bot4-t1-s1"} <= {o["clientOrderId"] for o in opened}
    balance = ex.fetch_balance()
    for asset in ("USDT", "BTC"):
        mine = snap["balances"][asset]
        assert (mine["free"], mine["locked"], mine["total"]) == pytest.approx(
            (balance[asset]["free"], balance[asset]["used"], balance[asset]["total"]))
    by_order = {o["orderId"]: o["clientOrderId"] for o in snap["orders"]}
    venue = ex.fetch_my_trades("BTC/USDT")
    assert [(int(t["id"]), by_order[int(t["order"])]) for t in venue] == [
        (t["tradeId"], t["clientOrderId"]) for t in snap["trades"]]
    assert snap["positions"] == {}
    cancelled = ex.cancel_all_orders("BTC/USDT")  # DELETE /api/v3/openOrders
    assert {o["status"] for o in cancelled} == {"canceled"}
    # the venue's cancel answers name the order's own id origClientOrderId; clientOrderId is the cancel's
    assert {o["info"]["origClientOrderId"] for o in cancelled} == {o["clientOrderId"] for o in opened}
    assert not {o["clientOrderId"] for o in cancelled} & {o["clientOrderId"] for o in opened}
    assert server.account_snapshot()["open_orders"] == [] and ex.fetch_open_orders("BTC/USDT") == []
    with pytest.raises(ccxt.OrderNotFound):  # nothing to cancel: -2011 on spot (futures answers 200)
        ex.cancel_all_orders("BTC/USDT")


def test_arrivals_stamp_each_signed_request_with_its_client_order_id_when_asked(server):
    ex = client(server)
    below = max(server.books["BTCUSDT"].bids) - 700.0
    assert server.order_routes.arrivals is None  # off unless a benchmark asks
    server.order_routes.arrivals = arrivals = []
    try:
        before = time.time_ns()
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, below, {"newClientOrderId": "bot4-arrive-1"})
        ex.cancel_order(None, "BTC/USDT", {"origClientOrderId": "bot4-arrive-1"})
        after = time.time_ns()
    finally:
        server.order_routes.arrivals = None
    assert [(m, p, cid) for _, m, p, cid in arrivals] == [("POST", "/api/v3/order", "bot4-arrive-1"),
                                                           ("DELETE", "/api/v3/order", "bot4-arrive-1")]
    assert before <= arrivals[0][0] <= arrivals[1][0] <= after
