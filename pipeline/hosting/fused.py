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
from pipeline.hosting.chain import Chain
from pipeline.plan import resolve
from stages import records, validate

_LOCAL = ("feature", "risk", "inference", "strategy", "execute")  # stepped batch by batch behind the venue's market
DEFAULT_HORIZON_NS = 1_000_000_000  # the venue's market runs this far ahead: more than any feed delay seen
VENUE_MARKET_CAPACITY = 1 << 17


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
              horizon_ns: int = DEFAULT_HORIZON_NS, span_ns: int = 0) -> FusedResult:
    """Run every kernel in order. The market comes from the synthetic feed (``n_events`` of it) or, for a
    replay, from ``market_source`` (batches of MARKET_EVENT, e.g. a journal); the synthetic clock is the
    events' own ``origin_ts``. With ``journal``, raw market events, intents and reports are recorded;
    ``feature_sink`` gets each batch's feature vectors (a view, overwritten by the next batch).

    The venue model sees the validated market ``horizon_ns`` of event time ahead of the local stages (at least
    the feed's largest delay, so the venue's book at any order's arrival is complete); ``offsets_ns`` fixes each
    venue's clock offset (a recording's: stages.venue.exchange.offsets_from), else the plan's rule holds."""
    from stages import execute, inference
    from stages.venue import exchange

    if market_source is None and n_events <= 0:
        raise ValueError("give n_events > 0 for the synthetic feed, or a market_source")
    plan = resolve(config.with_overrides(feed={"max_events": n_events}))
    model = inference.OnnxModel.load(model_path or plan.model_path)
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
    ahead: deque[np.ndarray] = deque()  # validated batches the venue has, the local stages not yet
    fed, ended, now = 0, False, 0
    replay = _rebatch(market_source, plan.config.rings.batch) if market_source is not None else None
    reports_out = chain.out["execute"]

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

    while True:
        # The venue's market runs ahead of the local stages by the horizon (or to the end of the market).
        while not ended and (not ahead or _last_ts(ahead[-1]) < _last_ts(ahead[0]) + horizon_ns):
            valid = validated_batch()
            if valid is None:
                ended = True
                break
            if len(valid) == 0:  # every event of the batch quarantined
                continue
            if exchange.market_room(venue_state) < len(valid):
                ahead.append(valid)
                break
            exchange.push_batch(venue_state, venue_params, valid, len(valid))
            ahead.append(valid)
        if not ahead:
            break
        for valid in _by_span(ahead.popleft(), span_ns):
            now = _last_ts(valid, now)
            n_int = chain.step("feature", valid, len(valid), None, 0, now)
            for name, before in (("risk", "feature"), ("inference", "risk"), ("strategy", "inference")):
                feedback = pending if name in ("risk", "strategy") else None
                n_int = chain.step(name, chain.out[before], chain.n[before], feedback,
                                   0 if feedback is None else len(feedback), now)
            if feature_sink is not None:
                feature_sink(chain.out["feature"][:chain.n["feature"]])
            intents = chain.out["strategy"]
            k = chain.step("execute", intents, n_int, valid, len(valid), now)
            feedback_buf.view(np.uint8)[:k * REPORT_BYTES] = reports_out.view(np.uint8)[:k * REPORT_BYTES]
            pending = feedback_buf[:k]
            all_reports.append(pending.tobytes())
            all_intents.append(intents[:n_int].tobytes())
            if journal is not None:
                journal.intents.append(intents[:n_int])
                journal.reports.append(pending)
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


def _by_span(batch: np.ndarray, span_ns: int) -> Iterator[np.ndarray]:
    """``batch`` in consecutive pieces whose event times span at most ``span_ns`` each (0: whole): execution
    reports reach risk and strategy with the next piece, so this bounds how late they learn of a fill."""
    if span_ns <= 0 or len(batch) == 0 or int(batch["origin_ts"][-1]) - int(batch["origin_ts"][0]) <= span_ns:
        yield batch
        return
    t = batch["origin_ts"]
    start = 0
    while start < len(batch):
        end = int(np.searchsorted(t, t[start] + span_ns, side="right"))
        yield batch[start:end]
        start = end


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
