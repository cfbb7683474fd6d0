"""The journal process: drains the stages' side taps into journal segment files (event sourcing).

Taps never block the hot path; this process keeps up or the taps count what it missed (the status
summary says so). It drains every tap in batches, writes one ``append`` per batch, and fsyncs by policy
(``tick`` while idle so a quiet stream is synced too). On stop it drains what is left, then closes.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from pipeline import graph, names
from pipeline.journal import FsyncPolicy, JournalWriter
from pipeline.child import start
from shm import control as cb
from shm import ring

BATCH = 4096
ST_FSYNCS = len(graph.TAP_STREAMS)


def main() -> int:
    child = start("journal")
    config, block, slot = child.config, child.block, child.slot
    run = config.run.name
    stats = slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
    specs = graph.rings(config)
    policy = FsyncPolicy[config.journal.fsync.upper()]
    run_id = int(block.globals[cb.G_RUN_ID])  # every segment names its run and the run's venue/symbol names
    universe = {"venues": list(config.feed.venues), "symbols": list(config.feed.symbols)}
    taps, writers, buffers, counters = [], [], [], []
    try:
        for index, (tap_name, stream) in enumerate(graph.TAP_STREAMS.items()):
            if tap_name not in specs:
                continue  # its stage is not part of this run (record mode)
            spec = specs[tap_name]
            view = ring.attach_ring(names.ring(run, tap_name), spec.dtype, spec.capacity)
            taps.append(view)
            writers.append(JournalWriter(config.journal.dir, stream, spec.dtype, source=f"bot4 run {run}",
                                         fsync_policy=policy, rotate_bytes=int(config.journal.rotate_mb * 2**20),
                                         fsync_interval_ms=config.journal.fsync_interval_ms,
                                         run_id=run_id, universe=universe))
            buffers.append(np.zeros(BATCH, spec.dtype))
            counters.append(index)
        slot[cb.S_STATE] = cb.READY
        while True:
            slot[cb.S_HEARTBEAT_NS] = time.time_ns()
            if int(block.globals[cb.G_RUN_STATE]) == cb.RUN_RUNNING:
                slot[cb.S_STATE] = cb.RUNNING
            work = 0
            for view, writer, buffer, index in zip(taps, writers, buffers, counters):
                n = ring.read(view.producer, view.consumer, view.records, buffer, BATCH)
                if n:
                    writer.append(buffer[:n])
                    stats[index] += n
                    slot[cb.S_IN] += n
                    work += n
            if work == 0:
                if slot[cb.S_STOP]:
                    break  # stages stop before us: the taps are drained
                for writer in writers:
                    writer.tick()
                time.sleep(0.001)
            stats[ST_FSYNCS] = sum(w.fsync_count for w in writers)
        for writer in writers:
            writer.flush()
        slot[cb.S_STATE] = cb.STOPPED
        return 0
    finally:
        for writer in writers:
            writer.close()
        for view in taps:
            view.close()
        del slot, stats
        block.close()


if __name__ == "__main__":
    sys.exit(main())
