"""The feed stage's host for a replay: recorded files -> market events on the feed ring, paced.

Parsing happens before the stage reports ready (a full capture takes ~1 s). Each record's ``origin_ts``
is restamped with this run's receive time when it is published, so latency is measured from when the
pipeline got it; ``exch_ts`` moves by the same amount, keeping the recorded venue-to-receive latency. When the recording is exhausted the stage says so
(``finished``) and keeps its heartbeat: the supervisor stops the run once everything has drained.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from pipeline.hosting import stage_host
from pipeline.hosting.agent import Agent, PythonFeed
from pipeline.sources import (Pacer, SymbolTable, UnknownFormatError, UnknownInstrumentError, merge, parse_file,
                              refusal_markers, sniff)
from pipeline.sources.inputs import load
from stages import feed


class ReplayInputError(ValueError):
    """A replay file that cannot feed the run; the message names feed.files, the file and what was read."""


def _what_was_read(result) -> str:
    if result.lines == 0:
        return "empty file"
    parts = []
    if result.bad:
        parts.append("refused: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.bad.items())))
    if result.ignored:
        parts.append("ignored: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.ignored.items())))
    return "; ".join(parts) or "no line decoded"


def check_file(path: str) -> None:
    """The pre-flight look at one replay file (read once, not parsed): it opens, is not empty and is a format
    we read. Raises ReplayInputError naming feed.files and the file."""
    try:
        loaded = load(path)
    except OSError as exc:
        raise ReplayInputError(f"feed.files: {path}: cannot read it ({exc.strerror or exc})") from None
    if not loaded.data.strip():
        raise ReplayInputError(f"feed.files: {path}: 0 events from 0 lines (empty file"
                               + (f"; {', '.join(loaded.tally.bad)}" if loaded.tally.bad else "") + ")")
    try:
        sniff(loaded)
    except UnknownFormatError as exc:
        raise ReplayInputError(f"feed.files: {exc}") from None


def load_recording(config) -> tuple[np.ndarray, list[str]]:
    """Every configured file parsed and merged into one numbered stream; notes for the operator. Lines a
    parser refused go into the stream as EV_UNPARSABLE stand-ins (validate quarantines them as
    "unparsable"). A file that yields no event is a ReplayInputError saying what was read."""
    table = SymbolTable(venues=list(config.feed.venues), symbols=list(config.feed.symbols))
    results, notes = [], []
    for entry in config.feed.files:
        venue, _, path = str(entry).partition("=")
        check_file(path)
        try:
            result = parse_file(path, table, venue=venue)
        except UnknownInstrumentError as exc:
            raise ReplayInputError(f"feed.files: {exc} (feed.symbols lists {list(config.feed.symbols)})") from None
        if len(result.records) == 0:
            raise ReplayInputError(f"feed.files: {path}: 0 events from {result.lines:,} lines "
                                   f"({_what_was_read(result)})")
        results.append(result)
        markers = refusal_markers(result)
        if len(markers):
            results.append(markers)
        notes.append(f"{path}: {len(result.records):,} records from {result.lines:,} lines, {result.n_bad} bad"
                     + (f" (quarantined as unparsable; {_what_was_read(result)})" if result.n_bad else ""))
    return merge(results), notes


class ReplayFeed(Agent):
    """The feed process's agent for a replay: parses before READY, then publishes what the pacer says is due."""

    role_name = "feed"

    def __init__(self, config, endpoints, slot, placement):
        self.config = config
        self.feed = PythonFeed(config, endpoints, slot, placement)
        self.pacer: Pacer | None = None

    def on_start(self) -> None:
        stream, notes = load_recording(self.config)
        for note in notes:
            print(f"feed: {note}", flush=True)
        self.pacer = Pacer(stream, self.config.feed.replay_speed or None, max_batch=self.config.rings.batch)
        self.feed.load()

    def do_work(self) -> int:
        now = time.time_ns()
        pacer, batch, stats = self.pacer, self.feed.batch, self.feed.stats
        due = pacer.poll(time.monotonic_ns())
        n = len(due)
        if n:
            batch[:n] = due
            # Shift venue time with the receive time: the recorded venue->receive latency is kept.
            shift = now - batch["origin_ts"][:n]
            batch["exch_ts"][:n] = np.where(batch["exch_ts"][:n] > 0, batch["exch_ts"][:n] + shift, 0)
            batch["origin_ts"][:n] = now
            self.feed.publish(n, now)
            stats[feed.ST_EMITTED] += n
            return n
        if pacer.done:
            stats[feed.ST_FINISHED] = 1
            time.sleep(0.001)
            return 0
        # The pacer's own wait: a long gap sleeps (up to 1 ms, so the stop word is read), a short one idles.
        next_due = pacer.next_due_ns()
        wait_ns = 0 if next_due is None else next_due - time.monotonic_ns()
        if wait_ns > 50_000:
            time.sleep(min(wait_ns, 1_000_000) / 1e9)
        return 0


if __name__ == "__main__":  # the feed process of a run whose feed.source names this host (pipeline.registry)
    sys.exit(stage_host.main(ReplayFeed))
