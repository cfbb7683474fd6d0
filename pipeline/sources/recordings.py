"""Several parsed sources merged into one stream, and a pacer that releases it in time.

:func:`merge` orders by receive time (``origin_ts``), stable: ties keep argument order, then file
order, so one venue message's records stay together. It assigns ``origin_seq`` densely from 1 in
merged order and re-derives F_UNSYNCED over the merged stream (a capture continued in a second file
stays synced; two overlapping captures of one instrument interleave and honestly lose sync).

:class:`Pacer` is a pure iterator over a merged array: given a clock (and a way to wait) it yields
batches of the records that are due. Replay time runs ``speed`` times faster than the clock from the
first poll; ``speed=None`` (or ``inf``) releases batches as fast as they are asked for. Records are
released unchanged: their ``origin_ts`` stays the recorded receive time, so a fused run over a replay
is deterministic whatever the pacing.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable, Iterable, Iterator

import numpy as np

from pipeline.sources.binance_csv import DEPTH_HEADER, parse_binance_depth, parse_binance_trades
from pipeline.sources.binance_ws import parse_binance_ws
from pipeline.sources.csvread import split_header
from pipeline.sources.inputs import Loaded, ParseResult, load
from pipeline.sources.symbols import SymbolTable
from pipeline.sources.sync import mark_unsynced
from pipeline.sources.tardis import detect_kind, parse_tardis
from stages.records import EV_UNPARSABLE, F_LAST, MARKET_EVENT


class UnknownFormatError(ValueError):
    pass


def merge(sources: Iterable, resync: bool = True) -> np.ndarray:
    """One MARKET_EVENT array from ParseResults or record arrays, in receive-time order, ``origin_seq``
    = 1..n. With ``resync`` F_UNSYNCED is recomputed over the merged stream."""
    arrays = [s.records if isinstance(s, ParseResult) else np.asarray(s) for s in sources]
    for a in arrays:
        if a.dtype != MARKET_EVENT:
            raise TypeError(f"merge: expected MARKET_EVENT records, got {a.dtype}")
    n = sum(len(a) for a in arrays)
    out = np.zeros(n, MARKET_EVENT)  # zeroed: a record's pad bytes too, so a replay journals the same bytes every time
    if n:
        ts = np.concatenate([a["origin_ts"] for a in arrays])
        order = np.argsort(ts, kind="stable")
        where = np.empty(n, np.int64)
        where[order] = np.arange(n)
        start = 0
        for a in arrays:  # scatter each input once instead of concatenating and gathering (one copy, not two)
            out[where[start:start + len(a)]] = a
            start += len(a)
        out["origin_seq"] = np.arange(1, n + 1)
        if resync:
            mark_unsynced(out)
    return out


class Pacer:
    """Batches of ``records`` (sorted by ``origin_ts``) as they fall due.

    ``poll(now_ns)`` never waits: it returns the records due by ``now_ns`` (at most ``max_batch``; an
    empty array when none is due). Iterating waits between batches with ``sleep_ns`` (default:
    ``time.sleep``) on ``clock_ns`` (default: ``time.monotonic_ns``); pass a fake clock and sleep to test
    without waiting. ``max_gap_ns`` caps any silence in the recording (a weekend, a capture gap) to that
    much replay time; a timestamp going backwards counts as no gap.
    """

    def __init__(self, records: np.ndarray, speed: float | None = 1.0, *,
                 clock_ns: Callable[[], int] = time.monotonic_ns, sleep_ns: Callable[[int], None] | None = None,
                 max_batch: int = 4096, max_gap_ns: int | None = None):
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be positive (or None for as fast as possible), not {speed}")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.records = records
        self.speed = None if speed is None or math.isinf(speed) else float(speed)
        self.clock_ns = clock_ns
        self.sleep_ns = sleep_ns or (lambda ns: time.sleep(ns / 1e9))
        self.max_batch = int(max_batch)
        self.pos = 0
        self.start_ns: int | None = None
        gaps = np.diff(records["origin_ts"]) if len(records) else np.zeros(0, np.int64)
        gaps = np.maximum(gaps, 0)
        if max_gap_ns is not None:
            gaps = np.minimum(gaps, max_gap_ns)
        self.offset_ns = np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)  # replay time of each record

    @property
    def done(self) -> bool:
        return self.pos >= len(self.records)

    def next_due_ns(self) -> int | None:
        """Clock time at which the next record falls due (None when done; now when not started)."""
        if self.done:
            return None
        if self.start_ns is None or self.speed is None:
            return self.start_ns if self.start_ns is not None else self.clock_ns()
        return self.start_ns + math.ceil(int(self.offset_ns[self.pos]) / self.speed)

    def poll(self, now_ns: int) -> np.ndarray:
        if self.start_ns is None:
            self.start_ns = now_ns
        if self.done:
            return self.records[:0]
        end = min(self.pos + self.max_batch, len(self.records))
        if self.speed is not None:
            replay_ns = (now_ns - self.start_ns) * self.speed
            due = int(np.searchsorted(self.offset_ns, replay_ns, side="right"))
            end = min(end, due)
        batch = self.records[self.pos:end]
        self.pos = max(self.pos, end)
        return batch

    def __iter__(self) -> Iterator[np.ndarray]:
        while not self.done:
            now = self.clock_ns()
            batch = self.poll(now)
            if len(batch):
                yield batch
                continue
            due = self.next_due_ns()
            if due is not None and due > now:
                self.sleep_ns(due - now)


def refusal_markers(result: ParseResult) -> np.ndarray:
    """One EV_UNPARSABLE record per input line ``result`` counted bad, so validation quarantines (and counts,
    and journals) what the parser refused. A refused line has no time of its own: the markers are spread
    evenly over the file's receive times. Venue: the file's (its first record's); none without records."""
    n_bad, good = result.n_bad, result.records
    if n_bad == 0 or len(good) == 0:
        return np.zeros(0, MARKET_EVENT)
    ts = np.sort(good["origin_ts"])
    out = np.zeros(n_bad, MARKET_EVENT)
    out["origin_ts"] = ts[((np.arange(n_bad) + 0.5) * len(ts) / n_bad).astype(np.int64)]
    out["kind"] = EV_UNPARSABLE
    out["venue"] = good["venue"][0]
    out["flags"] = F_LAST
    return out


def sniff(source) -> str:
    """The format of a file: ``binance-ws``, ``tardis``, ``binance-depth-csv``, ``binance-trades-csv`` or
    ``binance-aggTrades-csv``; raises UnknownFormatError."""
    loaded = source if isinstance(source, Loaded) else load(source)
    data, label = loaded.data, loaded.label
    head = data[:4096]
    first = head.split(b"\n", 1)[0].strip()
    sp = first.find(b" ")
    if sp > 0 and first[:sp].isdigit() and first[sp + 1:sp + 2] == b"{":
        return "binance-ws"
    header, _ = split_header(head)
    if detect_kind(header, label):
        return "tardis"
    if header == DEPTH_HEADER:
        return "binance-depth-csv"
    name = os.path.basename(label)
    low = [h.lower() for h in header]
    if "agg_trade_id" in low or "aggtrades" in name.lower():
        return "binance-aggTrades-csv"
    if "is_buyer_maker" in low or "-trades-" in name.lower():
        return "binance-trades-csv"
    raise UnknownFormatError(f"{label}: not a recognised replay format (first line {first[:80]!r})")


def parse_file(source, table: SymbolTable, venue: str | None = None, **options) -> ParseResult:
    """Parse any supported file, its format sniffed from its content (and name, for headerless Binance
    trade files). ``venue`` is required for Binance files, optional for Tardis (which names its exchange)."""
    source = load(source)
    fmt = sniff(source)
    if fmt == "tardis":
        return parse_tardis(source, table, venue=venue, **options)
    if venue is None:
        raise ValueError(f"{fmt}: give venue= (the file does not name its venue)")
    if fmt == "binance-ws":
        return parse_binance_ws(source, table, venue)
    if fmt == "binance-depth-csv":
        return parse_binance_depth(source, table, venue, **options)
    kind = "aggTrades" if fmt == "binance-aggTrades-csv" else "trades"
    return parse_binance_trades(source, table, venue, kind=kind, **options)
