"""Execute's link to live venues: per venue a command ring to its gateway process and an answer ring back.

A venue is either the paper venue (stages.venue.exchange, in execute's own state) or live: its orders leave as
VENUE_COMMAND records for the venue's gateway (pipeline.venues.gateway), which speaks the venue's protocol and
answers with VENUE_ANSWER records in the venue model's answer codes, so execute takes both alike. The rings are
SPSC in shared memory in a live run; a run without live venues carries process-local dummies of capacity 2.

Concurrency: execute is the only producer of each command ring and the only consumer of each answer ring; the
gateway the other side of both (shm.ring's contract).
"""
import numpy as np
from numba import njit

from shm import ring
from shm.atomics import load_acquire
from stages.records import CMD_AMEND, CMD_CANCEL, CMD_NEW, VENUE_ANSWER, VENUE_COMMAND
from stages.universe import MAX_VENUES

ANSWER_BATCH = 256

L_LIVE, L_COMMANDS, L_ANSWERS, L_COMMAND_SCRATCH, L_ANSWER_SCRATCH, L_AMENDS = range(6)


def make_links(live: dict | None = None, amends=()):
    """``live``: {venue index: ((producer, consumer, records) of its command ring, the same of its answer ring)};
    ``amends``: the live venues whose orders are amended in place (a quote's new price or size), not cancel-replaced.
    Returns (live[MAX_VENUES] 0/1, command rings, answer rings, one-command scratch, answer scratch, amends 0/1)."""
    live = live or {}
    amend_mask = np.zeros(MAX_VENUES, np.int64)
    for venue in amends:
        if venue not in live:
            raise ValueError(f"venue {venue} amends in place but is not live")
        amend_mask[venue] = 1
    mask = np.zeros(MAX_VENUES, np.int64)
    commands, answers = [], []
    for venue in range(MAX_VENUES):
        if venue in live:
            mask[venue] = 1
            command_ring, answer_ring = live[venue]
        else:
            command_ring, answer_ring = ring.local_ring(VENUE_COMMAND, 2), ring.local_ring(VENUE_ANSWER, 2)
        commands.append(tuple(command_ring))
        answers.append(tuple(answer_ring))
    return (mask, tuple(commands), tuple(answers), np.zeros(1, VENUE_COMMAND), np.zeros(ANSWER_BATCH, VENUE_ANSWER),
            amend_mask)


@njit(cache=True, _nrt=False)
def is_live(links, venue):
    return links[L_LIVE][venue] != 0


@njit(cache=True, _nrt=False)
def amends(links, venue):
    return links[L_AMENDS][venue] != 0


@njit(cache=True, _nrt=False)
def any_live(links):
    return links[L_LIVE].sum() != 0


@njit(cache=True, _nrt=False)
def has_room(links, venue, n):
    """The venue's command ring can take ``n`` more commands now (its gateway keeps up)."""
    producer, consumer, records = links[L_COMMANDS][venue]
    return records.shape[0] - (producer[ring.P_TAIL] - load_acquire(consumer, ring.C_HEAD)) >= n


@njit(cache=True, _nrt=False)
def send(links, venue, kind, order_id, slot, key, order_kind, side, price, qty, origin_ts, origin_seq, now_ns):
    """One command to the venue's gateway; False when its ring is full (nothing was sent)."""
    c = links[L_COMMAND_SCRATCH]
    c[0]["origin_ts"], c[0]["origin_seq"], c[0]["send_ts"] = origin_ts, origin_seq, now_ns
    c[0]["order_id"], c[0]["slot"], c[0]["key"] = order_id, slot, key
    c[0]["kind"], c[0]["order_kind"], c[0]["side"] = kind, order_kind, side
    c[0]["price"], c[0]["qty"] = price, qty
    producer, consumer, records = links[L_COMMANDS][venue]
    return ring.try_write(producer, consumer, records, c, 1) == 1


@njit(cache=True, _nrt=False)
def send_new(links, venue, order_id, slot, key, order_kind, side, price, qty, origin_ts, origin_seq, now_ns):
    return send(links, venue, CMD_NEW, order_id, slot, key, order_kind, side, price, qty, origin_ts, origin_seq,
                now_ns)


@njit(cache=True, _nrt=False)
def send_cancel(links, venue, order_id, slot, key, side, now_ns):
    return send(links, venue, CMD_CANCEL, order_id, slot, key, 0, side, 0.0, 0.0, 0, 0, now_ns)


@njit(cache=True, _nrt=False)
def send_amend(links, venue, order_id, slot, key, order_kind, side, price, qty, origin_ts, origin_seq, now_ns):
    """``qty``: the order's new total quantity (its filled part included)."""
    return send(links, venue, CMD_AMEND, order_id, slot, key, order_kind, side, price, qty, origin_ts, origin_seq,
                now_ns)


@njit(cache=True, _nrt=False)
def take_answers(links, venue, limit):
    """Up to ``limit`` answers of the venue's gateway into the answer scratch; returns how many."""
    producer, consumer, records = links[L_ANSWERS][venue]
    return ring.read(producer, consumer, records, links[L_ANSWER_SCRATCH], limit)
