"""A stage's process: attach shared memory, pin, warm the JIT, report ready, run the duty cycle.

Started by the launcher as ``python -m pipeline.hosting.stage_host`` with a JSON launch spec on stdin. SIGINT
is ignored (the supervisor owns Ctrl-C); the supervisor stops a stage through its control-block slot.
"""
from __future__ import annotations

import gc
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import posix_ipc

from pipeline import graph, names, registry, tables
from pipeline.config import Config
from pipeline.hosting import duty_cycle
from pipeline.hosting.agent import Agent, AgentRunner, Idle, wait_until_running
from pipeline.hosting.child import EXPECTED_FAILURES, report_failure, start
from pipeline.plan import Placement, RunPlan
from shm import control as cb
from shm import idle as idle_strategies
from shm import ring
from shm.syscalls import close_semaphore_address, new_timespec, open_semaphore_address
from stages import records

PARK_TIMEOUT_S = 0.02  # safety net for a lost wake-up; keeps heartbeats fresh while idle


@dataclass
class Endpoints:
    in_a: tuple
    in_b: tuple
    outs: tuple
    out_sems: np.ndarray       # sem_t* of each output's consumer when it blocks, else 0
    tap: tuple                 # the journal tap, or a dummy when there is none (execute: see with_step_tap)
    has_tap: bool
    views: list
    sem: posix_ipc.Semaphore | None
    ctl: np.ndarray | None = None  # the control block's globals (a Python host's batches are aged against them)

    def close(self) -> None:
        for address in self.out_sems:
            close_semaphore_address(int(address))
        if self.sem is not None:
            self.sem.close()
        self.in_a = self.in_b = self.outs = self.tap = self.ctl = None
        for view in self.views:
            view.close()


def attach_endpoints(config: Config, run: str, spec: graph.StageSpec, placements: dict[str, Placement]) -> Endpoints:
    specs = graph.rings(config)
    views = []
    blocking = placements[spec.name].idle == idle_strategies.BLOCKING

    def attach(ring_name):
        rs = specs[ring_name]
        view = ring.attach_ring(names.ring(run, ring_name), rs.dtype, rs.capacity)
        views.append(view)
        return view

    ins = []
    for ring_name in (spec.in_a, spec.in_b):
        if ring_name is None:
            ins.append(ring.local_ring(spec.out_dtype, 2))
            continue
        view = attach(ring_name)
        view.consumer[ring.C_BLOCKING] = 1 if blocking else 0
        ins.append((view.producer, view.consumer, view.records))
    outs, sems = [], []
    for ring_name in spec.outs:
        view = attach(ring_name)
        outs.append((view.producer, view.consumer, view.records))
        consumer = ring_name.split(".")[1]
        blocks = placements[consumer].idle == idle_strategies.BLOCKING
        sems.append(open_semaphore_address(names.semaphore(run, consumer)) if blocks else 0)
    sem = posix_ipc.Semaphore(names.semaphore(run, spec.name)) if blocking else None
    has_tap = spec.tap is not None and spec.tap in specs
    if has_tap:
        view = attach(spec.tap)
        tap = (view.producer, view.consumer, view.records)
    else:
        tap = ring.local_ring(spec.out_dtype, 2)
    steps = None
    if has_tap and spec.step_tap is not None:
        view = attach(spec.step_tap)
        steps = (view.producer, view.consumer, view.records)
    tap = with_step_tap(spec, tap, steps)
    return Endpoints(ins[0], ins[1], tuple(outs), np.array(sems, np.int64), tap, has_tap, views, sem)


def with_step_tap(spec: graph.StageSpec, tap: tuple, steps: tuple | None = None):
    """The tap argument of a stage's cycle: its tap ring; for execute, that (its reports), its step tap (a
    local dummy when none) and the one-record scratch its step record is built in."""
    if spec.step_tap is None:
        return tap
    return (tap, steps if steps is not None else ring.local_ring(records.EXECUTE_STEP, 2),
            np.zeros(1, records.EXECUTE_STEP))


def _park(endpoints: Endpoints) -> None:
    try:
        endpoints.sem.acquire(PARK_TIMEOUT_S)
    except posix_ipc.BusyError:
        pass
    for r in (endpoints.in_a, endpoints.in_b):
        ring.woke_up(r[1])


def live_kernel(spec: graph.StageSpec, plan: RunPlan):
    """(params, state, store) of a stage in a live run: feature writes the run's online feature table, risk
    reads the GARCH table the run published (refits reach it there), a regime-mode strategy the allocator's
    weights table; ``store`` is what to close after."""
    config = plan.config
    params = graph.kernel_params(spec.name, config, live=True)
    store = None
    if spec.name == "feature":  # the online store: this stage is its only writer
        from stages import feature
        store = tables.feature_table(config.run.name)
        state = feature.make_state(store.arrays)
    elif spec.name == "risk":
        from stages import risk
        store = tables.garch_table(config.run.name)
        published, _ = store.read(tables.GARCH_SLOT)  # the supervisor's (or a refit's) table: one source of truth
        state = risk.make_state(published["params"], store.arrays)
    elif spec.name == "execute":
        state, store = _live_execute_state(plan)
    elif spec.name == "strategy" and config.strategy.kind == "regime":
        from stages import strategy
        store = tables.weights_table(config.run.name)  # the supervisor's table, then each publication
        state = strategy.make_state(store.arrays)
    else:
        state = graph.initial_state(spec.name, plan)
    return params, state, store


class _Views(list):
    """Ring views a kernel's state holds (execute's gateway rings): closed with the stage."""

    def close(self) -> None:
        for view in self:
            view.close()


def _live_execute_state(plan: RunPlan):
    """Execute's state in a live run: its orders numbered from the wall clock in microseconds (client order ids
    stay unique across restarts, pipeline.venues.client_ids), per live venue the gateway's two rings, and its
    positions in the run's positions table."""
    from stages import execute
    from stages.venue import exchange, link
    config, views, live = plan.config, _Views(), {}
    for venue in graph.live_venues(config):
        pair = []
        for spec in graph.gateway_rings(config, venue):
            view = ring.attach_ring(names.ring(config.run.name, spec.name), spec.dtype, spec.capacity)
            views.append(view)
            pair.append((view.producer, view.consumer, view.records))
        live[venue] = tuple(pair)
    state = execute.make_state(exchange.make_state(latency_table=plan.latency_table), link.make_links(live, graph.amend_venues(config)))
    execute.seed_order_ids(state, time.time_ns() // 1_000)
    # Positions, cash and fees live in the run's positions table, where tools read them (pipeline.tables).
    positions = tables.PositionsTable.attach(config.run.name)
    views.append(positions)
    positions.values[:] = 0.0  # a restarted execute starts flat, as its fresh state always did
    shared = {execute.X_POSITIONS: positions.values[tables.POSITION], execute.X_CASH: positions.values[tables.CASH],
              execute.X_FEES: positions.values[tables.FEES]}
    return tuple(shared.get(i, part) for i, part in enumerate(state)), views


def run_numba_stage(spec, config, endpoints, block, slot, placement, plan: RunPlan) -> None:
    params, state, store = live_kernel(spec, plan)
    try:
        _run_numba_stage(spec, config, endpoints, block, slot, placement, params, state)
    finally:
        if store is not None:
            del state  # drop the views into the segment before unmapping it
            store.close()


def _run_numba_stage(spec, config, endpoints, block, slot, placement, params, state) -> None:
    batch = config.rings.batch
    in_dtype_a = endpoints.in_a[2].dtype
    in_dtype_b = endpoints.in_b[2].dtype
    scratch_a = np.zeros(batch, in_dtype_a)
    scratch_b = np.zeros(batch, in_dtype_b)
    scratch_out = np.zeros(graph.out_capacity(spec.name, batch), spec.out_dtype)
    idle_params = placement.idle_params()
    idle_state = idle_strategies.make_state()
    timespec = new_timespec()
    has_a, has_b = spec.in_a is not None, spec.in_b is not None

    def run(entry, max_cycles, warm=False):
        return entry(spec.index, endpoints.in_a, endpoints.in_b, endpoints.outs, endpoints.out_sems,
                     endpoints.tap, endpoints.has_tap and not warm, scratch_a, scratch_b, scratch_out, state, params,
                     block.globals, slot, idle_params, idle_state, batch, has_a and not warm, has_b and not warm,
                     spec.always_step and not warm, max_cycles, timespec)

    run(duty_cycle.run, 1, warm=True)  # loads (or compiles) the machine code before we say ready
    # Re-entering through the dispatcher re-types every argument and retries the literal stage index
    # (a failed typing pass each time: hundreds of ms). After a park we call the compiled entry directly.
    entry = duty_cycle.compiled_entry(spec.index)
    duty_cycle.reset_phases(slot)
    slot[cb.S_STATE] = cb.READY
    if not wait_until_running(block, slot):
        return
    slot[cb.S_STATE] = cb.RUNNING
    while True:
        code = run(entry, 0)
        if code == duty_cycle.EXIT_PARK:
            _park(endpoints)
            continue
        return


MEMBER_PUBLISH_NS = 200_000_000
LOADING_WAIT_NS = 200_000  # while a model set loads, the host waits for input in short spells: a step per idle one
LOAD_STARVED_NS = 20_000_000  # input with no idle spell for this long: a step anyway


def _inference_model_maker(config: Config, history):
    """``make(path)``: a model set, in steps (pipeline.hosting.models.load_steps), its sessions warmed."""
    from pipeline.hosting import models as model_set
    knobs, batch = config.inference, config.rings.batch

    def make(path):
        made = model_set.Models((yield from model_set.load_steps(path, knobs.min_confidence, knobs.sizer,
                                                                 knobs.fuse_members)), batch,
                                knobs.member_timeout_us, knobs.member_max_failures, history)
        yield from made.warm_steps()
        return made
    return make


def run_inference_stage(spec, config, endpoints, block, slot, placement, plan: RunPlan) -> bool:
    """Serve until stopped (False), or until a standby took the stage over (True: this process exits, its slot is
    the standby's)."""
    from pipeline.hosting import model_swap, standby
    from pipeline.hosting import models as model_set

    shared = standby.InferenceShared.attach(config.run.name) if standby.enabled(config) else None
    try:
        # The run's history: every model set reads and advances the same one; a (re)started process starts empty.
        history = model_set.History(shared)
        history.clear()
        if shared is not None:
            shared.warm()  # the handover's atomics load their machine code now, not at a batch boundary
        make = _inference_model_maker(config, history)
        table = model_swap.table(config.run.name)
        try:
            current, resumed = model_swap.first_models(table, make, plan.model_path)
            swapper = model_swap.Swapper(table, make, current, resumed, takes_requests=shared is None)
            return _serve_inference(spec, endpoints, block, slot, placement, config.rings.batch, swapper, shared)
        finally:
            table.close()
    finally:
        if shared is not None:
            shared.close()


def run_standby_inference(spec, config, endpoints, block, slot, placement, plan: RunPlan, request: dict) -> bool:
    """A standby (pipeline.hosting.standby): load the requested model set at idle priority, offer to take over, and
    serve once handed the stage (True), or give up: a refused load (answered here) or a cancelled swap (False)."""
    from pipeline.hosting import model_swap, standby
    from pipeline.hosting import models as model_set

    process = registry.BY_NAME["inference"]
    shared = standby.InferenceShared.attach(config.run.name)
    table = model_swap.table(config.run.name)
    try:
        history = model_set.History(shared)  # the server's until the handover; only read here after it
        make = _inference_model_maker(config, history)
        seq, path = int(request["seq"]), Path(request["path"])
        try:
            made = standby.load_at_idle(lambda: model_set.run_steps(make(path)))
            _warm_inference(spec, endpoints, placement, made, config.rings.batch)
            shared.warm()
            _freeze_heap()
            standby.brace()
            standby.offer(shared)
        except Exception as exc:  # the publisher is told; the serving process never knew
            if not isinstance(exc, (OSError, ValueError)):
                traceback.print_exc()
            why = str(exc) if isinstance(exc, (OSError, ValueError)) else f"{type(exc).__name__}: {exc}"
            model_swap.refuse(table, seq, f"refused: {why}")
            slot[cb.S_CUSTOM + process.counter("publish_refused")] += 1
            return False
        paused = standby.await_takeover(shared, lambda: int(block.globals[cb.G_RUN_STATE]) != cb.RUN_RUNNING)
        standby.settle()
        if not paused:
            return False
        topo = config.topology
        if topo.nice or topo.realtime_priority:
            from pipeline.hosting.topology import apply_priority
            note = apply_priority(os.getpid(), topo.nice, topo.realtime_priority, placement.dedicated)
            print(f"bot4: inference (standby, serving now): {note}", file=sys.stderr)
        longest = cb.S_CUSTOM + process.counter("handover_max_ns")
        slot[longest] = max(int(slot[longest]), paused)
        # Serving now: the set in use before becomes the one a rollback returns to (a rollback's target is it).
        table.publish(model_swap.PREVIOUS, table.read(model_swap.IN_USE)[0])
        swapper = model_swap.Swapper(table, make, made, resumed=True, takes_requests=False)
        swapper.answer(seq, True, made.loaded.name)
        slot[cb.S_CUSTOM + process.counter("swaps")] += 1
        return _serve_inference(spec, endpoints, block, slot, placement, config.rings.batch, swapper, shared,
                                taken_over=True)
    finally:
        table.close()
        shared.close()


def _freeze_heap() -> None:
    """What start-up and loading made (imports, sessions: most of the heap) is never scanned again, so a collection
    of what a batch allocates stays short: a full one could hold a batch, or a handover, for milliseconds."""
    gc.collect()
    gc.freeze()


def _warm_inference(spec, endpoints, placement, model, batch) -> None:
    """Load every njit entry point the host calls per batch, against process-local rings and a scratch slot (a
    standby warms while another process owns the stage's)."""
    from stages import inference
    from stages.records import N_FEATURES
    in_a = ring.local_ring(endpoints.in_a[2].dtype, 2)
    outs = tuple(ring.local_ring(spec.out_dtype, 2) for _ in endpoints.outs)
    slot, ctl = np.zeros(cb.STAGE_WORDS, np.int64), np.zeros(cb.GLOBAL_WORDS, np.int64)
    decisions, x = np.zeros(batch, in_a[2].dtype), np.zeros((batch, N_FEATURES), np.float32)
    predictions = np.zeros(batch, spec.out_dtype)
    idle_params, idle_state, timespec = placement.idle_params(), idle_strategies.make_state(), new_timespec()
    duty_cycle.wait_for_input(in_a, slot, idle_params, idle_state, 0, timespec)
    ring.read(*in_a, decisions, 0)
    ring.readable(in_a[0], in_a[1])
    inference.prepare(decisions, 0, x)
    inference.finish(decisions, 0, model.prob, model.confidence, model.alive_out, model.size_scale, predictions, 0)
    model.warm_host(decisions, x)
    now = time.time_ns()
    duty_cycle.account_served(slot, ctl, 0, 0, predictions, now, now, now, 0, timespec)
    duty_cycle.publish(outs, np.zeros(len(outs), np.int64), predictions, 0, slot, idle_params, timespec)


def _serve_inference(spec, endpoints, block, slot, placement, batch, swapper, shared, taken_over=False) -> bool:
    from pipeline.hosting import standby
    from stages import inference
    from stages.records import N_FEATURES

    process = registry.BY_NAME["inference"]
    custom = slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
    model = swapper.current
    model.publish_identity(slot)
    decisions = np.zeros(batch, endpoints.in_a[2].dtype)
    x = np.zeros((batch, N_FEATURES), np.float32)
    predictions = np.zeros(batch, spec.out_dtype)
    idle_params = placement.idle_params()
    idle_state = idle_strategies.make_state()
    timespec = new_timespec()
    producer, consumer, records = endpoints.in_a
    if not taken_over:
        _warm_inference(spec, endpoints, placement, model, batch)  # the sessions are warm: Models.warm
        _freeze_heap()
        model.publish(slot)
        duty_cycle.reset_phases(slot)
        slot[cb.S_STATE] = cb.READY
        if not wait_until_running(block, slot):
            return False
        slot[cb.S_STATE] = cb.RUNNING
    else:
        model.publish(slot)
    next_publish = 0
    # Lateness: how long a batch's oldest decision waited between risk and us; around a swap (a load in flight,
    # or the first batch after it) apart from the rest, so an operator sees what a swap costs.
    wait_max = custom[process.counter("wait_max_ns"):process.counter("wait_max_ns") + 1]
    swap_wait_max = custom[process.counter("swap_wait_max_ns"):process.counter("swap_wait_max_ns") + 1]
    around_swap = taken_over
    stepped, code = 0, duty_cycle.WAIT_READY
    while True:
        if shared is not None:
            # A standby swap: a ready standby takes over at this boundary (one aligned load when none waits).
            offered = shared.offered()
            if offered and slot[cb.S_STOP] == 0 and int(block.globals[cb.G_RUN_STATE]) == cb.RUN_RUNNING and \
                    standby.hand_over(shared, offered, slot):  # never once the run stops: no successor to adopt
                return True
        loading = swapper.loading
        # A load step (up to ~1 ms) only when no input came for LOADING_WAIT_NS, or when none came for so long
        # that the load would starve: a batch waits for one step at most, and batches never queue behind several.
        if shared is None and (not loading or code == duty_cycle.WAIT_TIMEOUT
                               or time.monotonic_ns() - stepped > LOAD_STARVED_NS):
            stepped = time.monotonic_ns()
            if swapper.poll():
                model = swapper.current
                model.publish_identity(slot)
                model.publish(slot)
                around_swap = True
            custom[process.counter("swaps")] = swapper.swaps
            custom[process.counter("publish_refused")] = swapper.refused
            custom[process.counter("load_step_max_ns")] = swapper.longest_step_ns
            loading = swapper.loading
        code = duty_cycle.wait_for_input(endpoints.in_a, slot, idle_params, idle_state,
                                         LOADING_WAIT_NS if loading else 50_000_000, timespec)
        if code == duty_cycle.WAIT_STOPPED:
            if ring.readable(producer, consumer) == 0:
                return False
        elif code == duty_cycle.WAIT_PARK:
            _park(endpoints)
            continue
        elif code == duty_cycle.WAIT_TIMEOUT:
            continue
        started = time.time_ns()
        n = ring.read(producer, consumer, records, decisions, batch)
        if n == 0:
            continue
        read_done = time.time_ns()
        inference.prepare(decisions, n, x)
        n_out = inference.finish(decisions, n, *model.predict(decisions, x, n), predictions, started)
        kernel_done = time.time_ns()
        blocked_before = int(slot[cb.S_BLOCKED_NS])
        if not duty_cycle.publish(endpoints.outs, endpoints.out_sems, predictions, n_out, slot, idle_params, timespec):
            return False
        slot[cb.S_QUEUE_DEPTH] = consumer[ring.C_CACHED_TAIL] - consumer[ring.C_HEAD]
        duty_cycle.account_served(slot, block.globals, n, n_out, predictions, started, read_done, kernel_done,
                                  blocked_before, timespec)
        waited = started - int(decisions[0]["stage_ts"])
        target = swap_wait_max if (loading or around_swap) else wait_max
        if waited > target[0]:
            target[0] = waited
        around_swap = False
        if kernel_done >= next_publish:  # the members' counters, a few times a second
            model.publish(slot)
            next_publish = kernel_done + MEMBER_PUBLISH_NS


def main(make_agent: Callable[..., Agent] | None = None) -> int:
    """Host the stage the launch spec names: its kernel through the duty cycle, or the agent ``make_agent``
    (a feed host of ``pipeline.sources``: called with the config, endpoints, slot and placement) through the
    agent runner, with the same endpoints and failure reporting."""
    child = start()
    stage, config, placement, placements = child.name, child.config, child.placement, child.placements
    run = config.run.name
    spec = graph.stage(config, stage)
    block, slot = child.block, child.slot
    if child.standby is None:  # a standby's slot is the serving process's until it is handed over
        slot[cb.S_IDLE_STRATEGY] = placement.idle
        slot[cb.S_STATE] = cb.STARTING
    endpoints = None
    try:
        endpoints = attach_endpoints(config, run, spec, placements)
        endpoints.ctl = block.globals
        if make_agent is not None:
            agent = make_agent(config, endpoints, slot, placement)
            return AgentRunner(agent, child, Idle(placement.idle_params())).run()
        if child.standby is not None:
            served = run_standby_inference(spec, config, endpoints, block, slot, placement, child.plan, child.standby)
        else:
            host = partial(run_inference_stage if stage == "inference" else run_numba_stage, plan=child.plan)
            served = host(spec, config, endpoints, block, slot, placement)
        if served is True and int(slot[cb.S_PID]) != os.getpid():
            # Handed the stage to a standby: the slot is its (RUNNING), and so is stopping it. Out at once: the
            # interpreter's teardown would only hold the core its successor serves on.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        if child.standby is not None and int(slot[cb.S_PID]) != os.getpid():
            return 0  # a standby that never took over: the slot was never its
        slot[cb.S_STATE] = cb.STOPPED
        return 0
    except Exception as exc:
        if not isinstance(exc, EXPECTED_FAILURES):
            traceback.print_exc()  # a bug: the whole story, then the one line
        if child.standby is not None and int(slot[cb.S_PID]) != os.getpid():
            return 1  # not the stage's process (yet): the supervisor answers its publisher
        report_failure(child, exc)
        return 1
    finally:
        if endpoints is not None:
            endpoints.close()
        del slot
        block.close()


if __name__ == "__main__":
    sys.exit(main())
