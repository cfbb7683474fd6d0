"""The journal process: drains the stages' side taps into journal segment files (event sourcing).

Taps never block the hot path; this process keeps up or the taps count what it missed (the status
summary says so). In record mode the journal is the product: it marks its taps lossless, so a full tap
back-pressures the feed and validate instead of dropping. It drains every tap in batches, writes one
``append`` per batch, and fsyncs by policy (``tick`` while idle so a quiet stream is synced too). On stop
it drains what is left, then closes. If it dies, the supervisor recounts what its files hold
(``recount_from_files``): the summary's lost figure is tapped minus that.
"""
from __future__ import annotations

import sys

import numpy as np

from pipeline import graph, names, registry
from pipeline.hosting.agent import Agent, AgentRunner, AgentTerminated, sleeping
from pipeline.hosting.child import start
from pipeline.store.journal import FsyncPolicy, JournalWriter
from shm import control as cb
from shm import ring

BATCH = 4096
ST_FSYNCS = registry.BY_NAME["journal"].counter("fsyncs")
# Custom words after the labelled ones: per stream, the first segment index this run wrote (a restarted
# journal keeps its predecessor's), so what the files hold can be counted after a crash.
ST_FIRST_SEGMENT = ST_FSYNCS + 1


class Journal(Agent):
    """The journal process's agent: each step drains every tap into its stream's writer."""

    role_name = "journal"

    def __init__(self, config, block, slot):
        self.config = config
        self.block = block
        self.slot = slot
        self.stats = slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
        self.taps, self.writers, self.buffers, self.counters = [], [], [], []
        self.draining = False

    def on_start(self) -> None:
        config, stats = self.config, self.stats
        run = config.run.name
        specs = graph.rings(config)
        policy = FsyncPolicy[config.journal.fsync.upper()]
        run_id = int(self.block.globals[cb.G_RUN_ID])  # every segment names its run and the run's venue/symbol names
        universe = {"venues": list(config.feed.venues), "symbols": list(config.feed.symbols)}
        for index, (tap_name, stream) in enumerate(graph.TAP_STREAMS.items()):
            if tap_name not in specs:
                continue  # its stage is not part of this run (record mode)
            spec = specs[tap_name]
            view = ring.attach_ring(names.ring(run, tap_name), spec.dtype, spec.capacity)
            self.taps.append(view)
            # Record mode: the journal is the product, so its taps back-pressure the feed and validate. A run that
            # trades keeps them lossy: the hot path never waits on the journal (a full tap counts what it drops).
            if config.run.mode == "record":
                view.consumer[ring.C_LOSSLESS] = 1  # before READY: no stage runs before every process is ready
            writer = JournalWriter(config.journal.dir, stream, spec.dtype, source=f"bot4 run {run}",
                                   fsync_policy=policy, rotate_bytes=int(config.journal.rotate_mb * 2**20),
                                   fsync_interval_ms=config.journal.fsync_interval_ms,
                                   run_id=run_id, universe=universe)
            self.writers.append(writer)
            if stats[ST_FIRST_SEGMENT + index] == 0:
                stats[ST_FIRST_SEGMENT + index] = writer.segment_index
            self.buffers.append(np.zeros(BATCH, spec.dtype))
            self.counters.append(index)

    def do_work(self) -> int:
        stats, slot = self.stats, self.slot
        work = 0
        for view, writer, buffer, index in zip(self.taps, self.writers, self.buffers, self.counters):
            n = ring.read(view.producer, view.consumer, view.records, buffer, BATCH)
            if n:
                writer.append(buffer[:n])
                stats[index] += n
                slot[cb.S_IN] += n
                work += n
        if work == 0:
            if self.draining:  # stages stop before us, so a step begun after the stop that finds nothing: drained
                for writer in self.writers:
                    writer.flush()
                raise AgentTerminated
            for writer in self.writers:
                writer.tick()
        stats[ST_FSYNCS] = sum(w.fsync_count for w in self.writers)
        return work

    def on_stop(self, level: int) -> None:
        self.draining = True  # also when abandoned: what the taps hold is all there is, and writing it never waits

    def on_close(self) -> None:
        for writer in self.writers:
            writer.close()
        for view in self.taps:
            view.close()
        self.taps = []


def main() -> int:
    child = start("journal")
    try:
        # An idle journal sleeps 1 ms a step: taps have room for far more, and an idle loop must not spin.
        return AgentRunner(Journal(child.config, child.block, child.slot), child, sleeping(1000)).run()
    finally:
        child.block.close()


def recount_from_files(config, slot) -> None:
    """After the journal died: set its per-stream counters to the whole records its files hold from this
    run (a crash between a write and the counter update, or a torn last write, would make them lie).
    Only for a dead journal's slot: nobody else writes it then."""
    from pipeline.store.journal import read_segment_info, segment_paths
    stats = slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
    for index, stream in enumerate(graph.TAP_STREAMS.values()):
        first = int(stats[ST_FIRST_SEGMENT + index])
        if first == 0:
            continue  # never opened: its counter is 0 too
        stats[index] = sum(read_segment_info(path, i).record_count
                           for i, path in segment_paths(config.journal.dir, stream) if i >= first)
    slot[cb.S_IN] = sum(int(stats[i]) for i in range(len(graph.TAP_STREAMS)))


if __name__ == "__main__":
    sys.exit(main())
