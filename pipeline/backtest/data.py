"""What a backtest runs on: a recording (feed.files, any replay format), a journal's market stream
(backtest.journal), or the synthetic market; cut to backtest.start/end, with the clock offsets and the look-ahead
the venue model needs."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import numpy as np

from pipeline.config import Config
from pipeline.sources.replay_feed import ReplayInputError, load_recording
from pipeline.store.journal import JournalError, JournalReader, segment_paths
from stages import records
from stages.venue import exchange

MIN_HORIZON_NS = 1_000_000  # the venue's market runs at least this far ahead of the local stages


class BacktestInputError(ValueError):
    """The data a backtest was given cannot serve it; the message names the key or file and the fix (exit 2)."""


@dataclass
class Market:
    events: np.ndarray | None  # records.MARKET_EVENT in stream order; None: the synthetic feed makes its own
    source: str                # what the data is, for the report
    notes: list[str]
    offsets_ns: dict | None    # venue -> local minus venue clock, fixed from the data (stages.venue.exchange)
    horizon_ns: int            # the feed's largest delay after the offsets: how far the venue must see ahead


def iso(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc).isoformat(timespec="milliseconds")


def load(config: Config) -> Market:
    bt = config.backtest
    if bt.journal:
        events, source = _journal_market(bt.journal), f"journal {os.path.abspath(bt.journal)}"
        notes = [f"{bt.journal}: {len(events):,} market events"]
    elif config.feed.source == "replay":
        try:
            events, notes = load_recording(config)
        except ReplayInputError as exc:
            raise BacktestInputError(str(exc)) from None
        source = "recording " + ", ".join(str(f) for f in config.feed.files)
    elif config.feed.source == "synthetic":
        if bt.start or bt.end:
            raise BacktestInputError("backtest.start/end cut recorded data; the synthetic market is sized by "
                                     "feed.max_events (or --events): drop backtest.start and backtest.end")
        return Market(None, f"synthetic seed={config.feed.seed}", [], None, MIN_HORIZON_NS)
    else:
        raise BacktestInputError(f"feed.source={config.feed.source!r} is live data: a backtest runs on "
                                 "feed.source = \"replay\" (feed.files), backtest.journal, or \"synthetic\"")
    events = _cut(events, bt)
    offsets = exchange.offsets_from(events)
    has = events["exch_ts"] > 0
    delay = events["origin_ts"][has] - events["exch_ts"][has] - np.array(
        [offsets.get(int(v), 0) for v in range(int(events["venue"].max()) + 1)], np.int64)[events["venue"][has]]
    horizon = max(MIN_HORIZON_NS, int(delay.max()) + 1) if len(delay) else MIN_HORIZON_NS
    return Market(events, source, notes, offsets, horizon)


def _journal_market(directory: str) -> np.ndarray:
    if not segment_paths(directory, "market"):
        raise BacktestInputError(f"backtest.journal={directory!r} has no market stream: give a journal written by "
                                 "bot4 run, record or fused --journal")
    try:
        events = JournalReader(directory, "market", records.MARKET_EVENT).read_all()
    except JournalError as exc:
        raise BacktestInputError(f"backtest.journal={directory!r}: {exc}") from None
    if len(events) == 0:
        raise BacktestInputError(f"backtest.journal={directory!r}: its market stream is empty")
    return events


def _cut(events: np.ndarray, bt) -> np.ndarray:
    start, end = bt.range_ns()
    if start is None and end is None:
        return events
    t = events["origin_ts"]
    first, last = int(t.min()), int(t.max())
    keep = np.ones(len(events), bool)
    if start is not None:
        keep &= t >= start
    if end is not None:
        keep &= t < end
    if not keep.any():
        key = "backtest.start" if start is not None and start > last else "backtest.end"
        raise BacktestInputError(f"{key}: backtest.start={bt.start or '-'} .. backtest.end={bt.end or '-'} holds "
                                 f"none of the data, which spans {iso(first)} .. {iso(last)}: give times within it")
    cut = events[keep].copy()
    cut["origin_seq"] = np.arange(1, len(cut) + 1)  # the feed's sequence stays dense from 1
    return cut
