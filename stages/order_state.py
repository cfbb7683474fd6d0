"""The order manager's state machine: which command or venue answer moves an order from which state to which.

An explicit table in the spirit of NautilusTrader's, with the real-world cases a venue produces: a fill that
arrives after the cancel was sent (the order stays pending cancel and remembers it is now partially filled), a
fill reported after the cancel was acknowledged (a late fill: accounted, the order stays cancelled), a cancel or
amend the venue refused (the order goes back to the state it had before the request), a duplicate trade id
(ignored). Anything else the table does not list is an invalid transition: counted, never applied.

``TABLE[state, event]`` is the next state, or one of:

    INVALID   not a transition: the caller counts it and leaves the order as it is
    RESTORE   back to ``previous`` (the open state before a pending cancel or amend)
    KEEP      stay pending; ``previous`` becomes ``KEEP_PREVIOUS[event]`` (a fill or a late ack while pending; an amend's
              answer while a cancel is pending leaves it)
    LATE      a fill on a cancelled or expired order: account the fill, keep the state

A command's outcome is one of three: refused locally (DENIED), a definitive venue answer (an event here), or
unknown (a timeout or disconnect): unknown is no event, the order stays in flight until a stream update, a query or
reconciliation settles it. Concurrency: the arrays belong to the execute stage alone.
"""
import numpy as np
from numba import njit

(OS_INITIALIZED, OS_DENIED, OS_SUBMITTED, OS_ACCEPTED, OS_REJECTED, OS_PENDING_UPDATE, OS_PENDING_CANCEL,
 OS_PARTIALLY_FILLED, OS_FILLED, OS_CANCELLED, OS_EXPIRED) = range(11)
N_STATES = 11
STATE_NAMES = ("initialized", "denied", "submitted", "accepted", "rejected", "pending update", "pending cancel",
               "partially filled", "filled", "cancelled", "expired")

(OE_DENY, OE_SUBMIT, OE_ACCEPT, OE_REJECT, OE_UPDATE_REQUEST, OE_UPDATED, OE_UPDATE_REJECTED, OE_CANCEL_REQUEST,
 OE_CANCELLED, OE_CANCEL_REJECTED, OE_PARTIAL_FILL, OE_FILL, OE_EXPIRE) = range(13)
N_EVENTS = 13
EVENT_NAMES = ("deny", "submit", "accept", "reject", "update request", "updated", "update rejected",
               "cancel request", "cancelled", "cancel rejected", "partial fill", "fill", "expire")

INVALID, RESTORE, KEEP, LATE = -1, -2, -3, -4

# apply()'s outcome
APPLIED, REFUSED, LATE_FILL = 0, 1, 2

TERMINAL = (OS_DENIED, OS_REJECTED, OS_FILLED, OS_CANCELLED, OS_EXPIRED)


def _table() -> np.ndarray:
    t = np.full((N_STATES, N_EVENTS), INVALID, np.int64)
    t[OS_INITIALIZED, OE_DENY] = OS_DENIED
    t[OS_INITIALIZED, OE_SUBMIT] = OS_SUBMITTED
    # submitted: the venue has not answered; an IOC can fill or end (cancelled / expired) before any ack
    for event, to in ((OE_ACCEPT, OS_ACCEPTED), (OE_REJECT, OS_REJECTED), (OE_PARTIAL_FILL, OS_PARTIALLY_FILLED),
                      (OE_FILL, OS_FILLED), (OE_CANCELLED, OS_CANCELLED), (OE_EXPIRE, OS_EXPIRED),
                      (OE_CANCEL_REQUEST, OS_PENDING_CANCEL), (OE_UPDATE_REQUEST, OS_PENDING_UPDATE)):
        t[OS_SUBMITTED, event] = to
    for state in (OS_ACCEPTED, OS_PARTIALLY_FILLED):  # working at the venue
        for event, to in ((OE_PARTIAL_FILL, OS_PARTIALLY_FILLED), (OE_FILL, OS_FILLED), (OE_CANCELLED, OS_CANCELLED),
                          (OE_EXPIRE, OS_EXPIRED), (OE_CANCEL_REQUEST, OS_PENDING_CANCEL),
                          (OE_UPDATE_REQUEST, OS_PENDING_UPDATE)):
            t[state, event] = to
    t[OS_ACCEPTED, OE_ACCEPT] = OS_ACCEPTED  # a repeated ack (stream and query both answered)
    for state in (OS_PARTIALLY_FILLED, OS_FILLED, OS_CANCELLED, OS_EXPIRED):
        t[state, OE_ACCEPT] = state  # acknowledged only after it filled or ended (latencies differ by message)
    for state in (OS_PENDING_CANCEL, OS_PENDING_UPDATE):
        for event, to in ((OE_FILL, OS_FILLED), (OE_CANCELLED, OS_CANCELLED), (OE_EXPIRE, OS_EXPIRED),
                          (OE_REJECT, OS_REJECTED), (OE_PARTIAL_FILL, KEEP), (OE_ACCEPT, KEEP)):
            t[state, event] = to
    t[OS_PENDING_CANCEL, OE_CANCEL_REJECTED] = RESTORE
    t[OS_PENDING_CANCEL, OE_CANCEL_REQUEST] = OS_PENDING_CANCEL  # asked again (the first one's answer is unknown)
    # an amend's answer after a cancel overtook it (a requote while the amend was in flight): the venue's order has
    # the amended price and size (or not), and the cancel is still pending
    t[OS_PENDING_CANCEL, OE_UPDATED] = KEEP
    t[OS_PENDING_CANCEL, OE_UPDATE_REJECTED] = KEEP
    t[OS_PENDING_UPDATE, OE_UPDATED] = RESTORE
    t[OS_PENDING_UPDATE, OE_UPDATE_REJECTED] = RESTORE
    t[OS_PENDING_UPDATE, OE_CANCEL_REQUEST] = OS_PENDING_CANCEL  # previous stays the open state
    for state in (OS_CANCELLED, OS_EXPIRED):
        t[state, OE_PARTIAL_FILL] = LATE
        t[state, OE_FILL] = LATE
        t[state, OE_CANCEL_REJECTED] = state  # the cancel crossed the order's end: nothing to restore
    t[OS_CANCELLED, OE_CANCELLED] = OS_CANCELLED  # a repeated end (stream and query both answered)
    t[OS_FILLED, OE_CANCEL_REJECTED] = OS_FILLED  # the cancel arrived after the last fill
    return t


TABLE = _table()
KEEP_PREVIOUS = np.full(N_EVENTS, INVALID, np.int64)  # what a KEEP event makes the remembered open state
KEEP_PREVIOUS[OE_PARTIAL_FILL] = OS_PARTIALLY_FILLED
KEEP_PREVIOUS[OE_ACCEPT] = OS_ACCEPTED
TRADES_PER_ORDER = 16  # trade ids remembered per order for de-duplication


def make_state(n_orders: int):
    """(state per order slot, the open state before its pending request, remembered trade ids [slot, TRADES_PER_ORDER],
    their next write position, counters [applied, refused, late fills, duplicate trades])."""
    return (np.full(n_orders, OS_INITIALIZED, np.int64), np.full(n_orders, OS_INITIALIZED, np.int64),
            np.zeros((n_orders, TRADES_PER_ORDER), np.int64), np.zeros(n_orders, np.int64), np.zeros(4, np.int64))


@njit(cache=True, _nrt=False)
def reset(fsm, slot):
    """A fresh order in ``slot`` (initialized, no trade seen)."""
    states, previous, trades, next_trade, _ = fsm
    states[slot] = OS_INITIALIZED
    previous[slot] = OS_INITIALIZED
    next_trade[slot] = 0
    for i in range(TRADES_PER_ORDER):
        trades[slot, i] = 0


@njit(cache=True, _nrt=False)
def apply(fsm, slot, event):
    """Move order ``slot`` by ``event``: APPLIED (the state may be unchanged: a KEEP or an idempotent repeat),
    LATE_FILL (account the fill, the order stays ended) or REFUSED (invalid: counted, nothing changed)."""
    states, previous, _, _, counts = fsm
    state = states[slot]
    to = TABLE[state, event]
    if to == INVALID:
        counts[1] += 1
        return REFUSED
    if to == LATE:
        counts[2] += 1
        return LATE_FILL
    if to == RESTORE:
        states[slot] = previous[slot]
    elif to == KEEP:
        if KEEP_PREVIOUS[event] == INVALID:
            pass  # an amend's answer while a cancel is pending: the open state before it is unchanged
        elif event != OE_ACCEPT or previous[slot] == OS_SUBMITTED:  # a late ack never undoes a fill
            previous[slot] = KEEP_PREVIOUS[event]
    else:
        if to == OS_PENDING_CANCEL or to == OS_PENDING_UPDATE:
            if state != OS_PENDING_CANCEL and state != OS_PENDING_UPDATE:
                previous[slot] = state
        states[slot] = to
    counts[0] += 1
    return APPLIED


@njit(cache=True, _nrt=False)
def seen_trade(fsm, slot, trade_id):
    """True when ``trade_id`` (> 0) was already applied to order ``slot`` (a duplicate: ignore it, counted);
    else remember it. The last TRADES_PER_ORDER ids are remembered."""
    _, _, trades, next_trade, counts = fsm
    for i in range(TRADES_PER_ORDER):
        if trades[slot, i] == trade_id:
            counts[3] += 1
            return True
    trades[slot, next_trade[slot] % TRADES_PER_ORDER] = trade_id
    next_trade[slot] += 1
    return False


def is_terminal(state: int) -> bool:
    return state in TERMINAL
