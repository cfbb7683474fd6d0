"""What every process the launcher starts does first: read its launch spec, tie its life to the
supervisor, ignore Ctrl-C (the supervisor owns it), pin itself, attach the control block, claim its slot."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np

from pipeline import names
from pipeline.config import Config, from_dict
from pipeline.topology import PROCESSES, Placement, die_with_parent, pin_current_process
from shm import control as cb


@dataclass
class Child:
    name: str
    config: Config
    placement: Placement
    placements: dict[str, Placement]
    block: cb.ControlBlock
    slot: np.ndarray


def start(name: str | None = None) -> Child:
    """``name`` None: the spec says which stage this process is."""
    launch = json.load(sys.stdin)
    die_with_parent(launch["supervisor_pid"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    name = name or launch["stage"]
    placements = {n: Placement(**p) for n, p in launch["placements"].items()}
    placement = placements[name]
    pin_current_process(placement.core)  # before any thread exists, so all inherit it
    config = from_dict(launch["config"])
    block = cb.ControlBlock.attach(names.control(config.run.name))
    slot = block.stages[PROCESSES.index(name)]
    slot[cb.S_PID] = os.getpid()
    slot[cb.S_CORE] = placement.core
    slot[cb.S_HEARTBEAT_NS] = time.time_ns()
    return Child(name, config, placement, placements, block, slot)
