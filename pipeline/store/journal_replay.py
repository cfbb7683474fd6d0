"""Event sourcing: record a fused run into a journal, and replay a journal through fused mode.

A journal directory holds four streams: ``market`` (every market event as the feed emitted it, before
validation, so quarantine decisions replay too), ``intent`` and ``exec`` (what the run decided), and
``quarantine`` (the events validation refused, each with its reason code). Replaying
feeds ``market`` through the same kernels in fused mode and compares the execution reports with ``exec``
byte for byte.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from pipeline import streams
from pipeline.config import Config
from pipeline.hosting.fused import FusedResult, run_fused
from pipeline.store.journal import FsyncPolicy, JournalReader, JournalWriter, segment_paths
from stages import records

STREAMS = {s.name: s.dtype for s in streams.STREAMS}


class JournalSet:
    """The writers a fused run records into. A fused run has no control block: it draws its own run id."""

    def __init__(self, directory: str, source: str, fsync_policy: FsyncPolicy = FsyncPolicy.INTERVAL,
                 universe: dict | None = None, run_id: int = 0):
        self.run_id = run_id or secrets.randbits(63) or 1
        ids = {"run_id": self.run_id, "universe": universe}
        self.writers = {s.name: JournalWriter(directory, s.name, s.dtype, source, fsync_policy, **ids)
                        for s in streams.STREAMS}
        w = self.writers  # the names fused mode appends to (pipeline.hosting.fused.Journal)
        self.market, self.intents, self.reports, self.quarantine = w["market"], w["intent"], w["exec"], w["quarantine"]

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def record(config: Config, n_events: int, directory: str) -> FusedResult:
    journal = JournalSet(directory, source=f"bot4 fused seed={config.feed.seed} events={n_events}",
                         universe={"venues": list(config.feed.venues), "symbols": list(config.feed.symbols)})
    try:
        return run_fused(config, n_events, journal=journal)
    finally:
        journal.close()


@dataclass
class ReplayOutcome:
    result: FusedResult
    recorded_reports: int
    identical: bool
    first_difference: int    # index of the first differing report, -1 if none


def replay(config: Config, directory: str) -> ReplayOutcome:
    market = JournalReader(directory, "market", records.MARKET_EVENT)
    result = run_fused(config, market_source=iter(market.batches()))
    if segment_paths(directory, "exec"):
        recorded = JournalReader(directory, "exec", records.EXEC_REPORT).read_all()
    else:  # a journal without decisions replays, it just has nothing to compare with
        recorded = np.zeros(0, records.EXEC_REPORT)
    got = result.reports
    same = len(recorded) == len(got) and recorded.tobytes() == got.tobytes()
    first = -1
    if not same:
        n = min(len(recorded), len(got))
        diff = np.nonzero(recorded[:n].view(np.uint8).reshape(n, -1) != got[:n].view(np.uint8).reshape(n, -1))[0]
        first = int(diff[0]) if len(diff) else n
    return ReplayOutcome(result, len(recorded), same, first)
