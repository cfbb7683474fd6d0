"""Event sourcing: record a fused run into a journal, and replay a journal to the same orders.

A journal directory holds the streams of ``pipeline.streams``: ``market`` (every market event as the feed
emitted it, before validation, so quarantine decisions replay too), ``intent`` and ``exec`` (what the run
decided), ``quarantine`` (the events validation refused, each with its reason code) and, from a live run,
``execute_step`` (what each execute step consumed, in order). What a replay does depends on where the
journal came from:

- a live run (``bot4 run --journal``): its execute steps are called again, each with the intents, validated
  market events, ``now_ns`` and trading flag it had, from the state the run's plan starts execute in; the
  reports are compared with ``exec`` byte for byte. Only execute is replayed: upstream, live feedback
  arrives when it arrives, so the intents are inputs here, as they were to execute.
- a fused run (``bot4 fused --journal``): ``market`` goes through every kernel in fused mode again, and the
  reports are compared with ``exec`` byte for byte.
- a record-mode run (``bot4 record``): no decision was journalled; ``market`` goes through every kernel in
  fused mode (the strategy over the recorded market) and there is nothing to compare with.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import numpy as np

from pipeline import graph, streams
from pipeline.config import Config
from pipeline.hosting.fused import FusedResult, run_fused
from pipeline.plan import resolve
from pipeline.store.journal import FsyncPolicy, JournalReader, JournalWriter, segment_paths
from shm import control as cb
from stages import execute, records

STREAMS = {s.name: s.dtype for s in streams.STREAMS}
FUSED_STREAMS = ("market", "intent", "exec", "quarantine")  # fused mode's order is its own: no step stream
LIVE, FUSED, RECORD = "live", "fused", "record"


class JournalSet:
    """The writers a fused run records into. A fused run has no control block: it draws its own run id."""

    def __init__(self, directory: str, source: str, fsync_policy: FsyncPolicy = FsyncPolicy.INTERVAL,
                 universe: dict | None = None, run_id: int = 0):
        self.run_id = run_id or secrets.randbits(63) or 1
        ids = {"run_id": self.run_id, "universe": universe}
        self.writers = {name: JournalWriter(directory, name, STREAMS[name], source, fsync_policy, **ids)
                        for name in FUSED_STREAMS}
        w = self.writers  # the names fused mode appends to (pipeline.hosting.fused.Journal)
        self.market, self.intents, self.reports, self.quarantine = w["market"], w["intent"], w["exec"], w["quarantine"]

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def fused_journal(config: Config, n_events: int, directory: str) -> JournalSet:
    """The journal ``bot4 fused --journal`` writes (its source names the seed and size a replay needs)."""
    return JournalSet(directory, source=f"bot4 fused seed={config.feed.seed} events={n_events}",
                      universe={"venues": list(config.feed.venues), "symbols": list(config.feed.symbols)})


def record(config: Config, n_events: int, directory: str) -> FusedResult:
    journal = fused_journal(config, n_events, directory)
    try:
        return run_fused(config, n_events, journal=journal)
    finally:
        journal.close()


@dataclass
class ReplayOutcome:
    kind: str                   # LIVE, FUSED or RECORD: where the journal came from, so how it was replayed
    reports: np.ndarray         # the replay's execution reports, in order
    market_events: int          # market events the replay read from the journal
    recorded_reports: int       # reports the journal holds (0 for a record-mode journal)
    identical: bool             # False also when there was nothing to compare with
    first_difference: int       # index of the first differing report, -1 if none
    result: FusedResult | None = None     # fused and record-mode replays: the whole fused run
    notes: list[str] = field(default_factory=list)  # what the operator must know (a journal that lost records)
    gate_moves: list[int] = field(default_factory=list)  # steps during which trading_enabled changed

    @property
    def comparable(self) -> bool:
        return self.kind != RECORD

    def orders(self) -> np.ndarray:
        return self.reports[self.reports["state"] == records.ORD_ACKED]


def journal_kind(directory: str) -> str:
    if segment_paths(directory, "execute_step"):
        return LIVE
    if not segment_paths(directory, "exec") and not segment_paths(directory, "intent"):
        return RECORD
    return FUSED


def replay(config: Config, directory: str) -> ReplayOutcome:
    kind = journal_kind(directory)
    if kind == LIVE:
        return replay_live(config, directory)
    market = JournalReader(directory, "market", records.MARKET_EVENT)
    result = run_fused(config, market_source=iter(market.batches()))
    if kind == RECORD:  # a record-mode journal: the strategy over the recorded market, no decision to compare
        return ReplayOutcome(kind, result.reports, len(market), 0, False, -1, result)
    recorded = JournalReader(directory, "exec", records.EXEC_REPORT).read_all()
    same, first = compare(recorded, result.reports)
    return ReplayOutcome(kind, result.reports, len(market), len(recorded), same, first, result)


def compare(recorded: np.ndarray, got: np.ndarray) -> tuple[bool, int]:
    """(byte-identical, index of the first differing report or -1)."""
    if len(recorded) == len(got) and recorded.tobytes() == got.tobytes():
        return True, -1
    n = min(len(recorded), len(got))
    if n == 0:
        return False, 0
    diff = np.nonzero(recorded[:n].view(np.uint8).reshape(n, -1) != got[:n].view(np.uint8).reshape(n, -1))[0]
    return False, int(diff[0]) if len(diff) else n


def validated(config: Config, market: JournalReader) -> np.ndarray:
    """What validate forwarded to execute in the run: the validate kernel over the journal's market stream
    (deterministic per event, whatever the batching)."""
    plan = resolve(config)
    step, params, state = graph.kernel("validate", plan, live=True)
    batch = plan.config.rings.batch
    ctl = np.zeros(cb.GLOBAL_WORDS, np.int64)
    stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
    empty = np.zeros(0, records.MARKET_EVENT)
    out, kept = np.zeros(graph.out_capacity("validate", batch), records.MARKET_EVENT), []
    for chunk in market.batches(batch):
        n = step(chunk, len(chunk), empty, 0, state, params, ctl, stats, out, 0)
        kept.append(out[:n].copy())
    return np.concatenate(kept) if kept else empty


def _copy(state):
    if isinstance(state, np.ndarray):
        return state.copy()
    if isinstance(state, tuple):  # a NamedTuple (stages.book.Books) stays one: the kernels read its fields
        parts = [_copy(x) for x in state]
        return type(state)(*parts) if hasattr(state, "_fields") else tuple(parts)
    return state


def replay_live(config: Config, directory: str) -> ReplayOutcome:
    """Call execute's kernel with each journalled step's inputs, in order, from the plan's initial state."""
    plan = resolve(config)
    market = JournalReader(directory, "market", records.MARKET_EVENT)
    valid = validated(plan.config, market)
    intents = JournalReader(directory, "intent", records.ORDER_INTENT).read_all()
    steps = JournalReader(directory, "execute_step", records.EXECUTE_STEP).read_all()
    recorded = JournalReader(directory, "exec", records.EXEC_REPORT).read_all()
    notes, gate_moves = [], []
    need = {"intent": (int(steps["n_intents"].sum()), len(intents)), "market": (int(steps["n_market"].sum()), len(valid)),
            "exec": (int(steps["n_reports"].sum()), len(recorded))}
    for name, (wanted, held) in need.items():
        if held < wanted:
            notes.append(f"the journal's {name} stream holds {held:,} records, its execute steps consumed or made "
                         f"{wanted:,}: the run's journal fell behind (see its summary); replayed as far as it goes")
    if graph.live_venues(plan.config):
        notes.append(f"the run traded at live venues ({', '.join(plan.config.gateway.live_venues)}): their answers "
                     "came from the venues, not from a model, and are not inputs the journal holds, so the replay "
                     "cannot reproduce those venues' reports (the paper venues' it does)")
    step, params, state = graph.kernel("execute", plan, live=True)
    sent = recorded["order_id"][recorded["state"] == records.ORD_NEW]
    if len(sent):  # the run numbered its orders from its start's wall clock (its first order is that + 1)
        execute.seed_order_ids(state, int(sent.min()) - 1)
    batch = plan.config.rings.batch
    ctl = np.zeros(cb.GLOBAL_WORDS, np.int64)
    stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
    out = np.zeros(graph.out_capacity("execute", batch), records.EXEC_REPORT)
    produced = []
    at_intent = at_market = at_report = 0
    for k, s in enumerate(steps):
        n_a, n_b, n_rep = int(s["n_intents"]), int(s["n_market"]), int(s["n_reports"])
        if at_intent + n_a > len(intents) or at_market + n_b > len(valid):
            break
        in_a, in_b = intents[at_intent:at_intent + n_a], valid[at_market:at_market + n_b]
        if (n_a and int(in_a[0]["intent_id"]) != int(s["first_intent_id"])) or \
                (n_b and int(in_b[-1]["origin_seq"]) != int(s["origin_seq"])):
            notes.append(f"execute step {k:,} does not line up with the journal's intent or market stream "
                         "(records lost before it): replayed up to it")
            break
        now = int(s["now_ns"])
        if s["enabled"] == s["enabled_after"]:
            ctl[cb.G_TRADING_ENABLED] = s["enabled"]
            n = step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now)
            got = out[:n].copy()
        else:
            got, state = _gate_moved(step, state, params, ctl, stats, out, in_a, in_b, s, now,
                                     recorded[at_report:at_report + n_rep])
            gate_moves.append(k)
        produced.append(got)
        at_intent, at_market, at_report = at_intent + n_a, at_market + n_b, at_report + n_rep
    reports = np.concatenate(produced) if produced else np.zeros(0, records.EXEC_REPORT)
    same, first = compare(recorded, reports)
    if gate_moves:
        notes.append(f"trading_enabled changed during {len(gate_moves)} execute step(s) ({gate_moves[:5]}): which "
                     "intent saw the change was recovered from the recorded reports")
    return ReplayOutcome(LIVE, reports, len(market), len(recorded), same, first, notes=notes, gate_moves=gate_moves)


def _gate_moved(step, state, params, ctl, stats, out, in_a, in_b, s, now, recorded):
    """A step during which the trading flag changed: the kernel read it before each intent and at the end, and
    the journal knows only the values before and after. The step is called as two, the intents before the
    change with the old value (with the market), the rest with the new one, at the first split point that
    reproduces the recorded reports (none: the first split's, which the comparison then reports)."""
    before, after = int(s["enabled"]), int(s["enabled_after"])
    first = None
    for j in range(len(in_a) + 1):
        trial = _copy(state)
        ctl[cb.G_TRADING_ENABLED] = before
        n1 = step(in_a[:j], j, in_b, len(in_b), trial, params, ctl, stats, out, now)
        part = out[:n1].copy()
        ctl[cb.G_TRADING_ENABLED] = after
        n2 = step(in_a[j:], len(in_a) - j, in_b[:0], 0, trial, params, ctl, stats, out, now)
        got = np.concatenate([part, out[:n2]])
        if first is None:
            first = (got, trial)
        if got.tobytes() == recorded.tobytes():
            return got, trial
    return first
