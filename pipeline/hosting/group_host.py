"""A stage group's process (shared threading): several njit stages in one pinned process, chained in-process.

Started by the launcher as ``python -m pipeline.hosting.group_host`` with the launch spec of the group's
first member; the group is the one of ``topology.groups(config)`` that member leads. The process fills
every member's control-block slot (pid, core, heartbeat, state) so status, the watchdog and the summary see
each member as if it ran alone; it runs ``chained_cycle.run`` until the supervisor has stopped every member
(in pipeline order, through their slots).
"""
from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, replace

import numpy as np

from pipeline import graph
from pipeline.config import Config
from pipeline.hosting import chained_cycle, duty_cycle, topology
from pipeline.hosting.agent import wait_until_running
from pipeline.hosting.child import EXPECTED_FAILURES, report_failure, start
from pipeline.hosting.stage_host import Endpoints, attach_endpoints, live_kernel, with_step_tap
from pipeline.plan import RunPlan
from shm import control as cb
from shm import idle as idle_strategies
from shm import ring
from shm.syscalls import new_timespec


def member_specs(config: Config, group: tuple[str, ...]) -> tuple[graph.StageSpec, ...]:
    """The members as the group hosts them: the ring from each member to the next is not used (the batch is
    handed over in-process), so later members have no primary input ring and no output to their successor."""
    specs = [graph.stage(config, name) for name in group]
    hosted = []
    for k, spec in enumerate(specs):
        to_next = f"{spec.name}.{specs[k + 1].name}" if k + 1 < len(specs) else None
        hosted.append(replace(spec, in_a=spec.in_a if k == 0 else None,
                              outs=tuple(name for name in spec.outs if name != to_next)))
    return tuple(hosted)


def local_endpoints(config: Config, spec: graph.StageSpec, capacity: int = 2, tap: bool = False) -> Endpoints:
    """Process-local rings of the types a member's real endpoints have (warm-up, tests)."""
    specs = graph.rings(config)

    def local(name):
        return ring.local_ring(specs[name].dtype if name else spec.out_dtype, capacity)
    outs = tuple(local(name) for name in spec.outs)
    has_tap = tap and spec.tap is not None
    # A tap carries the member's own record type (validate's: its quarantined input, of the same type).
    return Endpoints(local(spec.in_a), local(spec.in_b), outs, np.zeros(len(outs), np.int64),
                     with_step_tap(spec, local(None)), has_tap, [], None)


def member_kernel(spec: graph.StageSpec, plan: RunPlan, live: bool, with_stores: bool):
    """(params, state, store) of a member; with stores, over the run's tables as a dedicated stage host has them
    (``store`` to close after)."""
    if with_stores:
        return live_kernel(spec, plan)
    return graph.kernel_params(spec.name, plan.config, live), graph.initial_state(spec.name, plan), None


@dataclass
class GroupCycle:
    """The arguments of ``chained_cycle.run`` for one group, per member in chain order."""
    code: int
    endpoints: tuple[Endpoints, ...]
    scratch_a: np.ndarray
    scratch_b: tuple
    scratch_out: tuple
    states: tuple
    params: tuple
    slots: tuple
    flags: np.ndarray

    @classmethod
    def build(cls, specs, endpoints, kernels, slots, batch: int) -> "GroupCycle":
        flags = chained_cycle.make_flags(len(specs))
        for k, (spec, ends) in enumerate(zip(specs, endpoints)):
            flags[k, chained_cycle.F_HAS_A] = spec.in_a is not None
            flags[k, chained_cycle.F_HAS_B] = spec.in_b is not None
            flags[k, chained_cycle.F_HAS_TAP] = ends.has_tap
            flags[k, chained_cycle.F_ALWAYS_STEP] = spec.always_step
        return cls(chained_cycle.group_code([s.index for s in specs]), tuple(endpoints),
                   np.zeros(batch, endpoints[0].in_a[2].dtype),
                   tuple(np.zeros(batch, e.in_b[2].dtype) for e in endpoints),
                   tuple(np.zeros(graph.out_capacity(s.name, batch), s.out_dtype) for s in specs),
                   tuple(k[1] for k in kernels), tuple(k[0] for k in kernels), tuple(slots), flags)

    def run(self, entry, ctl, idle_params, idle_state, batch: int, max_cycles: int, timespec, warm=False) -> int:
        flags = np.zeros_like(self.flags) if warm else self.flags  # warm: nothing read, stepped or tapped
        e = self.endpoints
        return entry(self.code, e[0].in_a, self.scratch_a, tuple(x.in_b for x in e), tuple(x.outs for x in e),
                     tuple(x.out_sems for x in e), tuple(x.tap for x in e), self.scratch_b, self.scratch_out,
                     self.states, self.params, ctl, self.slots, flags, idle_params, idle_state, batch, max_cycles,
                     timespec)


def warm(plan: RunPlan, group: tuple[str, ...]) -> None:
    """Compile (or load) the chained cycle of ``group`` with local arrays of the live types (warm-up)."""
    config = plan.config
    specs = member_specs(config, group)
    block = cb.ControlBlock.local()
    kernels = [member_kernel(s, plan, live=True, with_stores=False)[:2] for s in specs]
    cycle = GroupCycle.build(specs, [local_endpoints(config, s) for s in specs], kernels,
                             [block.stages[s.index] for s in specs], 1)
    cycle.run(chained_cycle.run, block.globals, idle_strategies.make_params(idle_strategies.YIELDING),
              idle_strategies.make_state(), 1, 1, new_timespec(), warm=True)


def host_group(plan: RunPlan, specs, endpoints, block: cb.ControlBlock, slots, placement) -> None:
    config = plan.config
    built = [member_kernel(spec, plan, live=True, with_stores=True) for spec in specs]
    stores = [store for _, _, store in built if store is not None]
    cycle = GroupCycle.build(specs, endpoints, [(params, state) for params, state, _ in built], slots,
                             config.rings.batch)
    del built
    try:
        _run(cycle, config.rings.batch, block, slots, placement)
    finally:
        del cycle  # drop the views into the stores' segments before unmapping them
        for store in stores:
            store.close()


def _run(cycle: GroupCycle, batch: int, block: cb.ControlBlock, slots, placement) -> None:
    idle_params = placement.idle_params()
    idle_state = idle_strategies.make_state()
    timespec = new_timespec()
    cycle.run(chained_cycle.run, block.globals, idle_params, idle_state, batch, 1, timespec, warm=True)
    entry = chained_cycle.compiled_entry(cycle.code)  # no argument typing on every later entry
    for slot in slots:
        duty_cycle.reset_phases(slot)
        slot[cb.S_STATE] = cb.READY
    if not wait_until_running(block, *slots):
        return
    for slot in slots:
        slot[cb.S_STATE] = cb.RUNNING
    cycle.run(entry, block.globals, idle_params, idle_state, batch, 0, timespec)


def main() -> int:
    child = start()
    config, placement = child.config, child.placement
    group = next(g for g in topology.groups(config) if g[0] == child.name)
    specs = member_specs(config, group)
    block = child.block
    slots = [block.stages[spec.index] for spec in specs]
    for slot in slots:
        for word in (cb.S_PID_START_NS, cb.S_PID, cb.S_CORE, cb.S_HEARTBEAT_NS):
            slot[word] = child.slot[word]
        slot[cb.S_IDLE_STRATEGY] = placement.idle
        slot[cb.S_STATE] = cb.STARTING
    endpoints = []
    try:
        for spec in specs:
            endpoints.append(attach_endpoints(config, config.run.name, spec, child.placements))
        host_group(child.plan, specs, endpoints, block, slots, placement)
        for slot in slots:
            slot[cb.S_STATE] = cb.STOPPED
        return 0
    except Exception as exc:
        if not isinstance(exc, EXPECTED_FAILURES):
            traceback.print_exc()
        report_failure(child, exc)
        for slot in slots:
            slot[cb.S_STATE] = cb.FAILED  # the group's failure is every member's
        return 1
    finally:
        for ends in endpoints:
            ends.close()
        del slots
        child.slot = None
        block.close()


if __name__ == "__main__":
    sys.exit(main())
