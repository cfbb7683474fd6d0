"""The venue model on hand-built markets: latency, the book an order meets, queue position, fill modes, liquidity
consumption, ordered connections, funding, latency-table rejections, and the live hold. Each expected figure is
worked out by hand in the test."""
import math

import numpy as np
import pytest

from stages import records
from stages.records import BUY, EV_BOOK, EV_BOOK_DELTA, EV_FUNDING, EV_MARK, EV_TRADE, INTENT_IOC, INTENT_QUOTE, SELL
from stages.venue import exchange, latency, queue
from stages.venue.exchange import R_ACK, R_CANCEL_REJECTED, R_CANCELLED, R_FILL, R_FUNDING, R_REJECTED

MS = 1_000_000
T0 = 1_000 * MS


def params(**over):
    base = dict(entry_latency_ms=5.0, response_latency_ms=5.0, queue_model="risk_averse", queue_power=3.0,
                partial_fills=True, funding=True, hold_ms=0.0, lookahead=True, offset_auto=False,
                maker_fee_bps={0: 1.0}, taker_fee_bps={0: 5.0})
    return exchange.make_params(**{**base, **over})


def view(t, bid=100.0, ask=100.5, size=2.0, tick=0.5, symbol=0, origin=None):
    ev = np.zeros(1, records.MARKET_EVENT)[0]
    ev["kind"], ev["symbol"], ev["exch_ts"] = EV_BOOK, symbol, t
    ev["origin_ts"] = t if origin is None else origin
    for j in range(records.BOOK_LEVELS):
        ev["bid_px"][j], ev["ask_px"][j] = bid - j * tick, ask + j * tick
        ev["bid_sz"][j] = ev["ask_sz"][j] = size
    return ev


def delta(t, side, price, size):
    ev = np.zeros(1, records.MARKET_EVENT)[0]
    ev["kind"], ev["exch_ts"], ev["origin_ts"], ev["side"], ev["price"], ev["size"] = EV_BOOK_DELTA, t, t, side, price, size
    ev["flags"] = records.F_LAST
    return ev


def trade(t, price, size, aggressor=SELL):
    ev = np.zeros(1, records.MARKET_EVENT)[0]
    ev["kind"], ev["exch_ts"], ev["origin_ts"], ev["price"], ev["size"], ev["side"] = EV_TRADE, t, t, price, size, aggressor
    return ev


class Venue:
    def __init__(self, table=None, **over):
        self.p = params(**over)
        self.vs = exchange.make_state(1024, table)
        self.next_id = 0

    def market(self, *events):
        for ev in events:
            assert exchange.push_market(self.vs, self.p, ev)

    def order(self, side, price, qty, kind=INTENT_QUOTE, at=T0):
        self.next_id += 1
        exchange.submit(self.vs, self.p, self.next_id, self.next_id, 0, side, kind, price, qty, at)
        return self.next_id

    def cancel(self, order_id, side, at):
        exchange.cancel(self.vs, self.p, order_id, order_id, 0, side, at)

    def answers(self, until, final=False):
        exchange.advance(self.vs, self.p, until, final)
        got = []
        while (i := exchange.next_response(self.vs, until)) >= 0:
            got.append(self.vs[5][i].copy())
        return got


def kinds(answers):
    return [int(a["kind"]) for a in answers]


def test_an_order_meets_the_book_as_it_stood_at_its_arrival_after_the_entry_latency():
    v = Venue()
    v.market(view(T0 - MS), view(T0 + 3 * MS, ask=100.0, bid=99.5))  # the ask falls 3 ms after we send
    v.order(BUY, 100.5, 1.0, INTENT_IOC, at=T0)
    assert v.answers(T0 + 9 * MS) == []  # sent at T0, matched at T0 + 5 ms, answered at T0 + 10 ms
    got = v.answers(T0 + 10 * MS)
    assert kinds(got) == [R_ACK, R_FILL] and got[1]["price"] == 100.0 and got[1]["liquidity"] == -1
    assert got[1]["exch_ts"] == T0 + 5 * MS and got[1]["arrive_ts"] == T0 + 10 * MS
    assert got[1]["fee"] == pytest.approx(1.0 * 100.0 * 5e-4)


def test_market_data_at_the_arrival_time_goes_before_the_order():
    v = Venue()
    v.market(view(T0 - MS), view(T0 + 5 * MS, ask=101.0, bid=100.5))  # exactly when the order arrives
    v.order(BUY, 100.5, 1.0, INTENT_IOC, at=T0)
    got = v.answers(T0 + 20 * MS)
    assert kinds(got) == [R_ACK, R_CANCELLED]  # the ask at 100.5 was gone: nothing to take
    assert got[1]["qty"] == 1.0


def test_a_taker_walks_the_levels_and_never_takes_the_same_displayed_size_twice():
    v = Venue(entry_latency_ms=0.0, response_latency_ms=0.0)
    v.market(view(T0 - MS, size=1.0))  # asks 100.5, 101.0, 101.5 ... one each
    v.order(BUY, 101.0, 1.5, INTENT_IOC, at=T0)
    v.order(BUY, 101.0, 1.0, INTENT_IOC, at=T0)
    got = [a for a in v.answers(T0) if a["kind"] == R_FILL]
    assert [(a["price"], a["qty"]) for a in got] == [(100.5, 1.0), (101.0, 0.5), (101.0, 0.5)]
    v.market(view(T0 + MS, size=1.0))  # the market's next book: the levels are back as displayed
    v.order(BUY, 100.5, 1.0, INTENT_IOC, at=T0 + MS)
    assert [(a["price"], a["qty"]) for a in v.answers(T0 + MS) if a["kind"] == R_FILL] == [(100.5, 1.0)]


def test_risk_averse_queue_moves_only_on_trades_and_shrinks_to_the_level():
    v = Venue(entry_latency_ms=0.0, response_latency_ms=0.0)
    v.market(view(T0 - MS))  # 2.0 bid at 100.0
    v.order(BUY, 100.0, 1.0, at=T0)
    assert kinds(v.answers(T0)) == [R_ACK]
    v.market(trade(T0 + 1, 100.0, 1.5))  # front 2.0 -> 0.5
    assert v.answers(T0 + 1) == []
    v.market(delta(T0 + 2, BUY, 100.0, 0.3))  # a cancel at the level: front min(0.5, 0.3) = 0.3
    assert v.answers(T0 + 2) == []
    v.market(trade(T0 + 3, 100.0, 0.7))  # front -0.4: 0.4 of ours traded
    got = v.answers(T0 + 3)
    assert kinds(got) == [R_FILL] and got[0]["qty"] == pytest.approx(0.4) and got[0]["liquidity"] == 1
    assert got[0]["price"] == 100.0 and got[0]["leaves"] == pytest.approx(0.6)


def test_no_partial_mode_fills_the_whole_order_once_the_queue_is_eaten():
    v = Venue(entry_latency_ms=0.0, response_latency_ms=0.0, partial_fills=False)
    v.market(view(T0 - MS))
    v.order(BUY, 100.0, 1.0, at=T0)
    v.market(trade(T0 + 1, 100.0, 2.1))  # 0.1 past the queue ahead
    fills = [a for a in v.answers(T0 + 1) if a["kind"] == R_FILL]
    assert len(fills) == 1 and fills[0]["qty"] == 1.0 and fills[0]["leaves"] == 0.0


@pytest.mark.parametrize("model", ["power", "power2", "power3", "log", "log2"])
def test_probabilistic_queue_splits_a_depth_decrease_between_ahead_and_behind(model):
    n = 3.0
    front, back, chg = 2.0, 3.0, 1.0  # joined behind 2.0; 3.0 more joined behind us; then 1.0 left the level
    f = {"power": lambda: back ** n / (back ** n + front ** n), "power2": lambda: back ** n / (back + front) ** n,
         "power3": lambda: 1 - (front / (front + back)) ** n,
         "log": lambda: math.log1p(back) / (math.log1p(back) + math.log1p(front)),
         "log2": lambda: math.log1p(back) / math.log1p(back + front)}[model]()
    expected = min(front - (1 - f) * chg + min(back - f * chg, 0.0), front + back - chg)
    o = np.zeros(1, exchange.VENUE_ORDER)[0]
    o["front"] = queue.joined(queue.MODELS[model], front)
    queue.on_depth(o, queue.MODELS[model], n, front, front + back)  # an increase joins behind: no change
    assert o["front"] == front
    queue.on_depth(o, queue.MODELS[model], n, front + back, front + back - chg)
    assert o["front"] == pytest.approx(expected)
    assert front - chg <= o["front"] < front  # some of the decrease was ahead of us, never more than all of it


def test_trades_already_counted_are_not_taken_off_the_queue_twice():
    o = np.zeros(1, exchange.VENUE_ORDER)[0]
    o["front"] = 2.0
    queue.on_trade(o, 0.5)  # front 1.5; the level will show the 0.5 gone
    queue.on_depth(o, queue.Q_POWER3, 3.0, 5.0, 4.5)  # the decrease is that trade: nothing more moves
    assert o["front"] == pytest.approx(1.5)


def test_a_trade_through_the_price_or_the_other_side_reaching_it_fills_the_whole_remainder():
    v = Venue(entry_latency_ms=0.0, response_latency_ms=0.0)
    v.market(view(T0 - MS))
    v.order(BUY, 99.5, 1.0, at=T0)
    v.order(SELL, 101.0, 1.0, at=T0)
    v.answers(T0)
    v.market(trade(T0 + 1, 99.0, 0.01))  # through our bid, however small
    got = v.answers(T0 + 1)
    assert kinds(got) == [R_FILL] and got[0]["qty"] == 1.0 and got[0]["price"] == 99.5
    v.market(view(T0 + 2, bid=101.0, ask=101.5))  # the bid reaches our ask
    got = v.answers(T0 + 2)
    assert kinds(got) == [R_FILL] and got[0]["side"] == SELL and got[0]["price"] == 101.0 and got[0]["liquidity"] == 1


def test_front_model_fills_at_the_first_trade_at_the_price():
    v = Venue(entry_latency_ms=0.0, response_latency_ms=0.0, queue_model="front")
    v.market(view(T0 - MS))
    v.order(BUY, 100.0, 1.0, at=T0)
    v.market(trade(T0 + 1, 100.0, 0.25))
    fills = [a for a in v.answers(T0 + 1) if a["kind"] == R_FILL]
    assert len(fills) == 1 and fills[0]["qty"] == 0.25


def test_a_cancel_is_answered_cancelled_or_rejected_when_the_order_filled_first():
    v = Venue()
    v.market(view(T0 - MS))
    a = v.order(BUY, 100.0, 1.0, at=T0)
    b = v.order(BUY, 99.5, 1.0, at=T0)
    v.market(trade(T0 + 6 * MS, 99.0, 1.0))  # fills both (through) before the cancels arrive at T0 + 12 ms
    v.cancel(a, BUY, T0 + 7 * MS)
    got = v.answers(T0 + 30 * MS, final=True)
    assert [int(x["kind"]) for x in got if x["order_id"] == a] == [R_ACK, R_FILL, R_CANCEL_REJECTED]
    c = v.order(BUY, 99.0, 1.0, at=T0 + 40 * MS)
    v.cancel(c, BUY, T0 + 41 * MS)
    got = v.answers(T0 + 60 * MS, final=True)
    assert [int(x["kind"]) for x in got if x["order_id"] == c] == [R_ACK, R_CANCELLED]
    assert b != c


def test_commands_and_answers_never_overtake_on_their_connection():
    # measured latencies: 20 ms at T0, 1 ms from T0 + 1 ms on
    table = latency.check_table(np.array([[T0, T0 + 20 * MS, T0 + 21 * MS], [T0 + MS, T0 + 2 * MS, T0 + 3 * MS],
                                          [T0 + 100 * MS, T0 + 101 * MS, T0 + 102 * MS]]), "test")
    v = Venue(table=table)
    v.market(view(T0 - MS), view(T0 + 50 * MS))
    a = v.order(BUY, 99.0, 1.0, at=T0)
    v.cancel(a, BUY, T0 + MS)  # would arrive at T0 + 2 ms, before the order: it waits behind it
    got = v.answers(T0 + 60 * MS)
    assert [int(x["kind"]) for x in got] == [R_ACK, R_CANCELLED]
    assert got[0]["exch_ts"] == T0 + 20 * MS and got[1]["exch_ts"] == T0 + 20 * MS
    assert got[0]["arrive_ts"] <= got[1]["arrive_ts"]


def test_a_latency_row_without_a_venue_time_rejects_the_order_after_the_round_trip():
    table = latency.check_table(np.array([[T0, 0, T0 + 30 * MS], [T0 + 10 * MS, 0, T0 + 50 * MS]]), "test")
    v = Venue(table=table)
    v.market(view(T0 - MS))
    v.order(BUY, 100.5, 1.0, INTENT_IOC, at=T0 + 5 * MS)  # round trip interpolated: 30 + (40 - 30) / 2 = 35 ms
    got = v.answers(T0 + 100 * MS)
    assert kinds(got) == [R_REJECTED] and got[0]["arrive_ts"] == T0 + 40 * MS


def test_latency_tables_refuse_rows_that_cannot_be():
    with pytest.raises(ValueError, match="increase"):
        latency.check_table(np.array([[2, 3, 4], [1, 2, 3]]), "f.csv")
    with pytest.raises(ValueError, match="before its request"):
        latency.check_table(np.array([[5, 6, 4]]), "f.csv")
    with pytest.raises(ValueError, match="outside"):
        latency.check_table(np.array([[5, 9, 8]]), "f.csv")


def test_funding_is_paid_on_the_position_at_the_mark_at_each_funding_time():
    v = Venue(entry_latency_ms=0.0, response_latency_ms=0.0)
    v.market(view(T0 - MS))
    v.order(BUY, 100.5, 2.0, INTENT_IOC, at=T0)  # long 2.0
    mark = np.zeros(1, records.MARKET_EVENT)[0]
    mark["kind"], mark["exch_ts"], mark["origin_ts"], mark["price"] = EV_MARK, T0 + 1, T0 + 1, 101.0
    funding = np.zeros(1, records.MARKET_EVENT)[0]
    funding["kind"], funding["exch_ts"], funding["origin_ts"] = EV_FUNDING, T0 + 2, T0 + 2
    funding["price"], funding["aux"] = 0.0001, T0 + 10 * MS
    v.market(mark, funding, view(T0 + 9 * MS))
    assert R_FUNDING not in kinds(v.answers(T0 + 9 * MS))
    v.market(view(T0 + 10 * MS))  # the funding time passes
    got = [a for a in v.answers(T0 + 10 * MS) if a["kind"] == R_FUNDING]
    assert len(got) == 1 and got[0]["fee"] == pytest.approx(2.0 * 101.0 * 0.0001) and got[0]["qty"] == 2.0
    v.market(funding, view(T0 + 20 * MS))  # the same announcement again is not a second payment
    assert R_FUNDING not in kinds(v.answers(T0 + 20 * MS))


def test_live_an_order_waits_for_its_venues_next_event_or_the_hold():
    v = Venue(entry_latency_ms=0.0, response_latency_ms=0.0, lookahead=False, hold_ms=20.0)
    v.market(view(T0))
    v.answers(T0)
    v.order(BUY, 100.5, 1.0, INTENT_IOC, at=T0 + MS)  # at the venue at T0 + 1 ms; its book is known to T0 only
    assert v.answers(T0 + 2 * MS) == []
    v.market(view(T0 + 3 * MS, ask=101.0, bid=100.5))  # an event past the arrival: the order met the old book
    got = v.answers(T0 + 3 * MS)
    assert kinds(got) == [R_ACK, R_FILL] and got[1]["price"] == 100.5
    v.order(BUY, 101.0, 1.0, INTENT_IOC, at=T0 + 4 * MS)
    assert v.answers(T0 + 23 * MS) == []   # quiet market, still within the hold
    assert kinds(v.answers(T0 + 24 * MS)) == [R_ACK, R_FILL]


def test_the_offsets_of_a_recording_make_its_fastest_event_instant_only_when_the_clock_is_behind():
    m = np.zeros(3, records.MARKET_EVENT)
    m["venue"] = [0, 0, 1]
    m["exch_ts"] = [1_000, 2_000, 1_000]
    m["origin_ts"] = [900, 2_500, 1_300]  # venue 0: received "before it happened"; venue 1: 300 ns late
    assert exchange.offsets_from(m) == {0: -100, 1: 0}
