"""What every process the launcher starts does first: read its launch spec, tie its life to the
supervisor, ignore Ctrl-C and SIGTERM (the supervisor owns them), pin itself, attach the control block, claim
its slot."""
from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np

from pipeline import kill_reasons, names
from pipeline.config import Config
from pipeline.hosting.topology import die_with_parent, pin_current_process
from pipeline.plan import Placement, RunPlan
from pipeline.registry import NAMES as PROCESSES
from shm import control as cb
from shm import segment

SUPERVISOR_DIED_SIGNAL = signal.SIGUSR1
# Failures that are about the input or the machine, not a bug: one line says it all, no traceback.
EXPECTED_FAILURES = (OSError, ValueError, LookupError, segment.SegmentError)
supervisor_died = False  # set from the signal handler; the watchdog's loop reads it every poll


def _on_supervisor_died(signum, frame) -> None:
    global supervisor_died
    supervisor_died = True


@dataclass
class Child:
    name: str
    plan: RunPlan
    config: Config
    placement: Placement
    placements: dict[str, Placement]
    block: cb.ControlBlock
    slot: np.ndarray
    standby: dict | None = None  # a standby inference process's request (pipeline.hosting.standby), else None


def start(name: str | None = None) -> Child:
    """``name`` None: the spec says which stage this process is."""
    launch = pickle.load(sys.stdin.buffer)  # from our own supervisor, over a pipe only it holds
    name = name or launch["stage"]
    # The watchdog outlives the supervisor by one catchable signal: it disarms and cleans up (pipeline.safety.watchdog).
    if name == "watchdog":
        signal.signal(SUPERVISOR_DIED_SIGNAL, _on_supervisor_died)
    die_with_parent(launch["supervisor_pid"], SUPERVISOR_DIED_SIGNAL if name == "watchdog" else signal.SIGKILL)
    # Ctrl-C and a SIGTERM sent to the whole process group or cgroup are the supervisor's to act on: it stops
    # everyone in order (drain, flatten), and a process killed by them first would read as a dead stage.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    plan: RunPlan = launch["plan"]
    placements = plan.placements
    placement = placements[name]
    pin_current_process(placement.core)  # before any thread exists, so all inherit it
    config = plan.config  # checked once by the supervisor: a child never parses or re-checks it
    block = cb.ControlBlock.attach(names.control(config.run.name))
    slot = block.stages[PROCESSES.index(name)]
    standby = launch.get("standby")
    if standby is None:  # a standby claims the slot only when the process serving hands it over
        slot[cb.S_PID_START_NS] = segment.process_start_ns(os.getpid())
        slot[cb.S_PID] = os.getpid()
        slot[cb.S_CORE] = placement.core
        slot[cb.S_HEARTBEAT_NS] = time.time_ns()
    return Child(name, plan, config, placement, placements, block, slot, standby)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return text if isinstance(exc, EXPECTED_FAILURES) else f"{type(exc).__name__}: {text}"


def report_failure(child: Child, exc: BaseException) -> str:
    """Mark the slot FAILED and leave one line saying why: on stderr, and in the control block, as the kill
    text of the trip this is (trading on), or of the start-up failure this is (the first process to claim it).
    Returns the line."""
    g, index = child.block.globals, PROCESSES.index(child.name)
    text = f"{child.name} failed: {one_line(exc)}"
    print(f"bot4: {text}", file=sys.stderr, flush=True)
    child.slot[cb.S_ERRORS] += 1
    first = cb.trip(g, kill_reasons.KILL_STAGE_FAILED, index, text, time.time_ns(), time.monotonic_ns())
    if not first and int(g[cb.G_RUN_STATE]) == cb.RUN_STARTING and cb.claim_first(g, cb.G_START_FAILURES):
        cb.set_kill_text(g, text)  # trading is latched off (not armed) during start-up: the text is free
        g[cb.G_START_FAILED] = index + 1
    child.slot[cb.S_STATE] = cb.FAILED  # last: the supervisor reads the text once it sees FAILED
    return text
