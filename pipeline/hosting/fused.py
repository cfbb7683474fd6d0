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

from pipeline import registry
from pipeline.config import Config
from pipeline.hosting.chain import Chain
from pipeline.plan import resolve
from stages import records, validate


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
              feature_sink: Callable[[np.ndarray], None] | None = None) -> FusedResult:
    """Run every kernel in order. The market comes from the synthetic feed (``n_events`` of it) or, for a
    replay, from ``market_source`` (batches of MARKET_EVENT, e.g. a journal); the synthetic clock is the
    events' own ``origin_ts``. With ``journal``, raw market events, intents and reports are recorded;
    ``feature_sink`` gets each batch's feature vectors (a view, overwritten by the next batch)."""
    from stages import inference

    if market_source is None and n_events <= 0:
        raise ValueError("give n_events > 0 for the synthetic feed, or a market_source")
    plan = resolve(config.with_overrides(feed={"max_events": n_events}))
    model = inference.OnnxModel.load(model_path or plan.model_path)
    upstream = ("validate", "feature", "risk", "inference", "strategy")
    chain = Chain(plan, upstream if market_source is not None else ("feed",) + upstream, also=("execute",),
                  predict=model.predict)
    refused = np.zeros(plan.config.rings.batch, records.MARKET_EVENT)
    pending = np.zeros(0, records.EXEC_REPORT)
    all_reports, all_intents = [], []
    fed = 0  # a replay's market, counted as the feed's output

    replay = _rebatch(market_source, plan.config.rings.batch) if market_source is not None else None
    while True:
        if replay is None:
            now = chain.sim_ns()
            n_int = chain.run(None, 0, now, feedback={"risk": pending, "strategy": pending}, sim_clock=True)
            if chain.n["feed"] == 0:
                break
            now = chain.sim_ns()
            market = chain.out["feed"][:chain.n["feed"]]
        else:
            market = next(replay, None)
            if market is None or len(market) == 0:
                break
            fed += len(market)
            now = int(market["origin_ts"][-1])
            n_int = chain.run(market, len(market), now, feedback={"risk": pending, "strategy": pending})
        if journal is not None:
            journal.market.append(market)
            n_bad, _ = validate.take_quarantined(chain.state("validate"), refused)
            journal.quarantine.append(refused[:n_bad])
        if feature_sink is not None:
            feature_sink(chain.out["feature"][:chain.n["feature"]])
        valid, intents = chain.out["validate"][:chain.n["validate"]], chain.out["strategy"]
        reports = chain.out["execute"]
        # Execute: market events up to each intent's origin, then that intent.
        given = 0
        produced = []
        seqs = valid["origin_seq"]
        i = 0
        while i < n_int:
            j = i
            while j < n_int and intents[j]["origin_seq"] == intents[i]["origin_seq"]:
                j += 1
            upto = int(np.searchsorted(seqs, intents[i]["origin_seq"], side="right"))
            k = chain.step("execute", intents[i:j], j - i, valid[given:upto], upto - given, now)
            produced.append(reports[:k].copy())
            given = max(given, upto)
            i = j
        k = chain.step("execute", intents[:0], 0, valid[given:], len(valid) - given, now)
        produced.append(reports[:k].copy())
        pending = np.concatenate(produced)
        all_reports.append(pending)
        all_intents.append(intents[:n_int].copy())
        if journal is not None:
            journal.intents.append(intents[:n_int])
            journal.reports.append(pending)

    counters = chain.counters()
    if "feed" not in counters:
        counters = {"feed": {"in": 0, "out": fed, **dict.fromkeys(registry.counters("feed"), 0)}, **counters}
    _, _, quarantine, quarantined, _ = chain.state("validate")
    kept = min(int(quarantined[0]), len(quarantine))
    return FusedResult(np.concatenate(all_reports) if all_reports else np.zeros(0, records.EXEC_REPORT),
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
    chain = Chain(resolve(config), ("feed", "validate", "feature"))
    out = np.zeros(n_events, records.FEATURE_VECTOR)
    filled = 0
    while chain.run(None, 0, 0, out=out[filled:filled + config.rings.batch]) or chain.n["feed"]:
        filled += chain.n["feature"]
    return out[:filled]
