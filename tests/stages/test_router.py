"""The smart order router: on scripted books it picks the better venue after taker fees, splits a large order across
venues and levels, sends what the books do not show to the best venue, and lets measured latency and venue health
move the ranking; inside execute every child passes the gate and names its parent. Expected figures by hand."""
import numpy as np
import pytest

from stages.records import (BOOK_LEVELS, BUY, INTENT_QUOTE, ORD_ACKED, ORD_FILLED, ORD_NEW, ORD_PARTIAL,
                            ORD_REJECTED, REJ_BAD_QTY, REJ_MAX_QTY, SELL)
from stages.routing import router
from stages.universe import MAX_VENUES
from stages.venue import exchange
from tests.stages.desk import MS, T0, Desk, book, intent, routing_params


def fees(taker: dict) -> np.ndarray:
    return exchange.make_params(entry_latency_ms=0.0, response_latency_ms=0.0, queue_model="front", queue_power=3.0,
                                partial_fills=True, funding=False, hold_ms=0.0, lookahead=False, offset_auto=False,
                                maker_fee_bps={}, taker_fee_bps=taker)


class Books:
    """Levels per venue ((price, size) best first; None: the venue does not list the symbol)."""

    def __init__(self, *venues, taker=None, **routing):
        self.levels = np.zeros((MAX_VENUES, BOOK_LEVELS, 2))
        self.n = np.full(MAX_VENUES, -1, np.int64)
        for v, levels in enumerate(venues):
            if levels is not None:
                self.n[v] = len(levels)
                for j, level in enumerate(levels):
                    self.levels[v, j] = level
        self.vparams = fees(taker if taker is not None else {v: 5.0 for v in range(MAX_VENUES)})
        self.rparams = routing_params(**routing)
        self.stats = router.make_venue_stats()
        self.scores = np.zeros(MAX_VENUES)

    def split(self, side, qty, limit, ref=100.0, home=0, now=0):
        """{venue: (qty, limit price)} in the order the children go."""
        order = np.zeros(MAX_VENUES, np.int64)
        alloc = np.zeros((MAX_VENUES, 2))
        router.split(self.levels, self.n, self.vparams, self.stats, self.rparams, side, qty, limit, ref, home, now,
                     self.scores, order, np.zeros((router.MAX_CHUNKS, 4)), alloc)
        return {int(v): (float(alloc[v, 0]), float(alloc[v, 1])) for v in order if alloc[v, 0] > 0}


def test_the_cheaper_venue_after_taker_fees_takes_the_order():
    books = Books([(100.00, 5)], [(100.05, 5)], taker={0: 10.0, 1: 2.0})  # all-in 100.100 vs 100.070
    assert books.split(BUY, 1.0, 100.2) == {1: (1.0, 100.05)}
    assert books.scores[0] == pytest.approx((100.0 * 1.001 - 100.0) / 100.0 * 1e4)
    same_fees = Books([(100.00, 5)], [(100.05, 5)], taker={0: 2.0, 1: 2.0})
    assert same_fees.split(BUY, 1.0, 100.2) == {0: (1.0, 100.0)}
    sells = Books([(100.00, 5)], [(99.96, 5)], taker={0: 10.0, 1: 2.0})  # proceeds 99.900 vs 99.940
    assert sells.split(SELL, 1.0, 99.5) == {1: (1.0, 99.96)}


def test_a_large_order_is_split_across_venues_and_levels_cheapest_first():
    books = Books([(100.0, 1), (100.1, 1), (100.2, 5)], [(100.05, 1), (100.15, 1), (100.25, 5)])
    # 100.0 (a), 100.05 (b), 100.1 (a), 100.15 (b): each venue's child stops at the worst level it was given
    assert books.split(BUY, 4.0, 100.2) == {0: (2.0, 100.1), 1: (2.0, 100.15)}
    assert list(books.split(BUY, 4.0, 100.2)) == [0, 1]  # a's 4 cost 100.125 on average, b's 100.15 (2 at the limit)


def test_what_the_books_do_not_show_goes_to_the_best_ranked_venue_at_the_limit():
    books = Books([(100.0, 1)], [(100.05, 3), (100.1, 3)])
    # visible within 100.2: a 1, b 6; for 10, a costs (100 + 9 x 100.2) / 10 = 100.18, b (600.45 + 4 x 100.2) / 10
    # = 100.125: b ranks first and takes the 3 nobody shows, at the parent's limit
    assert books.split(BUY, 10.0, 100.2) == {1: (9.0, 100.2), 0: (1.0, 100.0)}


def test_a_share_below_min_child_usd_joins_the_best_venue():
    books = Books([(100.0, 1)], [(99.99, 0.05)], min_child_usd=10.0)  # b's 0.05 is worth 5 USD
    assert books.split(BUY, 1.05, 100.2) == {0: (pytest.approx(1.05), 100.2)}


def test_measured_latency_moves_the_ranking():
    books = Books([(100.0, 2)], [(100.0, 2)])
    assert list(books.split(BUY, 1.0, 100.2)) == [0]  # a tie: the lower venue
    router.on_ack(books.stats, books.rparams, 0, 20 * MS, 0)  # 20 ms at 0.5 bps/ms: 10 bps
    assert books.split(BUY, 1.0, 100.2) == {1: (1.0, 100.0)}
    assert books.scores[0] - books.scores[1] == pytest.approx(10.0)
    router.on_ack(books.stats, books.rparams, 0, 10 * MS, 0)
    assert books.stats[0, router.VS_LATENCY_NS] == pytest.approx(19 * MS)  # EWMA, alpha 0.1
    assert books.stats[0, router.VS_TIMEOUTS] == 0
    router.on_ack(books.stats, books.rparams, 1, 1_500 * MS, 0)  # past ack_timeout_ms: a failure too
    assert books.stats[1, router.VS_TIMEOUTS] == 1 and router.health(books.stats, books.rparams, 1, 0) == 1.0


def test_venue_rejects_move_the_ranking_leave_a_venue_out_and_decay():
    books = Books([(100.0, 2)], [(100.0, 2)], health_max=3.0, health_bps=5.0, health_halflife_ms=30_000.0)
    router.on_reject(books.stats, books.rparams, 0, 0)
    assert books.split(BUY, 1.0, 100.2) == {1: (1.0, 100.0)}  # 5 bps worse now
    router.on_reject(books.stats, books.rparams, 0, 0)
    router.on_reject(books.stats, books.rparams, 0, 0)
    assert books.split(BUY, 3.0, 100.2) == {1: (3.0, 100.2)}  # left out: b takes all, 1 beyond its depth
    assert books.scores[0] == np.inf
    later = 30_000 * MS  # one half-life: 1.5 failures, back in the ranking at 7.5 bps
    assert router.health(books.stats, books.rparams, 0, later) == pytest.approx(1.5)
    books.split(BUY, 3.0, 100.2, now=later)
    assert books.scores[0] - books.scores[1] == pytest.approx(7.5)


def test_when_no_venue_is_eligible_the_intents_own_venue_gets_it():
    books = Books(None, [(100.0, 2)], health_max=1.0)
    router.on_reject(books.stats, books.rparams, 1, 0)
    assert books.split(BUY, 1.0, 100.2, home=1) == {1: (1.0, 100.2)}


# --- inside execute -----------------------------------------------------------------------------------------------

def two_venues(t=T0):
    """Asks a: 100.5, 101.0, 101.5 ...; b: 100.6, 101.1, ...; one lot each."""
    return [book(t, 1, venue=0, ask=100.5), book(t, 2, venue=1, ask=100.6)]


def test_a_routed_intent_becomes_one_gated_child_per_venue_naming_its_parent():
    desk = Desk()
    desk.step(market=two_venues())
    reports = desk.step([intent(T0 + MS, 3, BUY, 101.5, 3.0, intent_id=7, route=1)])
    new = reports[reports["state"] == ORD_NEW]
    # 100.5 (a), 100.6 (b), 101.0 (a): a takes 2 up to 101.0, b 1 at 100.6; a ranks first
    assert list(new["venue"]) == [0, 1] and list(new["qty"]) == [2.0, 1.0] and list(new["price"]) == [101.0, 100.6]
    assert np.all(reports["parent_id"] == 7) and np.all(reports["algo"] == 0)
    fills = reports[np.isin(reports["state"], [ORD_PARTIAL, ORD_FILLED])]
    assert sorted(fills["price"]) == [100.5, 100.6, 101.0]
    assert desk.position(0) == 2.0 and desk.position(1) == 1.0
    assert desk.counters()["routed"] == 1 and desk.counters()["split"] == 1 and desk.counters()["child_orders"] == 2


def test_every_child_passes_the_gate_on_its_own():
    desk = Desk(max_order_qty=1.5)
    desk.step(market=two_venues())
    reports = desk.step([intent(T0 + MS, 3, BUY, 101.5, 3.0, intent_id=7, route=1)])
    refused = reports[reports["state"] == ORD_REJECTED]
    assert len(refused) == 1 and refused[0]["reject_reason"] == REJ_MAX_QTY and refused[0]["venue"] == 0
    assert refused[0]["parent_id"] == 7 and refused[0]["qty"] == 2.0
    assert list(reports[reports["state"] == ORD_NEW]["venue"]) == [1]


def test_route_takers_routes_plain_takers_and_never_a_quote():
    plain = Desk()
    plain.step(market=two_venues())
    alone = plain.step([intent(T0 + MS, 3, BUY, 101.5, 3.0)])
    assert set(alone["venue"]) == {0} and np.all(alone["parent_id"] == 0)  # defaults: one order, its own venue

    desk = Desk(routing={"route_takers": True})
    desk.step(market=two_venues())
    routed = desk.step([intent(T0 + MS, 3, BUY, 101.5, 3.0, intent_id=4)])
    assert set(routed[routed["state"] == ORD_NEW]["venue"]) == {0, 1} and np.all(routed["parent_id"] == 4)
    quote = desk.step([intent(T0 + 2 * MS, 4, BUY, 99.0, 1.0, intent_id=5, kind=INTENT_QUOTE)])
    assert list(quote["state"]) == [ORD_NEW, ORD_ACKED] and quote[0]["venue"] == 0 and quote[0]["parent_id"] == 0
    asked = desk.step([intent(T0 + 3 * MS, 5, BUY, 98.0, 1.0, intent_id=6, kind=INTENT_QUOTE, route=1)])
    assert list(asked["state"]) == [ORD_REJECTED] and asked[0]["reject_reason"] == REJ_BAD_QTY


def test_execute_measures_each_venues_ack_latency():
    desk = Desk(venue={"entry_latency_ms": 2.0, "response_latency_ms": 3.0})
    desk.step(market=[book(T0, 1)])
    desk.step([intent(T0 + MS, 2, BUY, 100.5, 0.5)])
    desk.step(market=[book(T0 + 10 * MS, 3), book(T0 + 20 * MS, 4)])
    assert desk.venue_stats[0, router.VS_ACKS] == 1
    assert desk.venue_stats[0, router.VS_LATENCY_NS] == 5 * MS  # entry + response, on the event clock


def test_a_venue_that_rejects_loses_its_place_in_the_ranking():
    rejects_all = np.array([[0, -1, MS], [10 ** 15, -1, 10 ** 15 + MS]], np.int64)  # every order refused, 1 ms
    desk = Desk(latency_table=rejects_all)
    desk.step(market=[book(T0, 1, venue=0, ask=100.5), book(T0, 2, venue=1, ask=100.52)])  # b 2 bps dearer
    first = desk.step([intent(T0 + MS, 3, BUY, 100.6, 0.5, intent_id=1, route=1)])
    assert list(first[first["state"] == ORD_NEW]["venue"]) == [0]
    desk.step(market=[book(T0 + 5 * MS, 4, venue=0, ask=100.5)])  # the venue's refusal is back
    assert desk.venue_stats[0, router.VS_REJECTS] == 1
    second = desk.step([intent(T0 + 20 * MS, 5, BUY, 100.6, 0.5, intent_id=2, route=1)])
    assert list(second[second["state"] == ORD_NEW]["venue"]) == [1]  # a's 5 bps of health outweigh 2 bps of price


def test_the_intent_path_is_unchanged_when_routing_is_on_but_the_intent_is_not_routed():
    """An active routing block (an algo above a notional no intent reaches) sends plain intents down the same path."""
    reports = []
    for routing in ({}, {"algo": "twap", "algo_above_usd": 1e9}):
        desk = Desk(routing=routing, max_order_qty=2.0)
        desk.step(market=two_venues())
        desk.step([intent(T0 + MS, 3, BUY, 101.5, 1.5, intent_id=1),
                   intent(T0 + MS, 3, BUY, 101.5, 2.5, intent_id=2),
                   intent(T0 + MS, 3, SELL, 99.0, 1.0, intent_id=3, venue=1, kind=INTENT_QUOTE)])
        reports.append(desk.all_reports())
    assert len(reports[0]) > 3
    assert reports[0].tobytes() == reports[1].tobytes()

