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

from pipeline.config import Config
from pipeline.plan import Placement
from pipeline.registry import NAMES as PROCESSES
from shm import idle as idle_strategies


def available_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def place(config: Config, cores: list[int] | None = None) -> dict[str, Placement]:
    cores = cores if cores is not None else available_cores()
    topo = config.topology
    needed = len(PROCESSES)
    dedicated = topo.mode == "dedicated" or (topo.mode == "auto" and len(cores) >= needed + 1)
    if topo.cores:
        chosen = list(topo.cores)
    elif dedicated:
        usable = cores[1:] if len(cores) > needed else cores
        chosen = [usable[i % len(usable)] for i in range(needed)]
    else:
        chosen = [cores[i % len(cores)] for i in range(needed)]
    if topo.idle == "auto":
        idle = idle_strategies.BUSY_SPIN if dedicated else idle_strategies.YIELDING
    else:
        idle = idle_strategies.NAMES[topo.idle]
    return {name: Placement(chosen[i], idle, dedicated, topo.spin_cycles, topo.yield_cycles, topo.min_sleep_us,
                            topo.max_sleep_us) for i, name in enumerate(PROCESSES)}


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
