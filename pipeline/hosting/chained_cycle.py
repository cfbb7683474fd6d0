"""The chained duty cycle (shared threading): one njit loop hosts a group of consecutive njit stages.

Each member's output batch is the next member's input directly (no ring between them); every member still
reads its own secondary input ring (feedback reports), publishes its other outputs to rings, taps, and
keeps its own control-block slot (heartbeat, counters, histograms, state) exactly as if it ran alone.
Phase times too, but a member's wall time also holds the others' turns: each member accounts its own reading,
kernel and publishing; a cycle in which no member had work is idle for every member.

The group is a compile-time literal: ``group_code`` packs the members' stage indices (3 bits each, +1 so a
leading feed is not lost), so numba's disk cache keys on it like the duty cycle keys on its stage index,
and any configured group compiles without a table of groups. The members are unrolled by overload
recursion over positions (``_member(code, k)`` calls ``_member(code, k + 1)``): generating njit source into
a file would do the same with a file to keep in step; this keeps one real source file and cache=True.

A member that reads more than ``batch_limit`` records from its predecessor (strategy's intents per
prediction) steps once per ``batch_limit`` of them, as it would reading them from a ring.
"""
import numpy as np
from numba import literally, njit, types
from numba.extending import overload

from pipeline.hosting.duty_cycle import (EXIT_BUDGET, EXIT_STOPPED, account_phases, call_step, count_batch, gate_before,
                                         publish_all, side_tap)
from shm import control as cb
from shm import idle as idle_strategies
from shm import ring
from shm.atomics import load_acquire
from shm.syscalls import clock_ns, usleep

CODE_BITS = 3  # stage indices 0..6, stored +1

# flags[k, ...]: per member, set by the host (0 in a warm-up call, so nothing is read or stepped).
F_HAS_A, F_HAS_B, F_HAS_TAP, F_ALWAYS_STEP, F_STOPPED = range(5)
N_FLAGS = 5


def group_code(indices) -> int:
    """The literal that names a group of stage indices (in chain order)."""
    code = 0
    for position, index in enumerate(indices):
        code |= (index + 1) << (CODE_BITS * position)
    return code


def members(code: int) -> tuple[int, ...]:
    indices = []
    while code:
        indices.append((code & ((1 << CODE_BITS) - 1)) - 1)
        code >>= CODE_BITS
    return tuple(indices)


def _member(code, position, chained, n_chained, start_ns, in_a, scratch_a, ins_b, outs, out_sems, taps, scratch_b,
            scratch_out, states, params, ctl, slots, flags, idle_params, batch_limit, timespec):
    raise NotImplementedError("only callable from njit code with a literal group code and position")


@overload(_member)
def _member_impl(code, position, chained, n_chained, start_ns, in_a, scratch_a, ins_b, outs, out_sems, taps, scratch_b,
                 scratch_out, states, params, ctl, slots, flags, idle_params, batch_limit, timespec):
    """Serve member ``position`` (its input: ``chained[:n_chained]``, or its ring for the first), then the
    members after it; returns the work count of all of them."""
    if not isinstance(code, types.IntegerLiteral) or not isinstance(position, types.IntegerLiteral):
        return None
    group = members(code.literal_value)
    k = position.literal_value
    if k == len(group):
        return lambda code, position, chained, n_chained, start_ns, in_a, scratch_a, ins_b, outs, out_sems, taps, \
            scratch_b, scratch_out, states, params, ctl, slots, flags, idle_params, batch_limit, timespec: 0
    stage_id = group[k]
    after = k + 1
    first = k == 0

    def impl(code, position, chained, n_chained, start_ns, in_a, scratch_a, ins_b, outs, out_sems, taps, scratch_b,
             scratch_out, states, params, ctl, slots, flags, idle_params, batch_limit, timespec):
        slot = slots[k]
        out = scratch_out[k]
        if flags[k, F_STOPPED]:  # nothing more from it: its successors still serve their own rings
            return _member(code, after, out, 0, start_ns, in_a, scratch_a, ins_b, outs, out_sems, taps, scratch_b,
                           scratch_out, states, params, ctl, slots, flags, idle_params, batch_limit, timespec)
        stats = slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
        b_producer, b_consumer, b_records = ins_b[k]
        b_scratch = scratch_b[k]
        has_b = flags[k, F_HAS_B] != 0
        limit_b = min(batch_limit, b_scratch.shape[0])
        a_producer, a_consumer, a_records = in_a  # the first member's ring (a dummy for the others)
        if first:
            has_a = flags[k, F_HAS_A] != 0
            batch = scratch_a
            n_input = ring.read(a_producer, a_consumer, a_records, scratch_a, min(batch_limit, scratch_a.shape[0])) \
                if has_a else 0
            limit_a = n_input
        else:
            has_a = True
            batch = chained
            n_input = n_chained
            limit_a = batch_limit
        work = 0
        taken = 0
        now = start_ns
        while True:  # once, or once per batch_limit of a long chained input
            n_a = min(n_input - taken, limit_a)
            n_b = ring.read(b_producer, b_consumer, b_records, b_scratch, limit_b) if has_b else 0
            n_out = 0
            if n_a + n_b == 0 and load_acquire(slot, cb.S_STOP) != 0:
                if first:
                    upstream_done = not has_a or ring.readable(a_producer, a_consumer) == 0
                else:
                    upstream_done = flags[k - 1, F_STOPPED] != 0
                if upstream_done and (not has_b or ring.readable(b_producer, b_consumer) == 0):
                    flags[k, F_STOPPED] = 1
                    slot[cb.S_STATE] = cb.STOPPED  # the supervisor then stops the next member
            if not flags[k, F_STOPPED] and (n_a + n_b > 0 or flags[k, F_ALWAYS_STEP]):
                # Reading: its rings (a chained batch is handed over, not read); no clock read when none gave any.
                read_done = clock_ns(timespec) if n_b > 0 or (first and n_a > 0) else now
                step_in = batch[taken:]
                gate = gate_before(stage_id, ctl)
                n_out = call_step(stage_id, step_in, n_a, b_scratch, n_b, states[k], params[k], ctl, stats, out, now)
                kernel_done = clock_ns(timespec) if n_out + n_a + n_b > 0 else now
                blocked_before = slot[cb.S_BLOCKED_NS]
                taken += n_a
                if n_out > 0 and not publish_all(outs[k], out_sems[k], out, n_out, slot, idle_params, timespec):
                    if flags[k, F_HAS_TAP]:
                        side_tap(stage_id, taps[k], states[k], step_in, n_a, b_scratch, n_b, out, n_out, slot, ctl, now,
                                 gate)  # counted, not lost
                    flags[k, F_STOPPED] = 1  # abandoned while blocked on an output whose consumer is gone
                    slot[cb.S_STATE] = cb.STOPPED
                    n_out = 0
                elif n_out + n_a + n_b > 0:
                    if flags[k, F_HAS_TAP]:
                        # Validate copies its quarantined events over its input batch, consumed by now (it
                        # follows the feed, which makes at most one batch: never chunked, nothing left to step).
                        side_tap(stage_id, taps[k], states[k], step_in, n_a, b_scratch, n_b, out, n_out, slot, ctl,
                                 now, gate)
                    done = clock_ns(timespec)
                    count_batch(slot, ctl, n_a, n_b, out, n_out, now, done)
                    account_phases(slot, now, read_done, kernel_done, done, blocked_before)
                    if first and has_a:
                        slot[cb.S_QUEUE_DEPTH] = a_consumer[ring.C_CACHED_TAIL] - a_consumer[ring.C_HEAD]
                    work += n_a + n_b + n_out
                    now = done
            # Its successors run every cycle, with or without a batch from it: they have rings of their own.
            work += _member(code, after, out, n_out, now, in_a, scratch_a, ins_b, outs, out_sems, taps, scratch_b,
                            scratch_out, states, params, ctl, slots, flags, idle_params, batch_limit, timespec)
            if flags[k, F_STOPPED] or taken >= n_input:
                break
        return work
    return impl


@njit(cache=True)
def run(group_code, in_a, scratch_a, ins_b, outs, out_sems, taps, scratch_b, scratch_out, states, params, ctl, slots,
        flags, idle_params, idle_state, batch_limit, max_cycles, timespec):
    """Run the group ``group_code`` until every member stopped; returns EXIT_STOPPED or EXIT_BUDGET.

    Per member k (tuples, in chain order): ``ins_b[k]`` its secondary ring, ``outs[k]``/``out_sems[k]`` its
    output rings but the one to its successor, ``taps[k]``, scratch, state, params and control-block slot;
    ``in_a``/``scratch_a`` are the first member's input ring and batch. Never parks: the group sleeps
    briefly where a lone stage would block on its semaphore (the config refuses BLOCKING idle here)."""
    literally(group_code)
    n_members = len(slots)
    cycles = 0
    idle_since = 0  # the top of the last cycle in which no member had work: the whole cycle was idle for all
    while True:
        now = clock_ns(timespec)
        for k in range(n_members):
            if not flags[k, F_STOPPED]:
                slots[k][cb.S_HEARTBEAT_NS] = now
                if idle_since > 0 and now > idle_since:
                    slots[k][cb.S_IDLE_NS] += now - idle_since
        idle_since = 0
        cycles += 1
        if max_cycles > 0 and cycles > max_cycles:
            return EXIT_BUDGET
        work = _member(group_code, 0, scratch_a, 0, now, in_a, scratch_a, ins_b, outs, out_sems, taps, scratch_b,
                       scratch_out, states, params, ctl, slots, flags, idle_params, batch_limit, timespec)
        if flags[n_members - 1, F_STOPPED]:
            return EXIT_STOPPED  # members stop in chain order: the last one stops last
        if work == 0:
            idle_since = now
            if idle_strategies.idle(idle_params, idle_state, 0) == idle_strategies.PARK:
                usleep(idle_params[idle_strategies.I_MIN_SLEEP_US])
        else:
            idle_strategies.idle(idle_params, idle_state, 1)


def compiled_entry(code: int):
    """The compiled ``run`` for group ``code`` (after one call through the dispatcher), callable without
    dispatch (see duty_cycle.compiled_entry)."""
    for signature, compiled in run.overloads.items():
        if isinstance(signature[0], types.IntegerLiteral) and signature[0].literal_value == code:
            return compiled.entry_point
    raise LookupError(f"chained cycle for group {members(code)} is not compiled yet; call run() once first")


def make_flags(n_members: int) -> np.ndarray:
    return np.zeros((n_members, N_FLAGS), np.int64)
