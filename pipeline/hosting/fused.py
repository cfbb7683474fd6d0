"""Fused mode: every kernel in one process, in pipeline order, on the synthetic clock. Deterministic.

The same kernels as live mode, called batch by batch: feed -> validate -> feature -> risk -> inference ->
strategy -> execute. Execution reports of one batch reach risk and strategy with the next batch (as the
feedback rings deliver them later in live mode). Execute sees market events only up to the event that
caused each intent, so a fused run never fills against a book its strategy had not seen yet.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline import graph, registry
from pipeline.config import Config
from shm import control as cb
from stages import records, validate
from stages.feed import I_SIM_NS


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


def _stats(block: cb.ControlBlock, index: int) -> np.ndarray:
    return block.stages[index][cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]


def run_fused(config: Config, n_events: int = 0, model_path: str | None = None,
              market_source: Iterator[np.ndarray] | None = None, journal: Journal | None = None,
              feature_sink: Callable[[np.ndarray], None] | None = None) -> FusedResult:
    """Run every kernel in order. The market comes from the synthetic feed (``n_events`` of it) or, for a
    replay, from ``market_source`` (batches of MARKET_EVENT, e.g. a journal); the synthetic clock is the
    events' own ``origin_ts``. With ``journal``, raw market events, intents and reports are recorded;
    ``feature_sink`` gets each batch's feature vectors (a view, overwritten by the next batch)."""
    from stages import inference

    if market_source is None and n_events <= 0:
        raise ValueError("give n_events > 0 for the synthetic feed, or a market_source")
    config = config.with_overrides(feed={"max_events": n_events})
    batch = config.rings.batch
    block = cb.ControlBlock.local()
    block.globals[cb.G_TRADING_ENABLED] = 1
    ctl = block.globals
    kernels = {name: graph.kernel(name, config, live=False) for name in graph.MODULES}
    model = inference.OnnxModel.load(model_path or config.inference.model or inference.DEFAULT_MODEL)
    idx = {s.name: s.index for s in graph.STAGES}
    counts = {s.name: [0, 0] for s in graph.STAGES}

    market = np.zeros(batch, records.MARKET_EVENT)
    valid = np.zeros(batch, records.MARKET_EVENT)
    refused = np.zeros(batch, records.MARKET_EVENT)
    features = np.zeros(batch, records.FEATURE_VECTOR)
    decisions = np.zeros(batch, records.RISK_DECISION)
    x = np.zeros((batch, records.N_FEATURES), np.float32)
    predictions = np.zeros(batch, records.PREDICTION)
    intents = np.zeros(graph.out_capacity("strategy", batch), records.ORDER_INTENT)
    reports = np.zeros(graph.out_capacity("execute", batch), records.EXEC_REPORT)
    pending = np.zeros(0, records.EXEC_REPORT)
    all_reports, all_intents = [], []
    empty_market = np.zeros(0, records.MARKET_EVENT)
    empty_reports = np.zeros(0, records.EXEC_REPORT)

    def call(name, in_a, n_a, in_b, n_b, out):
        step, params, state = kernels[name]
        n = step(in_a, n_a, in_b, n_b, state, params, ctl, _stats(block, idx[name]), out, now)
        counts[name][0] += n_a
        counts[name][1] += n
        return n

    replay = _rebatch(market_source, batch) if market_source is not None else None
    while True:
        if replay is None:
            now = int(kernels["feed"][2][0][I_SIM_NS])
            n = call("feed", empty_market, 0, empty_market, 0, market)
            now = int(kernels["feed"][2][0][I_SIM_NS])
        else:
            chunk = next(replay, None)
            n = 0 if chunk is None else len(chunk)
            if n:
                market[:n] = chunk
                counts["feed"][1] += n
                now = int(chunk["origin_ts"][-1])
        if n == 0:
            break
        if journal is not None:
            journal.market.append(market[:n])
        n = call("validate", market, n, empty_market, 0, valid)
        n_valid = n
        if journal is not None:
            n_bad, _ = validate.take_quarantined(kernels["validate"][2], refused)
            journal.quarantine.append(refused[:n_bad])
        n = call("feature", valid, n, empty_market, 0, features)
        if feature_sink is not None:
            feature_sink(features[:n])
        n = call("risk", features, n, pending, len(pending), decisions)
        inference.prepare(decisions, n, x)
        prob_up = model.predict(x[:n])
        n = inference.finish(decisions, n, prob_up, predictions, now)
        counts["inference"][0] += n
        counts["inference"][1] += n
        n_int = call("strategy", predictions, n, pending, len(pending), intents)
        # Execute: market events up to each intent's origin, then that intent.
        given = 0
        produced = []
        seqs = valid["origin_seq"][:n_valid]
        i = 0
        while i < n_int:
            j = i
            while j < n_int and intents[j]["origin_seq"] == intents[i]["origin_seq"]:
                j += 1
            upto = int(np.searchsorted(seqs, intents[i]["origin_seq"], side="right"))
            k = call("execute", intents[i:j], j - i, valid[given:upto], upto - given, reports)
            produced.append(reports[:k].copy())
            given = max(given, upto)
            i = j
        k = call("execute", intents[:0], 0, valid[given:n_valid], n_valid - given, reports)
        produced.append(reports[:k].copy())
        pending = np.concatenate(produced)
        all_reports.append(pending)
        all_intents.append(intents[:n_int].copy())
        if journal is not None:
            journal.intents.append(intents[:n_int])
            journal.reports.append(pending)

    counters = {}
    for spec in graph.STAGES:
        labels = registry.counters(spec.name)
        stats = _stats(block, spec.index)
        counters[spec.name] = {"in": counts[spec.name][0], "out": counts[spec.name][1],
                               **{label: int(stats[i]) for i, label in enumerate(labels)}}
    _, _, quarantine, quarantined, _ = kernels["validate"][2]
    kept = min(int(quarantined[0]), len(quarantine))
    return FusedResult(np.concatenate(all_reports) if all_reports else empty_reports,
                       np.concatenate(all_intents) if all_intents else np.zeros(0, records.ORDER_INTENT),
                       counters, quarantine[:kept].copy())


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
    batch = config.rings.batch
    block = cb.ControlBlock.local()
    ctl = block.globals
    stages = {name: graph.kernel(name, config, live=False) for name in ("feed", "validate", "feature")}
    market = np.zeros(batch, records.MARKET_EVENT)
    valid = np.zeros(batch, records.MARKET_EVENT)
    out = np.zeros(n_events, records.FEATURE_VECTOR)
    filled = 0
    stats = _stats(block, 0)
    while True:
        step, params, state = stages["feed"]
        n = step(market, 0, market, 0, state, params, ctl, stats, market, 0)
        if n == 0:
            break
        step, params, state = stages["validate"]
        n = step(market, n, market, 0, state, params, ctl, stats, valid, 0)
        step, params, state = stages["feature"]
        filled += step(valid, n, valid, 0, state, params, ctl, stats, out[filled:filled + n], 0)
    return out[:filled]
