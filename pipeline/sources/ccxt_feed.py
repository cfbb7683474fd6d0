"""The feed stage's host for live data through ccxt: an asyncio thread watches, the main thread publishes.

The source (:mod:`pipeline.sources.ccxt_source`) runs on its own event loop in a thread and hands record arrays
to a bounded queue; the main thread takes them in batches of up to ``rings.batch``, numbers them
(``origin_seq`` dense from 1), publishes them to the feed ring (blocking while it is full: the hot path is
lossless, as in the replay host) and taps them to the journal. When the queue is full the source's loop
waits too (its sockets back up to the venue); each such wait is counted (``queue_full``). The source
starts when the run starts, so nothing piles up while the other stages warm up.

Concurrency: the queue is the only thing both threads touch; the source's stats are read here as a
snapshot for the log and the control block.
"""
from __future__ import annotations

import asyncio
import queue
import sys
import threading
import time

import numpy as np

from pipeline import registry
from pipeline.hosting import stage_host
from pipeline.hosting.agent import Agent, PythonFeed
from pipeline.sources.ccxt_source import CcxtSource, venue_specs
from stages import feed, records

QUEUE_ARRAYS = 4096
# Control-block custom words after the feed's own: ccxt totals over all venues (registry.CCXT_FEED_COUNTERS).
W_RESYNCS = registry.BY_NAME["feed"].counter("ccxt_resyncs")


class SourceThread:
    """A CcxtSource on its own event loop; ``queue`` carries its record arrays out."""

    def __init__(self, config, log):
        self.queue: queue.Queue = queue.Queue(QUEUE_ARRAYS)
        self.queue_full = 0
        self.failure: BaseException | None = None
        self._stopped = threading.Event()
        f = config.feed
        self.source = CcxtSource(venue_specs(f), list(f.symbols), self._put, reconnect_min_ms=f.ccxt_reconnect_min_ms,
                                 reconnect_max_ms=f.ccxt_reconnect_max_ms, trades=f.ccxt_trades, funding=f.ccxt_funding,
                                 log=log, seed=f.seed)
        self._loop = asyncio.new_event_loop()
        self._stop_event: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="ccxt-source", daemon=True)

    def _put(self, rec: np.ndarray) -> None:
        try:
            self.queue.put_nowait(rec)
            return
        except queue.Full:
            self.queue_full += 1
        while not self._stopped.is_set():  # back-pressure: the loop (and its sockets) wait for the ring
            try:
                self.queue.put(rec, timeout=0.05)
                return
            except queue.Full:
                continue

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._stop_event = asyncio.Event()
        try:
            self._loop.run_until_complete(self.source.run(self._stop_event))
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread, which fails the stage
            self.failure = exc
        finally:
            self._loop.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            while self._stop_event is None and self._thread.is_alive():
                time.sleep(0.001)
            if self._stop_event is not None:
                try:
                    self._loop.call_soon_threadsafe(self._stop_event.set)
                except RuntimeError:  # the loop already ended
                    pass
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def take(q: queue.Queue, batch: np.ndarray, pending: list, wait_s: float) -> int:
    """Up to len(batch) records from the queue into batch (waiting at most ``wait_s`` for the first);
    an array that does not fit whole waits in ``pending`` for the next call."""
    n, cap = 0, len(batch)
    while n < cap:
        if pending:
            rec = pending.pop()
        else:
            try:
                rec = q.get(timeout=wait_s) if n == 0 and wait_s > 0 else q.get_nowait()
            except queue.Empty:
                break
        k = min(len(rec), cap - n)
        batch[n:n + k] = rec[:k]
        n += k
        if k < len(rec):
            pending.append(rec[k:])
            break
    return n


class CcxtFeed(Agent):
    """The feed process's agent for ccxt: the source thread starts with the run (the first do_work), and each
    step publishes what it queued, numbered."""

    role_name = "feed"

    def __init__(self, config, endpoints, slot, placement):
        self.feed = PythonFeed(config, endpoints, slot, placement)
        self.source = SourceThread(config, self._log)
        self.started = False
        self.seq = 0
        self.pending: list = []
        self.last_note = 0.0

    @staticmethod
    def _log(text: str) -> None:
        print(f"feed: {text}", flush=True)

    def on_start(self) -> None:
        self.feed.load()

    def do_work(self) -> int:
        stats, batch = self.feed.stats, self.feed.batch
        if not self.started:
            self.source.start()
            self.started, self.last_note = True, time.monotonic()
        n = take(self.source.queue, batch, self.pending, 0.001)
        if n:
            started = time.time_ns()
            batch["origin_seq"][:n] = np.arange(self.seq + 1, self.seq + n + 1)
            self.seq += n
            self.feed.publish(n, started)
            kinds = batch["kind"][:n]
            stats[feed.ST_EMITTED] += n
            stats[feed.ST_BOOKS] += int(np.count_nonzero(kinds == records.EV_BOOK))
            stats[feed.ST_TRADES] += int(np.count_nonzero(kinds == records.EV_TRADE))
        elif not self.source.alive:
            raise RuntimeError(f"the ccxt source stopped: {self.source.failure!r}")
        if time.monotonic() - self.last_note > 1.0:
            self.last_note = time.monotonic()
            _store(stats, self.source)
        return n

    def on_close(self) -> None:
        if not self.started:
            return  # the run stopped before it started: nothing was received
        source, stats = self.source, self.feed.stats
        source.stop()
        _store(stats, source)
        # received after the stop was asked for: not published (the run is over), but said
        unpublished = sum(len(a) for a in self.pending) + sum(len(a) for a in _drain(source.queue))
        for venue, vs in source.source.stats.items():
            self._log(f"ccxt {vs.line(venue)}")
        self._log(f"ccxt: queue full {source.queue_full} times; {unpublished} records received after the stop, "
                  "not published")


def _drain(q: queue.Queue) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def _store(stats, source: SourceThread) -> None:
    vs = list(source.source.stats.values())
    stats[W_RESYNCS] = sum(v.resyncs for v in vs)
    stats[W_RESYNCS + 1] = sum(v.reconnects for v in vs)
    stats[W_RESYNCS + 2] = sum(v.errors for v in vs)
    stats[W_RESYNCS + 3] = source.queue_full


if __name__ == "__main__":  # the feed process of a run whose feed.source names this host (pipeline.registry)
    sys.exit(stage_host.main(CcxtFeed))
