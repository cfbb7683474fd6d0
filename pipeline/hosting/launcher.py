"""Spawn a stage or the watchdog as its own process, pin it, set its priority."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

import psutil

from pipeline import registry
from pipeline.config import Config, to_dict
from pipeline.hosting.topology import Placement, apply_priority


def spawn(process: str, config: Config, placements: dict[str, Placement], group: bool = False) -> subprocess.Popen:
    """``group``: ``process`` leads a stage group (shared threading) and its process hosts them all."""
    module = registry.GROUP_ENTRY if group else registry.entry(process, config.feed.source)
    launch = {"stage": process, "config": to_dict(config), "supervisor_pid": os.getpid(),
              "placements": {name: asdict(p) for name, p in placements.items()}}
    child = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE)
    # The child pins itself first thing too; pinning here covers the interpreter's start-up.
    try:
        psutil.Process(child.pid).cpu_affinity([placements[process].core])
    except psutil.Error:
        pass
    child.stdin.write(json.dumps(launch).encode())
    child.stdin.close()
    topo = config.topology
    if topo.nice or topo.realtime_priority:
        note = apply_priority(child.pid, topo.nice, topo.realtime_priority, placements[process].dedicated)
        print(f"bot4: {process}: {note}", file=sys.stderr)
    return child
