"""The stage duty cycle, entirely in njit code (a Python loop around it would cost 10-100x).

One cycle: read the clock once, write the heartbeat, read a bounded batch from each input ring, run the
kernel, publish its output to every output ring (blocking on a full ring, never dropping, counting the
time blocked; a ring whose consumer died is discarded into, counted), update counters and latency
histograms, then hand the work count to the idle strategy.
Where the time goes is accounted per phase in the stage's slot (reading, kernel, publishing, idle; blocked is
counted where it happens): a clock read at each phase boundary of a served batch, none per record, and the
time between one cycle's end and the next served batch is idle (empty polls, yields, parks).
The loop returns to its Python host only to stop, to block on the semaphore (BLOCKING idle), or when a
cycle budget runs out (warm-up).

A ring is passed as its ``(producer, consumer, records)`` views; outputs as a tuple of rings of one
record type (fan-out copies the batch to each).
"""
import numpy as np
from numba import literally, njit, types
from numba.extending import overload

from shm import control as cb
from shm import idle as idle_strategies
from shm import ring
from shm.atomics import load_acquire
from shm.syscalls import clock_ns, sched_yield, usleep
from stages import execute, feature, feed, risk, strategy, validate

# Kernels by stage index. The duty cycle takes the index as a compile-time literal, so each stage gets
# its own machine code with the kernel inlined-able, and numba's disk cache keys on the literal (a
# kernel passed as a first-class argument would key on a process-local object and never hit the cache).
STEPS = {0: feed.step, 1: validate.step, 2: feature.step, 3: risk.step, 5: strategy.step, 6: execute.step}


def call_step(stage_id, in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    raise NotImplementedError("only callable from njit code with a literal stage_id")


@overload(call_step)
def _call_step(stage_id, in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    if not isinstance(stage_id, types.IntegerLiteral):
        return None
    step = STEPS[stage_id.literal_value]

    def impl(stage_id, in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
        return step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns)
    return impl

VALIDATE_INDEX = next(index for index, step in STEPS.items() if step is validate.step)
EXECUTE_INDEX = next(index for index, step in STEPS.items() if step is execute.step)


def gate_before(stage_id, ctl):
    raise NotImplementedError("only callable from njit code with a literal stage_id")


@overload(gate_before)
def _gate_before(stage_id, ctl):
    """Execute's trading_enabled read just before its step, for its step record (0, no read, for the others)."""
    if not isinstance(stage_id, types.IntegerLiteral):
        return None
    if stage_id.literal_value == EXECUTE_INDEX:
        return lambda stage_id, ctl: load_acquire(ctl, cb.G_TRADING_ENABLED)
    return lambda stage_id, ctl: 0


def side_tap(stage_id, tap, state, in_a, n_a, in_b, n_b, out, n_out, slot, ctl, now, gate):
    raise NotImplementedError("only callable from njit code with a literal stage_id")


@overload(side_tap)
def _side_tap(stage_id, tap, state, in_a, n_a, in_b, n_b, out, n_out, slot, ctl, now, gate):
    """What a stage copies to its journal tap: validate its quarantined events (with their reasons; its
    input scratch is free again and of the same record type), every other stage its output. Validate's
    are taken after every step, so at most one batch waits in its keep ring: none is missed. Execute also
    taps one EXECUTE_STEP record per step that consumed or produced something (``tap`` is its reports tap,
    its step tap and a one-record scratch): a replay calls the kernel with exactly those inputs. A step with
    neither (the gate poll) is not journalled: it must leave the kernel's state as it found it."""
    if not isinstance(stage_id, types.IntegerLiteral):
        return None
    if stage_id.literal_value == VALIDATE_INDEX:
        def impl(stage_id, tap, state, in_a, n_a, in_b, n_b, out, n_out, slot, ctl, now, gate):
            n, missed = validate.take_quarantined(state, in_a)
            slot[cb.S_TAP_DROPPED] += missed
            if n > 0:
                tap_records(tap, in_a, n, slot)
        return impl
    if stage_id.literal_value == EXECUTE_INDEX:
        def impl(stage_id, tap, state, in_a, n_a, in_b, n_b, out, n_out, slot, ctl, now, gate):
            after = load_acquire(ctl, cb.G_TRADING_ENABLED)
            reports, steps, step = tap
            if n_out > 0:
                tap_records(reports, out, n_out, slot)
            rec = step[0]
            rec["origin_ts"] = in_b[n_b - 1]["origin_ts"] if n_b > 0 else 0
            rec["origin_seq"] = in_b[n_b - 1]["origin_seq"] if n_b > 0 else 0
            rec["now_ns"] = now
            rec["first_intent_id"] = in_a[0]["intent_id"] if n_a > 0 else 0
            rec["n_intents"] = n_a
            rec["n_market"] = n_b
            rec["n_reports"] = n_out
            rec["enabled"] = gate
            rec["enabled_after"] = after
            tap_into(steps, step, 1, slot, cb.S_STEP_TAP_WRITTEN)
        return impl

    def impl(stage_id, tap, state, in_a, n_a, in_b, n_b, out, n_out, slot, ctl, now, gate):
        if n_out > 0:
            tap_records(tap, out, n_out, slot)
    return impl


EXIT_STOPPED = 0   # stop requested and inputs drained
EXIT_PARK = 1      # BLOCKING idle: block on the stage semaphore, then call again
EXIT_BUDGET = 2    # max_cycles reached
EXIT_ABANDONED = 3  # stop requested while blocked on a full output whose consumer is gone


@njit(cache=True)
def _publish(outs, out_sems, batch, n, slot, idle_params, timespec):
    """Copy ``batch[:n]`` to every output ring; blocks (yielding) while a ring is full."""
    for k in range(len(outs)):
        producer, consumer, records = outs[k]
        done = 0
        blocked_since = 0
        while done < n:
            written = ring.try_write(producer, consumer, records, batch[done:], n - done)
            if written == ring.BACK_PRESSURED:
                if ring.consumer_gone(consumer):
                    producer[ring.P_DISCARDED] += n - done  # nothing will ever make room
                    break
                now = clock_ns(timespec)
                slot[cb.S_HEARTBEAT_NS] = now  # blocked is alive: back-pressure is not a hang
                if blocked_since == 0:
                    blocked_since = now
                    slot[cb.S_BLOCKED_SINCE_NS] = now  # the watchdog trips when this gets old
                    producer[ring.P_FULL_COUNT] += 1
                if load_acquire(slot, cb.S_STOP) > 1:
                    return False
                if idle_params[idle_strategies.I_STRATEGY] != idle_strategies.BUSY_SPIN:
                    sched_yield()
                continue
            done += written
            ring.wake_if_asleep(producer, consumer, out_sems[k])
        if blocked_since != 0:
            slot[cb.S_BLOCKED_SINCE_NS] = 0
            waited = clock_ns(timespec) - blocked_since
            producer[ring.P_BLOCKED_NS] += waited
            slot[cb.S_BLOCKED_NS] += waited
    return True


def publish_all(outs, out_sems, batch, n, slot, idle_params, timespec):
    raise NotImplementedError("only callable from njit code")


@overload(publish_all)
def _publish_all(outs, out_sems, batch, n, slot, idle_params, timespec):
    """``_publish``, or nothing for a stage without outputs (validate in record mode taps only)."""
    if isinstance(outs, types.BaseTuple) and len(outs) == 0:
        return lambda outs, out_sems, batch, n, slot, idle_params, timespec: True
    return lambda outs, out_sems, batch, n, slot, idle_params, timespec: _publish(outs, out_sems, batch, n, slot,
                                                                                  idle_params, timespec)


@njit(cache=True)
def tap_records(tap, batch, n, slot):
    """Side tap: one try, never waits; what does not fit is counted, not silently lost. A lossless tap
    (its consumer asked, record mode: the journal is the product) waits for room instead."""
    tap_into(tap, batch, n, slot, cb.S_TAP_WRITTEN)


@njit(cache=True)
def tap_into(tap, batch, n, slot, written_word):
    """``tap_records`` counting into ``slot[written_word]`` and the word after it (dropped)."""
    producer, consumer, records = tap
    written = ring.try_write(producer, consumer, records, batch, n)
    if written < 0:
        written = 0
    if written < n and consumer[ring.C_LOSSLESS] != 0:
        written += _wait_for_tap(producer, consumer, records, batch[written:], n - written, slot)
    slot[written_word] += written
    slot[written_word + 1] += n - written


@njit(cache=True)
def _wait_for_tap(producer, consumer, records, batch, n, slot):
    """Back-pressure from a lossless tap, like a full hot-path ring: heartbeat kept, time blocked counted,
    yielding (the journal needs the core). Gives up when the consumer died or the stop says abandon;
    returns the count written."""
    timespec = np.zeros(2, np.int64)  # the slow path only: the journal is behind
    blocked_since = clock_ns(timespec)
    slot[cb.S_BLOCKED_SINCE_NS] = blocked_since
    producer[ring.P_FULL_COUNT] += 1
    done = 0
    while done < n:
        written = ring.try_write(producer, consumer, records, batch[done:], n - done)
        if written == ring.BACK_PRESSURED:
            if ring.consumer_gone(consumer) or load_acquire(slot, cb.S_STOP) > 1:
                break
            slot[cb.S_HEARTBEAT_NS] = clock_ns(timespec)  # blocked is alive: back-pressure is not a hang
            sched_yield()
            continue
        done += written
    slot[cb.S_BLOCKED_SINCE_NS] = 0
    waited = clock_ns(timespec) - blocked_since
    producer[ring.P_BLOCKED_NS] += waited
    slot[cb.S_BLOCKED_NS] += waited
    return done


@njit(cache=True)
def run(stage_id, in_a, in_b, outs, out_sems, tap, has_tap, scratch_a, scratch_b, scratch_out, state, params, ctl,
        slot, idle_params, idle_state, batch_limit, has_a, has_b, always_step, max_cycles, timespec):
    """Run stage ``stage_id`` until stopped; returns an EXIT_* code. ``slot`` is its control-block slot."""
    literally(stage_id)
    stats = slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
    a_producer, a_consumer, a_records = in_a
    b_producer, b_consumer, b_records = in_b
    limit_a = min(batch_limit, scratch_a.shape[0])
    limit_b = min(batch_limit, scratch_b.shape[0])
    cycles = 0
    while True:
        now = clock_ns(timespec)
        slot[cb.S_HEARTBEAT_NS] = now
        account_idle(slot, now)
        cycles += 1
        if max_cycles > 0 and cycles > max_cycles:
            return EXIT_BUDGET
        n_a = ring.read(a_producer, a_consumer, a_records, scratch_a, limit_a) if has_a else 0
        n_b = ring.read(b_producer, b_consumer, b_records, scratch_b, limit_b) if has_b else 0
        if n_a + n_b == 0:
            if load_acquire(slot, cb.S_STOP) != 0:
                drained = (not has_a or ring.readable(a_producer, a_consumer) == 0) and \
                          (not has_b or ring.readable(b_producer, b_consumer) == 0)
                if drained:
                    return EXIT_STOPPED
            if not always_step:
                if idle_strategies.idle(idle_params, idle_state, 0) == idle_strategies.PARK:
                    may_sleep = True
                    if has_a:
                        may_sleep = ring.prepare_to_sleep(a_producer, a_consumer) and may_sleep
                    if has_b:
                        may_sleep = ring.prepare_to_sleep(b_producer, b_consumer) and may_sleep
                    if may_sleep:
                        slot[cb.S_PARKS] += 1
                        return EXIT_PARK
                    if has_a:
                        ring.woke_up(a_consumer)
                    if has_b:
                        ring.woke_up(b_consumer)
                continue
        read_done = clock_ns(timespec) if n_a + n_b > 0 else now  # a source reads nothing: no clock read
        gate = gate_before(stage_id, ctl)
        n_out = call_step(stage_id, scratch_a, n_a, scratch_b, n_b, state, params, ctl, stats, scratch_out, now)
        if n_out + n_a + n_b == 0:
            # A self-stepping stage (feed, execute) has no input to block on: it sleeps briefly instead.
            if idle_strategies.idle(idle_params, idle_state, 0) == idle_strategies.PARK:
                usleep(idle_params[idle_strategies.I_MIN_SLEEP_US])
            continue
        kernel_done = clock_ns(timespec)
        blocked_before = slot[cb.S_BLOCKED_NS]
        idle_strategies.idle(idle_params, idle_state, 1)
        if n_out > 0 and not publish_all(outs, out_sems, scratch_out, n_out, slot, idle_params, timespec):
            if has_tap:  # counted, not silently lost
                side_tap(stage_id, tap, state, scratch_a, n_a, scratch_b, n_b, scratch_out, n_out, slot, ctl, now, gate)
            return EXIT_ABANDONED
        if has_tap:
            side_tap(stage_id, tap, state, scratch_a, n_a, scratch_b, n_b, scratch_out, n_out, slot, ctl, now, gate)
        done = clock_ns(timespec)
        count_batch(slot, ctl, n_a, n_b, scratch_out, n_out, now, done)
        account_phases(slot, now, read_done, kernel_done, done, blocked_before)
        if has_a:
            slot[cb.S_QUEUE_DEPTH] = a_consumer[ring.C_CACHED_TAIL] - a_consumer[ring.C_HEAD]


def measures_the_pipeline(record):
    """Whether a record's age since its origin is the pipeline's own latency: an execution report the venue
    sent back (exch_ts set) also holds the venue's simulated or real latency, so it is not counted."""


@overload(measures_the_pipeline)
def _measures_the_pipeline(record):
    if "send_ts" in record.fields:  # an execution report
        return lambda record: record["exch_ts"] == 0
    return lambda record: True


@njit(cache=True)
def count_batch(slot, ctl, n_a, n_b, out, n_out, started_ns, done_ns):
    """A served batch into the stage's slot: in/out counts, service time, each output's age since the wall
    time of its origin (``ctl``: the control block's globals, whose replay clock maps a replay's recorded
    origins to wall time; an unpaced replay's ages are not measured)."""
    slot[cb.S_IN] += n_a
    slot[cb.S_IN_B] += n_b
    slot[cb.S_OUT] += n_out
    slot[cb.S_BATCHES] += 1
    slot[cb.S_BATCH_HIST + cb.batch_bucket(n_a + n_b if n_a + n_b > 0 else n_out)] += 1
    slot[cb.S_SERVICE_HIST + cb.bucket_of(done_ns - started_ns)] += 1
    for i in range(n_out):
        origin = cb.origin_wall_ns(ctl, out[i]["origin_ts"])
        if origin > 0 and measures_the_pipeline(out[i]):
            slot[cb.S_ORIGIN_HIST + cb.bucket_of(done_ns - origin)] += 1
    if n_out > 0:
        origin = cb.origin_wall_ns(ctl, out[n_out - 1]["origin_ts"])
        slot[cb.S_LAST_ORIGIN_NS] = done_ns - origin if origin > 0 else 0


@njit(cache=True)
def account_idle(slot, now):
    """The time since the last accounted phase was idle (empty polls, yields, parks, sleeps); marks ``now``.
    The first call after ``reset_phases`` only marks."""
    mark = slot[cb.S_PHASE_MARK_NS]
    if mark > 0 and now > mark:
        slot[cb.S_IDLE_NS] += now - mark
    slot[cb.S_PHASE_MARK_NS] = now


@njit(cache=True)
def account_phases(slot, started, read_done, kernel_done, done, blocked_before):
    """A served batch's phases: reading (``started``..``read_done``), the kernel (..``kernel_done``), publishing
    (..``done``) less what the stage spent blocked on a full output meanwhile (``S_BLOCKED_NS`` has it); the
    idle time of the next cycle starts at ``done``."""
    slot[cb.S_READ_NS] += read_done - started
    slot[cb.S_KERNEL_NS] += kernel_done - read_done
    slot[cb.S_PUBLISH_NS] += done - kernel_done - (slot[cb.S_BLOCKED_NS] - blocked_before)
    slot[cb.S_PHASE_MARK_NS] = done


def reset_phases(slot) -> None:
    """Phase times and batch sizes from zero, unmarked: a host calls it after its warm-up call, so the wait for
    the run to start is nobody's idle time."""
    slot[cb.S_READ_NS:cb.S_BATCH_HIST + cb.BATCH_BUCKETS] = 0


def compiled_entry(stage_id: int):
    """The compiled ``run`` for ``stage_id`` (after one call through the dispatcher), callable without
    dispatch: no argument typing, no literal-retry on every re-entry."""
    for signature, compiled in run.overloads.items():
        if isinstance(signature[0], types.IntegerLiteral) and signature[0].literal_value == stage_id:
            return compiled.entry_point
    raise LookupError(f"duty cycle for stage {stage_id} is not compiled yet; call run() once first")


WAIT_READY = 0     # input is waiting
WAIT_STOPPED = 1   # stop requested and input drained
WAIT_PARK = 2      # BLOCKING idle: block on the semaphore
WAIT_TIMEOUT = 3   # nothing within max_wait_ns (lets a Python host breathe)


@njit(cache=True)
def wait_for_input(in_a, slot, idle_params, idle_state, max_wait_ns, timespec):
    """For hosts whose kernel cannot run in njit (onnxruntime): idle inside njit until input arrives."""
    producer, consumer, records = in_a
    start = clock_ns(timespec)
    while True:
        now = clock_ns(timespec)
        slot[cb.S_HEARTBEAT_NS] = now
        account_idle(slot, now)
        if ring.readable(producer, consumer) > 0:
            idle_strategies.idle(idle_params, idle_state, 1)
            return WAIT_READY
        if load_acquire(slot, cb.S_STOP) != 0:
            return WAIT_STOPPED
        if now - start > max_wait_ns:
            return WAIT_TIMEOUT
        if idle_strategies.idle(idle_params, idle_state, 0) == idle_strategies.PARK:
            if ring.prepare_to_sleep(producer, consumer):
                slot[cb.S_PARKS] += 1
                return WAIT_PARK
            ring.woke_up(consumer)


@njit(cache=True)
def account(slot, ctl, n_in, n_out, out_batch, started_ns, timespec):
    """Counters and histograms for a batch served by a Python host (``ctl``: the control block's globals)."""
    done = clock_ns(timespec)
    count_batch(slot, ctl, n_in, 0, out_batch, n_out, started_ns, done)
    return done


@njit(cache=True)
def account_served(slot, ctl, n_in, n_out, out_batch, started_ns, read_done, kernel_done, blocked_before, timespec):
    """``account`` and the batch's phases (``account_phases``), for a Python host that waits in
    ``wait_for_input`` (the wait is idle, up to ``started_ns``)."""
    account_idle(slot, started_ns)
    done = account(slot, ctl, n_in, n_out, out_batch, started_ns, timespec)
    account_phases(slot, started_ns, read_done, kernel_done, done, blocked_before)
    return done


@njit(cache=True)
def publish(outs, out_sems, batch, n, slot, idle_params, timespec):
    return _publish(outs, out_sems, batch, n, slot, idle_params, timespec)
