"""Reconciliation: a venue's snapshot against execute's view of the same account, and what to do about each
difference. Pure functions over plain data (no I/O, no clock): the gateway takes the snapshot
(:meth:`pipeline.venues.ccxt_orders.OrderSession.snapshot`), the caller brings execute's view (its open orders,
positions, and the trade ids its journal holds), :func:`reconcile` returns a :class:`Plan`.

The venue is the authority on what happened at the venue:

- an order of this run's client id prefix that the venue has open and execute does not know (a previous
  incarnation's) is to be cancelled (``orphans="cancel"``, the default) or adopted (``orphans="adopt"``);
- an order the venue has open that is not ours (another run's prefix, or placed by hand) is left alone and
  reported;
- an order execute thinks open that the venue ended gets its end as a synthetic answer: the fills execute has not
  seen (ANS_FILL), then ANS_CANCELLED for what was left, or ANS_REJECTED / ANS_CANCELLED when the venue has no such
  order (rejected if execute never had it acknowledged, cancelled if it had);
- a trade of one of our orders that the journal does not hold becomes a synthetic ANS_FILL (for an order execute
  does not know: ``slot`` -1, so the journal records it; the position it implies is in ``expected_positions``);
- where the venue keeps positions (futures: ``snapshot.has_positions``), execute's position per instrument after
  the synthetic fills must match the venue's within the tolerance; a mismatch is an error that keeps trading
  disarmed (``Plan.ok`` is False). A spot venue keeps balances, not positions: the caller compares holdings itself
  (it alone knows the account's holdings before the run), or passes them as ``snapshot.positions`` with
  ``has_positions=True``.

:func:`at_start` is the gateway's start-up use of it: execute's view is then empty (or what the caller gives), so
every open order of ours is an orphan, and a position the venue holds is a mismatch that the gateway refuses or
adopts (as synthetic fills at the venue's entry price).

What the snapshot cannot tell (an order execute thinks open that the venue neither lists open nor was asked about;
an order whose venue-side filled quantity exceeds the trades the snapshot holds for it) is listed in
``Plan.unresolved``: ask the venue again (a longer trade history, a query by client order id).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from stages.records import ANS_CANCELLED, ANS_FILL, ANS_REJECTED, VENUE_ANSWER

ENDED = ("closed", "canceled", "expired", "rejected")
ORPHAN_POLICIES = ("cancel", "adopt")


@dataclass(frozen=True)
class VenueOrder:
    """One order as the venue reports it."""
    venue_id: str            # the venue's id of it
    client_id: str           # its client order id
    order_id: int | None     # execute's order id when the client id has this run's prefix, else None (not ours)
    symbol: str              # the venue's market symbol (ccxt's)
    key: int                 # instrument key, -1 when the symbol is not in the run's universe
    side: int                # BUY / SELL
    price: float
    qty: float
    filled: float
    status: str              # open | closed | canceled | expired | rejected (ccxt's)
    exch_ts: int = 0         # venue time of its last change, ns


@dataclass(frozen=True)
class VenueTrade:
    """One trade of the account, as the venue reports it."""
    trade_id: int
    venue_order_id: str
    order_id: int | None     # execute's order id of its order when ours, else None
    symbol: str
    key: int
    side: int
    price: float
    qty: float
    fee: float               # quote currency
    liquidity: int           # +1 maker, -1 taker, 0 unknown
    exch_ts: int = 0


@dataclass
class VenueSnapshot:
    """What one venue says about the account at ``taken_ns``."""
    venue: int
    taken_ns: int
    open_orders: list[VenueOrder] = field(default_factory=list)
    orders: dict[int, VenueOrder | None] = field(default_factory=dict)  # execute order ids asked about (None: unknown
                                                                         # to the venue)
    trades: list[VenueTrade] = field(default_factory=list)
    balances: dict[str, dict] = field(default_factory=dict)             # currency -> {"free", "used", "total"}
    positions: dict[int, float] = field(default_factory=dict)           # key -> signed quantity (base units)
    position_prices: dict[int, float] = field(default_factory=dict)     # key -> the position's entry price
    has_positions: bool = False                                         # the venue keeps positions (a key it does not
                                                                        # list holds none)
    symbols: dict[int, str] = field(default_factory=dict)               # key -> the venue's market symbol (for the
                                                                        # operator's lines)
    complete: bool = True                                               # False: some part could not be fetched
    notes: list[str] = field(default_factory=list)                      # what was missing, and why


@dataclass(frozen=True)
class LocalOrder:
    """An order execute thinks open."""
    order_id: int
    slot: int
    key: int
    side: int
    price: float
    qty: float
    filled: float = 0.0
    acked: bool = True


@dataclass(frozen=True)
class PositionMismatch:
    key: int
    local: float             # execute's position after the plan's synthetic fills
    venue: float
    difference: float        # venue - local
    symbol: str = ""         # the venue's market symbol ("" when the snapshot does not name it)

    def where(self) -> str:
        return f"{self.symbol} (key {self.key})" if self.symbol else f"key {self.key}"


@dataclass
class Plan:
    cancel: list[VenueOrder] = field(default_factory=list)     # ours from a previous incarnation: cancel at the venue
    adopt: list[VenueOrder] = field(default_factory=list)      # ours from a previous incarnation: execute takes them
    foreign: list[VenueOrder] = field(default_factory=list)    # not ours: left alone
    answers: np.ndarray = field(default_factory=lambda: np.zeros(0, VENUE_ANSWER))  # synthetic, in order
    unresolved: list[str] = field(default_factory=list)
    mismatches: list[PositionMismatch] = field(default_factory=list)
    expected_positions: dict[int, float] = field(default_factory=dict)  # execute's positions after ``answers``

    @property
    def ok(self) -> bool:
        """No position mismatch: trading may be armed (the other items are actions, not errors)."""
        return not self.mismatches

    def lines(self) -> list[str]:
        """One line per item, for the operator."""
        out = [f"position mismatch on {m.where()}: execute {m.local:.10g}, venue {m.venue:.10g} "
               f"(difference {m.difference:+.10g})" for m in self.mismatches]
        out += [f"cancel {o.client_id} ({o.symbol} {'buy' if o.side > 0 else 'sell'} {o.qty - o.filled:.10g} @ "
                f"{o.price:.10g}): ours, from a previous incarnation" for o in self.cancel]
        out += [f"adopt {o.client_id} ({o.symbol}): ours, from a previous incarnation" for o in self.adopt]
        out += [f"leave {o.client_id or o.venue_id} ({o.symbol}): not ours" for o in self.foreign]
        kinds = {ANS_FILL: "fill", ANS_CANCELLED: "cancelled", ANS_REJECTED: "rejected"}
        out += [f"synthetic {kinds.get(int(a['kind']), a['kind'])} for order {a['order_id']} (slot {a['slot']}): "
                f"qty {a['qty']:.10g} @ {a['price']:.10g}" for a in self.answers]
        out += [f"unresolved: {u}" for u in self.unresolved]
        return out


def _eps(qty: float) -> float:
    return max(abs(qty) * 1e-9, 1e-12)


def _answer(kind, order_id, slot, key, side, price, qty, leaves, fee=0.0, liquidity=0, trade_id=0, exch_ts=0,
            arrive_ts=0) -> np.ndarray:
    a = np.zeros(1, VENUE_ANSWER)
    a["kind"], a["order_id"], a["slot"], a["key"], a["side"] = kind, order_id, slot, key, side
    a["price"], a["qty"], a["leaves"], a["fee"], a["liquidity"] = price, qty, leaves, fee, liquidity
    a["trade_id"], a["exch_ts"], a["arrive_ts"], a["send_ts"] = trade_id, exch_ts, arrive_ts, 0
    return a


def _tolerance(tolerance, key: int) -> float:
    if isinstance(tolerance, dict):
        return float(tolerance.get(key, tolerance.get("default", 0.0)))
    return float(tolerance)


def reconcile(snapshot: VenueSnapshot, local_orders: dict[int, LocalOrder], positions: dict[int, float],
              journal_trades, *, orphans: str = "cancel", tolerance=1e-9) -> Plan:
    """What to do so execute's view equals the venue's (the venue is the authority).

    ``local_orders``: execute's open orders of this venue by order id; ``positions``: execute's positions by
    instrument key; ``journal_trades``: the (key, trade id) pairs of the fills execute's journal holds;
    ``tolerance``: the largest position difference ignored, one number or {key: number, "default": number}."""
    if orphans not in ORPHAN_POLICIES:
        raise ValueError(f"orphans must be one of {ORPHAN_POLICIES}, not {orphans!r}")
    plan = Plan()
    seen = set(journal_trades)
    answers: list[np.ndarray] = []
    at = snapshot.taken_ns
    expected = {int(k): float(v) for k, v in positions.items()}

    open_ours = {}
    for vo in snapshot.open_orders:
        if vo.order_id is None:
            plan.foreign.append(vo)
        elif vo.order_id in local_orders:
            open_ours[vo.order_id] = vo
        else:
            (plan.cancel if orphans == "cancel" else plan.adopt).append(vo)

    # the trades the journal lacks, oldest first, grouped by order
    missing: dict[int, list[VenueTrade]] = {}
    for t in sorted(snapshot.trades, key=lambda t: (t.exch_ts, t.trade_id)):
        if t.order_id is None or (t.key, t.trade_id) in seen:
            continue
        seen.add((t.key, t.trade_id))
        missing.setdefault(t.order_id, []).append(t)

    for order_id in sorted(local_orders):
        lo = local_orders[order_id]
        filled = lo.filled
        leaves = lo.qty - filled
        for t in missing.pop(order_id, ()):
            filled += t.qty
            leaves = lo.qty - filled
            if leaves <= _eps(lo.qty):
                leaves = 0.0
            answers.append(_answer(ANS_FILL, order_id, lo.slot, lo.key, lo.side, t.price, t.qty, leaves, t.fee,
                                   t.liquidity, t.trade_id, t.exch_ts, at))
            expected[lo.key] = expected.get(lo.key, 0.0) + lo.side * t.qty
        if leaves == 0.0 and filled > lo.filled:
            continue  # the last synthetic fill ended it
        vo = open_ours.get(order_id)
        if vo is None and order_id in snapshot.orders:
            vo = snapshot.orders[order_id]
            if vo is None:  # the venue has no such order: it never reached it (or was archived unfilled)
                if filled > _eps(lo.qty):
                    plan.unresolved.append(f"order {order_id}: the venue does not know it, yet {filled:.10g} of it "
                                           f"filled")
                    continue
                kind = ANS_CANCELLED if lo.acked else ANS_REJECTED
                answers.append(_answer(kind, order_id, lo.slot, lo.key, lo.side, lo.price,
                                       leaves if kind == ANS_CANCELLED else lo.qty, 0.0, arrive_ts=at))
                continue
        if vo is None:
            plan.unresolved.append(f"order {order_id}: not open at the venue and not asked about: query it by its "
                                   f"client order id")
            continue
        if vo.filled > filled + _eps(lo.qty):
            plan.unresolved.append(f"order {order_id}: the venue says {vo.filled:.10g} filled, the journal and the "
                                   f"snapshot's trades {filled:.10g}: fetch its trades")
            continue
        if vo.status == "open":
            continue
        if vo.status == "rejected" and filled <= _eps(lo.qty):
            answers.append(_answer(ANS_REJECTED, order_id, lo.slot, lo.key, lo.side, lo.price, lo.qty, 0.0,
                                   exch_ts=vo.exch_ts, arrive_ts=at))
            continue
        # ended (closed without the fills adding up to its size, canceled, expired): what was left is cancelled
        answers.append(_answer(ANS_CANCELLED, order_id, lo.slot, lo.key, lo.side, lo.price, max(leaves, 0.0), 0.0,
                               exch_ts=vo.exch_ts, arrive_ts=at))

    # fills of our orders execute does not know (a previous incarnation's): slot -1, for the journal and positions
    for order_id in sorted(missing):
        for t in missing[order_id]:
            answers.append(_answer(ANS_FILL, order_id, -1, t.key, t.side, t.price, t.qty, 0.0, t.fee, t.liquidity,
                                   t.trade_id, t.exch_ts, at))
            if t.key >= 0:
                expected[t.key] = expected.get(t.key, 0.0) + t.side * t.qty

    plan.answers = np.concatenate(answers) if answers else np.zeros(0, VENUE_ANSWER)
    plan.expected_positions = expected
    if snapshot.has_positions:
        for key in sorted(set(expected) | set(snapshot.positions)):
            local, venue = expected.get(key, 0.0), float(snapshot.positions.get(key, 0.0))
            if abs(venue - local) > _tolerance(tolerance, key):
                plan.mismatches.append(PositionMismatch(key, local, venue, venue - local,
                                                        snapshot.symbols.get(key, "")))
    return plan


@dataclass
class StartOutcome:
    """What the gateway does at start-up about one venue (:func:`at_start`)."""
    cancel: list[VenueOrder]        # ours, open at the venue, that execute does not hold: cancel them (or adopt)
    adopt: list[VenueOrder]
    foreign: list[VenueOrder]       # not ours: left alone
    mismatches: list[str]           # one line per position mismatch (or an incomplete snapshot): not armed as is
    synthetic_fills: np.ndarray     # ANS_FILL per mismatched key taking the venue's position as ours (order id 0,
                                    # slot -1, trade id 0, at the venue's entry price when it gives one, else 0)
    notes: list[str]                # every finding, for the log
    plan: Plan


def at_start(snapshot: VenueSnapshot, *, venue: int | None = None, prefix: str | None = None, tolerance=1e-9,
             positions: dict[int, float] | None = None, local_orders: dict[int, LocalOrder] | None = None,
             journal_trades=None, orphans: str = "cancel") -> StartOutcome:
    """Reconciliation when a gateway starts: execute holds ``local_orders`` and ``positions`` (default: none, a
    fresh start). Our orders the venue has open and execute does not are to be cancelled (or adopted); a venue
    position execute does not hold is a mismatch, and ``synthetic_fills`` would take it as ours. ``prefix``: the
    run's client order id prefix, when the snapshot was taken with another (order ids are read again with it).
    ``journal_trades`` None: the journal's fills are not known here, so the venue's trade history is not
    compared (a fresh start's execute replays its own journal); give the (key, trade id) pairs to compare."""
    if venue is not None and snapshot.venue != venue:
        raise ValueError(f"the snapshot is venue {snapshot.venue}'s, not venue {venue}'s")
    if prefix is not None:
        from pipeline.venues import client_ids

        def ours(cid):
            return client_ids.order_id(prefix, cid)

        snapshot = replace(snapshot,
                           open_orders=[replace(o, order_id=ours(o.client_id)) for o in snapshot.open_orders])
    trades_known = journal_trades is not None
    if not trades_known:
        snapshot = replace(snapshot, trades=[])
    plan = reconcile(snapshot, local_orders or {}, positions or {}, journal_trades or (), orphans=orphans,
                     tolerance=tolerance)
    mismatches = [f"{m.where()}: execute {m.local:.10g}, venue {m.venue:.10g} (difference {m.difference:+.10g})"
                  for m in plan.mismatches]
    if not snapshot.complete:
        mismatches.append("the venue's snapshot is incomplete (" + "; ".join(snapshot.notes) + ")")
    fills = []
    for m in plan.mismatches:
        a = np.zeros(1, VENUE_ANSWER)
        a["kind"], a["order_id"], a["slot"], a["key"] = ANS_FILL, 0, -1, m.key
        a["side"], a["qty"], a["leaves"] = (1 if m.difference > 0 else -1), abs(m.difference), 0.0
        a["price"] = snapshot.position_prices.get(m.key, 0.0)
        a["exch_ts"] = a["arrive_ts"] = snapshot.taken_ns
        fills.append(a)
    notes = plan.lines() + [f"snapshot: {n}" for n in snapshot.notes]
    if not trades_known:
        notes.append("the venue's trade history was not compared (no journal given)")
    return StartOutcome(cancel=plan.cancel, adopt=plan.adopt, foreign=plan.foreign, mismatches=mismatches,
                        synthetic_fills=np.concatenate(fills) if fills else np.zeros(0, VENUE_ANSWER), notes=notes,
                        plan=plan)
