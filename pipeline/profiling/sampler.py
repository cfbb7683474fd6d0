"""Sampling a running pipeline from shared memory, read-only: the control block's stage slots and every ring's
cursors, at a fixed interval, for a while. Nothing is written into the run's memory and nothing waits on it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import psutil

from pipeline import graph, names, registry
from pipeline.config import Config
from shm import control as cb
from shm import ring, segment

# The slot words followed over time (the rest is taken at the first and the last sample).
TIMELINE_WORDS = (cb.S_READ_NS, cb.S_KERNEL_NS, cb.S_PUBLISH_NS, cb.S_BLOCKED_NS, cb.S_IDLE_NS, cb.S_IN, cb.S_IN_B,
                  cb.S_OUT, cb.S_BATCHES, cb.S_STATE)


def ring_dtypes() -> dict[str, np.dtype]:
    """Record type by ring name, for every ring a run may have (the hot path, the journal taps, live venues')."""
    every = graph.rings(Config().with_overrides(journal={"dir": "/"}))
    types = {name: spec.dtype for name, spec in every.items()}
    for venue in range(32):
        for spec in graph.gateway_rings(Config(), venue):
            types[spec.name] = spec.dtype
    return types


def tick_to_order(run: str) -> tuple[np.ndarray, bool]:
    """The execute stage's tick-to-order histogram since the run started, and whether it measures anything (an
    unpaced replay gives its events no wall time); RunNotFound when no such run is there."""
    try:
        block = cb.ControlBlock.attach(names.control(run))
    except segment.SegmentError as exc:
        raise RunNotFound(f"no running pipeline named {run!r}: {exc}") from None
    try:
        hist = block.stages[registry.slot("execute")][cb.S_ORIGIN_HIST:cb.S_ORIGIN_HIST + cb.HIST_BUCKETS].copy()
        return hist, int(block.globals[cb.G_REPLAY_CLOCK]) != cb.REPLAY_UNPACED
    finally:
        block.close()


class RunNotFound(RuntimeError):
    """No control block under that run name (or one of another layout): the message says which."""


@dataclass
class Process:
    """One process of the run (a stage group's process appears once per member slot, with the same pid)."""
    name: str
    slot: int
    pid: int
    module: str  # what it runs (python -m ...), from its command line; "" when it cannot be read


@dataclass
class Recording:
    run: str
    interval_s: float
    wall_ns: np.ndarray                  # (samples,) when each sample was taken
    timeline: np.ndarray                 # (samples, slots, len(TIMELINE_WORDS))
    depths: np.ndarray                   # (samples, rings) records waiting (tail - head)
    ring_names: list[str]
    capacities: list[int]
    first: np.ndarray                    # (slots, STAGE_WORDS) every word, at the first sample
    last: np.ndarray                     # and at the last
    processes: list[Process]
    cpu_ns: dict[int, int]               # CPU time (user + system) per pid over the recording
    sampler_cpu_ns: int = 0              # this process's own CPU time while sampling (the profile's cost)
    ended_early: str = ""                # why sampling stopped before its time, if it did
    replay_clock: int = cb.REPLAY_NONE
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return (int(self.wall_ns[-1]) - int(self.wall_ns[0])) / 1e9 if len(self.wall_ns) > 1 else 0.0


def _module(pid: int) -> str:
    try:
        cmdline = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""
    return cmdline[cmdline.index("-m") + 1] if "-m" in cmdline[:-1] else ""


def _cpu_ns(pids) -> dict[int, int]:
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        out[pid] = int((t.user + t.system) * 1e9)
    return out


class Sampler:
    """The run's control block and ring cursors, mapped; ``close`` unmaps them."""

    def __init__(self, run: str):
        self.run = run
        try:
            self.block = cb.ControlBlock.attach(names.control(run))
        except segment.SegmentError as exc:
            raise RunNotFound(f"no running pipeline named {run!r}: {exc}") from None
        self.rings: list[tuple[str, ring.RingView]] = []
        types = ring_dtypes()
        prefix = names.ring(run, "")
        for entry in segment.list_segments(prefix):
            ring_name = entry[len(prefix):]
            header = segment.header_of(entry)
            if ring_name not in types or header is None:
                continue  # not a ring this code knows (another version's): its depth is not shown
            try:
                view = ring.attach_ring(entry, types[ring_name], int(header[segment.H_CAPACITY]))
            except (segment.SegmentError, ValueError):
                continue
            self.rings.append((ring_name, view))
        self.slots = self.block.words[cb.GLOBAL_WORDS:].reshape(cb.MAX_STAGES, cb.STAGE_WORDS)

    def processes(self) -> list[Process]:
        out = []
        for i, name in enumerate(registry.NAMES):
            slot = self.block.stages[i]
            if not slot[cb.S_PID] and not slot[cb.S_STATE]:
                continue  # not part of this run
            pid = int(slot[cb.S_PID])
            out.append(Process(name, i, pid, _module(pid) if pid else ""))
        return out

    def depths(self) -> np.ndarray:
        return np.array([view.depth() for _, view in self.rings], np.int64)

    def record(self, seconds: float, interval_s: float = 0.01) -> Recording:
        """Sample every ``interval_s`` for ``seconds`` (less if the run stops first: ``ended_early`` says so)."""
        n_slots = len(registry.NAMES)
        words = list(TIMELINE_WORDS)
        processes = self.processes()
        pids = sorted({p.pid for p in processes if p.pid})
        g = self.block.globals
        times, timeline, depths = [], [], []
        ended = ""
        cpu_start = _cpu_ns(pids)
        own_start = time.process_time_ns()
        first = last = None
        start = time.monotonic()
        tick = 0
        while True:
            times.append(time.time_ns())
            last = self.slots[:n_slots].copy()
            first = last if first is None else first
            timeline.append(last[:, words])
            depths.append(self.depths())
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                break
            if int(g[cb.G_RUN_STATE]) >= cb.RUN_STOPPING:
                ended = f"the run stopped after {elapsed:.2f} s of the {seconds:g} s asked"
                break
            tick += 1
            time.sleep(max(0.0, min(start + tick * interval_s, start + seconds) - time.monotonic()))
        own = time.process_time_ns() - own_start
        cpu_end = _cpu_ns(pids)
        return Recording(self.run, interval_s, np.array(times, np.int64), np.array(timeline), np.array(depths),
                         [name for name, _ in self.rings], [len(view.records) for _, view in self.rings], first,
                         last, processes, {pid: cpu_end[pid] - cpu_start[pid] for pid in cpu_end if pid in cpu_start},
                         own, ended, int(g[cb.G_REPLAY_CLOCK]))

    def close(self) -> None:
        self.slots = None
        for _, view in self.rings:
            view.close()
        self.rings = []
        self.block.close()
