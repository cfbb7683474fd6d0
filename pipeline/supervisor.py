"""The supervisor (``bot4 run``): create shared memory, start every process, watch them, stop cleanly.

Lifecycle only: spawning and pinning live in ``launcher``, liveness checks in the watchdog process,
trading logic in the stages. A stage that dies disables trading before anything else happens; nothing is
restarted silently (this version has no restart policy: a dead stage stops the run).
"""
from __future__ import annotations

import enum
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import posix_ipc

from pipeline import graph, kill_reasons, names, registry
from pipeline.config import Config, ConfigError, allocation_note
from pipeline.hosting import launcher, standby, topology, warmup
from pipeline.plan import RunPlan, resolve
from pipeline.registry import NAMES as PROCESS_NAMES
from pipeline.registry import STAGE_NAMES
from pipeline.safety import alerts, postmortem, sd_notify
from pipeline.safety.arming import request_arm
from pipeline.safety.panic import process_condition
from pipeline.safety.watchdog import STAGES_GONE_WAIT_S
from pipeline.status_view import StatusView, hist, slot_alive, supervisor_alive
from pipeline.store import feature_store, garch_store, model_store, weights_store
from pipeline.tables import PositionsTable
from shm import control as cb
from shm import idle as idle_strategies
from shm import ring, segment
from stages import execute, feed


class ExitCode(enum.IntEnum):
    CLEAN = 0              # stopped on request (signal or duration) with no trip
    ERROR = 1
    CONFIG = 2             # bad configuration (raised before anything starts)
    STAGE_DIED = 3         # a process died after start-up: trading was disabled, the run stopped
    # A resource the configuration names failed its pre-flight check before anything was spawned (the
    # model's metadata, a replay file, the journal directory), or a process failed or exited before it was
    # ready, or was not ready in time. Config values themselves (a type, a range, a missing file) are CONFIG.
    START_FAILED = 4
    TRIPPED = 5            # stopped on request, but trading was disabled during the run (reason printed)


STOP_GRACE_S = 5.0    # a process told to stop has this long to say it stopped...
ABANDON_GRACE_S = 1.0  # ...then this long once told to abandon its full outputs, then it is killed


def stop_budget_s(config: Config) -> float:
    """The longest a stop can take: the flatten, then every process in turn using both its graces (each one
    hung). A service manager's stop timeout (systemd's TimeoutStopSec, supervisord's stopwaitsecs) must exceed
    it, or it kills the supervisor mid-drain."""
    return config.run.flatten_timeout_s + len(PROCESS_NAMES) * (STOP_GRACE_S + ABANDON_GRACE_S)


@dataclass
class Supervisor:
    config: Config
    out: object = sys.stdout
    children: dict[str, subprocess.Popen] = field(default_factory=dict)
    block: cb.ControlBlock | None = None
    rings: list = field(default_factory=list)
    semaphores: list = field(default_factory=list)
    stop_requested: str = ""
    died: str = ""
    final_counters: dict = field(default_factory=dict)
    restarts: int = 0
    armed_text: str = ""
    plan: RunPlan | None = None    # resolved once at start (pipeline.plan); every child gets it
    placements: dict = field(default_factory=dict)
    final_histograms: dict = field(default_factory=dict)
    ran_s: float = 0.0
    online_store: object = None    # the online feature store (pipeline.store.feature_store)
    garch_store: object = None     # the GARCH parameters in use (pipeline.store.garch_store)
    weights_store: object = None   # the allocator's weights in use (pipeline.store.weights_store)
    model_store: object = None     # models handed to the running inference stage (pipeline.store.model_store)
    positions: PositionsTable | None = None  # execute's positions, for tools (pipeline.tables)
    consumers_gone: set = field(default_factory=set)  # processes whose input rings are marked gone
    service: sd_notify.ServiceNotifier | None = None  # systemd's notify socket (inert when not under systemd)
    watchdog_stale: bool = False   # the watchdog's heartbeat is stale now (said and tripped once per episode)
    inference_shared: object = None  # the handover word and history of standby swaps (pipeline.hosting.standby)
    standby_swaps: object = None   # model requests served by standby inference processes (pipeline.hosting.standby)

    def say(self, text: str) -> None:
        try:
            print(text, file=self.out, flush=True)
        except (BrokenPipeError, ValueError):  # a reader that went away (| head) must not stop the clean-up
            self.out = open(os.devnull, "w")

    def run(self) -> int:
        self.service = sd_notify.ServiceNotifier(say=self.say)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                self.start()
            except ConfigError as exc:  # what the config names cannot serve the run (planning reads it)
                self.stop_requested = self.stop_requested or "config error"
                self.say(f"bot4: config error: {exc}")
                return ExitCode.CONFIG
            except (StartError, segment.SegmentError) as exc:  # a planted or absurd segment: no traceback
                self.stop_requested = self.stop_requested or "start-up failed"
                self.say(f"bot4: start-up failed: {exc}")
                return ExitCode.START_FAILED
            processes = len({child.pid for child in self.children.values()})  # a stage group is one process
            self.say(f"bot4: running ({processes} processes); {self.armed_text}")
            if allocation_note(self.config):
                self.say(f"bot4: {allocation_note(self.config)}")
            self.service.ready(self.block)
            self.watch()
            return self.exit_code()
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        self.stop_requested = signal.Signals(signum).name
        self.service.stopping(self.stop_requested)

    def start(self) -> None:
        config = self.config
        run = config.run.name
        self.plan = resolve(config).with_placements(topology.place(config))
        placements = self.placements = self.plan.placements
        preflight(self.plan)
        crashed = self._reclaim_stale(run)
        account = postmortem.read(run)
        if account is not None:
            crashed = f"{account.get('what', 'it crashed')} at {account.get('when', '?')}"
        postmortem.remove(run)  # a new run under this name: the last one's account is superseded
        self.block = cb.ControlBlock.create(names.control(run))
        g = self.block.globals
        g[cb.G_SUPERVISOR_PID] = os.getpid()
        g[cb.G_N_STAGES] = len(STAGE_NAMES)
        g[cb.G_STARTED_NS] = time.time_ns()
        g[cb.G_RUN_ID] = secrets.randbits(63) or 1
        g[cb.G_RUN_STATE] = cb.RUN_STARTING
        # Disarmed until the start-up self-checks pass: a latched kill that only the watchdog clears.
        cb.disable_trading(g, kill_reasons.KILL_NOT_ARMED, -1, time.time_ns())
        cb.set_kill_text(g, "start-up: self-checks pending")
        for spec in graph.rings(config).values():
            self.rings.append(ring.create_ring(names.ring(run, spec.name), spec.dtype, spec.capacity))
        hosted = {s.name for s in graph.stages(config)}
        recording = config.run.mode == "record"  # no trading stages, so no kill switch to watch
        spawned = [name for name in PROCESS_NAMES
                   if not (name == "journal" and not config.journal.dir)
                   and not (name == "recorder" and not config.recorder.dsn)
                   and not (name in STAGE_NAMES and name not in hosted)
                   and not (name == "watchdog" and recording)
                   and not (name == "gateway" and not graph.live_venues(config))]
        if "feature" in hosted:
            self.online_store = feature_store.create(run)
        if "risk" in hosted:
            self.garch_store = garch_store.create(run)
            garch_store.publish_initial(self.garch_store, self.plan.garch_doc, list(config.feed.symbols),
                                        round(config.risk.bar_s * 1e9))
        if "execute" in hosted:
            self.positions = PositionsTable.create(run, config.feed.venues, config.feed.symbols)
        if "inference" in hosted:
            self.model_store = model_store.create(run)
            if standby.enabled(config):
                self.inference_shared = standby.InferenceShared.create(run)
                slot = self.block.stages[PROCESS_NAMES.index("inference")]
                refused = cb.S_CUSTOM + registry.BY_NAME["inference"].counter("publish_refused")
                self.standby_swaps = standby.StandbySwaps(
                    self.model_store, self.inference_shared, self._spawn_standby, config.inference.standby_timeout_s,
                    self.say, slot[refused:refused + 1], lambda: int(slot[cb.S_PID]))
        if "strategy" in hosted and config.strategy.kind == "regime":
            self.weights_store = weights_store.create(run)
            weights_store.publish_initial(self.weights_store, graph.allocator_weights(config.allocator))
        for name in STAGE_NAMES:
            if name in hosted and placements[name].idle == idle_strategies.BLOCKING:
                self.semaphores.append(posix_ipc.Semaphore(names.semaphore(run, name), posix_ipc.O_CREX))
        t0 = time.monotonic()
        try:
            warmup.compile_all(self.plan, lambda: bool(self.stop_requested))
        except warmup.WarmupStopped:
            raise StartError(f"{self.stop_requested} during start-up (kernel compilation stopped)") from None
        except warmup.WarmupError as exc:
            raise StartError(str(exc)) from None
        idle_name = {v: k for k, v in idle_strategies.NAMES.items()}[placements["feed"].idle]
        threading, why = topology.threading(config)
        groups = topology.groups(config)
        self.say(f"bot4: kernels compiled/loaded in {time.monotonic() - t0:.1f}s; topology: "
                 + ", ".join(f"{n}@{placements[n].core}" for n in spawned) + f"; idle={idle_name}; "
                 + f"threading={threading} ({why})" + "".join(f"; {'+'.join(g)} in one process" for g in groups))
        for name in spawned:
            self.children[name] = self._spawn(name)
        deadline = time.monotonic() + config.run.ready_timeout_s
        while True:
            failed = self._start_failure()
            if failed:
                raise StartError(failed)
            if self.stop_requested:
                raise StartError(f"{self.stop_requested} during start-up")
            # FAILED (6) sorts after READY: readiness is READY or RUNNING, nothing else.
            waiting = [n for i, n in enumerate(PROCESS_NAMES)
                       if n in self.children and self.block.stages[i][cb.S_STATE] not in (cb.READY, cb.RUNNING)]
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise StartError(f"not ready after {config.run.ready_timeout_s:.0f}s: {', '.join(waiting)}")
            time.sleep(0.01)
        g[cb.G_RUN_STATE] = cb.RUN_RUNNING
        g[cb.G_ARMED_NS] = time.time_ns()
        if recording:
            cb.set_kill_text(g, "record mode: nothing trades")
            self.armed_text = "record mode: feed, validate and the journal only; nothing trades"
        elif crashed:
            # A service manager restarted us after a crash or hang: re-arming stays the operator's call.
            cb.set_kill_text(g, f"waiting for: bot4 killswitch arm (the last run under this name crashed: {crashed})")
            self.armed_text = (f"trading disabled until: bot4 killswitch arm (the last run under this name crashed: "
                               f"{crashed})")
        elif config.run.arm_at_start:
            # The switch needs a few frames after the watchdog opened it: retry within a grace period.
            deadline = time.monotonic() + config.run.arm_grace_s
            while True:
                time.sleep(0.01)
                armed, blockers = request_arm(self.block)
                if armed or time.monotonic() > deadline or self.stop_requested:
                    break
            self.armed_text = "trading enabled" if armed else f"trading DISABLED: arm refused: {blockers}"
        else:
            cb.set_kill_text(g, "waiting for: bot4 killswitch arm")
            self.armed_text = "trading disabled until: bot4 killswitch arm"

    def _spawn(self, name: str) -> subprocess.Popen:
        """A stage group's first member spawns the group's process; the others share it (shared threading)."""
        group = next((g for g in topology.groups(self.config) if name in g), ())
        if group and name != group[0]:
            return self.children[group[0]]
        return launcher.spawn(name, self.plan, group=bool(group))

    def _spawn_standby(self, seq: int, action: int, path: str) -> subprocess.Popen:
        self.say(f"bot4: model request {seq}: a standby inference process loads {path}")
        return launcher.spawn("inference", self.plan, standby={"seq": seq, "action": action, "path": path})

    def _start_failure(self) -> str:
        """Why start-up failed ("" while it has not): a process that said FAILED or exited before ready, with
        its own one-line cause when it left one (pipeline.hosting.child.report_failure)."""
        g = self.block.globals
        for name, child in self.children.items():
            index = PROCESS_NAMES.index(name)
            state = int(self.block.stages[index][cb.S_STATE])
            code = child.poll()
            if state != cb.FAILED and code is None:
                continue
            if int(g[cb.G_START_FAILED]):  # the first process to fail wrote its cause (maybe not this one)
                return cb.kill_text(g)
            if code is None:  # FAILED and still exiting: its cause follows within moments
                continue
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            return f"{name} (pid {child.pid}) exited during start-up ({how}); its error is above"
        return ""

    def _reclaim_stale(self, run: str) -> str:
        """Segments of a crashed run (creator dead) are unlinked; a live run's are an error. Returns what a
        crashed run left ("" when nothing)."""
        control = names.control(run)
        if control in segment.list_segments(names.run_prefix(run)):
            self._wait_for_last_watchdog(control)
        leftovers = segment.list_segments(names.run_prefix(run))
        if control in leftovers and not segment.reclaim_if_stale(control):
            raise StartError(f"a run named {run!r} is alive (segment {control}); stop it or set run.name")
        reclaimed = segment.reclaim_stale(leftovers)  # another user's semaphore is left alone
        if reclaimed:
            self.say(f"bot4: reclaimed {reclaimed} stale shared-memory entries of a crashed run")
            return f"it left {reclaimed} shared-memory entries"
        return ""

    def _wait_for_last_watchdog(self, control: str) -> None:
        """The watchdog of a run whose supervisor died removes that run and writes its post-mortem
        (pipeline.safety.watchdog.outlive_supervisor); a start under the name (a service manager's restart)
        waits for it to finish, so neither removes what the other wrote."""
        try:
            block = cb.ControlBlock.attach(control)
        except segment.SegmentError:
            return  # not a control block this code can read: reclaimed or refused by the caller
        try:
            slot = block.stages[PROCESS_NAMES.index("watchdog")]
            if supervisor_alive(block) or not slot_alive(slot):
                return
            self.say(f"bot4: waiting for the last run's watchdog (pid {int(slot[cb.S_PID])}) to finish its clean-up")
            deadline = time.monotonic() + STAGES_GONE_WAIT_S + 5.0
            while slot_alive(slot) and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            block.close()

    def poll_children(self) -> None:
        for name, child in list(self.children.items()):
            code = child.poll()
            if code is None or self.died or self.children[name] is not child:  # not: its group restarted
                continue
            index = PROCESS_NAMES.index(name)
            slot = self.block.stages[index]
            if int(slot[cb.S_STATE]) == cb.STOPPED:
                continue
            if name == "inference" and self.standby_swaps is not None:
                successor = self.standby_swaps.adopt(int(slot[cb.S_PID]))
                if successor is not None:  # it handed the stage to a standby, which serves now
                    self.children[name] = successor
                    continue
            # Trading off first, then everything else.
            g = self.block.globals
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            what = (f"the watchdog (pid {child.pid}) died ({how}): nothing watches the kill switch or the stages"
                    if name == "watchdog" else f"stage {name} (pid {child.pid}) died ({how})")
            cb.trip(g, kill_reasons.KILL_STAGE_DIED, index, what, time.time_ns(), time.monotonic_ns())
            self.say(f"bot4: {what}; trading disabled")
            running = int(g[cb.G_RUN_STATE]) == cb.RUN_RUNNING
            if self.config.run.restart == "restart" and running and self.restarts < self.config.run.max_restarts:
                self.restart(name)
            else:
                if self.config.run.restart == "restart" and running:
                    self.say(f"bot4: restart limit ({self.config.run.max_restarts}) reached; stopping")
                self.died = name

    def restart(self, name: str) -> None:
        """Respawn a dead stage into its old slot and rings; trading stays disabled until an operator arms."""
        self.restarts += 1
        self.block.globals[cb.G_RESTARTS] += 1
        members = next((g for g in topology.groups(self.config) if name in g), (name,))  # a group restarts whole
        for member in members:
            slot = self.block.stages[PROCESS_NAMES.index(member)]
            slot[cb.S_STATE] = cb.STARTING
            slot[cb.S_STOP] = 0
        for member in members:
            self.children[member] = self._spawn(member)
        self.say(f"bot4: restarted {name} (restart {self.restarts} of {self.config.run.max_restarts}); "
                 "trading stays disabled until: bot4 killswitch arm")

    def watch(self) -> None:
        try:
            self._watch()
        finally:
            self.ran_s = (time.time_ns() - int(self.block.globals[cb.G_ARMED_NS])) / 1e9

    def _watch(self) -> None:
        config = self.config
        view = StatusView(self.block)
        view.lines()
        started = time.monotonic()
        next_status = started + config.run.status_interval_s
        stale_ns = int(config.watchdog.heartbeat_stale_ms * 1e6)
        processes = [(PROCESS_NAMES.index(name), f"stage {name}" if name in STAGE_NAMES else name)
                     for name in self.children]
        while not self.stop_requested and not self.died:
            self.poll_children()
            if self.standby_swaps is not None:
                inference = self.children.get("inference")
                self.standby_swaps.tick(inference is not None and inference.poll() is None)
            self.watch_the_watchdog(stale_ns)
            self.service.tick(self.block, processes, stale_ns)
            now = time.monotonic()
            if config.run.duration_s and now - started >= config.run.duration_s:
                self.stop_requested = "duration"
                break
            feed_done = self.block.stages[0][cb.S_CUSTOM + feed.ST_FINISHED] != 0
            if config.run.status_interval_s and now >= next_status:
                self.say("\n".join(view.lines()) if config.run.status_table else f"bot4: {view.compact_line()}")
                next_status = now + config.run.status_interval_s
            if feed_done and self._drained():
                self.stop_requested = "feed finished"
                break
            time.sleep(0.02)

    def watch_the_watchdog(self, stale_ns: int) -> None:
        """The watchdog is watched: a stale heartbeat (hung, stopped) means nothing checks the kill switch or the
        stages any more, so trading goes off here (its death is poll_children's)."""
        child = self.children.get("watchdog")
        if child is None or child.poll() is not None:
            return
        index = PROCESS_NAMES.index("watchdog")
        wall, mono = time.time_ns(), time.monotonic_ns()
        condition = process_condition(self.block, index, f"the watchdog (pid {child.pid})", wall, stale_ns)
        stale = condition is not None and condition.reason == kill_reasons.KILL_HEARTBEAT_STALE
        if stale and not self.watchdog_stale:
            text = f"{condition}: nothing watches the kill switch or the stages"
            cb.trip(self.block.globals, kill_reasons.KILL_HEARTBEAT_STALE, index, text, wall, mono)
            self.say(f"bot4: {text}; trading disabled")
        elif self.watchdog_stale and not stale:
            self.say(f"bot4: the watchdog (pid {child.pid}) polls again; trading stays disabled until: "
                     "bot4 killswitch arm")
        self.watchdog_stale = stale

    def _drained(self) -> bool:
        return all(r.depth() == 0 for r in self.rings)

    def exit_code(self) -> int:
        if self.died:
            return ExitCode.STAGE_DIED
        if self.config.run.mode == "record":
            return ExitCode.CLEAN  # trading was never meant to be on
        reason = int(self.block.globals[cb.G_KILL_REASON])
        tripped = int(self.block.globals[cb.G_TRIPS]) > 0 or reason not in (kill_reasons.KILL_NONE, kill_reasons.KILL_SHUTDOWN)
        return ExitCode.TRIPPED if tripped else ExitCode.CLEAN

    def stop_children(self) -> None:
        """Stop the watchdog (trading is already off), then stages in pipeline order, each after draining,
        then the journal, which drains their taps. The next is told to stop once the previous says it
        stopped (its outputs are complete then); their process exits overlap."""
        order = ("watchdog",) + STAGE_NAMES + ("gateway", "journal", "recorder")  # the gateway after execute's last
        for name in order:
            child = self.children.get(name)
            if child is None:
                continue
            self.mark_dead_consumers()  # one that died meanwhile must not hold its producers
            slot = self.block.stages[PROCESS_NAMES.index(name)]
            slot[cb.S_STOP] = 1
            if not self._stopped_within(child, slot, STOP_GRACE_S):
                slot[cb.S_STOP] = 2  # abandon: do not wait on full outputs
                if not self._stopped_within(child, slot, ABANDON_GRACE_S):
                    self.say(f"bot4: {name} did not stop; killing it")
                    child.kill()
                    child.wait()
        for name, child in self.children.items():
            try:
                child.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.say(f"bot4: {name} stopped but did not exit; killing it")
                child.kill()
                child.wait()
        self.mark_dead_consumers()

    @staticmethod
    def _stopped_within(child: subprocess.Popen, slot, seconds: float) -> bool:
        """True once the process says STOPPED (its duty cycle returned, outputs published) or exited."""
        deadline = time.monotonic() + seconds
        while int(slot[cb.S_STATE]) != cb.STOPPED and child.poll() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def mark_dead_consumers(self) -> None:
        """Set ``gone`` on every ring whose consumer exited without stopping cleanly: its producers then
        discard (hot path, counted in the ring) or drop (tap, counted in the slot) instead of waiting."""
        views = {view.name: view for view in self.rings}
        for name, child in self.children.items():
            if name in self.consumers_gone or child.poll() is None:
                continue
            if int(self.block.stages[PROCESS_NAMES.index(name)][cb.S_STATE]) == cb.STOPPED:
                continue
            self.consumers_gone.add(name)
            for spec_name in graph.rings(self.config):
                if spec_name.split(".")[1] == name:
                    view = views.get(names.ring(self.config.run.name, spec_name))
                    if view is not None:  # None: start-up failed before it was created
                        view.mark_consumer_gone()

    def wait_for_flatten(self) -> None:
        """Trading is off: execute cancels and flattens against live books, so it and its market data
        (feed -> validate -> execute) keep running until it reports no open orders and no position, or
        run.flatten_timeout_s passes. Every other stage keeps running too: stopping one could hold the feed."""
        if self.config.run.mode == "record" or "execute" not in self.children:
            return
        slot = self.block.stages[graph.BY_NAME["execute"].index]
        stats = slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
        flatten = self.config.execute.on_kill == "flatten"
        feed_slot = self.block.stages[graph.BY_NAME["feed"].index]
        views = {view.name: view for view in self.rings}
        to_validate, to_execute = (views[names.ring(self.config.run.name, r)] for r in ("feed.validate",
                                                                                       "validate.execute"))

        def exited(name: str) -> bool:
            return name not in self.children or self.children[name].poll() is not None

        disabled_ns = time.time_ns()
        cycle_after = 0  # a heartbeat of a cycle that began after trading was off
        now = time.monotonic()
        deadline = now + self.config.run.flatten_timeout_s
        market_over = 0.0  # when no market event could reach execute any more
        # After the last book, execute retries a remainder once per flatten_retry_ms: give it two tries.
        last_tries_s = 2 * self.config.execute.flatten_retry_ms / 1e3 + 0.05
        while True:
            self.mark_dead_consumers()
            if exited("execute"):
                return  # a dead execute cannot flatten; the summary reports what it left
            heartbeat = int(slot[cb.S_HEARTBEAT_NS])
            if not cycle_after and heartbeat > disabled_ns:
                cycle_after = heartbeat
            # The cycle that began after the flag dropped has finished, so its counters are published.
            seen = cycle_after and heartbeat > cycle_after
            if seen and stats[execute.ST_OPEN] == 0 and (stats[execute.ST_TO_FLATTEN] == 0 or not flatten):
                return
            now = time.monotonic()
            feed_over = feed_slot[cb.S_CUSTOM + feed.ST_FINISHED] != 0 or exited("feed")
            if to_execute.depth() == 0 and (exited("validate") or feed_over and to_validate.depth() == 0):
                market_over = market_over or now
            why = ""
            if now >= deadline:
                why = f"after run.flatten_timeout_s={self.config.run.flatten_timeout_s:g}"
            elif market_over and seen and now - market_over >= last_tries_s:
                why = "and no market data is left to flatten against (the feed finished, or it or validate died)"
            if why:
                self.say(f"bot4: execute not flat {why}: {int(stats[execute.ST_OPEN]):,} open orders, "
                         f"${int(stats[execute.ST_GROSS_USD]):,} gross position; stopping anyway")
                return
            time.sleep(0.01)

    def report_dead_consumers(self) -> None:
        """Records a dead consumer never took: left unread in its rings, or discarded by their producers."""
        lost = []
        for view in self.rings:
            spec_name = view.name[len(names.ring(self.config.run.name, "")):]
            consumer = spec_name.split(".")[1]
            if consumer in self.consumers_gone and consumer != "journal":  # taps: the journal lines say it
                unread, discarded = view.depth(), int(view.producer[ring.P_DISCARDED])
                if unread or discarded:
                    lost.append(f"{spec_name} {unread:,} unread + {discarded:,} discarded ({consumer} died)")
        if lost:
            self.say("bot4: lost to dead consumers: " + ", ".join(lost))

    def shutdown(self) -> None:
        if self.service is not None:
            self.service.stopping(self.stop_requested or f"{self.died} died")
        if self.block is not None:
            g = self.block.globals
            if g[cb.G_TRADING_ENABLED]:
                cb.disable_trading(g, kill_reasons.KILL_SHUTDOWN, -1, time.time_ns())
            g[cb.G_RUN_STATE] = cb.RUN_STOPPING
        retired = None
        if self.standby_swaps is not None:
            self.poll_children()  # a standby handed the stage just now is the stage: adopted, not cancelled
            taken = self.standby_swaps.cancel("the run stopped before the swap")
            if taken is not None:  # handed over between that poll and the cancel: the standby is the stage
                retired, self.children["inference"] = self.children.get("inference"), taken
        if self.children:
            self.wait_for_flatten()
            self.stop_children()
        for child in (*self.children.values(), *([retired] if retired is not None else [])):
            if child.poll() is None:
                child.kill()
                child.wait()
        if self.block is not None:
            self.block.globals[cb.G_RUN_STATE] = cb.RUN_STOPPED
            if "journal" in self.consumers_gone:
                from pipeline.store.journal_process import recount_from_files
                recount_from_files(self.config, self.block.stages[PROCESS_NAMES.index("journal")])
            if self.children:
                view = StatusView(self.block)
                self.say("bot4: stopped (" + (self.stop_requested or f"{self.died} died") + ")")
                if int(self.block.globals[cb.G_KILL_REASON]) not in (kill_reasons.KILL_NONE, kill_reasons.KILL_SHUTDOWN) and \
                        self.config.run.mode != "record":
                    text = cb.kill_text(self.block.globals)
                    self.say(f"bot4: trading was disabled during the run: {view.kill_reason()}"
                             + (f" ({text})" if text else ""))
                self.say("\n".join(view.summary()))
                self.report_dead_consumers()
                self.final_counters = view.stage_counters()
                self.final_histograms = {name: (hist(self.block.stages[i], cb.S_SERVICE_HIST),
                                                hist(self.block.stages[i], cb.S_ORIGIN_HIST))
                                         for i, name in enumerate(PROCESS_NAMES)}
        for r in self.rings:
            r.close()
            r.segment.unlink()
        self.rings.clear()
        for table in ("online_store", "garch_store", "weights_store", "model_store", "positions"):
            owned = getattr(self, table)
            if owned is not None:
                owned.close()
                owned.segment.unlink()
                setattr(self, table, None)
        if self.inference_shared is not None:
            self.inference_shared.close()
            self.inference_shared.unlink()
            self.inference_shared = None
        for sem in self.semaphores:
            sem.unlink()
            sem.close()
        self.semaphores.clear()
        if self.block is not None:
            seg = self.block.segment
            self.block.close()
            seg.unlink()
            self.block = None
            # The watchdog removes it on a clean stop; not if it was killed.
            alerts.remove_ipc_file(alerts.endpoint_for(self.config.run.name, self.config.watchdog.alert_endpoint))


def preflight(plan: RunPlan) -> None:
    """What the configuration names and only this machine can tell, checked once before any segment or
    process exists: the model's metadata, each replay file, the journal directory. Raises StartError
    naming each key that fails."""
    config = plan.config
    problems = []
    hosted = {s.name for s in graph.stages(config)}
    if "inference" in hosted:
        from pipeline.hosting import models
        try:
            models.load(plan.model_path)
        except (OSError, ValueError) as exc:
            problems.append(f"inference.{'ensemble' if config.inference.ensemble else 'model'}: {exc}")
        if config.inference.sizer:
            try:
                models.run_steps(models.sizer_steps(config.inference.sizer))
            except (OSError, ValueError) as exc:
                problems.append(f"inference.sizer: {exc}")
    if "feed" in hosted and config.feed.source == "replay":
        from pipeline.sources import replay_feed
        for entry in config.feed.files:
            try:
                replay_feed.check_file(str(entry).partition("=")[2])
            except replay_feed.ReplayInputError as exc:
                problems.append(str(exc))
    if config.journal.dir:
        problem = _unusable_dir(config.journal.dir)
        if problem:
            problems.append(f"journal.dir: {config.journal.dir}: {problem}")
    if problems:
        raise StartError("; ".join(problems))


def _unusable_dir(directory: str) -> str:
    if os.path.lexists(directory) and not os.path.isdir(directory):
        return "exists and is not a directory; give a directory (it is created when missing)"
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        return f"cannot be created ({exc.strerror or exc})"
    if not os.access(directory, os.W_OK | os.X_OK):
        return "is not writable by this user"
    return ""


class StartError(RuntimeError):
    pass
