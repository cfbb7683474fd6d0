"""A recording turned into the profile: per process where its time went over the window, its batch sizes,
service times and tick-to-output latency; per ring its depth; the tick-to-order waterfall hop by hop.

Everything is a difference between the first and the last sample (counters and histograms are cumulative), so
the figures are the window's, whatever ran before it. JSON-ready (plain ints, floats, lists, dicts).
"""
from __future__ import annotations

import math
import time

import numpy as np

from pipeline import registry
from pipeline.profiling.sampler import Process, Recording
from shm import control as cb

PHASES = ("reading", "kernel", "publishing", "blocked", "idle")
PHASE_WORDS = {"reading": cb.S_READ_NS, "kernel": cb.S_KERNEL_NS, "publishing": cb.S_PUBLISH_NS,
               "blocked": cb.S_BLOCKED_NS, "idle": cb.S_IDLE_NS}
# The chain a market event takes to an order, in order (each stage's origin histogram: received -> its output).
CHAIN = registry.STAGE_NAMES
QUANTILES = (0.5, 0.99)

KERNEL, GROUP_MEMBER, MODEL, AGENT = "njit duty cycle", "njit chained cycle", "Python around njit waits", "Python agent"

HOP_DERIVATION = (
    "Each stage counts its outputs in a log-bucketed histogram by their age since the market event that caused "
    "them was received (tick to that stage's output, published). Stage k's cumulative value is a percentile of "
    "its window histogram, interpolated linearly inside its bucket (buckets are up to 19% wide); hop k is stage "
    "k's value minus stage k-1's (the feed's: its own value). The hops add up to execute's value, the tick-to-"
    "order latency. A hop is a difference of percentiles, not a percentile of per-record hop times: stages count "
    "different records (strategy only the intents it emits, execute only the reports of its own orders and "
    "refusals), so a hop can be negative.")


def bucket_lower_ns(b: int) -> float:
    return 0.0 if b == 0 else 2.0 ** (b // 4) * (1.0 + (b % 4) / 4.0)


def quantile_ns(hist, q: float) -> float:
    """The q-quantile of a log-bucketed histogram, linear inside its bucket; nan when empty."""
    hist = np.asarray(hist, np.int64)
    total = int(hist.sum())
    if total == 0:
        return float("nan")
    rank = q * total
    cumulative = np.cumsum(hist)
    b = int(np.searchsorted(cumulative, rank))  # first bucket whose cumulative count reaches the rank
    b = min(b, len(hist) - 1)
    before = int(cumulative[b - 1]) if b > 0 else 0
    inside = (rank - before) / hist[b] if hist[b] else 1.0
    lower, upper = bucket_lower_ns(b), cb.bucket_upper_ns(b)
    return lower + min(max(inside, 0.0), 1.0) * (upper - lower)


def _nan_to_none(x: float):
    return None if x != x else x


def host_kind(process: Process, group: list[str]) -> str:
    if len(group) > 1:
        return GROUP_MEMBER
    declared = registry.BY_NAME[process.name].host
    if declared == registry.AGENT or (process.name == "feed" and process.module
                                      and process.module != registry.BY_NAME["feed"].entry):
        return AGENT
    return MODEL if declared == registry.MODEL else KERNEL


def _pending(slot: np.ndarray, at_ns: int, kind: str) -> tuple[int, int]:
    """(idle, blocked) ns a process has spent since its last accounting at ``at_ns``: a parked stage accounts its
    idle time when it wakes, a blocked one its blocked time when room appears, an agent writes its busy and idle
    time once a millisecond (the time since is taken as idle). Group members idle together (their idle start is
    the group's own): none for them."""
    blocked_since = int(slot[cb.S_BLOCKED_SINCE_NS])
    if blocked_since:
        return 0, max(0, at_ns - blocked_since)
    mark = int(slot[cb.S_PHASE_MARK_NS])
    if kind != GROUP_MEMBER and mark:
        return max(0, at_ns - mark), 0
    return 0, 0


def analyse(rec: Recording, pyspy: dict | None = None) -> dict:
    t0, t1 = int(rec.wall_ns[0]), int(rec.wall_ns[-1])
    wall = t1 - t0
    by_pid: dict[int, list[str]] = {}
    for p in rec.processes:
        by_pid.setdefault(p.pid, []).append(p.name)
    processes = []
    for p in rec.processes:
        first, last = rec.first[p.slot], rec.last[p.slot]
        group = by_pid.get(p.pid, [p.name]) if p.pid else [p.name]
        kind = host_kind(p, group)
        phases = {ph: int(last[w]) - int(first[w]) for ph, w in PHASE_WORDS.items()}
        idle0, blocked0 = _pending(first, t0, kind)
        idle1, blocked1 = _pending(last, t1, kind)
        phases["idle"] += idle1 - idle0
        phases["blocked"] += blocked1 - blocked0
        accounted = sum(phases.values())
        served = int(last[cb.S_BATCHES]) - int(first[cb.S_BATCHES])
        n_in = int(last[cb.S_IN] + last[cb.S_IN_B]) - int(first[cb.S_IN] + first[cb.S_IN_B])
        n_out = int(last[cb.S_OUT]) - int(first[cb.S_OUT])
        batches = (last[cb.S_BATCH_HIST:cb.S_BATCH_HIST + cb.BATCH_BUCKETS]
                   - first[cb.S_BATCH_HIST:cb.S_BATCH_HIST + cb.BATCH_BUCKETS]).astype(np.int64)
        service = last[cb.S_SERVICE_HIST:cb.S_SERVICE_HIST + cb.HIST_BUCKETS] - \
            first[cb.S_SERVICE_HIST:cb.S_SERVICE_HIST + cb.HIST_BUCKETS]
        origin = last[cb.S_ORIGIN_HIST:cb.S_ORIGIN_HIST + cb.HIST_BUCKETS] - \
            first[cb.S_ORIGIN_HIST:cb.S_ORIGIN_HIST + cb.HIST_BUCKETS]
        processes.append({
            "name": p.name, "slot": p.slot, "pid": p.pid, "module": p.module, "host": kind,
            "group": group if len(group) > 1 else [], "stage": p.name in registry.STAGE_NAMES,
            "state": cb.STATE_NAMES.get(int(last[cb.S_STATE]), "?"),
            "wall_ns": wall, "phases_ns": phases, "accounted_ns": accounted, "unaccounted_ns": wall - accounted,
            "pending_ns": {"idle": [idle0, idle1], "blocked": [blocked0, blocked1]},
            "cpu_ns": rec.cpu_ns.get(p.pid), "records_in": n_in, "records_out": n_out, "batches": served,
            "mean_batch": n_in / served if served and n_in else (n_out / served if served else None),
            "batch_hist": batches.tolist(),
            "service_ns": {f"p{round(q * 100)}": _nan_to_none(quantile_ns(service, q)) for q in QUANTILES},
            "tick_to_output": {"count": int(origin.sum()), "hist": origin.astype(np.int64).tolist(),
                               **{f"p{round(q * 100)}": _nan_to_none(quantile_ns(origin, q)) for q in QUANTILES}},
        })
    return {
        "run": rec.run, "taken_at": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t0 / 1e9)),
        "seconds": wall / 1e9, "samples": len(rec.wall_ns), "interval_ms": rec.interval_s * 1e3,
        "ended_early": rec.ended_early, "notes": list(rec.notes), "sampler_cpu_ns": rec.sampler_cpu_ns,
        "tick_measured": rec.replay_clock != cb.REPLAY_UNPACED,
        "processes": processes,
        "rings": _rings(rec),
        "waterfall": waterfall(processes),
        "pyspy": pyspy or {},
    }


def _rings(rec: Recording) -> list[dict]:
    """In the chain's order of their producers (the hot path's rings before the journal taps off them)."""
    t = ((rec.wall_ns - rec.wall_ns[0]) / 1e9).round(4).tolist()
    out = []
    order = {name: i for i, name in enumerate(registry.NAMES)}
    placed = sorted(enumerate(zip(rec.ring_names, rec.capacities)),
                    key=lambda x: (x[1][0].endswith((".journal", ".steps")), order.get(x[1][0].split(".")[0], 99),
                                   x[1][0]))
    for j, (name, capacity) in placed:
        depth = rec.depths[:, j] if len(rec.depths) else np.zeros(0, np.int64)
        producer, _, consumer = name.partition(".")
        out.append({"name": name, "producer": producer, "consumer": consumer.split(".")[0], "capacity": capacity,
                    "max_depth": int(depth.max()) if len(depth) else 0,
                    "mean_depth": float(depth.mean()) if len(depth) else 0.0,
                    "t_s": t, "depth": depth.astype(np.int64).tolist()})
    return out


def waterfall(processes: list[dict]) -> dict:
    """Tick to order hop by hop, per quantile (see HOP_DERIVATION)."""
    by_name = {p["name"]: p for p in processes}
    stages = []
    for name in CHAIN:
        p = by_name.get(name)
        if p is None:
            continue
        tick = p["tick_to_output"]
        stages.append({"name": name, "count": tick["count"], "hist": tick["hist"],
                       **{f"p{round(q * 100)}": tick[f"p{round(q * 100)}"] for q in QUANTILES}})
    for q in QUANTILES:
        key = f"p{round(q * 100)}"
        previous = 0.0
        for s in stages:
            value = s[key]
            s[f"hop_{key}"] = None if value is None else value - previous
            if value is not None:
                previous = value
    missing = [s["name"] for s in stages if not s["count"]]
    return {"quantiles": list(QUANTILES), "how": HOP_DERIVATION, "stages": stages,
            "without_outputs": missing, "tick_to_order": {k: stages[-1][k] for k in ("p50", "p99")}
            if stages and stages[-1]["name"] == CHAIN[-1] else {}}


def fmt_ns(ns) -> str:
    if ns is None or (isinstance(ns, float) and math.isnan(ns)):
        return "-"
    a = abs(ns)
    if a < 1_000:
        return f"{ns:.0f} ns"
    if a < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if a < 1_000_000_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"
