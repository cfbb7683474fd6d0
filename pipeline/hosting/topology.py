"""Topology: which core each process runs on and how it idles.

``auto`` fits the machine. With a core for every stage and the watchdog (core 0 left to the OS) each
stage gets its own core and busy-spins. Otherwise processes share cores, alternating so neighbours in the
chain sit on different cores, and idle by spinning briefly then ``sched_yield`` — the best measured
default when processes outnumber cores (DESIGN.md: ~28 us p50 over 8 hops on 2 cores, where pure spinning
costs tens of milliseconds).
"""
from __future__ import annotations

import os

import psutil

from pipeline import graph, registry
from pipeline.config import Config
from pipeline.plan import Placement
from pipeline.registry import NAMES as PROCESSES
from shm import idle as idle_strategies


def available_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


# Why auto threading is dedicated. On this project's 2-core machine shared measured better (bench/pipeline_latency
# --threading dedicated,shared, 3 interleaved rounds, medians: 10k ev/s tick-to-order p50 82 vs 115 us, p99.9
# 1.8 vs 3.7 ms; max rate 934k vs 657k ev/s), but a group's death takes several stages with it and the restart
# and chaos coverage of groups is thinner than of single stages: dedicated stays the default until it is not.
AUTO_THREADING = ("dedicated", "auto: dedicated, the card's shape (shared measured faster on 2 cores by "
                               "bench/pipeline_latency --threading dedicated,shared: set topology.threading = shared)")


def threading(config: Config) -> tuple[str, str]:
    """The threading mode this run uses (dedicated: a process per stage; shared: a process per group) and why."""
    chosen = config.topology.threading
    return AUTO_THREADING if chosen == "auto" else (chosen, "topology.threading")


def groups(config: Config) -> tuple[tuple[str, ...], ...]:
    """The stage groups one process each hosts (shared threading; none when dedicated): each of topology.groups
    cut to the stages this run hosts as njit kernels (not the feed of a replay or ccxt run, whose host is
    Python), split where its chain breaks; a piece of one stage keeps its own process."""
    if threading(config)[0] != "shared":
        return ()
    specs = {s.name: s for s in graph.stages(config)}

    def njit_hosted(name):
        return name in specs and registry.BY_NAME[name].host == registry.KERNEL \
            and (name != "feed" or registry.entry("feed", config.feed.source) == registry.BY_NAME["feed"].entry)

    def feeds(before, name):  # ``before``'s output ring is ``name``'s primary input
        ring_name = f"{before}.{name}"
        return specs[name].in_a == ring_name and ring_name in specs[before].outs

    found = []
    for entry in config.topology.groups:
        piece = []
        for name in entry.split(","):
            if not njit_hosted(name):
                found.append(tuple(piece))
                piece = []
                continue
            if piece and not feeds(piece[-1], name):
                found.append(tuple(piece))
                piece = []
            piece.append(name)
        found.append(tuple(piece))
    return tuple(g for g in found if len(g) >= 2)


def place(config: Config, cores: list[int] | None = None) -> dict[str, Placement]:
    """A placement per process; a group's members share their process's (its first member's) placement."""
    cores = cores if cores is not None else available_cores()
    topo = config.topology
    leader = {name: group[0] for group in groups(config) for name in group}
    hosts = [name for name in PROCESSES if leader.get(name, name) == name]  # one per process
    needed = len(hosts)
    dedicated = topo.mode == "dedicated" or (topo.mode == "auto" and len(cores) >= needed + 1)
    if topo.cores:
        # no core of its own for the gateway (a fourth extra entry): it shares execute's, whose commands it serves
        chosen = [topo.cores[PROCESSES.index(name if PROCESSES.index(name) < len(topo.cores) else "execute")]
                  for name in hosts]
    elif dedicated:
        usable = cores[1:] if len(cores) > needed else cores
        chosen = [usable[i % len(usable)] for i in range(needed)]
    elif leader and len(cores) >= 2:
        # Shared threading on fewer cores than processes: the first group (the market's: feed to risk) gets a
        # core to itself, the rest share the others (measured on 2 cores: README, Performance).
        first = next(iter(leader.values()))
        rest = cores[1:]
        chosen = [cores[0] if name == first else rest[i % len(rest)] for i, name in enumerate(hosts)]
    else:
        chosen = [cores[i % len(cores)] for i in range(needed)]
    if topo.idle == "auto":
        idle = idle_strategies.BUSY_SPIN if dedicated else idle_strategies.YIELDING
    else:
        idle = idle_strategies.NAMES[topo.idle]
    placements = {name: Placement(chosen[i], idle, dedicated, topo.spin_cycles, topo.yield_cycles,
                                  topo.min_sleep_us, topo.max_sleep_us) for i, name in enumerate(hosts)}
    return {name: placements[leader.get(name, name)] for name in PROCESSES}


def pin_current_process(core: int) -> None:
    """Pin before any thread exists (zmq, onnxruntime) so every thread inherits the affinity."""
    psutil.Process().cpu_affinity([core])


def apply_priority(pid: int, nice: int, realtime_priority: int, dedicated: bool) -> str:
    """Best effort: returns what was applied or why not (unprivileged hosts refuse negative nice / FIFO)."""
    applied = []
    try:
        if nice:
            psutil.Process(pid).nice(nice)
            applied.append(f"nice={nice}")
        if realtime_priority and dedicated:
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(realtime_priority))
            applied.append(f"SCHED_FIFO={realtime_priority}")
    except (PermissionError, psutil.AccessDenied, OSError) as exc:
        applied.append(f"priority not applied ({exc.__class__.__name__}: {exc})")
    return ", ".join(applied)


def die_with_parent(expected_parent: int, death_signal: int | None = None) -> None:
    """Ask the kernel to signal this process when its parent (the supervisor) dies: SIGKILL for a stage, so
    no orphan keeps spinning after a crashed supervisor; the watchdog asks for a signal it catches, so it can
    disarm and clean up after the supervisor (pipeline.safety.watchdog)."""
    import ctypes
    import signal
    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL if death_signal is None else death_signal), 0, 0, 0)
    if os.getppid() != expected_parent:  # the parent died before prctl took effect
        os._exit(1)
