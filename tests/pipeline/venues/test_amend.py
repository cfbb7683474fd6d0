"""Amend in place through the gateway's OrderSession with the real ccxt client against the loopback Binance USD-M
futures (PUT /fapi/v1/order, the AMENDMENT user-stream update): an amend keeps the order id and later fills count
at its new price against its new quantity; an amend of an order that filled meanwhile is answered by its fill; an
amend of unknown outcome is settled by a query (or the stream) and never sent twice, and said not applied only
past its recvWindow; the local refusals; spot, whose edit is a cancel-replace, refuses every amend."""
import asyncio
import time

import pytest

from pipeline import registry
from pipeline.venues import client_ids, gateway
from pipeline.venues.ccxt_orders import Counters
from stages.records import (ANS_ACK, ANS_AMEND_REJECTED, ANS_AMENDED, ANS_CANCELLED, ANS_FILL, BUY, CMD_AMEND,
                            CMD_CANCEL, CMD_NEW)
from tests.pipeline.venues.loopback import best, command, futures_loopback_server, in_thread, running

PUT = ("PUT", "/fapi/v1/order")
FUTURES = dict(exchange="binanceusdm", symbols={2: "BTC-USDT"})


@pytest.fixture(scope="module")
def futures_server():
    with futures_loopback_server() as s:
        yield s


def top(server) -> tuple[float, float]:
    book = server.books["BTCUSDT"]
    return max(book.bids), min(book.asks)


def puts(server) -> int:
    return server.order_routes.requests[PUT]


async def resting(run, order_id: int, qty: float) -> float:
    """A buy quote 300 under the best bid, acknowledged; returns the best bid."""
    bid, _ = top(run.server)
    run.session.submit(command(CMD_NEW, order_id, BUY, bid - 300, qty))
    await run.until(lambda: ANS_ACK in run.kinds(order_id))
    return bid


def test_an_amend_keeps_the_order_id_and_later_fills_are_at_its_new_price_against_its_new_quantity(futures_server):
    server = futures_server

    async def scenario():
        async with running(server, "amendgwapply", **FUTURES) as run:
            bid = await resting(run, 11, 0.002)
            (placed,) = run.venue_orders()
            sent = puts(server)
            grow = command(CMD_AMEND, 11, BUY, bid - 250, 0.003)
            run.session.command(grow)
            await run.until(lambda: ANS_AMENDED in run.kinds(11))
            (amended,) = run.venue_orders()
            await in_thread(server.trade, "BTCUSDT", bid - 250, 0.001)  # at the new price; the old one is below it
            await run.until(lambda: ANS_FILL in run.kinds(11))
            shrink = command(CMD_AMEND, 11, BUY, bid - 250, 0.002)     # total: 0.001 filled, 0.001 left
            run.session.command(shrink)
            await run.until(lambda: run.kinds(11).count(ANS_AMENDED) == 2)
            await in_thread(server.trade, "BTCUSDT", bid - 250, 0.005)
            await run.until(lambda: 11 not in run.session.orders)
            await asyncio.sleep(0.2)  # late copies of the stream's news change nothing
            return run, bid, placed, amended, grow, shrink, puts(server) - sent

    run, bid, placed, amended, grow, shrink, sent = asyncio.run(scenario())
    assert run.session.amends_in_place
    assert (amended.order_id, amended.client_id, amended.status) == (placed.order_id, placed.client_id, "NEW")
    assert (amended.price, amended.qty) == (pytest.approx(bid - 250), pytest.approx(0.003))
    assert run.kinds(11) == [ANS_ACK, ANS_AMENDED, ANS_FILL, ANS_AMENDED, ANS_FILL]
    _, first, fill, second, last = run.of(11)
    assert (first["price"], first["qty"], first["leaves"]) == (pytest.approx(bid - 250), pytest.approx(0.003),
                                                               pytest.approx(0.003))
    assert first["send_ts"] == int(grow["send_ts"][0]) and first["exch_ts"] > 0 and first["slot"] == 5
    assert (fill["price"], fill["qty"], fill["leaves"], fill["liquidity"]) == (pytest.approx(bid - 250),
                                                                               pytest.approx(0.001),
                                                                               pytest.approx(0.002), 1)
    assert (second["qty"], second["leaves"], second["send_ts"]) == (pytest.approx(0.002), pytest.approx(0.001),
                                                                    int(shrink["send_ts"][0]))
    assert (last["price"], last["qty"], last["leaves"]) == (pytest.approx(bid - 250), pytest.approx(0.001), 0.0)
    (venue,) = run.venue_orders()
    assert (venue.status, venue.executed, venue.qty) == ("FILLED", pytest.approx(0.002), pytest.approx(0.002))
    ended = run.session.ended[11]
    assert (ended.price, ended.qty) == (pytest.approx(bid - 250), pytest.approx(0.002))
    c = run.session.counters
    assert sent == 2 and (c.amends, c.amends_applied, c.amend_rejects, c.unknown) == (2, 2, 0, 0)


def test_an_amend_through_the_book_takes_at_once_amended_then_its_fill(futures_server):
    server = futures_server

    async def scenario():
        async with running(server, "amendgwcross", **FUTURES) as run:
            bid = await resting(run, 12, 0.001)
            ask = top(server)[1]
            run.session.command(command(CMD_AMEND, 12, BUY, ask, 0.001))
            await run.until(lambda: 12 not in run.session.orders)
            return run, ask

    run, ask = asyncio.run(scenario())
    assert run.kinds(12) == [ANS_ACK, ANS_AMENDED, ANS_FILL]
    amended, fill = run.of(12)[1:]
    assert amended["price"] == pytest.approx(ask) and amended["leaves"] == pytest.approx(0.001)
    assert (fill["price"], fill["qty"], fill["leaves"], fill["liquidity"]) == (pytest.approx(ask),
                                                                               pytest.approx(0.001), 0.0, -1)


def test_an_amend_of_an_order_filled_meanwhile_is_answered_by_its_fill(futures_server):
    server = futures_server

    async def scenario():
        # no user stream and no sweep: the session learns of the fill only through the amend
        async with running(server, "amendgwfilled", user_stream=False, sweep_period_s=30.0, **FUTURES) as run:
            bid = await resting(run, 21, 0.002)
            await in_thread(server.trade, "BTCUSDT", bid - 300, 0.002)
            assert run.kinds(21) == [ANS_ACK]
            sent = puts(server)
            run.session.command(command(CMD_AMEND, 21, BUY, bid - 250, 0.003))
            await run.until(lambda: 21 not in run.session.orders)
            await asyncio.sleep(0.3)
            return run, puts(server) - sent

    run, sent = asyncio.run(scenario())
    assert run.kinds(21) == [ANS_ACK, ANS_FILL]   # the venue's "unknown order", a query: the order had filled
    fill = run.of(21)[1]
    assert (fill["qty"], fill["leaves"]) == (pytest.approx(0.002), 0.0)
    (venue,) = run.venue_orders()
    assert (venue.status, venue.qty) == ("FILLED", pytest.approx(0.002))
    c = run.session.counters
    assert sent == 1 and (c.amends, c.amends_applied, c.amend_rejects) == (1, 0, 0)


@pytest.mark.parametrize("fault, user_stream", [("slow", False), ("slow", True), ("503", True), ("429", True)],
                         ids=["timeout-settled-by-query", "timeout-settled-by-stream", "503", "429-retry-after"])
def test_an_amend_of_unknown_outcome_is_settled_by_a_query_or_the_stream_and_never_sent_twice(
        futures_server, fault, user_stream):
    server = futures_server
    routes = server.order_routes

    async def scenario():
        # (no sweep: without a stream it would query every order twice a second, settling the amend by itself)
        async with running(server, f"amendgw{fault}{int(user_stream)}", user_stream=user_stream, request_s=0.5,
                           sweep_period_s=30.0, **FUTURES) as run:
            bid = await resting(run, 31, 0.002)
            # slow: done at once, answered after the client gave up; 503: not done; 429: not done, Retry-After 2 s
            await in_thread(lambda: server.inject(fault, 1, 1.5 if fault == "slow" else 2.0, amends_only=True))
            sent, routes.arrivals = puts(server), []
            c = run.session.counters
            t0, t0_ns = time.monotonic(), time.time_ns()
            run.session.command(command(CMD_AMEND, 31, BUY, bid - 250, 0.003))
            await run.until(lambda: c.timeouts + c.rate_limited + c.network_errors == 1)
            in_doubt = run.kinds(31)
            await run.until(lambda: {ANS_AMENDED, ANS_AMEND_REJECTED} & set(run.kinds(31)), timeout=15)
            took = time.monotonic() - t0
            session_view = (run.session.orders[31].price, run.session.orders[31].qty)
            (venue,) = run.venue_orders()
            run.session.cancel(command(CMD_CANCEL, 31, BUY))
            await run.until(lambda: ANS_CANCELLED in run.kinds(31))
            cid = client_ids.client_order_id(run.prefix, 31)
            queried = [ns - t0_ns for ns, method, path, who in routes.arrivals
                       if (method, path, who) == ("GET", "/fapi/v1/order", cid)]
            return run, bid, in_doubt, took, session_view, venue, puts(server) - sent, queried

    run, bid, in_doubt, took, session_view, venue, sent, queried = asyncio.run(scenario())
    c = run.session.counters
    applied = fault == "slow"
    answer = run.of(31)[-2]
    assert sent == 1 and c.amends == 1   # never sent again
    assert (answer["kind"], answer["price"], answer["qty"]) == (ANS_AMENDED if applied else ANS_AMEND_REJECTED,
                                                                pytest.approx(venue.price), pytest.approx(venue.qty))
    assert session_view == (pytest.approx(venue.price), pytest.approx(venue.qty))  # the exchange's state
    assert (venue.price, venue.qty) == ((pytest.approx(bid - 250), pytest.approx(0.003)) if applied else
                                        (pytest.approx(bid - 300), pytest.approx(0.002)))
    assert run.of(31)[-1]["qty"] == pytest.approx(venue.qty)   # the cancel's leaves: the order's as it stands
    if applied and user_stream:  # the stream's AMENDMENT told before the call gave up: nothing was in doubt
        assert in_doubt == [ANS_ACK, ANS_AMENDED] and c.unknown == 0
    else:            # nothing definitive while in doubt; a query settled it
        assert in_doubt == [ANS_ACK] and (c.unknown, c.unknown_resolved) == (1, 1) and queried
        assert any("outcome unknown" in line for line in run.logs)
    if not applied:  # said not applied only by a query sent past the amend's recvWindow (1 s) + margin (0.3 s)
        assert took >= 1.3 and any("past the amend's recvWindow" in line for line in run.logs)
    if fault == "429":  # and no query before the Retry-After (2 s)
        assert c.rate_limited == 1 and min(queried) >= 2.0e9 and took >= 2.0


def test_amends_that_cannot_be_sent_are_refused_here_with_the_order_as_it_stands(futures_server):
    server = futures_server

    async def scenario():
        async with running(server, "amendgwlocal", **FUTURES) as run:
            bid, _ = top(server)
            s = run.session
            s.command(command(CMD_AMEND, 999, BUY, bid - 300, 0.002))            # not an order of this session
            s.submit(command(CMD_NEW, 41, BUY, bid - 300, 0.002))
            s.command(command(CMD_AMEND, 41, BUY, bid - 290, 0.002))             # its create is in flight
            await run.until(lambda: ANS_ACK in run.kinds(41))
            sent = puts(server)
            s.command(command(CMD_AMEND, 41, BUY, bid - 280, 0.003))
            s.command(command(CMD_AMEND, 41, BUY, bid - 270, 0.004))             # the first is in flight
            await run.until(lambda: ANS_AMENDED in run.kinds(41))
            await in_thread(server.trade, "BTCUSDT", bid - 280, 0.001)
            await run.until(lambda: ANS_FILL in run.kinds(41))
            s.command(command(CMD_AMEND, 41, BUY, bid - 280, 0.001))             # not above what is filled
            s.command(command(CMD_AMEND, 41, BUY, bid - 280, 0.0000001))         # rounds to 0
            s.command(command(CMD_AMEND, 41, BUY, -1.0, 0.003))                  # not positive
            s.command(command(CMD_AMEND, 41, BUY, bid - 280, 0.003))             # nothing changes: no request
            s.command(command(CMD_CANCEL, 41, BUY))
            s.command(command(CMD_AMEND, 41, BUY, bid - 260, 0.004))             # a cancel is in flight
            await run.until(lambda: ANS_CANCELLED in run.kinds(41))
            s.command(command(CMD_AMEND, 41, BUY, bid - 260, 0.004))             # it has ended
            await run.until(lambda: len(run.of(41)) == 12)
            await asyncio.sleep(0.2)
            return run, bid, puts(server) - sent

    run, bid, sent = asyncio.run(scenario())
    R = ANS_AMEND_REJECTED
    assert run.kinds(999) == [R] and tuple(run.of(999)[0][["price", "qty", "leaves"]]) == (0.0, 0.0, 0.0)
    assert run.kinds(41) == [R, ANS_ACK, R, ANS_AMENDED, ANS_FILL, R, R, R, ANS_AMENDED, R, ANS_CANCELLED, R]
    a = run.of(41)
    assert (a[0]["price"], a[0]["qty"]) == (pytest.approx(bid - 300), pytest.approx(0.002))
    assert (a[2]["price"], a[2]["qty"], a[2]["leaves"]) == (pytest.approx(bid - 300), pytest.approx(0.002),
                                                            pytest.approx(0.002))
    for i in (5, 6, 7, 9):   # the order as it stands: amended, 0.001 of it filled
        assert (a[i]["price"], a[i]["qty"], a[i]["leaves"]) == (pytest.approx(bid - 280), pytest.approx(0.003),
                                                                pytest.approx(0.002))
    assert (a[8]["price"], a[8]["qty"], a[8]["leaves"]) == (pytest.approx(bid - 280), pytest.approx(0.003),
                                                            pytest.approx(0.002))
    assert (a[11]["qty"], a[11]["leaves"]) == (pytest.approx(0.003), 0.0)
    said = [line for line in run.logs if "amend of" in line and "rejected" in line]
    for why in ("is not known here", "its create is still in flight", "an amend of it is already in flight",
                "is not above what is filled", "not positive", "a cancel of it is in flight", "the order has ended"):
        assert any(why in line for line in said), why
    assert any("precision" in line for line in said) and len(said) == 8
    c = run.session.counters
    assert sent == 1 and (c.amends, c.amends_applied, c.amend_rejects) == (1, 2, 8)


def test_a_spot_venue_refuses_every_amend_here_and_says_why_once(server):
    routes = server.order_routes

    async def scenario():
        async with running(server, "amendgwspot") as run:
            bid, _, _ = best(server)
            run.session.submit(command(CMD_NEW, 51, BUY, bid - 900, 0.001))
            await run.until(lambda: ANS_ACK in run.kinds(51))
            requests = run.session.counters.requests
            for price in (bid - 800, bid - 700):
                run.session.command(command(CMD_AMEND, 51, BUY, price, 0.002))
            run.session.command(command(CMD_AMEND, 52, BUY, bid - 800, 0.002))
            await run.until(lambda: len(run.of(51)) == 3 and len(run.of(52)) == 1)
            unasked = run.session.counters.requests - requests
            run.session.cancel(command(CMD_CANCEL, 51, BUY))
            await run.until(lambda: ANS_CANCELLED in run.kinds(51))
            return run, bid, unasked

    run, bid, unasked = asyncio.run(scenario())
    assert not run.session.amends_in_place
    assert run.kinds(51) == [ANS_ACK, ANS_AMEND_REJECTED, ANS_AMEND_REJECTED, ANS_CANCELLED]
    for a in run.of(51)[1:3]:
        assert (a["price"], a["qty"], a["leaves"]) == (pytest.approx(bid - 900), pytest.approx(0.001),
                                                       pytest.approx(0.001))
    assert run.kinds(52) == [ANS_AMEND_REJECTED]
    said = [line for line in run.logs if "CMD_AMEND" in line]
    assert len(said) == 1 and "not an amend in place" in said[0] and "binance" in said[0]
    c = run.session.counters
    assert unasked == 0 and (c.amends, c.amend_rejects) == (0, 3)
    assert routes.requests[("POST", "/api/v3/order/cancelReplace")] == 0
    assert [o.status for o in run.venue_orders()] == ["CANCELED"]   # the one order, never replaced


def test_the_gateway_publishes_the_sessions_amend_counters():
    labels = registry.counters("gateway")
    for word, fields in gateway.COUNTER_SOURCES.items():
        assert word in labels and all(hasattr(Counters(), f) for f in fields), word
    assert {gateway.COUNTER_SOURCES[w] for w in ("amends", "amends_applied", "amend_rejects")} == {
        ("amends",), ("amends_applied",), ("amend_rejects",)}
