"""The feed stage's host for a replay: recorded files -> market events on the feed ring, paced.

Parsing happens before the stage reports ready (a full capture takes ~1 s). Each record's ``origin_ts``
is restamped with this run's receive time when it is published, so latency is measured from when the
pipeline got it; ``exch_ts`` moves by the same amount, keeping the recorded venue-to-receive latency. When the recording is exhausted the stage says so
(``finished``) and keeps its heartbeat: the supervisor stops the run once everything has drained.
"""
from __future__ import annotations

import time

import numpy as np

from pipeline import duty_cycle
from pipeline.stage_process import start_python_feed
from shm import control as cb
from shm import idle as idle_strategies
from stages import feed
from stages.sources import Pacer, SymbolTable, merge, parse_file


def load_recording(config) -> tuple[np.ndarray, list[str]]:
    """Every configured file parsed and merged into one numbered stream; notes for the operator."""
    table = SymbolTable(venues=list(config.feed.venues), symbols=list(config.feed.symbols))
    results, notes = [], []
    for entry in config.feed.files:
        venue, _, path = str(entry).partition("=")
        result = parse_file(path, table, venue=venue)
        results.append(result)
        notes.append(f"{path}: {len(result.records):,} records from {result.lines:,} lines, {result.n_bad} bad")
    return merge(results), notes


def run(spec, config, endpoints, block, slot, placement) -> None:
    stream, notes = load_recording(config)
    for note in notes:
        print(f"feed: {note}", flush=True)
    speed = config.feed.replay_speed or None
    pacer = Pacer(stream, speed, max_batch=config.rings.batch)
    host = start_python_feed(config, endpoints, block, slot, placement)
    if host is None:
        return
    stats, batch, idle_params, idle_state, timespec = host
    while not slot[cb.S_STOP]:
        now = time.time_ns()
        slot[cb.S_HEARTBEAT_NS] = now
        due = pacer.poll(time.monotonic_ns())
        n = len(due)
        if n:
            idle_strategies.idle(idle_params, idle_state, n)
            batch[:n] = due
            # Shift venue time with the receive time: the recorded venue->receive latency is kept.
            shift = now - batch["origin_ts"][:n]
            batch["exch_ts"][:n] = np.where(batch["exch_ts"][:n] > 0, batch["exch_ts"][:n] + shift, 0)
            batch["origin_ts"][:n] = now
            if not duty_cycle.publish(endpoints.outs, endpoints.out_sems, batch, n, slot, idle_params, timespec):
                return
            if endpoints.has_tap:
                duty_cycle.tap_records(endpoints.tap, batch, n, slot)
            duty_cycle.account(slot, 0, n, batch, now, timespec)
            stats[feed.ST_EMITTED] += n
            continue
        if pacer.done:
            stats[feed.ST_FINISHED] = 1
            time.sleep(0.001)
            continue
        next_due = pacer.next_due_ns()
        wait_ns = 0 if next_due is None else next_due - time.monotonic_ns()
        if wait_ns > 50_000:
            time.sleep(min(wait_ns, 1_000_000) / 1e9)
        else:
            idle_strategies.idle(idle_params, idle_state, 0)
