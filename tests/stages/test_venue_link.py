"""Execute with a live venue: orders leave as commands on the venue's gateway ring, the gateway's answers move them
through the same order state machine as the paper venue's, a full ring refuses rather than loses, and a fill
that arrives after the order ended here is still accounted (the position at the venue is real)."""
import numpy as np

from shm import control as cb
from shm import ring
from stages import execute, records
from stages.records import (ANS_ACK, ANS_CANCEL_REJECTED, ANS_CANCELLED, ANS_FILL, BUY, CMD_CANCEL, CMD_NEW,
                            INTENT_IOC, INTENT_QUOTE, ORD_ACKED, ORD_CANCELLED, ORD_FILLED, ORD_NEW, ORD_PARTIAL,
                            ORD_PENDING_CANCEL, ORD_REJECTED, REJ_GATEWAY, SELL)
from stages.venue import link
from tests.conftest import instant_venue, kernel_params
from tests.stages.test_gate import MS, book, intent


class LiveExecute:
    """Execute whose venue 0 is live, with the gateway's two rings held here (capacity ``capacity``)."""

    def __init__(self, capacity=64, seed=1_000_000, amends=False):
        self.commands = ring.local_ring(records.VENUE_COMMAND, capacity)
        self.answers = ring.local_ring(records.VENUE_ANSWER, 64)
        self.state = execute.make_state(links=link.make_links({0: (self.commands, self.answers)},
                                                              (0,) if amends else ()))
        execute.seed_order_ids(self.state, seed)
        self.params = kernel_params("execute", venue=instant_venue(), event_clock=False, max_open_orders=64)
        self.ctl = np.zeros(cb.GLOBAL_WORDS, np.int64)
        self.ctl[cb.G_TRADING_ENABLED] = 1
        self.stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
        self.out = np.zeros(execute.out_capacity(16), records.EXEC_REPORT)
        self.now = 1_000 * MS
        self.step(market=[book()])

    def step(self, intents=(), market=()):
        self.now += MS
        intents = np.array(list(intents), records.ORDER_INTENT)
        market = np.array(list(market), records.MARKET_EVENT)
        n = execute.step(intents, len(intents), market, len(market), self.state, self.params, self.ctl,
                         self.stats, self.out, self.now)
        return self.out[:n].copy()

    def working_quote(self, side, price, qty=1.0):
        """A quote placed and acknowledged by the venue: its NEW command."""
        self.step([intent(INTENT_QUOTE, side, price, qty)])
        (new,) = self.sent()
        self.answer(new, ANS_ACK, leaves=qty)
        self.step()
        return new

    def sent(self):
        out = np.zeros(64, records.VENUE_COMMAND)
        return out[:ring.read(*self.commands, out, 64)].copy()

    def answer(self, command, kind, qty=0.0, price=0.0, leaves=0.0, trade_id=0, fee=0.0):
        """An answer about ``command``'s order (a VENUE_COMMAND of it)."""
        a = np.zeros(1, records.VENUE_ANSWER)
        for name in ("order_id", "slot", "key", "side"):
            a[0][name] = command[name]
        a[0]["kind"], a[0]["qty"], a[0]["price"], a[0]["leaves"] = kind, qty, price, leaves
        a[0]["trade_id"], a[0]["fee"], a[0]["liquidity"], a[0]["arrive_ts"] = trade_id, fee, -1, self.now
        assert ring.try_write(*self.answers, a, 1) == 1


def test_an_order_to_a_live_venue_is_a_command_and_its_answers_move_it():
    x = LiveExecute()
    reports = x.step([intent(INTENT_IOC, BUY, 100.5, 2.0)])
    assert [r["state"] for r in reports] == [ORD_NEW]
    (cmd,) = x.sent()
    assert cmd["kind"] == CMD_NEW and cmd["order_kind"] == INTENT_IOC and cmd["side"] == BUY
    assert cmd["order_id"] == 1_000_001 and cmd["price"] == 100.5 and cmd["qty"] == 2.0
    assert x.state[execute.X_VENUE][0][execute.exchange.VI_ACTIVE_N] == 0  # nothing reached the paper venue
    x.answer(cmd, ANS_ACK, leaves=2.0)
    x.answer(cmd, ANS_FILL, qty=0.5, price=100.5, leaves=1.5, trade_id=7, fee=0.01)
    x.answer(cmd, ANS_FILL, qty=0.5, price=100.5, leaves=1.5, trade_id=7, fee=0.01)  # the stream and a query
    x.answer(cmd, ANS_FILL, qty=1.5, price=100.5, leaves=0.0, trade_id=8, fee=0.03)
    reports = x.step()
    assert [r["state"] for r in reports] == [ORD_ACKED, ORD_PARTIAL, ORD_FILLED]
    assert x.state[execute.X_POSITIONS][0] == 2.0
    assert x.stats[execute.ST_LINK_COMMANDS] == 1 and x.stats[execute.ST_LINK_ANSWERS] == 4


def test_a_quote_is_cancelled_through_the_gateway_and_a_refused_cancel_is_not_resent():
    x = LiveExecute()
    cmd = x.working_quote(BUY, 100.0)
    reports = x.step([intent(INTENT_QUOTE, BUY, 100.0, 0.0, intent_id=2)])  # withdraw the quote
    assert [r["state"] for r in reports] == [ORD_PENDING_CANCEL]
    (cancel,) = x.sent()
    assert cancel["kind"] == CMD_CANCEL and cancel["order_id"] == cmd["order_id"] and cancel["slot"] == cmd["slot"]
    x.answer(cmd, ANS_CANCEL_REJECTED, leaves=1.0)
    assert len(x.step()) == 0 and len(x.sent()) == 0  # no cancel loop against a live venue
    x.answer(cmd, ANS_CANCELLED, leaves=1.0)
    assert [r["state"] for r in x.step()] == [ORD_CANCELLED]


def test_a_fill_after_the_cancel_was_acknowledged_is_accounted():
    x = LiveExecute()
    x.step([intent(INTENT_QUOTE, SELL, 101.0, 1.0)])
    (cmd,) = x.sent()
    x.answer(cmd, ANS_ACK, leaves=1.0)
    x.answer(cmd, ANS_CANCELLED, leaves=1.0)
    x.answer(cmd, ANS_FILL, qty=0.25, price=101.0, leaves=0.0, trade_id=3)
    reports = x.step()
    assert [r["state"] for r in reports] == [ORD_ACKED, ORD_CANCELLED, ORD_PARTIAL]
    late = reports[-1]
    assert late["qty"] == 0.25 and late["position"] == -0.25 and late["order_id"] == cmd["order_id"]
    assert x.state[execute.X_POSITIONS][0] == -0.25 and x.stats[execute.ST_LATE_FILLS] == 1


def test_a_full_gateway_ring_refuses_orders_and_retries_cancels():
    x = LiveExecute(capacity=2)
    first = x.step([intent(INTENT_QUOTE, BUY, 100.0, 1.0)])
    assert first[0]["state"] == ORD_NEW
    # one command waits unread: a new quote needs room for itself and the replaced quote's cancel
    refused = x.step([intent(INTENT_QUOTE, BUY, 99.5, 1.0, intent_id=2)])
    assert [(r["state"], r["reject_reason"]) for r in refused] == [(ORD_REJECTED, REJ_GATEWAY)]
    assert x.stats[execute.ST_LINK_FULL] == 1
    x.step([intent(INTENT_IOC, SELL, 99.0, 1.0, intent_id=3)])  # fills the ring (room for 1 only: refused)
    assert len(x.sent()) == 1
    x.ctl[cb.G_TRADING_ENABLED] = 0  # the kill: every open order is cancelled through the gateway
    assert [r["state"] for r in x.step()] == [ORD_PENDING_CANCEL]
    (cancel,) = x.sent()
    assert cancel["kind"] == CMD_CANCEL


def test_an_answer_without_a_slot_finds_its_order_by_id():
    # a restarted gateway cancels what it found open at the venue: it knows the order id, not execute's slot
    x = LiveExecute()
    cmd = x.working_quote(BUY, 100.0)
    cmd = cmd.copy()
    cmd["slot"] = -1
    x.answer(cmd, ANS_CANCELLED, leaves=1.0)
    assert [r["state"] for r in x.step()] == [ORD_CANCELLED]
    assert x.stats[execute.ST_OPEN] == 0 and x.stats[execute.ST_STRAY_ANSWERS] == 0


def test_a_refused_cancel_is_asked_again_after_growing_pauses_then_left_to_the_gateway():
    x = LiveExecute()
    cmd = x.working_quote(BUY, 100.0)
    x.ctl[cb.G_TRADING_ENABLED] = 0  # the kill asks for the cancel at every step until it is sent
    x.step()
    sent = x.sent()
    pauses_ms = []
    for attempt in range(execute.CANCEL_RESENDS + 1):
        (cancel,) = sent
        assert cancel["kind"] == CMD_CANCEL and cancel["order_id"] == cmd["order_id"]
        x.answer(cmd, ANS_CANCEL_REJECTED, leaves=1.0)
        x.step()
        waited_ms, sent = 0, x.sent()
        while not len(sent) and waited_ms < 10_000:
            x.now += 49 * MS  # and step's own 1 ms
            x.step()
            waited_ms, sent = waited_ms + 50, x.sent()
        if attempt < execute.CANCEL_RESENDS:
            pauses_ms.append(waited_ms)
        else:
            assert len(sent) == 0  # given up: the gateway's queries (and its cancel-all at the stop) settle it
    assert pauses_ms == sorted(pauses_ms) and len(set(pauses_ms)) == execute.CANCEL_RESENDS
    assert pauses_ms[0] >= execute.CANCEL_RETRY_NS // 1_000_000
    assert x.stats[execute.ST_CANCELS_GIVEN_UP] == 1 and x.stats[execute.ST_OPEN] == 1
    x.answer(cmd, ANS_CANCELLED, leaves=1.0)  # the gateway's query found it cancelled after all
    assert [r["state"] for r in x.step()] == [ORD_CANCELLED] and x.stats[execute.ST_OPEN] == 0


def test_a_late_fill_reported_twice_is_applied_once():
    x = LiveExecute()
    x.step([intent(INTENT_QUOTE, SELL, 101.0, 1.0)])
    (cmd,) = x.sent()
    x.answer(cmd, ANS_ACK, leaves=1.0)
    x.answer(cmd, ANS_CANCELLED, leaves=1.0)
    x.answer(cmd, ANS_FILL, qty=0.25, price=101.0, leaves=0.0, trade_id=3)
    x.answer(cmd, ANS_FILL, qty=0.25, price=101.0, leaves=0.0, trade_id=3)  # the stream, then a query
    x.answer(cmd, ANS_FILL, qty=0.5, price=101.0, leaves=0.0, trade_id=4)
    reports = x.step()
    assert [r["state"] for r in reports] == [ORD_ACKED, ORD_CANCELLED, ORD_PARTIAL, ORD_PARTIAL]
    assert x.state[execute.X_POSITIONS][0] == -0.75
    assert x.stats[execute.ST_LATE_FILLS] == 2 and x.stats[execute.ST_DUPLICATE_TRADES] == 1


def test_dust_is_not_flattened_and_a_venue_that_keeps_refusing_the_flatten_is_left():
    x = LiveExecute()
    x.state[execute.X_POSITIONS][0] = -2.8e-16  # what fills' float sums leave
    x.ctl[cb.G_TRADING_ENABLED] = 0
    for _ in range(5):
        x.now += 200 * MS
        x.step(market=[book()])
    assert len(x.sent()) == 0
    assert x.stats[execute.ST_DUST_POSITIONS] == 1 and x.stats[execute.ST_TO_FLATTEN] == 0
    x.state[execute.X_POSITIONS][0] = 0.5
    refused = 0
    for _ in range(20):
        x.now += 200 * MS  # > execute.flatten_retry_ms
        x.step(market=[book()])
        for flat in x.sent():
            assert flat["kind"] == CMD_NEW and flat["side"] == SELL and flat["qty"] == 0.5
            x.answer(flat, records.ANS_REJECTED)
            refused += 1
    x.step(market=[book()])
    assert refused == execute.FLATTEN_REJECTS_MAX
    assert x.stats[execute.ST_FLATTEN_GIVEN_UP] == 1 and x.stats[execute.ST_TO_FLATTEN] == 0


def test_a_quote_at_a_venue_that_amends_in_place_is_amended_and_a_refused_amend_leaves_it_standing():
    x = LiveExecute(amends=True)
    x.step([intent(INTENT_QUOTE, BUY, 100.0, 1.0)])
    (new,) = x.sent()
    x.answer(new, ANS_ACK, leaves=1.0)
    x.answer(new, ANS_FILL, qty=0.25, price=100.0, leaves=0.75, trade_id=1)
    x.step()
    reports = x.step([intent(INTENT_QUOTE, BUY, 99.9, 2.0, intent_id=2)])  # the gate passes it: an amend
    assert [(r["state"], r["price"], r["qty"]) for r in reports] == [(records.ORD_PENDING_AMEND, 99.9, 2.25)]
    (amend,) = x.sent()
    assert amend["kind"] == records.CMD_AMEND and amend["order_id"] == new["order_id"] and amend["slot"] == new["slot"]
    assert amend["price"] == 99.9 and amend["qty"] == 2.25  # the total: what is filled and what should be open
    x.answer(amend, records.ANS_AMENDED, qty=2.25, price=99.9, leaves=2.0)
    x.answer(amend, records.ANS_AMENDED, qty=2.25, price=99.9, leaves=2.0)  # the stream and a query: applied once
    reports = x.step()
    assert [(r["state"], r["price"], r["leaves"]) for r in reports] == [(records.ORD_AMENDED, 99.9, 2.0)]
    assert x.stats[execute.ST_AMENDS] == 1 and x.stats[execute.ST_AMENDED] == 1
    assert x.stats[execute.ST_TRANSITIONS_REFUSED] == 1 and x.stats[execute.ST_OPEN] == 1
    x.step([intent(INTENT_QUOTE, BUY, 99.8, 2.0, intent_id=3)])
    (amend,) = x.sent()
    x.answer(amend, records.ANS_AMEND_REJECTED, qty=2.25, price=99.9, leaves=2.0)
    x.answer(amend, ANS_FILL, qty=2.0, price=99.9, leaves=0.0, trade_id=2)  # the old quote still fills
    reports = x.step()
    assert [(r["state"], r["price"]) for r in reports] == [(records.ORD_AMEND_REJECTED, 99.9), (ORD_FILLED, 99.9)]
    assert x.state[execute.X_POSITIONS][0] == 2.25 and x.stats[execute.ST_OPEN] == 0


def test_an_amend_the_gate_refuses_leaves_the_quote_and_a_venue_without_amends_cancel_replaces():
    x = LiveExecute(amends=True)
    new = x.working_quote(SELL, 101.0)
    refused = x.step([intent(INTENT_QUOTE, SELL, 150.0, 1.0, intent_id=2)])  # outside the price collar
    assert [r["state"] for r in refused] == [ORD_REJECTED] and len(x.sent()) == 0
    assert x.stats[execute.ST_OPEN] == 1 and x.stats[execute.ST_AMENDS] == 0
    x.step([intent(INTENT_QUOTE, SELL, 101.1, 1.0, intent_id=3)])
    (amend,) = x.sent()
    # a second requote while the amend is in flight: cancel-replace (the amended order is cancelled)
    reports = x.step([intent(INTENT_QUOTE, SELL, 101.2, 1.0, intent_id=4)])
    assert [r["state"] for r in reports] == [ORD_PENDING_CANCEL, ORD_NEW]
    assert [c["kind"] for c in x.sent()] == [CMD_CANCEL, CMD_NEW]
    y = LiveExecute()  # no amends at this venue: the replacement goes first, then the cancel
    y.step([intent(INTENT_QUOTE, SELL, 101.0, 1.0)])
    (new,) = y.sent()
    y.answer(new, ANS_ACK, leaves=1.0)
    y.step()
    reports = y.step([intent(INTENT_QUOTE, SELL, 101.1, 1.0, intent_id=2)])
    assert [r["state"] for r in reports] == [ORD_PENDING_CANCEL, ORD_NEW]
    assert [c["kind"] for c in y.sent()] == [CMD_CANCEL, CMD_NEW]


def test_an_amend_answered_after_a_cancel_overtook_it_still_moves_the_orders_price():
    x = LiveExecute(amends=True)
    new = x.working_quote(BUY, 100.0)
    x.step([intent(INTENT_QUOTE, BUY, 99.9, 1.0, intent_id=2)])
    (amend,) = x.sent()
    x.step([intent(INTENT_QUOTE, BUY, 99.8, 1.0, intent_id=3)])  # while the amend is in flight: cancel-replace
    assert [c["kind"] for c in x.sent()] == [CMD_CANCEL, CMD_NEW]
    x.answer(amend, records.ANS_AMENDED, qty=1.0, price=99.9, leaves=1.0)
    x.answer(amend, ANS_FILL, qty=0.5, price=99.9, leaves=0.5, trade_id=1)
    x.answer(amend, ANS_CANCELLED, leaves=0.5)
    reports = x.step()
    assert [(r["state"], r["price"]) for r in reports] == [(records.ORD_AMENDED, 99.9), (ORD_PARTIAL, 99.9),
                                                           (ORD_CANCELLED, 99.9)]
    assert x.stats[execute.ST_TRANSITIONS_REFUSED] == 0
