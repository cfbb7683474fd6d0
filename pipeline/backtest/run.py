"""One backtest: the data through fused mode (every kernel, the venue model ahead on the venue's clock), recorded
into ``OUT/journal`` (so ``bot4 report`` and ``bot4 replay`` work on it later) and reported into ``OUT``."""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass

from pipeline.backtest.data import BacktestInputError, Market, load
from pipeline.config import Config, allocation_note, to_dict
from pipeline.hosting.fused import FusedResult, run_fused
from pipeline.plan import resolve
from pipeline.report import build, metrics
from pipeline.report.inputs import KeptRun
from pipeline.store.journal_replay import JournalSet


@dataclass
class Outcome:
    result: FusedResult
    market: Market
    report: build.Written
    events: int           # market events the backtest ran over
    elapsed_s: float      # the kernels' run, not the report
    out: str


def config_digest(config: Config) -> str:
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def journal_source(text: str, limit: int = 128) -> str:
    """``text`` cut to the journal header's source field (``limit`` bytes of UTF-8), marked with "..." when cut:
    several long recording paths would not fit, and the report keeps the whole description."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit - 3].decode(errors="ignore") + "..."


def run(config: Config, out: str, events: int = 0) -> Outcome:
    """Run the backtest of ``config`` into directory ``out`` (created; an existing report there is replaced, an
    existing journal refused by the journal itself). ``events``: the synthetic market's size (feed.max_events
    when 0)."""
    resolve(config)  # every file the config names (GARCH fit, latency table) is read and checked first
    market = load(config)
    n_events = events or config.feed.max_events
    if market.events is None and n_events <= 0:
        raise BacktestInputError("the synthetic market needs a size: set feed.max_events or pass --events")
    os.makedirs(out, exist_ok=True)
    universe = {"venues": list(config.feed.venues), "symbols": list(config.feed.symbols)}
    journal = JournalSet(os.path.join(out, "journal"), source=journal_source(f"bot4 backtest {market.source}"),
                         universe=universe)
    recorder = KeptRun(journal)
    started = time.perf_counter()
    try:
        span = int(config.backtest.feedback_ms * 1e6)
        if market.events is None:
            result = run_fused(config, n_events, journal=recorder, horizon_ns=market.horizon_ns, span_ns=span)
        else:
            result = run_fused(config, market_source=iter([market.events]), journal=recorder,
                               offsets_ns=market.offsets_ns, horizon_ns=market.horizon_ns, span_ns=span)
    finally:
        journal.close()
    elapsed = time.perf_counter() - started
    record = recorder.record(config.risk.capital_usd)
    v = config.venue
    meta = {"source": market.source, "config_digest": config_digest(config), "seed": config.feed.seed,
            "strategy": config.strategy.kind, "events": int(len(record.market)),
            "venue_model": {"entry_latency_ms": v.entry_latency_ms, "response_latency_ms": v.response_latency_ms,
                            "latency_file": v.latency_file, "queue_model": v.queue_model,
                            "queue_power": v.queue_power, "partial_fills": v.partial_fills, "funding": v.funding,
                            "maker_fee_bps": v.maker_fee_bps, "taker_fee_bps": v.taker_fee_bps,
                            "clock_offsets_ns": {str(k): x for k, x in sorted((market.offsets_ns or {}).items())}},
            "time_range": {"start": config.backtest.start, "end": config.backtest.end},
            "initial_equity_source": "risk.capital_usd", "universe": universe,
            "notes": market.notes + ([allocation_note(config)] if allocation_note(config) else [])}
    record.meta = meta
    settings = metrics.Settings(sample_interval_ns=int(config.backtest.sample_ms * 1e6),
                                gap_threshold_ns=int(config.backtest.gap_s * 1e9))
    written = build.write(record, out, settings, title=f"Bot4 backtest: {market.source}")
    return Outcome(result, market, written, int(len(record.market)), elapsed, out)
