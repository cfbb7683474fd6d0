"""Per-phase time accounting and batch sizes in a stage's slot: the duty cycle, a stage group's chained cycle and
a Python agent's runner, in-process (invoker mode) on local rings."""
from __future__ import annotations

import time

import numpy as np

from pipeline.hosting import chained_cycle, duty_cycle, group_host
from pipeline.hosting.agent import AgentRunner, Idle
from pipeline.plan import resolve
from shm import control as cb
from shm import idle as idle_strategies
from shm.syscalls import new_timespec
from tests.conftest import signal_config
from tests.pipeline.hosting.test_agent import Scripted, child_of
from tests.pipeline.hosting.test_duty_cycle import Host, drain, events

PHASES = (cb.S_READ_NS, cb.S_KERNEL_NS, cb.S_PUBLISH_NS, cb.S_BLOCKED_NS, cb.S_IDLE_NS)


def batch_hist(slot) -> list[int]:
    return slot[cb.S_BATCH_HIST:cb.S_BATCH_HIST + cb.BATCH_BUCKETS].tolist()


def test_batch_buckets_are_powers_of_two_up_to_the_last():
    assert [cb.batch_bucket(n) for n in (1, 2, 3, 4, 7, 8, 255, 256, 1 << 15, 1 << 20)] == \
        [0, 1, 1, 2, 2, 3, 7, 8, 15, 15]
    assert cb.batch_bucket_range(3) == (8, 15) and cb.batch_bucket_range(cb.BATCH_BUCKETS - 1) == (1 << 15, -1)


def test_the_duty_cycle_accounts_every_ns_between_two_marks_to_exactly_one_phase():
    host = Host(batch=8, out_capacities=(64, 64), tap_capacity=64)
    duty_cycle.reset_phases(host.slot)
    assert host.run(max_cycles=1) == duty_cycle.EXIT_BUDGET  # an empty poll, then the budget's check: idle only
    mark0 = int(host.slot[cb.S_PHASE_MARK_NS])
    spent0 = sum(int(host.slot[w]) for w in PHASES)
    assert mark0 > 0 and spent0 == host.slot[cb.S_IDLE_NS] > 0
    host.feed(events(1, 20, bad=(3,)))
    before = time.time_ns()
    assert host.run(max_cycles=12) == duty_cycle.EXIT_BUDGET  # 8 + 8 + 4, then empty polls
    after = time.time_ns()
    slot = host.slot
    spent = sum(int(slot[w]) for w in PHASES) - spent0
    assert spent == int(slot[cb.S_PHASE_MARK_NS]) - mark0  # nothing counted twice, nothing left out
    assert 0 < int(slot[cb.S_PHASE_MARK_NS]) - before <= after - before
    assert slot[cb.S_READ_NS] > 0 and slot[cb.S_KERNEL_NS] > 0 and slot[cb.S_PUBLISH_NS] > 0
    assert slot[cb.S_IDLE_NS] > 0 and slot[cb.S_BLOCKED_NS] == 0
    assert batch_hist(slot)[:4] == [0, 0, 1, 2] and sum(batch_hist(slot)) == slot[cb.S_BATCHES] == 3
    assert [len(drain(out)) for out in host.outs] == [19, 19]


def test_reset_phases_clears_what_a_warm_up_marked():
    host = Host()
    host.run(max_cycles=1)
    assert host.slot[cb.S_PHASE_MARK_NS] > 0
    duty_cycle.reset_phases(host.slot)
    assert not host.slot[cb.S_READ_NS:cb.S_BATCH_HIST + cb.BATCH_BUCKETS].any()


GROUP = ("feed", "validate", "feature", "risk")


def test_each_member_of_a_stage_group_accounts_its_own_phases_and_the_idle_cycles_of_the_group():
    config = signal_config(feed={"max_events": 3000, "seed": 5})
    batch = config.rings.batch
    specs = group_host.member_specs(config, GROUP)
    endpoints = [group_host.local_endpoints(config, s, 1 << 14, tap=True) for s in specs]
    block = cb.ControlBlock.local()
    kernels = [group_host.member_kernel(s, resolve(config), live=False, with_stores=False)[:2] for s in specs]
    slots = [block.stages[s.index] for s in specs]
    cycle = group_host.GroupCycle.build(specs, endpoints, kernels, slots, batch)
    idle_params = idle_strategies.make_params(idle_strategies.BUSY_SPIN)
    before = time.time_ns()
    code = cycle.run(chained_cycle.run, block.globals, idle_params, idle_strategies.make_state(), batch,
                     3000 // batch + 40, new_timespec())  # the feed's events, then cycles with nothing to do
    wall = time.time_ns() - before
    assert code == chained_cycle.EXIT_BUDGET
    for spec, slot in zip(specs, slots):
        spent = [int(slot[w]) for w in PHASES]
        assert slot[cb.S_KERNEL_NS] > 0 and slot[cb.S_PUBLISH_NS] > 0, spec.name
        assert slot[cb.S_IDLE_NS] > 0, spec.name  # the feed ran dry: the group idled, every member with it
        assert sum(spent) <= wall, spec.name
        assert sum(batch_hist(slot)) == slot[cb.S_BATCHES] > 0, spec.name
    idle = {int(slot[cb.S_IDLE_NS]) for slot in slots}
    assert len(idle) == 1  # an idle cycle is every member's
    assert slots[0][cb.S_READ_NS] == 0  # the feed reads no ring (nor does any member here: no feedback yet)


def test_a_python_agent_counts_busy_time_in_do_work_and_idle_time_between():
    child = child_of("journal")

    class Slow(Scripted):
        def do_work(self):
            work = super().do_work()
            if work:
                time.sleep(0.002)  # "work": the runner cannot tell sleeping inside do_work from computing
            return work

    agent = Slow(child.slot, work=[1, 0, 1, 0, 1])
    sleeper = Idle(idle_strategies.make_params(idle_strategies.SLEEPING, 0, 0, 3000, 3000))
    before = time.time_ns()
    assert AgentRunner(agent, child, sleeper).run() == 0
    wall = time.time_ns() - before
    busy, idle = int(child.slot[cb.S_KERNEL_NS]), int(child.slot[cb.S_IDLE_NS])
    assert busy >= 3 * 2_000_000 and idle >= 2 * 3_000_000  # three works of 2 ms, idle sleeps of 3 ms after the 0s
    assert busy + idle <= wall
    assert np.all(child.slot[[cb.S_READ_NS, cb.S_PUBLISH_NS]] == 0)
