"""The venue side of the live gateway with the real ccxt/ccxt.pro client against the loopback Binance (its signed
order API and user stream, faults on demand): round trips give the answers the venue's own records imply, unknown
outcomes are settled by queries without a second order, each venue trade is one fill, the kill switch cancels our
orders only, a dropped user stream is followed by a resync, and the credentials never show."""
import asyncio
import logging
import time

import ccxt
import pytest

from pipeline.ccxt_origins import replace_origin
from pipeline.venues import client_ids
from pipeline.venues.ccxt_orders import OrderSession, Timeouts, trade_id_int
from pipeline.venues.credentials import Credentials, CredentialsError
from stages.records import (ANS_ACK, ANS_CANCELLED, ANS_FILL, ANS_REJECTED, BUY, CMD_CANCEL, CMD_NEW, INTENT_IOC,
                            SELL)
from stages.universe import instrument_key
from pipeline.venues.reconcile import at_start
from tests.pipeline.venues.loopback import (FAST, KEY, KEY_BTC, SECRET, SYMBOLS, VENUE, Run, best, command,
                                            futures_loopback_server, in_thread, loopback_server, running,
                                            venue_orders, venue_trades)


def test_ioc_and_quote_round_trips_answer_as_the_venue_recorded_them(server):
    async def scenario():
        async with running(server, "roundtrip") as run:
            bid, asks, book = best(server)
            level0 = float(book.asks[asks[0]][1])
            level1 = float(book.asks[asks[1]][1])
            qty = round(level0 + level1 + 0.5, 5)  # takes two levels, the rest expires
            ioc = command(CMD_NEW, 101, BUY, asks[1], qty, INTENT_IOC, slot=7)
            run.session.submit(ioc)
            await run.until(lambda: ANS_CANCELLED in run.kinds(101))
            quote = command(CMD_NEW, 102, SELL, asks[-1] + 50.0, 0.004, slot=8)
            run.session.submit(quote)
            await run.until(lambda: ANS_ACK in run.kinds(102))
            await in_thread(server.trade, "BTCUSDT", asks[-1] + 60.0, 0.001)   # through it: a maker fill of 0.001
            await run.until(lambda: ANS_FILL in run.kinds(102))
            cancel = command(CMD_CANCEL, 102, SELL, slot=8)
            run.session.cancel(cancel)
            await run.until(lambda: ANS_CANCELLED in run.kinds(102))
            await asyncio.sleep(0.3)  # late stream copies of the same trades change nothing
            return run, ioc, quote, cancel

    run, ioc, quote, cancel = asyncio.run(scenario())
    (venue_ioc,) = [o for o in run.venue_orders() if o.client_id == client_ids.client_order_id(run.prefix, 101)]
    a = run.of(101)
    assert run.kinds(101) == [ANS_ACK, ANS_FILL, ANS_FILL, ANS_CANCELLED]
    fills = a[a["kind"] == ANS_FILL]
    trades = run.venue_trades(venue_ioc.order_id)
    assert [int(f["trade_id"]) for f in fills] == [t["id"] for t in trades]
    assert fills["qty"].tolist() == pytest.approx([t["qty"] for t in trades])
    assert fills["price"].tolist() == pytest.approx([t["price"] for t in trades])
    assert fills["fee"].tolist() == pytest.approx([t["fee"] for t in trades])  # in USDT: the quote currency
    assert {t["fee_asset"] for t in trades} == {"USDT"}
    assert fills["leaves"][-1] == pytest.approx(venue_ioc.qty - venue_ioc.executed)
    assert set(fills["liquidity"]) == {-1} and set(a["slot"]) == {7} and set(a["key"]) == {KEY_BTC}
    assert set(a["send_ts"]) == {int(ioc["send_ts"][0])}  # every answer of an IOC answers its create
    assert a[-1]["qty"] == pytest.approx(venue_ioc.qty - venue_ioc.executed) and a[-1]["leaves"] == 0.0
    assert a[0]["qty"] == pytest.approx(venue_ioc.qty) and a[0]["exch_ts"] == venue_ioc.created_ms * 1_000_000

    (venue_quote,) = [o for o in run.venue_orders() if o.client_id == client_ids.client_order_id(run.prefix, 102)]
    q = run.of(102)
    assert run.kinds(102) == [ANS_ACK, ANS_FILL, ANS_CANCELLED] and venue_quote.status == "CANCELED"
    (trade,) = run.venue_trades(venue_quote.order_id)
    assert (int(q[1]["trade_id"]), q[1]["liquidity"], q[1]["send_ts"]) == (trade["id"], 1, 0)  # unasked: send_ts 0
    assert (q[1]["qty"], q[1]["leaves"]) == pytest.approx((0.001, 0.003))
    assert (q[2]["qty"], q[2]["leaves"], q[2]["send_ts"]) == (pytest.approx(0.003), 0.0, int(cancel["send_ts"][0]))
    assert q[0]["side"] == SELL and q[0]["send_ts"] == int(quote["send_ts"][0])
    c = run.session.counters
    # the IOC's trades came in the create's answer and again on the stream: reported once each
    assert c.duplicate_trades >= len(trades) and c.fills == len(trades) + 1 and c.acks == 2
    assert c.ack_latency_count == 2 and len(run.session.ack_latencies_ns) == 2
    assert (c.unknown, c.rejects, c.cancel_rejects, c.stream_errors) == (0, 0, 0, 0)


def test_venue_refusals_and_local_refusals_are_rejected_and_a_duplicate_client_id_never_doubles(server):
    async def scenario():
        bid, asks, _ = best(server)
        # before the run starts, someone places an order under an id the run will use (a second incarnation of the
        # same run would): the venue refuses the run's order as a duplicate
        squatter = ccxt.binance({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False,
                                 "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                                             "fetchMargins": False, "adjustForTimeDifference": True}})
        api = dict(squatter.urls["api"])
        api.pop("ws", None)
        squatter.urls["api"] = replace_origin(api, server.rest_url)
        cid = client_ids.client_order_id(client_ids.prefix("refusals"), 202)
        await in_thread(lambda: (squatter.load_markets(),
                                 squatter.create_order("BTC/USDT", "limit", "buy", 0.001, bid - 900,
                                                       {"newClientOrderId": cid})))
        async with running(server, "refusals") as run:
            run.session.submit(command(CMD_NEW, 201, SELL, asks[-1] + 10, 5_000.0))  # holds 100 BTC
            run.session.submit(command(CMD_NEW, 202, BUY, bid - 900, 0.001))
            await run.until(lambda: len(run.of(201)) and len(run.of(202)))
            requests = run.session.counters.requests
            run.session.submit(command(CMD_NEW, 203, BUY, bid, 0.001, key=instrument_key(VENUE + 1, 2)))
            run.session.submit(command(CMD_NEW, 204, BUY, bid, 0.000001))   # below the lot step
            run.session.submit(command(CMD_NEW, 201, BUY, bid, 0.001))      # order 201 again: ignored
            await run.until(lambda: len(run.of(203)) and len(run.of(204)))
            await asyncio.sleep(0.1)
            await in_thread(squatter.cancel_order, None, "BTC/USDT", {"origClientOrderId": cid})
            await asyncio.sleep(0.2)  # the squatter's cancel on the stream: order 202 already ended here
            return run, requests

    run, requests = asyncio.run(scenario())
    for order_id in (201, 202, 203, 204):
        assert run.kinds(order_id) == [ANS_REJECTED]
    assert run.of(202)[0]["qty"] == pytest.approx(0.001) and run.of(202)[0]["slot"] == 5
    c = run.session.counters
    assert c.requests == requests  # the local refusals and the repeated order id cost no request
    assert (c.rejects, c.local_rejects, c.duplicate_commands, c.unknown) == (4, 2, 1, 0)
    assert [o.client_id for o in run.venue_orders()] == [client_ids.client_order_id(run.prefix, 202)]  # the squatter's
    assert any("insufficient balance" in line for line in run.logs)
    assert any("Duplicate order sent" in line for line in run.logs)


@pytest.mark.parametrize("user_stream", [False, True], ids=["settled-by-query", "settled-by-stream"])
def test_a_timed_out_create_is_settled_without_a_second_order(server, user_stream):
    async def scenario():
        async with running(server, f"slow{int(user_stream)}", user_stream=user_stream, request_s=0.4) as run:
            bid, _, _ = best(server)
            await in_thread(server.inject, "slow", 1, 1.2)   # placed at once, answered after the client gave up
            run.session.submit(command(CMD_NEW, 301, BUY, bid - 700, 0.002))
            await run.until(lambda: run.session.counters.timeouts == 1)
            in_doubt = run.kinds(301)
            await run.until(lambda: ANS_ACK in run.kinds(301))
            await asyncio.sleep(0.5)
            run.session.cancel(command(CMD_CANCEL, 301, BUY))
            await run.until(lambda: ANS_CANCELLED in run.kinds(301))
            return run, in_doubt

    run, in_doubt = asyncio.run(scenario())
    c = run.session.counters
    assert len(run.venue_orders()) == 1 and c.creates == 1  # never sent again
    assert run.kinds(301) == [ANS_ACK, ANS_CANCELLED]
    if user_stream:  # the stream told before the create's call gave up: nothing was ever in doubt
        assert in_doubt == [ANS_ACK] and c.unknown == 1 and c.unknown_resolved == 0
    else:            # nothing definitive while in doubt; the query found it
        assert in_doubt == [] and (c.unknown, c.unknown_resolved, c.unknown_absent) == (1, 1, 0)
        assert any("outcome unknown" in line for line in run.logs)


@pytest.mark.parametrize("fault", ["429", "503"])
def test_a_rate_limited_or_unavailable_create_is_unknown_until_queries_confirm_it_absent(server, fault):
    async def scenario():
        async with running(server, f"fault{fault}", user_stream=False) as run:
            bid, _, _ = best(server)
            await in_thread(server.inject, fault, 1, 2.0)   # 429: Retry-After 2 s
            t0 = time.monotonic()
            run.session.submit(command(CMD_NEW, 401, BUY, bid - 800, 0.001))
            await run.until(lambda: run.session.counters.unknown == 1)
            assert run.kinds(401) == []   # in doubt: nothing definitive
            await run.until(lambda: run.kinds(401) == [ANS_REJECTED])
            return run, time.monotonic() - t0

    run, took = asyncio.run(scenario())
    c = run.session.counters
    assert run.venue_orders() == [] and c.creates == 1
    assert (c.unknown_absent, c.rejects, c.unknown_resolved) == (1, 1, 0)
    assert (c.rate_limited, c.network_errors) == ((1, 0) if fault == "429" else (0, 1))
    # absent is only said by a query sent past the create's recvWindow (1 s) + margin (0.3 s); after a 429 the first
    # query waits its Retry-After (2 s)
    assert took >= (2.0 if fault == "429" else 1.3)
    assert c.queries >= 1


def test_a_resting_order_filled_while_the_user_stream_is_down_is_found_by_the_resync(server):
    async def scenario():
        async with running(server, "drop", sweep_period_s=30.0) as run:
            bid, _, _ = best(server)
            run.session.submit(command(CMD_NEW, 501, BUY, bid - 650, 0.003))
            await run.until(lambda: ANS_ACK in run.kinds(501))
            # the venue drops the user stream and refuses it for 1 s; a print fills the order meanwhile
            await in_thread(server.inject, "drop_user_stream", 1, 1.0)
            await in_thread(server.trade, "BTCUSDT", bid - 650, 0.002)
            await run.until(lambda: run.session.counters.stream_errors >= 1)
            await run.until(lambda: ANS_FILL in run.kinds(501), timeout=15)
            run.session.cancel(command(CMD_CANCEL, 501))
            await run.until(lambda: ANS_CANCELLED in run.kinds(501))
            return run

    run = asyncio.run(scenario())
    c = run.session.counters
    (venue_order,) = run.venue_orders()
    (trade,) = run.venue_trades(venue_order.order_id)
    fill = run.of(501)[1]
    assert (int(fill["trade_id"]), fill["qty"], fill["leaves"]) == (trade["id"], pytest.approx(0.002),
                                                                     pytest.approx(0.001))
    assert run.kinds(501) == [ANS_ACK, ANS_FILL, ANS_CANCELLED]
    assert c.stream_reconnects == 1 and c.resyncs >= 1 and run.session.stream_ready
    assert any("user stream back" in line for line in run.logs)


def test_a_user_stream_refused_for_longer_than_the_recv_window_comes_back(server):
    """The venue refuses the user stream for 2.5 s, longer than the recvWindow (1 s): ccxt's dial backs off meanwhile,
    so the signed subscription it sends once the venue takes connections again was signed too long ago and is
    refused (-1021), and ccxt then keeps that subscription pending forever: every watch waits on it. The session
    sees the websocket open and not subscribed, starts it afresh, and the fill made meanwhile is reported."""
    async def scenario():
        async with running(server, "droplong", sweep_period_s=30.0, request_s=1.0, stream_ready_s=10.0) as run:
            bid, _, _ = best(server)
            run.session.submit(command(CMD_NEW, 511, BUY, bid - 660, 0.003))
            await run.until(lambda: ANS_ACK in run.kinds(511))
            await in_thread(server.inject, "drop_user_stream", 1, 2.5)
            await in_thread(server.trade, "BTCUSDT", bid - 660, 0.002)
            await run.until(lambda: ANS_FILL in run.kinds(511), timeout=15)
            await run.until(lambda: run.session.stream_ready)
            run.session.cancel(command(CMD_CANCEL, 511))
            await run.until(lambda: ANS_CANCELLED in run.kinds(511))
            return run

    run = asyncio.run(scenario())
    c = run.session.counters
    assert run.kinds(511) == [ANS_ACK, ANS_FILL, ANS_CANCELLED]
    assert c.stream_reconnects == 1 and c.stream_renewals >= 1
    assert any("user stream back" in line for line in run.logs)


def test_fills_streamed_before_the_orders_ack_come_after_an_implied_ack_once_each(server):
    async def scenario():
        async with running(server, "ackafter") as run:
            _, asks, book = best(server)
            # the stream brings the order's trades before its NEW, and the REST answer comes 0.5 s later
            await in_thread(server.inject, "ack_after_fill", 1, 0.5)
            qty = round(float(book.asks[asks[0]][1]) + 0.001, 5)   # two levels: two trades
            run.session.submit(command(CMD_NEW, 901, BUY, asks[1], qty, INTENT_IOC))
            await run.until(lambda: run.session.counters.fills == 2 and not run.session.orders)
            await asyncio.sleep(0.7)  # the REST answer, with the same trades
            return run

    run = asyncio.run(scenario())
    (venue_order,) = run.venue_orders()
    trades = run.venue_trades(venue_order.order_id)
    a = run.of(901)
    assert run.kinds(901) == [ANS_ACK, ANS_FILL, ANS_FILL]
    assert [int(x) for x in a["trade_id"][1:]] == [t["id"] for t in trades] and a["leaves"][-1] == 0.0
    assert run.session.counters.fills == 2 and run.session.counters.unknown == 0  # the REST answer's copies: ignored


def test_a_venue_refusal_of_a_placement_is_rejected(server):
    async def scenario():
        async with running(server, "rejectnext") as run:
            bid, _, _ = best(server)
            await in_thread(server.inject, "reject_next", 1)   # -1013 Filter failure: PRICE_FILTER
            run.session.submit(command(CMD_NEW, 951, BUY, bid - 700, 0.001))
            await run.until(lambda: run.kinds(951) == [ANS_REJECTED])
            return run

    run = asyncio.run(scenario())
    assert run.venue_orders() == [] and run.session.counters.rejects == 1 and run.session.counters.unknown == 0
    assert any("PRICE_FILTER" in line for line in run.logs)


def test_an_earlier_incarnations_orders_report_what_they_did_while_no_gateway_listened():
    """The gateway died and another took over (the same run's client ids): execute's cancels for orders it holds
    open, and the restart's reconciliation, bring every trade of those orders (execute drops the trade ids it had)
    and then their end; an order whose create never reached the venue is rejected, once a query sent past the
    recvWindow after the new session started does not find it."""
    from pipeline.venues.reconcile import VenueOrder

    async def scenario():
        with loopback_server() as server:  # its own book: prints at our prices fill only our orders
            bid, _, _ = best(server)
            # a print fills every buy at or above its price, oldest first: 702 highest, then 704, then 701 (oldest)
            px = {701: bid - 720, 702: bid - 700, 704: bid - 710}
            async with running(server, "inherit") as first:
                for oid, price in px.items():
                    first.session.submit(command(CMD_NEW, oid, BUY, price, 0.003))
                await first.until(lambda: all(ANS_ACK in first.kinds(oid) for oid in px))
                await in_thread(server.trade, "BTCUSDT", px[701], 0.001)        # heard by the first incarnation
                await first.until(lambda: ANS_FILL in first.kinds(701))
            # no gateway: 701 fills a little more, 702 fills whole, 704 a little
            await in_thread(server.trade, "BTCUSDT", px[701], 0.001)
            await in_thread(server.trade, "BTCUSDT", px[702], 0.003)
            await in_thread(server.trade, "BTCUSDT", px[704], 0.002)
            t0 = time.monotonic()
            async with running(server, "inherit") as second:
                for oid in (701, 702, 703):  # 703: execute sent it, the first incarnation died before it went out
                    second.session.cancel(command(CMD_CANCEL, oid, BUY, slot=oid - 700))
                left = [VenueOrder(venue_id="", client_id="", order_id=704, symbol="BTC/USDT", key=KEY_BTC, side=BUY,
                                   price=px[704], qty=0.003, filled=0.0, status="open")]
                counts = await second.session.cancel_orders(left, inherited=True)  # the restart's reconciliation
                await second.until(lambda: ANS_REJECTED in second.kinds(703) and ANS_CANCELLED in second.kinds(701)
                                   and ANS_FILL in second.kinds(702))
                took = time.monotonic() - t0
            trades = {oid: [t["id"] for t in venue_trades(server, o.order_id)]
                      for o in venue_orders(server, first.prefix) for oid in [client_ids.order_id(first.prefix,
                                                                                                   o.client_id)]}
            return first, second, trades, counts, took

    first, second, trades, counts, took = asyncio.run(scenario())
    assert counts == dict(ended=1, failed=0, deferred=0)
    a = second.of(701)
    assert second.kinds(701) == [ANS_FILL, ANS_FILL, ANS_CANCELLED] and set(a["slot"]) == {1}
    assert [int(t) for t in a["trade_id"][:2]] == trades[701]  # the first one again: execute has it, drops it
    assert a[1]["leaves"] == pytest.approx(0.001) and a[2]["qty"] == pytest.approx(0.001)
    assert second.kinds(702) == [ANS_FILL] and second.of(702)[0]["leaves"] == 0.0  # filled whole: that is its end
    assert [int(t) for t in second.of(702)["trade_id"]] == trades[702]
    b = second.of(704)
    assert second.kinds(704) == [ANS_FILL, ANS_CANCELLED] and set(b["slot"]) == {-1}
    assert [int(t) for t in b["trade_id"][:1]] == trades[704] and b[1]["qty"] == pytest.approx(0.001)
    assert second.kinds(703) == [ANS_REJECTED] and 703 not in trades
    assert took >= FAST["recv_window_s"] + FAST["absent_margin_s"]  # not before the absence rule allows


def test_the_kill_switch_cancels_every_order_of_ours_and_leaves_the_others(server):
    async def scenario():
        bid, _, _ = best(server)
        async with running(server, "killprev") as before:   # a previous incarnation of the run leaves an order
            before.session.submit(command(CMD_NEW, 600, BUY, bid - 990, 0.001))
            await before.until(lambda: ANS_ACK in before.kinds(600))
        async with running(server, "other") as other:       # not ours: another run's
            other.session.submit(command(CMD_NEW, 650, BUY, bid - 991, 0.001))
            await other.until(lambda: ANS_ACK in other.kinds(650))
        async with running(server, "killprev") as run:
            for i in range(3):
                run.session.submit(command(CMD_NEW, 601 + i, BUY, bid - 995 - i, 0.001, slot=i))
            await run.until(lambda: all(ANS_ACK in run.kinds(601 + i) for i in range(3)))
            result = await run.session.cancel_all()
            await asyncio.sleep(0.2)
            return run, other, result

    run, other, result = asyncio.run(scenario())
    foreign = sum(1 for o in venue_orders(server) if o.open)  # other tests' too
    assert result == dict(ended=4, failed=0, deferred=0, foreign=foreign, listed=True) and foreign >= 1
    mine = {o.client_id: o.status for o in run.venue_orders()}
    assert set(mine.values()) == {"CANCELED"} and len(mine) == 4
    assert [o.status for o in other.venue_orders()] == ["NEW"]   # left alone
    for i in range(3):
        assert run.kinds(601 + i) == [ANS_ACK, ANS_CANCELLED]
    stray = run.of(600)  # the previous incarnation's: answered with slot -1
    assert [int(k) for k in stray["kind"]] == [ANS_CANCELLED] and stray[0]["slot"] == -1
    assert run.session.counters.stray_orders == 1


def test_credentials_never_appear_in_logs_or_exceptions(server, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # ccxt logs every request's headers (the API key among them) at DEBUG

    async def scenario():
        texts = []
        # a wrong secret: the session's first signed request is refused, so it does not start, and says why
        for user_stream in (True, False):
            refused = Run(server, "leak0", secret="not-the-secret-zz", stream_ready_s=0.5, user_stream=user_stream)
            with pytest.raises(CredentialsError, match="refused the API key or secret") as info:
                await refused.session.start()
            await refused.session.stop()
            texts += refused.logs + [str(info.value), repr(refused.session.creds)]
        bid, _, _ = best(server)
        async with running(server, "leak2", request_s=0.4, user_stream=False) as run:
            await in_thread(server.inject, "429", 1, 0.2)
            run.session.submit(command(CMD_NEW, 702, BUY, bid - 700, 0.001))
            await in_thread(server.inject, "slow", 1, 0.8)
            await run.until(lambda: run_done(run, 702))
            run.session.submit(command(CMD_NEW, 703, BUY, bid - 700, 0.001))
            await run.until(lambda: ANS_ACK in run.kinds(703))
            run.session.cancel(command(CMD_CANCEL, 703, BUY))
            await run.until(lambda: ANS_CANCELLED in run.kinds(703))
            texts += run.logs + [run.session.last_error]
        # a venue that cannot be reached: start() fails, and says so without the credentials
        session = OrderSession("binance", Credentials("binance", KEY, SECRET), VENUE, SYMBOLS, "b4x-", print,
                               rest_url="http://127.0.0.1:9", timeouts=Timeouts(**{**FAST, "request_s": 0.3,
                                                                                   "reconnect_min_s": 0.01}),
                               log=texts.append)
        with pytest.raises(RuntimeError) as info:
            await session.start()
        await session.stop()
        texts.append(str(info.value))
        return texts, run

    texts, run = asyncio.run(scenario())
    assert run.kinds(702) in ([ANS_ACK], [ANS_REJECTED])
    assert any("Signature for this request is not valid" in t for t in texts)
    out, err = capfd.readouterr()
    records = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    everything = "\n".join(texts + records + [out, err])
    assert "X-MBX-APIKEY" in everything and "***" in everything   # ccxt's DEBUG lines were there, masked
    assert KEY not in everything and SECRET not in everything and "not-the-secret-zz" not in everything
    assert KEY[:10] not in everything


def run_done(run, order_id):
    kinds = run.kinds(order_id)
    return ANS_REJECTED in kinds or ANS_ACK in kinds


def test_trade_ids_that_are_not_decimal_get_a_stable_positive_id():
    assert trade_id_int("12345") == 12345 and trade_id_int(77) == 77
    a, b = trade_id_int("abc-1"), trade_id_int("abc-2")
    assert a == trade_id_int("abc-1") and a != b and 0 < a < 2 ** 63 and 0 < b < 2 ** 63


@pytest.fixture(scope="module")
def futures_server():
    with futures_loopback_server() as s:
        yield s


def test_usdm_futures_the_dead_mans_switch_cancels_at_the_venue_and_positions_reach_the_snapshot(futures_server):
    server = futures_server

    async def scenario():
        # a feed's name for the symbol, matched to BTC/USDT:USDT by the market's id
        run = Run(server, "futures", exchange="binanceusdm", symbols={2: "BTC-USDT"})
        await run.session.start()
        try:
            book = server.books["BTCUSDT"]
            bid, ask = max(book.bids), min(book.asks)
            run.session.submit(command(CMD_NEW, 1001, BUY, bid - 300, 0.01))
            await run.until(lambda: ANS_ACK in run.kinds(1001))
            assert await run.session.dead_man(400)          # not refreshed: the venue cancels by itself
            await run.until(lambda: ANS_CANCELLED in run.kinds(1001), timeout=5)
            run.session.submit(command(CMD_NEW, 1002, BUY, ask, 0.002, INTENT_IOC))
            await run.until(lambda: ANS_FILL in run.kinds(1002) and 1002 not in run.session.orders)
            snapshot = await run.session.snapshot()
            assert await run.session.dead_man(0)
            flat = at_start(snapshot, venue=VENUE, positions={KEY_BTC: 0.002})
            fresh = at_start(snapshot, venue=VENUE)
            run.session.submit(command(CMD_NEW, 1003, SELL, bid, 0.002, INTENT_IOC))   # flat again
            await run.until(lambda: ANS_FILL in run.kinds(1003) and 1003 not in run.session.orders)
            return run, snapshot, flat, fresh
        finally:
            await run.session.stop()

    run, snapshot, flat, fresh = asyncio.run(scenario())
    assert run.session.symbols == {2: "BTC/USDT:USDT"}
    cancelled = run.of(1001)[-1]
    assert (cancelled["qty"], cancelled["send_ts"]) == (pytest.approx(0.01), 0)   # nobody here asked for it
    assert snapshot.complete and snapshot.has_positions and snapshot.positions == {KEY_BTC: pytest.approx(0.002)}
    assert snapshot.position_prices[KEY_BTC] > 0
    assert flat.mismatches == [] and len(fresh.mismatches) == 1 and fresh.synthetic_fills["qty"][0] == 0.002
    assert run.session.counters.dead_man_refreshes == 2
