"""OrderSession's settling paths, each scripted exactly on a stand-in for the ccxt client (the timing of the real
venue cannot force them): cancels that meet an unknown order, a timeout or a 5xx; a cancel that waits for its
create; the same trade from a query and from the stream; an ACK the stream implies before the create's answer; fee
conversion; an emit that fails. The loopback tests (test_ccxt_orders, test_amend) run the real
client."""
import asyncio
import threading
import time

import ccxt
import numpy as np
import pytest

from pipeline.venues import client_ids
from pipeline.venues.ccxt_orders import OrderSession, Timeouts
from pipeline.venues.credentials import Credentials
from stages.records import (ANS_ACK, ANS_AMENDED, ANS_CANCEL_REJECTED, ANS_CANCELLED, ANS_FILL, BUY, CMD_AMEND,
                            CMD_CANCEL, CMD_NEW, INTENT_QUOTE, VENUE_ANSWER, VENUE_COMMAND)
from stages.universe import instrument_key

PREFIX = client_ids.prefix("paths")
KEY = instrument_key(0, 1)
FAST = dict(first_query_s=0.01, max_query_delay_s=0.02, fill_grace_s=0.02, sweep_period_s=60.0, recv_window_s=0.2,
            absent_margin_s=0.05, stop_wait_s=0.2)


class Fake:
    """The ccxt calls the session makes, answered from per-method scripts (a value, an exception to raise, or an
    awaitable to await); every call is recorded."""

    def __init__(self):
        self.markets = {"BTC/USDT": {"base": "BTC", "quote": "USDT", "spot": True, "contract": False},
                        "BNB/USDT": {"base": "BNB", "quote": "USDT", "spot": True, "contract": False}}
        self.options, self.has = {}, {}
        self.scripts: dict[str, list] = {}
        self.calls: list = []

    def script(self, method, *answers):
        self.scripts.setdefault(method, []).extend(answers)

    async def _answer(self, method, *args):
        self.calls.append((method, args))
        answer = self.scripts[method].pop(0)
        if isinstance(answer, BaseException):
            raise answer
        if asyncio.isfuture(answer) or asyncio.iscoroutine(answer):
            return await answer
        return answer

    def called(self, method):
        return [args for m, args in self.calls if m == method]

    async def load_markets(self):
        return self.markets

    async def fetch_balance(self):  # the session's credentials check at start
        return {}

    def amount_to_precision(self, symbol, x):
        return f"{x:.5f}"

    def price_to_precision(self, symbol, x):
        return f"{x:.2f}"

    async def close(self):
        pass

    def __getattr__(self, method):
        if method in ("create_order", "cancel_order", "edit_order", "fetch_order", "fetch_my_trades", "fetch_ticker",
                      "fetch_open_orders"):
            return lambda *args: self._answer(method, *args)
        raise AttributeError(method)


def order(status="open", filled=0.0, qty=1.0, vid="77", oid=1, trades=None, cost=None):
    return {"id": vid, "clientOrderId": client_ids.client_order_id(PREFIX, oid), "symbol": "BTC/USDT",
            "side": "buy", "price": 100.0, "amount": qty, "filled": filled, "cost": cost if cost is not None else
            filled * 100.0, "status": status, "timestamp": 1_000, "lastUpdateTimestamp": 2_000, "trades": trades}


def trade(tid, qty, vid="77", price=100.0, fee=None, maker="maker"):
    return {"id": str(tid), "order": vid, "symbol": "BTC/USDT", "side": "buy", "price": price, "amount": qty,
            "timestamp": 3_000 + tid, "takerOrMaker": maker, "fee": fee or {"cost": 0.01, "currency": "USDT"}}


def command(kind, order_id=1, qty=1.0, price=100.0, send_ts=None):
    c = np.zeros(1, VENUE_COMMAND)
    c["kind"], c["order_id"], c["slot"], c["key"], c["order_kind"] = kind, order_id, 9, KEY, INTENT_QUOTE
    c["side"], c["price"], c["qty"], c["send_ts"] = BUY, price, qty, send_ts or time.time_ns()
    return c


class Harness:
    def __init__(self, emit=None, exchange="binance", **kw):
        self.batches = []
        self.session = OrderSession(exchange, Credentials("binance", "fake-key", "fake-secret"), 0,
                                    {1: "BTC/USDT"}, PREFIX, emit or self.batches.append,
                                    timeouts=Timeouts(**FAST), user_stream=False, log=lambda line: None, **kw)
        self.fake = self.session.ex = Fake()
        self.fake.has = {"editOrder": True}

    @property
    def answers(self):
        return np.concatenate(self.batches) if self.batches else np.zeros(0, VENUE_ANSWER)

    def kinds(self):
        return [int(k) for k in self.answers["kind"]]

    def stream(self, *items):
        """Updates as ccxt.pro's caches hand them on (orders and trades alike)."""
        for item in items:
            (self.session._stream_trades if "order" in item else self.session._stream_orders).append(item)
        self.session._stream_news()

    async def settle(self, seconds=0.15):
        await asyncio.sleep(seconds)


def run(scenario, **kw):
    async def main():
        h = Harness(**kw)
        await h.session.start()
        try:
            await scenario(h)
        finally:
            await h.session.stop()
        return h
    return asyncio.run(main())


async def placed(h, qty=1.0):
    h.fake.script("create_order", order(qty=qty))
    h.session.submit(command(CMD_NEW, qty=qty))
    await h.settle(0.05)
    assert h.kinds() == [ANS_ACK]


def test_a_cancel_the_venue_does_not_know_reports_the_orders_end_when_a_query_shows_it_filled():
    async def scenario(h):
        await placed(h)
        h.fake.script("cancel_order", ccxt.OrderNotFound("binance -2011 Unknown order sent."))
        h.fake.script("fetch_order", order("closed", filled=1.0))          # it filled meanwhile; no trades in it
        h.fake.script("fetch_my_trades", [trade(1, 0.4), trade(2, 0.6), trade(9, 5.0, vid="other")])
        h.session.cancel(command(CMD_CANCEL))
        await h.settle()

    h = run(scenario)
    a = h.answers
    assert h.kinds() == [ANS_ACK, ANS_FILL, ANS_FILL]    # its end is its last fill; no CANCEL_REJECTED
    assert a["trade_id"].tolist() == [0, 1, 2] and a["leaves"].tolist() == pytest.approx([1.0, 0.6, 0.0])
    assert h.fake.called("fetch_my_trades")[0] == ("BTC/USDT", None, None, {"orderId": "77"})


def test_a_cancel_the_venue_does_not_know_of_an_order_still_open_is_cancel_rejected():
    async def scenario(h):
        await placed(h)
        h.fake.script("cancel_order", ccxt.OrderNotFound("binance -2011 Unknown order sent."))
        h.fake.script("fetch_order", order("open"))
        cancel = command(CMD_CANCEL, send_ts=123)
        h.session.cancel(cancel)
        await h.settle()
        assert 1 in h.session.orders  # still open, still tracked

    h = run(scenario)
    assert h.kinds() == [ANS_ACK, ANS_CANCEL_REJECTED] and h.answers[-1]["send_ts"] == 123
    assert h.session.counters.cancel_rejects == 1


def test_a_timed_out_cancel_is_settled_by_a_query_and_answered_once():
    async def scenario(h):
        await placed(h)
        h.fake.script("cancel_order", ccxt.RequestTimeout("binance DELETE timed out"))
        h.fake.script("fetch_order", order("canceled", filled=0.25,
                                           trades=None))
        h.fake.script("fetch_my_trades", [trade(4, 0.25)])
        h.session.cancel(command(CMD_CANCEL, send_ts=456))
        await h.settle()
        h.stream(order("canceled", filled=0.25), trade(4, 0.25))   # the stream says the same, later
        await h.settle(0.05)

    h = run(scenario)
    a = h.answers
    assert h.kinds() == [ANS_ACK, ANS_FILL, ANS_CANCELLED]
    assert (a[2]["qty"], a[2]["leaves"], a[2]["send_ts"]) == (pytest.approx(0.75), 0.0, 456)
    assert len(h.fake.called("cancel_order")) == 1
    c = h.session.counters
    assert (c.unknown, c.timeouts, c.duplicate_trades) == (1, 1, 1)


def test_a_cancel_that_failed_with_a_5xx_while_the_order_stayed_open_is_sent_again():
    async def scenario(h):
        await placed(h)
        h.fake.script("cancel_order", ccxt.ExchangeNotAvailable("binance 503"), order("canceled"))
        h.fake.script("fetch_order", order("open"))
        h.session.cancel(command(CMD_CANCEL))
        await h.settle()

    h = run(scenario)
    assert h.kinds() == [ANS_ACK, ANS_CANCELLED] and len(h.fake.called("cancel_order")) == 2
    assert h.answers[-1]["qty"] == pytest.approx(1.0)


@pytest.mark.parametrize("outcome", ["open", "filled"])
def test_a_cancel_for_an_order_whose_create_is_in_flight_waits_for_it(outcome):
    async def scenario(h):
        answer = asyncio.get_running_loop().create_future()
        h.fake.script("create_order", answer)
        h.session.submit(command(CMD_NEW))
        await h.settle(0.02)
        h.session.cancel(command(CMD_CANCEL, send_ts=789))
        await h.settle(0.05)
        assert h.fake.called("cancel_order") == [] and h.kinds() == []
        h.fake.script("cancel_order", order("canceled"))
        answer.set_result(order("open") if outcome == "open" else
                          order("closed", filled=1.0, trades=[trade(5, 1.0, maker=None)]))
        await h.settle()

    h = run(scenario)
    if outcome == "open":
        assert h.kinds() == [ANS_ACK, ANS_CANCELLED] and h.answers[-1]["send_ts"] == 789
    else:  # filled at entry (a taker fill): the cancel came too late
        assert h.kinds() == [ANS_ACK, ANS_FILL, ANS_CANCEL_REJECTED] and h.fake.called("cancel_order") == []
        assert h.answers[1]["liquidity"] == -1 and h.answers[2]["send_ts"] == 789


def test_the_same_trade_from_a_query_and_from_the_stream_is_one_fill():
    async def scenario(h):
        await placed(h)
        h.fake.script("fetch_my_trades", [trade(6, 0.4)])
        h.stream(order("open", filled=0.4))     # the order's update came, its trade's not (yet): fetched
        await h.settle()
        h.stream(trade(6, 0.4))                 # the stream's copy of the same trade
        await h.settle(0.05)

    h = run(scenario)
    assert h.kinds() == [ANS_ACK, ANS_FILL] and h.answers[1]["trade_id"] == 6
    assert h.session.counters.duplicate_trades == 1 and h.session.counters.fills == 1


def test_the_stream_overtaking_the_creates_answer_implies_the_ack_first_and_settles_an_unknown():
    async def scenario(h):
        h.fake.script("create_order", ccxt.RequestTimeout("binance POST timed out"))
        h.fake.script("fetch_order", ccxt.OrderNotFound("not yet"), ccxt.OrderNotFound("not yet"))
        h.session.submit(command(CMD_NEW))
        await h.settle(0.005)
        h.stream(trade(7, 0.3, maker="maker"), order("open", filled=0.3))  # trade first: parked for its order
        await h.settle(0.05)

    h = run(scenario)
    assert h.kinds() == [ANS_ACK, ANS_FILL] and h.answers[1]["liquidity"] == 1
    c = h.session.counters
    assert (c.unknown, c.unknown_resolved, c.unknown_absent, c.rejects) == (1, 1, 0, 0)


def test_fees_in_the_base_or_a_third_currency_are_converted_to_the_quote():
    async def scenario(h):
        h.session.fee_rates["BNB"] = (500.0, float("inf"))
        await placed(h, qty=1.0)
        h.fake.script("fetch_ticker")  # never asked: XYZ/USDT is no market
        h.stream(trade(10, 0.2, price=100.0, fee={"cost": 0.001, "currency": "BTC"}),
                 trade(11, 0.2, fee={"cost": 0.0002, "currency": "BNB"}),
                 trade(12, 0.2, fee={"cost": 3.0, "currency": "XYZ"}))
        await h.settle(0.05)

    h = run(scenario)
    fills = h.answers[h.answers["kind"] == ANS_FILL]
    assert fills["fee"].tolist() == pytest.approx([0.1, 0.1, 0.0])
    assert h.session.counters.fees_unconverted == 1 and h.fake.called("fetch_ticker") == []


def test_an_emit_that_fails_keeps_the_answers_and_offers_them_again():
    failures, got = [1], []

    def emit(batch):
        if failures:
            failures.pop()
            raise OSError("ring busy")
        got.append(batch)

    async def main():
        h = Harness(emit=emit)
        await h.session.start()
        h.fake.script("create_order", order())
        h.session.submit(command(CMD_NEW))
        await asyncio.sleep(0.1)
        await h.session.stop()
        return h

    h = asyncio.run(main())
    assert [int(a["kind"]) for batch in got for a in batch] == [ANS_ACK] and h.session.counters.emit_errors == 1


def test_the_kill_switch_cancels_an_order_whose_create_is_in_flight_once_it_lands():
    async def scenario(h):
        answer = asyncio.get_running_loop().create_future()
        h.fake.script("create_order", answer)
        h.session.submit(command(CMD_NEW))
        await h.settle(0.02)
        h.fake.script("fetch_open_orders", [])   # not at the venue yet
        result = await h.session.cancel_all()
        assert result == dict(ended=0, failed=0, deferred=1, foreign=0, listed=True)
        h.fake.script("cancel_order", order("canceled"))
        answer.set_result(order("open"))
        await h.settle()

    h = run(scenario)
    assert h.kinds() == [ANS_ACK, ANS_CANCELLED] and len(h.fake.called("cancel_order")) == 1


def test_commands_from_another_thread_are_taken_on_the_loop_and_command_dispatches_by_kind():
    async def scenario(h):
        h.fake.script("create_order", order())
        h.fake.script("cancel_order", order("canceled"))
        loop_thread = threading.get_ident()
        seen = []
        original = h.session._submit
        h.session._submit = lambda c: (seen.append(threading.get_ident()), original(c))
        await asyncio.to_thread(h.session.command, command(CMD_NEW))      # returns at once, from its thread
        await h.settle(0.05)
        await asyncio.to_thread(h.session.command, command(CMD_CANCEL))
        await h.settle(0.05)
        assert seen == [loop_thread]

    h = run(scenario)
    assert h.kinds() == [ANS_ACK, ANS_CANCELLED]


def test_the_clients_rate_limiter_credits_idle_time_a_lone_request_goes_at_once_a_burst_is_still_spaced():
    # the real ccxt client an OrderSession makes (no request is sent): Binance's bucket, 50 ms a token, capacity 1
    session = OrderSession("binance", Credentials("binance", "k", "s"), 0, {1: "BTC/USDT"}, PREFIX, lambda a: None)

    async def timed(coro):
        t0 = time.monotonic()
        await coro
        return time.monotonic() - t0

    async def scenario():
        throttle = session.ex.throttle
        await throttle(1.0)                  # leaves the bucket a token short
        await asyncio.sleep(0.1)             # ...which the pause repays: ccxt's own still waited 50 ms here
        lone = await timed(throttle(1.0))
        await throttle(16.0)                 # an open-order listing: 0.8 s of debt
        await asyncio.sleep(0.9)             # ccxt's own held the next request 0.8 s all the same
        after_heavy = await timed(throttle(0.2))
        burst = await timed(asyncio.gather(*(throttle(0.2) for _ in range(11))))  # ~5 at once, then 10 ms each
        await session.ex.close()
        return lone, after_heavy, burst

    lone, after_heavy, burst = asyncio.run(scenario())
    assert lone < 0.025 and after_heavy < 0.1
    assert burst > 0.03


def amended(price, qty, updated_ms, status="open", filled=0.0):
    return {**order(status, filled=filled, qty=qty), "price": price, "lastUpdateTimestamp": updated_ms}


def test_an_amendment_and_the_fill_after_it_in_one_stream_step_count_the_fill_against_the_amended_quantity():
    async def scenario(h):
        await placed(h, qty=1.0)
        answer = asyncio.get_running_loop().create_future()
        h.fake.script("edit_order", answer)
        h.session.amend(command(CMD_AMEND, qty=2.0, price=101.0))
        await h.settle(0.01)
        # the amendment, then a trade of the whole old quantity at the new price, handled in one step of the loop:
        # ccxt's order cache holds the order's latest state (after the trade), and the trade comes first
        h.stream(trade(8, 1.0, price=101.0), amended(101.0, 2.0, 2_500, "open", filled=1.0))
        await h.settle(0.05)
        answer.set_result(amended(101.0, 2.0, 2_400))   # the amend's own answer, late: nothing more
        await h.settle(0.05)
        assert h.session.orders[1].qty == 2.0

    h = run(scenario, exchange="binanceusdm")
    assert h.kinds() == [ANS_ACK, ANS_AMENDED, ANS_FILL]
    _, amend, fill = h.answers
    assert (amend["price"], amend["qty"], amend["leaves"]) == (101.0, 2.0, 2.0)
    assert (fill["price"], fill["qty"], fill["leaves"]) == (101.0, 1.0, 1.0)   # not the end of the order
    assert h.fake.called("edit_order") == [("77", "BTC/USDT", "limit", "buy", 2.0, 101.0,
                                            {"origClientOrderId": client_ids.client_order_id(PREFIX, 1)})]


def test_news_older_than_the_last_amendment_never_settles_the_next_amend():
    async def scenario(h):
        await placed(h, qty=1.0)
        h.fake.script("edit_order", amended(101.0, 1.0, 3_000))
        h.session.amend(command(CMD_AMEND, qty=1.0, price=101.0))
        await h.settle(0.05)
        back = asyncio.get_running_loop().create_future()
        h.fake.script("edit_order", back)
        h.session.amend(command(CMD_AMEND, qty=1.0, price=100.0))   # back to where it was
        await h.settle(0.01)
        h.stream(amended(100.0, 1.0, 2_000))   # a query answered late: from before the first amendment
        await h.settle(0.05)
        assert h.kinds() == [ANS_ACK, ANS_AMENDED]
        back.set_result(amended(100.0, 1.0, 4_000))
        await h.settle(0.05)

    h = run(scenario, exchange="binanceusdm")
    assert h.kinds() == [ANS_ACK, ANS_AMENDED, ANS_AMENDED]
    assert [int(a["exch_ts"]) for a in h.answers[1:]] == [3_000_000_000, 4_000_000_000]
    assert h.answers[2]["price"] == 100.0
