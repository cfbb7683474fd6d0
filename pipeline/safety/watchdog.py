"""The watchdog process: the only component that trips and re-arms trading.

Every ``period_ms`` (1 ms by default) it reads the hardware kill switch (``pipeline.safety.switch``), evaluates
the panic conditions (``pipeline.safety.panic``), and on the first that holds while trading is enabled drops
``trading_enabled`` with the reason, stage, text and time (wall and monotonic), then alerts. Trips are
latched: nothing here re-enables trading except an explicit arm request (``bot4 killswitch arm``) that
finds the switch armed and no condition holding. What blocks arming is published as text in the control
block every poll. Started like a stage (JSON launch spec on stdin); stops when its slot says so.
"""
from __future__ import annotations

import datetime
import logging
import sys
import time

import numpy as np
import zmq

from pipeline import kill_reasons, names, registry
from pipeline.config import Config
from pipeline.hosting import child as child_process
from pipeline.hosting.agent import Agent, AgentRunner, AgentTerminated
from pipeline.hosting.child import start
from pipeline.registry import NAMES as PROCESSES
from pipeline.safety import postmortem
from pipeline.safety.alerts import Alerter, AlertError
from pipeline.safety.panic import Condition, PanicMonitor, read_clocks
from pipeline.status_view import StatusView
from shm import control as cb
from shm import segment
from shm.segment import pid_alive, process_alive
from stages import validate

_COUNTERS = registry.BY_NAME["watchdog"]
ST_CHECKS, ST_TRIPS, ST_ARMS = _COUNTERS.counter("checks"), _COUNTERS.counter("trips"), _COUNTERS.counter("arms")
ST_ARM_REFUSALS, ST_MAX_POLL_NS = _COUNTERS.counter("arm_refusals"), _COUNTERS.counter("max_poll_ns")
# A tripping process drops the flag first and writes the reason text and trip count after (cb.trip), so the
# alert waits for the count; a tripper that died in between is alerted with what it wrote after this long.
TRIP_LATCH_WAIT_NS = 1_000_000_000


def say(text: str) -> None:
    """A line on stderr that cannot fail: the watchdog outlives the supervisor, and a process manager may have
    closed the supervisor's output pipe by then (supervisord does), which must not cut the clean-up short."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        pass


def switch_condition(reading) -> Condition | None:
    """The kill switch as a panic condition (None when it reads armed or there is no switch)."""
    from pipeline.safety.switch import SwitchState
    if reading is None or reading.state == SwitchState.ARMED:
        return None
    reason = {SwitchState.KILL_PRESSED: kill_reasons.KILL_SWITCH_PRESSED, SwitchState.SILENT: kill_reasons.KILL_SWITCH_SILENT,
              SwitchState.DISCONNECTED: kill_reasons.KILL_SWITCH_LOST}.get(reading.state, kill_reasons.KILL_NOT_ARMED)
    return Condition(reason, -1, f"kill switch {reading.state.name.lower().replace('_', ' ')}: {reading.detail}")


class Watchdog:
    def __init__(self, config: Config, block: cb.ControlBlock, switch=None, alerter: Alerter | None = None):
        self.config = config
        self.block = block
        self.slot = block.stages[registry.slot("watchdog")]
        self.stats = self.slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
        self.monitor = PanicMonitor(config.watchdog)
        self.switch = switch
        self.alerter = alerter
        self.reading = None
        self.conditions: list[Condition] = []
        self.was_enabled = False
        # The watchdog owns the flag: a 1 it did not grant (a stray write, after a trip or before any arm) trips.
        self.granted = False
        self.supervisor_gone = False
        self.alerted_trips = int(block.globals[cb.G_TRIPS])
        self.trip_seen_mono = 0  # when the flag was seen down with no new trip latched; 0 = nothing pending

    def poll(self) -> None:
        wall, mono = read_clocks()
        g = self.block.globals
        self.slot[cb.S_HEARTBEAT_NS] = wall
        if not pid_alive(int(g[cb.G_SUPERVISOR_PID])):
            # Before anything else: the stages die with it, and the trip must name the cause, not them.
            self.supervisor_gone = True
            return  # outlive_supervisor takes over
        if self.switch is not None:
            self.reading = self.switch.poll(mono)
            self._publish_switch(self.reading)
        if not g[cb.G_TRADING_ENABLED]:
            self.granted = False
        elif not self.granted:
            self.trip_ungranted(wall, mono)
        conditions = []
        held = switch_condition(self.reading)
        if held is not None:
            conditions.append(held)
            if g[cb.G_TRADING_ENABLED]:
                self.trip(held, wall, mono)  # the rack's word first: the other checks cost a few hundred us
        conditions += self.monitor.evaluate(self.block, wall, mono)
        self.conditions = conditions
        mask = 0
        for c in conditions:
            mask |= 1 << c.reason
        g[cb.G_CONDITIONS] = mask
        cb.set_conditions_text(g, "; ".join(str(c) for c in conditions))
        self.stats[ST_CHECKS] += 1
        if conditions and g[cb.G_TRADING_ENABLED]:
            self.trip(conditions[0], wall, mono)
        self.alert_new_trips(wall, mono)
        request = int(g[cb.G_ARM_REQUEST])
        if request != int(g[cb.G_ARM_RESULT_ID]):
            self.answer_arm(request, wall)
        if self.switch is not None:
            self.switch.report(not g[cb.G_TRADING_ENABLED], mono)
        self.was_enabled = bool(g[cb.G_TRADING_ENABLED])  # after arming, so a trip right after it is seen
        spent = time.monotonic_ns() - mono
        if spent > self.stats[ST_MAX_POLL_NS]:
            self.stats[ST_MAX_POLL_NS] = spent

    def trip(self, condition: Condition, wall: int, mono: int) -> None:
        g = self.block.globals
        if cb.trip(g, condition.reason, condition.stage, condition.detail, wall, mono):
            self.stats[ST_TRIPS] += 1

    def trip_ungranted(self, wall: int, mono: int) -> None:
        """A 1 in the flag with no arm behind it voids the latch it overwrote: latch a new trip of its own."""
        g = self.block.globals
        previous = kill_reasons.KILL_REASON_NAMES.get(int(g[cb.G_KILL_REASON]), "?")
        g[cb.G_KILL_COUNT] = 0  # so this trip latches its own reason; a concurrent tripper may win instead
        self.trip(Condition(kill_reasons.KILL_UNGRANTED_ARM, -1, "trading_enabled set to 1 without an arm the watchdog "
                            f"granted (it was disabled: {previous})"), wall, mono)

    def alert_new_trips(self, wall: int, mono: int) -> None:
        """Alert each trip, whoever tripped (this watchdog, the supervisor, an operator), once it is latched."""
        g = self.block.globals
        trips = int(g[cb.G_TRIPS])
        if trips != self.alerted_trips:
            self.alerted_trips = trips
            self.trip_seen_mono = 0
            self.alert_trip(wall, mono)
        elif self.was_enabled and not g[cb.G_TRADING_ENABLED]:
            self.trip_seen_mono = mono
        elif self.trip_seen_mono and (g[cb.G_TRADING_ENABLED] or mono - self.trip_seen_mono > TRIP_LATCH_WAIT_NS):
            if not g[cb.G_TRADING_ENABLED]:
                self.alert_trip(wall, mono)
            self.trip_seen_mono = 0

    def alert_trip(self, wall: int, mono: int) -> None:
        g = self.block.globals
        if int(g[cb.G_KILL_REASON]) == kill_reasons.KILL_SHUTDOWN:
            return  # an orderly stop is not an alarm
        reason = kill_reasons.KILL_REASON_NAMES.get(int(g[cb.G_KILL_REASON]), "?")
        index = int(g[cb.G_KILL_STAGE])
        stage = PROCESSES[index] if reason in ("stage died", "stage failed", "heartbeat stale", "ring blocked") \
            and 0 <= index < len(PROCESSES) else ""  # the journal and recorder have slots too
        detail = cb.kill_text(g)
        say(f"watchdog: trading disabled: reason={reason}" + (f" stage={stage}" if stage else "")
            + (f": {detail}" if detail else ""))
        if self.alerter is not None:
            self.alerter.send("trip", reason=reason, stage=stage, detail=detail,
                              kill_wall_ns=int(g[cb.G_KILL_TIME_NS]), seen_wall_ns=wall, seen_mono_ns=mono)

    def answer_arm(self, request: int, wall: int) -> None:
        g = self.block.globals
        blockers = list(self.conditions)
        if int(g[cb.G_RUN_STATE]) != cb.RUN_RUNNING:
            blockers.append(Condition(kill_reasons.KILL_NOT_ARMED, -1, "the pipeline is not running"))
        if self.config.killswitch.mode != "none" and (self.reading is None or not self.reading.armed):
            if not any(c.reason in (kill_reasons.KILL_SWITCH_PRESSED, kill_reasons.KILL_SWITCH_SILENT, kill_reasons.KILL_SWITCH_LOST,
                                    kill_reasons.KILL_NOT_ARMED) for c in blockers):
                blockers.append(Condition(kill_reasons.KILL_NOT_ARMED, -1, "the hardware switch does not read armed"))
        mask = 0
        for c in blockers:
            mask |= 1 << c.reason
        if blockers:
            cb.set_conditions_text(g, "; ".join(str(c) for c in blockers))
            self.stats[ST_ARM_REFUSALS] += 1
        elif g[cb.G_TRADING_ENABLED] == 0:
            self.granted = True  # before the flag rises: this process reads it next poll
            cb.rearm(g, wall)
            self.stats[ST_ARMS] += 1
            if self.alerter is not None:
                self.alerter.send("armed", wall_ns=wall)
        g[cb.G_ARM_RESULT_BLOCKERS] = mask
        g[cb.G_ARM_RESULT_ID] = request  # last: the requester reads the blockers after seeing its id

    def _publish_switch(self, reading) -> None:
        g = self.block.globals
        g[cb.G_SWITCH_STATE] = int(reading.state) + 1  # 0 = no switch configured
        g[cb.G_SWITCH_FRAMES_OK] = reading.frames_ok
        g[cb.G_SWITCH_FRAMES_BAD] = reading.frames_bad
        g[cb.G_SWITCH_DISCONNECTS] = reading.disconnects
        g[cb.G_SWITCH_LAST_FRAME_NS] = reading.last_frame_ns


STAGES_GONE_WAIT_S = 5.0  # the stages die by their own PDEATHSIG; a stage stuck in the kernel is waited for this long


def outlive_supervisor(watchdog: Watchdog, alerter: Alerter | None, run: str) -> None:
    """The supervisor died (SIGKILL, a crash): nothing else will drop the flag or clean up, so this does, in
    order: trading off (KILL_SUPERVISOR_DIED) and alerted, the stages waited for, the run's shared memory
    and alert socket removed, a post-mortem written (pipeline.safety.postmortem), the control block removed last."""
    block, g = watchdog.block, watchdog.block.globals
    wall, mono = read_clocks()
    supervisor = int(g[cb.G_SUPERVISOR_PID])
    text = f"the supervisor (pid {supervisor}) died; the watchdog disabled trading and removed the run"
    was_enabled = bool(g[cb.G_TRADING_ENABLED])
    latched = cb.trip(g, kill_reasons.KILL_SUPERVISOR_DIED, -1, text, wall, mono)
    if latched:
        watchdog.stats[ST_TRIPS] += 1
        watchdog.alert_new_trips(wall, mono)
    else:  # trading was already off: the first reason stays, the death is still news
        say(f"watchdog: {text}")
        if alerter is not None:
            alerter.send("supervisor_died", detail=text, seen_wall_ns=wall)
    processes = [(name, int(block.stages[i][cb.S_PID]), int(block.stages[i][cb.S_PID_START_NS]))
                 for i, name in enumerate(PROCESSES) if name != "watchdog" and block.stages[i][cb.S_PID]]
    deadline = time.monotonic() + STAGES_GONE_WAIT_S
    while time.monotonic() < deadline and any(process_alive(pid, start) for _, pid, start in processes):
        time.sleep(0.01)
    alive = [f"{name} (pid {pid})" for name, pid, start in processes if process_alive(pid, start)]
    view = StatusView(block)
    counters = {"orders": 0, "fills": 0, "open_orders": 0}
    try:
        counters = {k: v for k, v in view.execute_stats().items() if k in counters}
        counters["events_in"] = int(block.stages[PROCESSES.index("feed")][cb.S_OUT])
        counters["quarantined"] = int(block.stages[PROCESSES.index("validate")][cb.S_CUSTOM + validate.ST_QUARANTINED])
    except (KeyError, ValueError):
        pass
    control = names.control(run)
    # Segments go only when their creator, the supervisor, is dead, semaphores only when older than this:
    # never a new run's under the name.
    removed = segment.reclaim_stale([n for n in segment.list_segments(names.run_prefix(run)) if n != control],
                                    semaphores_created_before_ns=wall)
    if alerter is not None:
        alerter.close()  # removes the ipc socket file
    account = {
        "run": run, "run_id": int(g[cb.G_RUN_ID]), "what": f"the supervisor (pid {supervisor}) died",
        "when": datetime.datetime.fromtimestamp(wall / 1e9, datetime.timezone.utc).isoformat(), "when_ns": wall,
        "trading_was": "enabled" if was_enabled else "disabled",
        "kill_reason": kill_reasons.KILL_REASON_NAMES.get(int(g[cb.G_KILL_REASON]), "?"), "kill_text": cb.kill_text(g),
        "trips": int(g[cb.G_TRIPS]), "counters": counters,
        "cleanup": f"{removed} shared-memory entries and the alert socket removed; "
                   + (f"still alive after {STAGES_GONE_WAIT_S:g}s: {', '.join(alive)}" if alive else "no process left"),
    }
    path = postmortem.write(run, account)
    segment.reclaim_if_stale(control)
    say(f"watchdog: supervisor gone; run {run!r} disarmed and removed; post-mortem in {path}")


class PeriodIdle:
    """The watchdog's wait: a whole period after every poll, cut short by a byte from the rack."""

    def __init__(self, agent: "WatchdogAgent"):
        self.agent = agent  # its switch opens in on_start
        self.period_s = agent.config.watchdog.period_ms / 1e3

    def idle(self, work_count: int) -> None:
        if work_count > 0:
            return
        if self.agent.switch is not None:
            self.agent.switch.wait(self.period_s)  # wakes early on a byte from the rack
        else:
            time.sleep(self.period_s)


class WatchdogAgent(Agent):
    """The watchdog process: one poll per do_work, from READY on (it guards the start-up too)."""

    role_name = "watchdog"
    works_before_running = True
    quiet_failures = (AlertError, zmq.ZMQError)  # e.g. a file planted at the alert endpoint after the config check

    def __init__(self, config: Config, block: cb.ControlBlock):
        self.config = config
        self.block = block
        self.switch = self.alerter = self.watchdog = None

    def on_start(self) -> None:
        config = self.config
        cb.disable_trading(np.zeros(cb.GLOBAL_WORDS, np.int64), 0, 0, 0)  # compile before ready
        if config.killswitch.mode != "none":
            from pipeline.safety.switch import SwitchReader
            self.switch = SwitchReader(config.killswitch)
        self.alerter = Alerter(config.run.name, config.watchdog.alert_endpoint, config.watchdog.alert_command)
        self.watchdog = Watchdog(config, self.block, self.switch, self.alerter)

    def do_work(self) -> int:
        self.watchdog.poll()
        if self.watchdog.supervisor_gone or child_process.supervisor_died:
            outlive_supervisor(self.watchdog, self.alerter, self.config.run.name)
            self.alerter = None  # closed with the run
            raise AgentTerminated
        return 0  # a poll is a check, not work that arrived: the period passes before the next

    def on_close(self) -> None:
        if self.switch is not None:
            self.switch.close()
        if self.alerter is not None:
            self.alerter.close()


def main() -> int:
    child = start("watchdog")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    agent = WatchdogAgent(child.config, child.block)
    try:
        return AgentRunner(agent, child, PeriodIdle(agent)).run()
    finally:
        child.block.close()


if __name__ == "__main__":
    sys.exit(main())
