"""Reconciliation on hand-built snapshots: the venue is the authority on what happened there; orders of a previous
incarnation are cancelled or adopted, others' are left alone; missed fills and ends become synthetic answers; a
position mismatch beyond the tolerance is an error. And once against the loopback Binance, from a real snapshot."""
import asyncio

import pytest

from pipeline.venues import client_ids
from pipeline.venues.reconcile import LocalOrder, VenueOrder, VenueSnapshot, VenueTrade, at_start, reconcile
from stages.records import (ANS_ACK, ANS_CANCELLED, ANS_FILL, ANS_REJECTED, BUY, CMD_CANCEL, CMD_NEW, INTENT_IOC,
                            SELL)
from tests.pipeline.venues.loopback import KEY_BTC, best, command, in_thread, running, venue_orders, venue_trades

KEY = 3  # venue 0, symbol 3


def vorder(order_id, status="open", qty=1.0, filled=0.0, side=BUY, cid=None, key=KEY, vid=None):
    return VenueOrder(venue_id=vid or f"v{order_id}", client_id=cid or f"b4run-{order_id}", order_id=order_id,
                      symbol="BTC/USDT", key=key, side=side, price=100.0, qty=qty, filled=filled, status=status,
                      exch_ts=5_000)


def vtrade(trade_id, order_id, qty, price=100.0, side=BUY, ts=None, fee=0.01, key=KEY):
    return VenueTrade(trade_id=trade_id, venue_order_id=f"v{order_id}", order_id=order_id, symbol="BTC/USDT",
                      key=key, side=side, price=price, qty=qty, fee=fee, liquidity=1, exch_ts=ts or trade_id * 10)


def snap(**kw):
    return VenueSnapshot(venue=0, taken_ns=99, **kw)


def rows(plan):
    return [(int(a["kind"]), int(a["order_id"]), int(a["slot"]), int(a["trade_id"]), float(a["qty"]),
             float(a["leaves"])) for a in plan.answers]


def test_orders_the_venue_has_and_we_do_not_ours_are_cancelled_or_adopted_others_left_alone():
    mine_old = vorder(7)
    foreign = vorder(None, cid="someone-else-1", vid="v900")
    other_run = vorder(None, cid="b4otherrun-5", vid="v901")
    known = vorder(8)
    s = snap(open_orders=[mine_old, foreign, other_run, known])
    local = {8: LocalOrder(8, slot=2, key=KEY, side=BUY, price=100.0, qty=1.0)}
    plan = reconcile(s, local, {}, set())
    assert plan.cancel == [mine_old] and plan.adopt == [] and plan.foreign == [foreign, other_run]
    assert len(plan.answers) == 0 and plan.ok and plan.unresolved == []
    adopted = reconcile(s, local, {}, set(), orphans="adopt")
    assert adopted.adopt == [mine_old] and adopted.cancel == []
    with pytest.raises(ValueError, match="orphans"):
        reconcile(s, local, {}, set(), orphans="ignore")
    assert any("not ours" in line for line in plan.lines())


def test_an_order_we_think_open_that_the_venue_ended_gets_its_missed_fills_then_its_end():
    local = {10: LocalOrder(10, slot=4, key=KEY, side=BUY, price=100.0, qty=1.0, filled=0.2)}
    s = snap(orders={10: vorder(10, status="canceled", filled=0.7)},
             trades=[vtrade(2, 10, 0.3), vtrade(1, 10, 0.2), vtrade(3, 10, 0.2)])
    plan = reconcile(s, local, {KEY: 0.2}, {(KEY, 1)})  # trade 1 is the 0.2 the journal holds
    assert rows(plan) == [(ANS_FILL, 10, 4, 2, 0.3, pytest.approx(0.5)), (ANS_FILL, 10, 4, 3, 0.2, pytest.approx(0.3)),
                          (ANS_CANCELLED, 10, 4, 0, pytest.approx(0.3), 0.0)]
    assert plan.expected_positions[KEY] == pytest.approx(0.7)
    assert all(a["arrive_ts"] == 99 and a["send_ts"] == 0 for a in plan.answers)


def test_missed_fills_that_complete_an_order_end_it_with_leaves_zero_and_nothing_more():
    local = {11: LocalOrder(11, slot=1, key=KEY, side=SELL, price=100.0, qty=0.5)}
    s = snap(orders={11: vorder(11, status="closed", qty=0.5, filled=0.5, side=SELL)},
             trades=[vtrade(5, 11, 0.25, side=SELL), vtrade(6, 11, 0.25, side=SELL)])
    plan = reconcile(s, local, {KEY: 0.0}, set())
    assert rows(plan) == [(ANS_FILL, 11, 1, 5, 0.25, 0.25), (ANS_FILL, 11, 1, 6, 0.25, 0.0)]
    assert plan.expected_positions[KEY] == pytest.approx(-0.5)


def test_an_order_the_venue_does_not_know_is_rejected_or_if_it_was_acknowledged_cancelled():
    local = {12: LocalOrder(12, slot=0, key=KEY, side=BUY, price=100.0, qty=1.0, acked=False),
             13: LocalOrder(13, slot=5, key=KEY, side=BUY, price=100.0, qty=1.0, acked=True),
             14: LocalOrder(14, slot=6, key=KEY, side=BUY, price=100.0, qty=1.0)}
    plan = reconcile(snap(orders={12: None, 13: None}), local, {}, set())
    assert rows(plan) == [(ANS_REJECTED, 12, 0, 0, 1.0, 0.0), (ANS_CANCELLED, 13, 5, 0, 1.0, 0.0)]
    assert plan.unresolved == ["order 14: not open at the venue and not asked about: query it by its client order id"]


def test_fills_the_journal_already_holds_are_not_repeated_and_unexplained_fills_are_unresolved():
    local = {20: LocalOrder(20, slot=3, key=KEY, side=BUY, price=100.0, qty=1.0, filled=0.4)}
    s = snap(open_orders=[vorder(20, filled=0.9)], trades=[vtrade(1, 20, 0.4)])
    plan = reconcile(s, local, {KEY: 0.4}, {(KEY, 1)})
    assert len(plan.answers) == 0
    assert plan.unresolved and "venue says 0.9 filled" in plan.unresolved[0]


def test_fills_of_a_previous_incarnations_order_are_reported_with_slot_minus_one_and_move_the_position():
    s = snap(open_orders=[vorder(30, filled=0.3)], trades=[vtrade(8, 30, 0.3, fee=0.5)], has_positions=True,
             positions={KEY: 0.3})
    plan = reconcile(s, {}, {}, set())
    assert rows(plan) == [(ANS_FILL, 30, -1, 8, 0.3, 0.0)] and plan.answers[0]["fee"] == 0.5
    assert plan.cancel == [s.open_orders[0]] and plan.ok
    assert plan.expected_positions == {KEY: pytest.approx(0.3)}


def test_a_position_mismatch_beyond_the_tolerance_keeps_trading_disarmed():
    s = snap(has_positions=True, positions={KEY: 1.0, KEY + 1: -0.5})
    plan = reconcile(s, {}, {KEY: 1.0 + 1e-12, KEY + 1: -0.4, KEY + 2: 0.2}, set())
    assert not plan.ok
    assert [(m.key, m.local, m.venue) for m in plan.mismatches] == [(KEY + 1, -0.4, -0.5), (KEY + 2, 0.2, 0.0)]
    assert plan.mismatches[0].difference == pytest.approx(-0.1)
    assert reconcile(s, {}, {KEY: 1.0, KEY + 1: -0.4, KEY + 2: 0.2}, set(),
                     tolerance={KEY + 1: 0.2, KEY + 2: 0.25}).ok
    assert any("position mismatch on key 4" in line for line in plan.lines())
    # a venue without positions (spot) is not compared
    assert reconcile(snap(positions={}), {}, {KEY: 5.0}, set()).ok


def test_a_restarted_run_reconciles_against_the_loopback_venue(server):
    """A run places orders and stops (SIGKILL, as far as the venue can tell); the next incarnation's execute
    remembers some of them wrongly. The snapshot and the plan put it right; the orphan is cancelled."""
    async def scenario():
        bid, asks, book = best(server)
        async with running(server, "recon") as before:
            before.session.submit(command(CMD_NEW, 801, BUY, bid - 1200, 0.002))        # execute lost it: an orphan
            # (a print at its price fills it and nothing else: it is above every buy other tests leave resting)
            before.session.submit(command(CMD_NEW, 802, BUY, bid - 550, 0.003))         # a fill the journal missed
            take = round(float(book.asks[asks[0]][1]) / 2, 5)
            before.session.submit(command(CMD_NEW, 804, BUY, asks[0], take, INTENT_IOC))  # filled, journal missed it
            await before.until(lambda: all(ANS_ACK in before.kinds(i) for i in (801, 802, 804)))
            await in_thread(server.trade, "BTCUSDT", bid - 550, 0.001)
            await before.until(lambda: ANS_FILL in before.kinds(802))
        async with running(server, "recon-other") as other:                                # another run's order
            other.session.submit(command(CMD_NEW, 850, SELL, asks[-1] + 1200, 0.001))
            await other.until(lambda: ANS_ACK in other.kinds(850))
        async with running(server, "recon") as run:
            local = {802: LocalOrder(802, slot=1, key=KEY_BTC, side=BUY, price=bid - 550, qty=0.003),
                     803: LocalOrder(803, slot=2, key=KEY_BTC, side=BUY, price=bid - 1202, qty=0.001, acked=False),
                     804: LocalOrder(804, slot=3, key=KEY_BTC, side=BUY, price=asks[0], qty=take)}
            snapshot = await run.session.snapshot({oid: lo.key for oid, lo in local.items()})
            plan = reconcile(snapshot, local, {KEY_BTC: 0.0}, set())
            for vo in plan.cancel:
                run.session.cancel(command(CMD_CANCEL, vo.order_id, slot=-1))
            await run.until(lambda: ANS_CANCELLED in run.kinds(801))
            return before, other, run, snapshot, plan, take

    before, other, run, snapshot, plan, take = asyncio.run(scenario())
    assert snapshot.complete and snapshot.balances["USDT"]["total"] > 0 and not snapshot.has_positions
    prefix = client_ids.prefix("recon")
    assert [vo.client_id for vo in plan.cancel] == [client_ids.client_order_id(prefix, 801)]
    assert client_ids.client_order_id(client_ids.prefix("recon-other"), 850) in [vo.client_id for vo in plan.foreign]
    venue = {o.client_id: o for o in venue_orders(server, prefix)}
    trade_802 = venue_trades(server, venue[client_ids.client_order_id(prefix, 802)].order_id)
    trades_804 = venue_trades(server, venue[client_ids.client_order_id(prefix, 804)].order_id)
    a = plan.answers
    got = [(int(r["kind"]), int(r["order_id"]), int(r["trade_id"])) for r in a]
    assert got == ([(ANS_FILL, 802, t["id"]) for t in trade_802] + [(ANS_REJECTED, 803, 0)]
                   + [(ANS_FILL, 804, t["id"]) for t in trades_804])
    assert a[0]["leaves"] == pytest.approx(0.002) and a[-1]["leaves"] == 0.0 and a[1]["slot"] == 2
    assert sum(r["fee"] for r in a) == pytest.approx(sum(t["fee"] for t in trade_802 + trades_804))
    assert plan.expected_positions[KEY_BTC] == pytest.approx(0.001 + take) and plan.ok and plan.unresolved == []
    assert venue[client_ids.client_order_id(prefix, 801)].status == "CANCELED"   # the orphan, cancelled
    assert venue[client_ids.client_order_id(prefix, 802)].status == "PARTIALLY_FILLED"
    assert run.of(801)[0]["slot"] == -1 and run.session.counters.stray_orders == 1


def test_at_start_every_open_order_of_ours_is_an_orphan_and_a_venue_position_a_mismatch_to_refuse_or_adopt():
    s = snap(open_orders=[vorder(40), vorder(None, cid="someone-1", vid="v41")], trades=[vtrade(9, 40, 0.1)],
             has_positions=True, positions={KEY: 0.25, KEY + 1: 0.0}, position_prices={KEY: 101.5})
    out = at_start(s, venue=0, tolerance=1e-6)
    assert [o.order_id for o in out.cancel] == [40] and [o.client_id for o in out.foreign] == ["someone-1"]
    assert out.mismatches == ["key 3: execute 0, venue 0.25 (difference +0.25)"]
    (fill,) = out.synthetic_fills
    assert (int(fill["kind"]), int(fill["order_id"]), int(fill["slot"]), int(fill["key"]), int(fill["side"])) == (
        ANS_FILL, 0, -1, KEY, BUY)
    assert (fill["qty"], fill["price"], fill["trade_id"]) == (0.25, 101.5, 0)
    assert len(out.plan.answers) == 0  # no journal given: the trade history is not compared
    assert any("not compared" in n for n in out.notes)
    # execute holding the same position: nothing to refuse; the journal's trades given: the fill is compared
    held = at_start(s, positions={KEY: 0.25}, journal_trades={(KEY, 9)})
    assert held.mismatches == [] and len(held.synthetic_fills) == 0
    # another prefix reads other orders as ours; an incomplete snapshot is never a clean start
    other = at_start(snap(open_orders=[vorder(None, cid="b4mine-77", vid="v77")], complete=False,
                          notes=["positions: timeout"]), prefix="b4mine-")
    assert [o.order_id for o in other.cancel] == [77]
    assert other.mismatches == ["the venue's snapshot is incomplete (positions: timeout)"]
    with pytest.raises(ValueError, match="venue 0's, not venue 2's"):
        at_start(s, venue=2)


def test_a_mismatch_is_named_by_its_symbol_when_the_snapshot_names_it():
    s = snap(has_positions=True, positions={KEY: 1.0}, symbols={KEY: "BTC/USDT:USDT"})
    plan = reconcile(s, {}, {}, set())
    assert plan.lines()[0].startswith(f"position mismatch on BTC/USDT:USDT (key {KEY}): execute 0, venue 1")
