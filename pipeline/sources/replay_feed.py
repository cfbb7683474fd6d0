"""The feed stage's host for a replay: recorded files -> market events on the feed ring, paced.

Parsing happens before the stage reports ready (a full capture takes ~1 s). Records are published as
recorded: ``origin_ts`` stays the recorded receive time (and ``exch_ts`` the venue's), so every event-time
feature, bar, cooldown and rate bucket sees the recorded market at any speed, as a fused run or a backtest
of the same file does. The pacer paces on those times (speed 1 = as recorded, N = N times faster, 0 = as
fast as the pipeline takes them). Latency stays measured against the wall clock through the replay clock
this host publishes in the control block (``shm.control.origin_wall_ns``): a record's age is counted from
the wall time its pacer scheduled it for; an unpaced replay has no such time, so its ages are not measured
(service times are). When the recording is exhausted the stage says so (``finished``) and keeps its
heartbeat: the supervisor stops the run once everything has drained.
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
from shm import control as cb
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
        speed = self.config.feed.replay_speed
        self.pacer = Pacer(stream, speed or None, max_batch=self.config.rings.batch)
        ctl = self.feed.ctl  # the replay clock (shm.control): this host is its only writer
        ctl[cb.G_REPLAY_SPEED_PPM] = max(1, round(speed * 1e6)) if speed else 0
        ctl[cb.G_REPLAY_EVENT0_NS] = int(stream["origin_ts"][0])
        ctl[cb.G_REPLAY_WALL0_NS] = 0
        ctl[cb.G_REPLAY_CLOCK] = cb.REPLAY_PACED if speed else cb.REPLAY_UNPACED
        self.feed.load()

    def do_work(self) -> int:
        pacer, batch, stats = self.pacer, self.feed.batch, self.feed.stats
        if pacer.start_ns is None:
            # The pacer starts on this poll: its monotonic start and this wall time are the same instant, so
            # the wall time a record is due at is wall0 + (origin - first origin) / speed.
            self.feed.ctl[cb.G_REPLAY_WALL0_NS] = time.time_ns()
        now = time.time_ns()
        due = pacer.poll(time.monotonic_ns())
        n = len(due)
        if n:
            batch[:n] = due  # as recorded: the replay changes no timestamp
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
