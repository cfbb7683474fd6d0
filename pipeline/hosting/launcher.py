"""Spawn a stage or the watchdog as its own process, pin it, set its priority."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import psutil

from pipeline import registry
from pipeline.hosting.topology import apply_priority
from pipeline.plan import RunPlan


def spawn(process: str, plan: RunPlan, group: bool = False, standby: dict | None = None) -> subprocess.Popen:
    """Start ``process`` of the run ``plan`` describes; the plan goes on its stdin (never argv: it holds the
    config, and the config may hold a DSN's password). ``group``: ``process`` leads a stage group (shared
    threading) and its process hosts them all. ``standby``: a standby inference process for this model request
    (pipeline.hosting.standby), which takes the slot over only when handed it."""
    config, placements = plan.config, plan.placements
    module = registry.GROUP_ENTRY if group else registry.entry(process, config.feed.source)
    launch = {"stage": process, "plan": plan, "supervisor_pid": os.getpid(), "standby": standby}
    child = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE)
    if standby is not None:  # it must not take CPU from the process serving on the same core
        from pipeline.hosting.standby import start_idle
        start_idle(child.pid)
    # The child pins itself first thing too; pinning here covers the interpreter's start-up.
    try:
        psutil.Process(child.pid).cpu_affinity([placements[process].core])
    except psutil.Error:
        pass
    child.stdin.write(pickle.dumps(launch))
    child.stdin.close()
    topo = config.topology
    if (topo.nice or topo.realtime_priority) and standby is None:  # a standby applies it when it serves
        note = apply_priority(child.pid, topo.nice, topo.realtime_priority, placements[process].dedicated)
        print(f"bot4: {process}: {note}", file=sys.stderr)
    return child
