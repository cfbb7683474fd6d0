"""Fused mode: every kernel in one process, in pipeline order, on event time. Deterministic.

The same kernels as live mode, called batch by batch: feed -> validate -> feature -> risk -> inference ->
strategy -> execute. Execution reports of one batch reach risk and strategy with the next batch (as the
feedback rings deliver them later in live mode). Execute takes market events and intents in feed-sequence
order, so an order never meets a book its strategy had not seen yet; the venue model (stages.venue) is handed
the validated market ahead of the local stages, so it matches each order against the book as it stood at the
order's arrival at the venue, after the configured latency.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline import graph, registry
from pipeline.config import Config
from pipeline.hosting import models
from pipeline.hosting.chain import Chain
from pipeline.plan import resolve
from stages import records, validate

_LOCAL = ("feature", "risk", "inference", "strategy", "execute")  # stepped batch by batch behind the venue's market
DEFAULT_HORIZON_NS = 1_000_000_000  # the venue's market runs this far ahead: more than any feed delay seen
VENUE_MARKET_CAPACITY = 1 << 17
GROUP_EVENTS = 8192  # validated events the local stages take in one compiled call (whole batches)
OUTPUT_EVENTS = GROUP_EVENTS  # the call's intent and report buffers hold the output of this many events' pieces


class Journal(Protocol):
    """Where a fused run records: writers with ``append(records)`` (see ``pipeline.store.journal``)."""
    market: object
    intents: object
    reports: object
    quarantine: object


@dataclass
class FusedResult:
    reports: np.ndarray           # every execution report, in order (EXEC_REPORT)
    intents: np.ndarray           # every order intent (ORDER_INTENT)
    counters: dict[str, dict[str, int]]  # per stage: in, out and the stage's own counters
    quarantine: np.ndarray        # the latest quarantined events with their reasons

    def orders(self) -> np.ndarray:
        """Reports of orders the venue accepted (state acknowledged)."""
        return self.reports[self.reports["state"] == records.ORD_ACKED]


def run_fused(config: Config, n_events: int = 0, model_path: str | None = None,
              market_source: Iterator[np.ndarray] | None = None, journal: Journal | None = None,
              feature_sink: Callable[[np.ndarray], None] | None = None, offsets_ns: dict | None = None,
              horizon_ns: int = DEFAULT_HORIZON_NS, span_ns: int = 0, sizer=None) -> FusedResult:
    """Run every kernel in order. The market comes from the synthetic feed (``n_events`` of it) or, for a
    replay, from ``market_source`` (batches of MARKET_EVENT, e.g. a journal); the synthetic clock is the
    events' own ``origin_ts``. With ``journal``, raw market events, intents and reports are recorded;
    ``feature_sink`` gets each batch's feature vectors (a view, overwritten by the next batch).

    The venue model sees the validated market ``horizon_ns`` of event time ahead of the local stages (at least
    the feed's largest delay, so the venue's book at any order's arrival is complete); ``offsets_ns`` fixes each
    venue's clock offset (a recording's: stages.venue.exchange.offsets_from), else the plan's rule holds.
    ``sizer`` replaces the model set's (pipeline.hosting.models.Models.sizer): training's behaviour policy."""
    from stages import execute, fused_loop, inference
    from stages.venue import exchange

    if market_source is None and n_events <= 0:
        raise ValueError("give n_events > 0 for the synthetic feed, or a market_source")
    plan = resolve(config.with_overrides(feed={"max_events": n_events}))
    # No member budget here: a member's timing must not change a backtest's orders (its failures still count).
    model = models.Models(models.load(model_path or plan.model_path, plan.config.inference.min_confidence,
                                      plan.config.inference.sizer, plan.config.inference.fuse_members),
                          max(GROUP_EVENTS, plan.config.rings.batch),
                          max_failures=plan.config.inference.member_max_failures)
    if sizer is not None:
        model.sizer = sizer
    synthetic = market_source is None
    chain = Chain(plan, ("feed", "validate") if synthetic else ("validate",), also=_LOCAL, predict=model.predict)
    step, params, _ = chain.kernels["execute"]
    if offsets_ns is not None:
        params = params.copy()
        params[execute.P_VENUE + exchange.V_OFFSET_AUTO] = 0.0
    venue_state = exchange.make_state(VENUE_MARKET_CAPACITY, plan.latency_table, offsets_ns)
    state = execute.make_state(venue_state)
    chain.kernels["execute"] = (step, params, state)
    venue_params = params[execute.P_VENUE:]
    refused = np.zeros(plan.config.rings.batch, records.MARKET_EVENT)
    feedback_buf = np.zeros(graph.out_capacity("execute", plan.config.rings.batch), records.EXEC_REPORT)
    pending = feedback_buf[:0]
    all_reports, all_intents = [], []  # bytes of each piece: numpy's structured copies cost ~30 us each
    ahead: deque[tuple[np.ndarray, int]] = deque()  # (batch, its last event time): the venue has it, the local stages not yet
    fed, ended, now = 0, False, 0
    replay = _rebatch(market_source, plan.config.rings.batch) if market_source is not None else None
    reports_out = chain.out["execute"]
    ctl = chain.block.globals
    kind = fused_loop.strategy_kind(graph.module("strategy", plan.config))
    group_capacity = max(GROUP_EVENTS, plan.config.rings.batch)
    valid_buf = np.zeros(group_capacity, records.MARKET_EVENT)
    vectors = np.zeros(group_capacity, records.FEATURE_VECTOR)
    batch_ends = np.zeros(group_capacity, np.int64)
    x = np.zeros((group_capacity, records.N_FEATURES), np.float32)
    # at least one batch's: a piece never spans two batches, and the first piece of a call must fit
    output_capacity = max(OUTPUT_EVENTS, plan.config.rings.batch)
    intents_out = np.zeros(graph.out_capacity("strategy", output_capacity), records.ORDER_INTENT)
    group_reports = np.zeros(graph.out_capacity("execute", output_capacity), records.EXEC_REPORT)
    counts = np.zeros((4, 2), np.int64)   # fused_loop.C_* stages: records in, out
    progress = np.zeros(6, np.int64)      # fused_loop.R_*

    def kernel(name: str) -> tuple:
        """(state, params, stats) of a stage, as fused_loop.run_pieces takes them."""
        _, stage_params, stage_state = chain.kernels[name]
        return stage_state, stage_params, chain.stats(name)

    def validated_batch() -> np.ndarray | None:
        nonlocal fed
        if replay is None:
            if chain.run(None, 0, chain.sim_ns(), sim_clock=True) == 0 and chain.n["feed"] == 0:
                return None
            market = chain.out["feed"][:chain.n["feed"]]
        else:
            market = next(replay, None)
            if market is None or len(market) == 0:
                return None
            fed += len(market)
            chain.run(market, len(market), int(market["origin_ts"][-1]))
        if journal is not None:
            journal.market.append(market)
            n_bad, _ = validate.take_quarantined(chain.state("validate"), refused)
            journal.quarantine.append(refused[:n_bad])
        return _copied(chain.out["validate"][:chain.n["validate"]])

    held = None  # a validated batch the venue's FIFO had no room for yet
    while True:
        # The venue's market runs ahead of the next group of batches by the horizon (or to the end of the market).
        while not ended and (not ahead or ahead[-1][1] < _group_last_ts(ahead, group_capacity) + horizon_ns):
            if held is None:
                held = validated_batch()
                if held is None:
                    ended = True
                    break
                if len(held) == 0:  # every event of the batch quarantined
                    held = None
                    continue
            if exchange.market_room(venue_state) < len(held):
                if not ahead:  # the local stages are past everything the venue holds: it cannot be full
                    raise RuntimeError(f"venue market FIFO full ({VENUE_MARKET_CAPACITY} events) with no batch "
                                       "ahead of the local stages")
                break  # the local stages catch up first, the venue applies what they pass
            exchange.push_batch(venue_state, venue_params, held, len(held))
            ahead.append((held, _last_ts(held)))
            held = None
        if not ahead:
            break
        # As many batches as have the venue's horizon ahead of them go through the local stages in one group:
        # the feature stage and the model once for the group, the four stages after them in one compiled call.
        group = [ahead.popleft()[0]]
        size = len(group[0])
        everything_pushed = ended and held is None
        while ahead and size + len(ahead[0][0]) <= group_capacity and (
                everything_pushed or ahead[-1][1] >= ahead[0][1] + horizon_ns):
            size += len(ahead[0][0])
            group.append(ahead.popleft()[0])
        valid = _joined(group, valid_buf)
        n_batches = len(group)
        batch_ends[:n_batches] = np.cumsum([len(g) for g in group])
        now = _last_ts(valid, now)
        chain.step("feature", valid, size, None, 0, now, out=vectors)  # one vector per event, from the market alone
        if feature_sink is not None:
            feature_sink(vectors[:size])
        inference.prepare(vectors, size, x)
        prob, confidence, alive, scale = model.predict(vectors, x, size)
        start = 0
        while start < size:
            fused_loop.run_pieces(valid, batch_ends, n_batches, prob, confidence, alive, scale, start, span_ns,
                                  pending, len(pending), ctl, vectors, *kernel("risk"), chain.out["risk"],
                                  chain.out["inference"], kind, *kernel("strategy"), *kernel("execute"),
                                  intents_out, group_reports, counts, progress)
            if int(progress[fused_loop.R_NEXT]) == start:
                raise RuntimeError("fused loop: the output buffers cannot hold one piece's intents and reports")
            start = int(progress[fused_loop.R_NEXT])
            n_int, k = int(progress[fused_loop.R_INTENTS]), int(progress[fused_loop.R_REPORTS])
            first, n_last = int(progress[fused_loop.R_FEEDBACK_START]), int(progress[fused_loop.R_FEEDBACK_N])
            now = int(progress[fused_loop.R_NOW])
            feedback_buf.view(np.uint8)[:n_last * REPORT_BYTES] = \
                group_reports[first:first + n_last].view(np.uint8)
            pending = feedback_buf[:n_last]
            all_reports.append(group_reports[:k].tobytes())
            all_intents.append(intents_out[:n_int].tobytes())
            if journal is not None:
                journal.intents.append(intents_out[:n_int])
                journal.reports.append(group_reports[:k])
    for c, name in enumerate(("risk", "inference", "strategy", "execute")):
        chain.counts[name][0] += int(counts[c, 0])
        chain.counts[name][1] += int(counts[c, 1])
    # The market has ended: orders still in flight reach the venue and their answers come back.
    stats = chain.stats("execute")
    k = execute.finish(state, params, stats, reports_out, now)
    if k:
        all_reports.append(reports_out[:k].tobytes())
        chain.counts["execute"][1] += k
        if journal is not None:
            journal.reports.append(reports_out[:k])

    counters = chain.counters()
    if "feed" not in counters:
        counters = {"feed": {"in": 0, "out": fed, **dict.fromkeys(registry.counters("feed"), 0)}, **counters}
    _, _, quarantine, quarantined, _ = chain.state("validate")
    kept = min(int(quarantined[0]), len(quarantine))
    return FusedResult(records_from_bytes(all_reports, records.EXEC_REPORT),
                       records_from_bytes(all_intents, records.ORDER_INTENT),
                       counters, quarantine[:kept].copy())


REPORT_BYTES = records.EXEC_REPORT.itemsize


def _group_last_ts(ahead: deque[tuple[np.ndarray, int]], capacity: int) -> int:
    """Event time at the end of the next group: the first batches of ``ahead`` that fit in ``capacity`` events."""
    size, last = 0, ahead[0][1]
    for batch, batch_last in ahead:
        size += len(batch)
        if size > capacity:
            break
        last = batch_last
    return last


def _joined(batches: list[np.ndarray], buf: np.ndarray) -> np.ndarray:
    """``batches`` one after another in ``buf`` (byte copies), as a view of its filled part."""
    raw = buf.view(np.uint8)
    size = buf.dtype.itemsize
    n = 0
    for b in batches:
        raw[n * size:(n + len(b)) * size] = b.view(np.uint8)
        n += len(b)
    return buf[:n]


def _copied(batch: np.ndarray) -> np.ndarray:
    """A copy of a record array through its bytes (a structured ``copy()`` is ~30 us in numpy 2)."""
    out = np.empty(len(batch), batch.dtype)
    out.view(np.uint8)[:] = batch.view(np.uint8)
    return out


def records_from_bytes(parts: list[bytes], dtype: np.dtype) -> np.ndarray:
    """One record array of ``dtype`` from the bytes of consecutive pieces (``ndarray.tobytes()``)."""
    joined = b"".join(parts)
    out = np.empty(len(joined) // dtype.itemsize, dtype)
    out.view(np.uint8)[:] = np.frombuffer(joined, np.uint8)
    return out


def _last_ts(batch: np.ndarray, default: int = 0) -> int:
    return int(batch["origin_ts"][-1]) if len(batch) else default


def _rebatch(source: Iterator[np.ndarray], batch: int) -> Iterator[np.ndarray]:
    """Batches of exactly ``batch`` records (the last may be shorter), whatever the source's chunking, so a
    replay steps the kernels exactly as the recorded run did."""
    pending = np.zeros(0, records.MARKET_EVENT)
    for chunk in source:
        pending = np.concatenate([pending, chunk]) if len(pending) else np.asarray(chunk)
        while len(pending) >= batch:
            yield pending[:batch]
            pending = pending[batch:]
    if len(pending):
        yield pending


def collect_features(seed: int, n_events: int, config: Config | None = None) -> np.ndarray:
    """Feature vectors from the synthetic feed through validate and feature (for training models).

    The feature stage writes straight into one array of ``n_events`` records (at most one vector per
    event), so a long history (10 minutes of market time is ~2 GB of vectors) is held once, not twice
    as chunks and their concatenation; the result is a view of its filled part."""
    if n_events <= 0:
        raise ValueError(f"n_events={n_events} must be > 0")
    config = (config or Config()).with_overrides(feed={"seed": seed, "max_events": n_events})
    chain = Chain(resolve(config), ("feed", "validate", "feature"))
    out = np.zeros(n_events, records.FEATURE_VECTOR)
    filled = 0
    while chain.run(None, 0, 0, out=out[filled:filled + config.rings.batch]) or chain.n["feed"]:
        filled += chain.n["feature"]
    return out[:filled]
