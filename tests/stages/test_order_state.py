"""The order manager's state machine: the paths a real venue produces, invalid transitions refused and counted,
duplicate trades ignored."""
import pytest

from stages import order_state as os_
from stages.order_state import (OE_ACCEPT, OE_CANCEL_REJECTED, OE_CANCEL_REQUEST, OE_CANCELLED, OE_DENY, OE_EXPIRE,
                                OE_FILL, OE_PARTIAL_FILL, OE_REJECT, OE_SUBMIT, OE_UPDATE_REJECTED, OE_UPDATE_REQUEST,
                                OE_UPDATED, OS_ACCEPTED, OS_CANCELLED, OS_DENIED, OS_FILLED, OS_PARTIALLY_FILLED,
                                OS_PENDING_CANCEL, OS_PENDING_UPDATE, OS_REJECTED, OS_SUBMITTED)


def run(*events, slot=0):
    fsm = os_.make_state(4)
    outcomes = [os_.apply(fsm, slot, e) for e in events]
    return fsm, int(fsm[0][slot]), outcomes


@pytest.mark.parametrize("events, final", [
    ((OE_DENY,), OS_DENIED),
    ((OE_SUBMIT, OE_REJECT), OS_REJECTED),
    ((OE_SUBMIT, OE_ACCEPT, OE_PARTIAL_FILL, OE_PARTIAL_FILL, OE_FILL), OS_FILLED),
    ((OE_SUBMIT, OE_PARTIAL_FILL, OE_CANCELLED), OS_CANCELLED),            # an IOC: filled in part, then ended
    ((OE_SUBMIT, OE_ACCEPT, OE_ACCEPT), OS_ACCEPTED),                      # the stream and a query both acked
    ((OE_SUBMIT, OE_ACCEPT, OE_CANCEL_REQUEST, OE_CANCELLED), OS_CANCELLED),
    ((OE_SUBMIT, OE_ACCEPT, OE_CANCEL_REQUEST, OE_CANCEL_REJECTED), OS_ACCEPTED),  # refused: back as it was
    ((OE_SUBMIT, OE_ACCEPT, OE_CANCEL_REQUEST, OE_FILL), OS_FILLED),       # filled before the cancel arrived
    ((OE_SUBMIT, OE_ACCEPT, OE_UPDATE_REQUEST, OE_UPDATED), OS_ACCEPTED),
    ((OE_SUBMIT, OE_ACCEPT, OE_PARTIAL_FILL, OE_UPDATE_REQUEST, OE_UPDATE_REJECTED), OS_PARTIALLY_FILLED),
    ((OE_SUBMIT, OE_ACCEPT, OE_UPDATE_REQUEST, OE_CANCEL_REQUEST, OE_CANCEL_REJECTED), OS_ACCEPTED),
    ((OE_SUBMIT, OE_CANCEL_REQUEST, OE_ACCEPT, OE_CANCEL_REJECTED), OS_ACCEPTED),  # the ack came after the request
    ((OE_SUBMIT, OE_PARTIAL_FILL, OE_ACCEPT, OE_FILL), OS_FILLED),        # acknowledged only after its first fill
])
def test_the_paths_a_venue_produces_end_where_the_venue_says(events, final):
    fsm, state, outcomes = run(*events)
    assert state == final, os_.STATE_NAMES[state]
    assert outcomes == [os_.APPLIED] * len(events) and fsm[4][1] == 0


def test_a_fill_while_a_cancel_is_pending_is_remembered_when_the_cancel_is_refused():
    fsm, state, _ = run(OE_SUBMIT, OE_ACCEPT, OE_CANCEL_REQUEST, OE_PARTIAL_FILL)
    assert state == OS_PENDING_CANCEL  # still open at the venue until it answers the cancel
    assert os_.apply(fsm, 0, OE_ACCEPT) == os_.APPLIED  # a late ack does not undo the fill
    assert os_.apply(fsm, 0, OE_CANCEL_REJECTED) == os_.APPLIED and fsm[0][0] == OS_PARTIALLY_FILLED


def test_a_fill_after_the_cancel_was_acknowledged_is_a_late_fill_and_the_order_stays_cancelled():
    fsm, state, outcomes = run(OE_SUBMIT, OE_ACCEPT, OE_CANCEL_REQUEST, OE_CANCELLED, OE_PARTIAL_FILL, OE_FILL)
    assert state == OS_CANCELLED and outcomes[-2:] == [os_.LATE_FILL, os_.LATE_FILL] and fsm[4][2] == 2
    assert os_.apply(fsm, 0, OE_CANCEL_REJECTED) == os_.APPLIED and fsm[0][0] == OS_CANCELLED


@pytest.mark.parametrize("events", [
    (OE_ACCEPT,),                                   # an answer to an order never sent
    (OE_SUBMIT, OE_SUBMIT),                         # submitted twice: never retried blindly
    (OE_SUBMIT, OE_ACCEPT, OE_UPDATED),             # an amend nobody asked for
    (OE_SUBMIT, OE_ACCEPT, OE_CANCEL_REJECTED),     # a cancel refusal without a cancel
    (OE_SUBMIT, OE_FILL, OE_FILL),                  # filled beyond its size
    (OE_SUBMIT, OE_REJECT, OE_ACCEPT),              # rejected is final
    (OE_DENY, OE_SUBMIT),                           # refused locally is final
    (OE_SUBMIT, OE_FILL, OE_CANCEL_REQUEST),        # nothing left to cancel
    (OE_SUBMIT, OE_EXPIRE, OE_CANCEL_REQUEST),
    (OE_SUBMIT, OE_REJECT, OE_FILL),
])
def test_an_invalid_transition_is_refused_counted_and_not_applied(events):
    fsm, before, _ = run(*events[:-1])
    assert os_.apply(fsm, 0, events[-1]) == os_.REFUSED
    assert fsm[0][0] == before and fsm[4][1] == 1


def test_only_the_listed_exits_leave_a_terminal_state():
    allowed = {os_.OE_CANCELLED, OE_CANCEL_REJECTED, OE_PARTIAL_FILL, OE_FILL, OE_ACCEPT}  # repeats, crossed
    # cancels, late fills, late acks
    for state in os_.TERMINAL:
        for event in range(os_.N_EVENTS):
            to = int(os_.TABLE[state, event])
            if event not in allowed:
                assert to == os_.INVALID, (os_.STATE_NAMES[state], os_.EVENT_NAMES[event])
            else:
                assert to in (os_.INVALID, os_.LATE, state), (os_.STATE_NAMES[state], os_.EVENT_NAMES[event])


def test_a_duplicate_trade_id_is_ignored_and_slots_are_independent():
    fsm = os_.make_state(2)
    assert not os_.seen_trade(fsm, 0, 101) and os_.seen_trade(fsm, 0, 101)
    assert not os_.seen_trade(fsm, 1, 101)  # another order's trade with the same id
    for trade in range(200, 200 + os_.TRADES_PER_ORDER):
        assert not os_.seen_trade(fsm, 0, trade)
    assert not os_.seen_trade(fsm, 0, 101)  # forgotten after TRADES_PER_ORDER newer ones
    assert fsm[4][3] == 1
    os_.reset(fsm, 0)
    assert fsm[0][0] == os_.OS_INITIALIZED and not os_.seen_trade(fsm, 0, 205)


def test_pending_states_remember_the_open_state_across_an_amend_then_a_cancel():
    fsm, state, _ = run(OE_SUBMIT, OE_ACCEPT, OE_PARTIAL_FILL, OE_UPDATE_REQUEST, OE_CANCEL_REQUEST)
    assert state == OS_PENDING_CANCEL and fsm[1][0] == OS_PARTIALLY_FILLED
    fsm, state, _ = run(OE_SUBMIT, OE_UPDATE_REQUEST)
    assert state == OS_PENDING_UPDATE and fsm[1][0] == OS_SUBMITTED
    assert os_.apply(fsm, 0, OE_UPDATED) == os_.APPLIED and fsm[0][0] == OS_SUBMITTED


def test_the_execute_stage_refuses_an_answer_its_order_cannot_take_and_sends_nothing_for_it():
    import numpy as np

    from stages import execute, records
    from stages.records import INTENT_QUOTE, ORD_ACKED, ORD_NEW, SELL
    from stages.venue.exchange import R_ACK, R_CANCEL_REJECTED, RESPONSE
    from tests.stages.test_stages import Venue, book, intent
    v = Venue()
    v.send(market=[book()])
    acked = v.send([intent(INTENT_QUOTE, SELL, 102.0, 1.0)])
    assert list(acked["state"]) == [ORD_NEW, ORD_ACKED]
    slot = int(np.flatnonzero(v.state[3]["order_id"] == acked[0]["order_id"])[0])
    assert v.state[12][0][slot] == os_.OS_ACCEPTED
    answer = np.zeros(1, RESPONSE)[0]
    answer["order_id"], answer["slot"], answer["kind"] = acked[0]["order_id"], slot, R_CANCEL_REJECTED
    answer["key"] = 0
    requests = v.stats[execute.ST_CANCEL_REQUESTS]
    vparams = v.params[execute.P_VENUE:]
    # a cancel refusal for a cancel never asked: before the state machine it sent a cancel nobody wanted
    n = execute._on_answer(v.state, v.params, vparams, answer, v.out, 0, v.stats, 3_000_000_000)
    assert n == 0 and v.stats[execute.ST_TRANSITIONS_REFUSED] == 1
    assert v.stats[execute.ST_CANCEL_REQUESTS] == requests and v.state[12][0][slot] == os_.OS_ACCEPTED
    answer["kind"] = R_ACK  # a repeated ack is harmless: reported again, nothing refused
    n = execute._on_answer(v.state, v.params, vparams, answer, v.out, 0, v.stats, 3_000_000_000)
    assert n == 1 and v.out[0]["state"] == records.ORD_ACKED and v.stats[execute.ST_TRANSITIONS_REFUSED] == 1
