"""Python-side hosts as agents, in the shape of Agrona's Agent: a role name, ``on_start``, ``do_work`` returning
a work count, ``on_close``; one ``AgentRunner`` runs each of them (the replay and ccxt feed hosts, the journal,
the recorder, the watchdog). The njit duty cycle (pipeline.hosting.duty_cycle) stays the kernels' host.

The runner owns what every host shares: READY only once ``on_start`` returned, RUNNING once the run runs, the
heartbeat, the stop word, the idle strategy fed with each work count, and the failure report
(pipeline.hosting.child.report_failure). Invoker mode: a test constructs an agent and calls on_start, do_work,
on_stop and on_close itself, in its own process, with no runner.

Stopping: the supervisor's stop word (S_STOP: 1 finish what you hold, 2 abandon it) reaches the agent through
``on_stop(level)`` before its next ``do_work``; the agent ends by raising AgentTerminated, at once (a source)
or once drained (a sink). The run state stops only an agent still waiting for RUNNING, as before.
"""
from __future__ import annotations

import time
import traceback
from typing import Protocol

import numpy as np

from pipeline.hosting import duty_cycle
from pipeline.hosting.child import EXPECTED_FAILURES, Child, report_failure
from shm import control as cb
from shm import idle as idle_strategies
from shm.syscalls import new_timespec


class AgentTerminated(Exception):
    """An agent's clean end (Agrona's AgentTerminationException): raised from on_start when told to stop during
    start-up, from on_stop or do_work once it has finished."""


class Agent:
    """A Python host's work, run by AgentRunner (or by a test, in invoker mode)."""

    role_name = ""                 # its process name (pipeline.registry)
    works_before_running = False   # True: do_work from READY on (the watchdog guards the start-up too)
    quiet_failures: tuple = ()     # failures whose one line says it all, besides child.EXPECTED_FAILURES

    def on_start(self) -> None:
        """What must be done before the process says READY: files parsed, connections made, code loaded."""

    def do_work(self) -> int:
        """One bounded step; returns how much it did (0: nothing, the idle strategy may wait)."""
        return 0

    def on_stop(self, level: int) -> None:
        """The stop word rose to ``level`` (1: finish what you hold, 2: abandon it). A source ends at once."""
        raise AgentTerminated

    def on_close(self) -> None:
        """Called once, last, whatever happened before (also after a failed on_start or do_work)."""

    def on_failure(self, exc: Exception) -> int | None:
        """The exit code of a failure this agent reports itself, or None: the runner's one-line report."""
        return None


class Idle:
    """An shm.idle strategy for a Python loop (the njit function the duty cycle calls). A Python host has no
    semaphore a producer posts, so where a blocking strategy would park, it sleeps its longest sleep."""

    def __init__(self, params: np.ndarray):
        self.params = params
        self.state = idle_strategies.make_state()

    def idle(self, work_count: int) -> None:
        if idle_strategies.idle(self.params, self.state, work_count) == idle_strategies.PARK:
            time.sleep(int(self.params[idle_strategies.I_MAX_SLEEP_US]) / 1e6)


def sleeping(us: int) -> Idle:
    """Sleep ``us`` after every cycle without work (no spin, no yield): for hosts whose inputs are not urgent."""
    return Idle(idle_strategies.make_params(idle_strategies.SLEEPING, 0, 0, us, us))


def no_wait() -> Idle:
    """Never wait: for an agent whose do_work waits itself (the recorder's event loop)."""
    return Idle(idle_strategies.make_params(idle_strategies.BUSY_SPIN))


def wait_until_running(block: cb.ControlBlock, *slots: np.ndarray) -> bool:
    """Keep the slots' heartbeats until the run runs (True) or stops, or one of them is told to stop, first
    (False). Several slots: the members of a stage group, hosted by one process."""
    while True:
        now = time.time_ns()
        for slot in slots:
            slot[cb.S_HEARTBEAT_NS] = now
        run_state = int(block.globals[cb.G_RUN_STATE])
        if run_state == cb.RUN_RUNNING:
            return True
        if run_state >= cb.RUN_STOPPING or any(slot[cb.S_STOP] for slot in slots):
            return False
        time.sleep(0.001)


class BusyIdle:
    """A Python host's time in its slot: busy (in ``do_work``, less what it spent blocked on a full output, which
    ``S_BLOCKED_NS`` has) as its kernel time, the rest (the idle strategy) as idle. Two clock reads a loop; the
    slot is written at most once a millisecond (a numpy store costs ~100 ns). An agent that waits inside
    ``do_work`` (the recorder runs its event loop there) counts that wait as busy."""

    FLUSH_NS = 1_000_000

    def __init__(self, slot: np.ndarray):
        self.slot = slot
        self.busy = self.idle = 0
        self.last = 0  # the end of the last do_work
        self.flushed = 0
        self.blocked = int(slot[cb.S_BLOCKED_NS])

    def worked(self, started: int, done: int) -> None:
        if self.last:
            self.idle += max(0, started - self.last)
        self.busy += max(0, done - started)
        self.last = done
        if done - self.flushed >= self.FLUSH_NS:
            self.flush()

    def flush(self) -> None:
        """Into the slot; its mark says up to when (a reader counts the time since as not yet accounted)."""
        blocked = int(self.slot[cb.S_BLOCKED_NS])
        self.slot[cb.S_KERNEL_NS] += self.busy - (blocked - self.blocked)
        self.slot[cb.S_IDLE_NS] += self.idle
        self.slot[cb.S_PHASE_MARK_NS] = self.last
        self.busy = self.idle = 0
        self.blocked, self.flushed = blocked, self.last


class IdleStrategy(Protocol):
    def idle(self, work_count: int) -> None: ...


class AgentRunner:
    """Runs one agent in its process; ``run`` returns the process's exit code and never raises an Exception."""

    def __init__(self, agent: Agent, child: Child, idle: IdleStrategy):
        self.agent = agent
        self.child = child
        self.idle = idle

    def run(self) -> int:
        agent, slot = self.agent, self.child.slot
        closed = False
        try:
            try:
                agent.on_start()
                self.idle.idle(1)  # loads the njit idle before READY (a work count > 0 never waits)
                slot[cb.S_STATE] = cb.READY
                if agent.works_before_running or wait_until_running(self.child.block, slot):
                    self._work()
            except AgentTerminated:
                pass
            closed = True
            agent.on_close()
        except Exception as exc:
            if not closed:
                try:
                    agent.on_close()
                except Exception:  # noqa: BLE001 - the first failure is the one to report
                    pass
            return self._fail(exc)
        slot[cb.S_STATE] = cb.STOPPED  # after on_close: what the agent wrote is complete when the supervisor reads it
        return 0

    def _work(self) -> None:
        agent, slot, g = self.agent, self.child.slot, self.child.block.globals
        running = False
        level = 0
        phases = BusyIdle(slot)
        try:
            while True:
                now = time.time_ns()
                slot[cb.S_HEARTBEAT_NS] = now
                if not running and int(g[cb.G_RUN_STATE]) == cb.RUN_RUNNING:
                    slot[cb.S_STATE] = cb.RUNNING
                    running = True
                stop = int(slot[cb.S_STOP])
                if stop > level:  # read before do_work: a drain that finds nothing started after the stop
                    level = stop
                    agent.on_stop(level)
                work = agent.do_work()
                phases.worked(now, time.time_ns())
                self.idle.idle(work)
        finally:
            phases.flush()

    def _fail(self, exc: Exception) -> int:
        code = self.agent.on_failure(exc)
        if code is not None:
            self.child.slot[cb.S_ERRORS] += 1
            self.child.slot[cb.S_STATE] = cb.FAILED
            return code
        if not isinstance(exc, EXPECTED_FAILURES + self.agent.quiet_failures):
            traceback.print_exc()  # a bug: the whole story, then the one line
        report_failure(self.child, exc)
        return 1


class PythonFeed:
    """What a feed host that publishes from Python (replay, ccxt) works with: a batch of MARKET_EVENT records,
    its outputs and journal tap, its slot's counters."""

    def __init__(self, config, endpoints, slot: np.ndarray, placement):
        from stages import records
        self.endpoints = endpoints
        self.slot = slot
        # The globals the replay clock is in (an invoker without a control block: none, origins are wall time).
        self.ctl = endpoints.ctl if getattr(endpoints, "ctl", None) is not None else np.zeros(cb.GLOBAL_WORDS, np.int64)
        self.stats = slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
        self.batch = np.zeros(config.rings.batch, records.MARKET_EVENT)
        self.idle_params = placement.idle_params()
        self.timespec = new_timespec()

    def load(self) -> None:
        """Load (or compile) the njit calls publish makes, before the host says READY; counts nothing."""
        e, slot = self.endpoints, self.slot
        duty_cycle.publish(e.outs, e.out_sems, self.batch, 0, slot, self.idle_params, self.timespec)
        duty_cycle.account(slot, self.ctl, 0, 0, self.batch, time.time_ns(), self.timespec)
        slot[cb.S_BATCHES] = 0
        slot[cb.S_SERVICE_HIST:cb.S_SERVICE_HIST + cb.HIST_BUCKETS] = 0
        duty_cycle.reset_phases(slot)

    def publish(self, n: int, started_ns: int) -> None:
        """``batch[:n]`` to every output (waiting while one is full, lossless) and the journal tap, counted;
        AgentTerminated if the supervisor abandons the run while an output is full."""
        e, slot = self.endpoints, self.slot
        if not duty_cycle.publish(e.outs, e.out_sems, self.batch, n, slot, self.idle_params, self.timespec):
            raise AgentTerminated
        if e.has_tap:
            duty_cycle.tap_records(e.tap, self.batch, n, slot)
        duty_cycle.account(slot, self.ctl, 0, n, self.batch, started_ns, self.timespec)
