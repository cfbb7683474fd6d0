"""The control block: one shared segment every process maps; safety flags, liveness and measurements.

Payload layout (int64 words)::

    words 0..127       global lines: trading_enabled, kill reason/time/stage, run state and id, arm
                       request/result, switch state, conditions holding, the replay clock; 30..63 free;
                       64..95 the kill text, 96..127 the conditions text
    words 128 + i*384  stage slot i (3,072 bytes, a multiple of 128 so slots never share a line):
        0..15   heartbeat_ns, state, pid, core, in/out counters, blocked_ns, errors, ...
        16..79  stage-defined counters (labels declared by the stage)
        80..207 service-time histogram (ns per batch, per record served)
        208..335 origin-latency histogram (ns from the market event's receive time to this stage's output)
        336, 337 journal tap: records written, records dropped; 338, 339 execute's step tap: the same;
        341 the process's start time
        342..346 phase time (ns, cumulative): reading input, kernel (a Python host: its work), publishing
                 output (taps and counters included, blocked time excluded: that is word 6), idle; then the
                 clock read that ended the last accounted phase (the next cycle's idle starts there)
        347..362 batch sizes: records per served batch (in; out for a step with no input), log2 buckets
        340, 363..383 free

Concurrency: each stage slot has one writer (its stage process); global words are written by the
supervisor and watchdog with release stores, read by everyone with acquire loads. Readers (tools) may
see counters mid-update; each word is itself atomic (aligned 8-byte stores).

Histograms are log-bucketed, four buckets per power of two (<= 19% relative error):
bucket(v) = 4*floor(log2 v) + the two bits after the leading one.
"""
import math
import time

import numpy as np
from numba import njit

from shm import segment
from shm.atomics import fetch_add, store_release

GLOBAL_WORDS = 128
STAGE_WORDS = 384
HIST_BUCKETS = 128
MAX_STAGES = 16

(G_TRADING_ENABLED, G_KILL_REASON, G_KILL_TIME_NS, G_KILL_STAGE, G_RUN_STATE, G_SUPERVISOR_PID,
 G_N_STAGES, G_STARTED_NS, G_ARMED_NS, G_KILL_COUNT, G_KILL_MONO_NS, G_CONDITIONS, G_ARM_REQUEST,
 G_ARM_RESULT_ID, G_ARM_RESULT_BLOCKERS, G_SWITCH_STATE, G_SWITCH_FRAMES_OK, G_SWITCH_FRAMES_BAD,
 G_SWITCH_DISCONNECTS, G_SWITCH_LAST_FRAME_NS, G_TRIPS, G_RESTARTS, G_EQUITY_PEAK_CENTS, G_RUN_ID) = range(24)
# G_RUN_ID: a random 63-bit id the supervisor draws at every start; journals and the database carry it.
G_START_FAILURES = 24     # processes that failed before the run started (fetch_add: the first claims the text)
G_START_FAILED = 25       # slot index + 1 of the first of them; its one-line cause is then the kill text
# The replay clock: a replay keeps each event's recorded receive time as origin_ts, so an age since origin is
# measured against the wall time the feed's pacer scheduled that origin for. Written by the replay feed only:
# mode and speed before it reports ready, wall0 before its first record is published (the ring orders it).
G_REPLAY_CLOCK = 26       # REPLAY_NONE: origin_ts is local wall time (synthetic, venues); PACED; UNPACED
G_REPLAY_EVENT0_NS = 27   # origin_ts of the recording's first event
G_REPLAY_WALL0_NS = 28    # wall time the pacer released it (0: not yet)
G_REPLAY_SPEED_PPM = 29   # replay speed in millionths (1x = 1,000,000)
REPLAY_NONE, REPLAY_PACED, REPLAY_UNPACED = 0, 1, 2
G_KILL_TEXT = 64          # words 64..95: the operator's or watchdog's kill text, 256 bytes UTF-8, NUL-padded
KILL_TEXT_WORDS = 32
G_CONDITIONS_TEXT = 96    # words 96..127: what currently blocks arming, 256 bytes UTF-8 (watchdog writes)
CONDITIONS_TEXT_WORDS = 32

(S_HEARTBEAT_NS, S_STATE, S_PID, S_CORE, S_IN, S_OUT, S_BLOCKED_NS, S_ERRORS, S_IDLE_STRATEGY,
 S_BATCHES, S_IN_B, S_STOP, S_PARKS, S_LAST_ORIGIN_NS, S_QUEUE_DEPTH, S_BLOCKED_SINCE_NS) = range(16)
S_CUSTOM = 16
CUSTOM_WORDS = 64  # execute's gate counts every rejection reason, and its live venues' links
S_SERVICE_HIST = S_CUSTOM + CUSTOM_WORDS
S_ORIGIN_HIST = S_SERVICE_HIST + HIST_BUCKETS
S_TAP_WRITTEN = S_ORIGIN_HIST + HIST_BUCKETS   # records copied to the stage's journal tap
S_TAP_DROPPED = S_TAP_WRITTEN + 1               # records the tap had no room for (the journal fell behind)
S_STEP_TAP_WRITTEN = S_TAP_DROPPED + 1          # execute: step records (what it consumed, in order) tapped
S_STEP_TAP_DROPPED = S_STEP_TAP_WRITTEN + 1     # and those its tap had no room for
S_PID_START_NS = S_STEP_TAP_DROPPED + 3         # the process's start time: with S_PID, pid reuse cannot fake liveness
# Where a stage's time goes, per phase (ns): one clock read per phase boundary of a served batch, never per record.
# Blocked on a full output is S_BLOCKED_NS; a stage's wall time is the sum of the five (a stage group's members
# also wait while the others are served: that remainder is not theirs).
S_READ_NS = S_PID_START_NS + 1
S_KERNEL_NS = S_READ_NS + 1
S_PUBLISH_NS = S_KERNEL_NS + 1
S_IDLE_NS = S_PUBLISH_NS + 1
S_PHASE_MARK_NS = S_IDLE_NS + 1     # the clock read that ended the last accounted phase; 0: not yet running
S_BATCH_HIST = S_PHASE_MARK_NS + 1  # bucket b: batches of 2**b .. 2**(b+1) - 1 records (the last: and more)
BATCH_BUCKETS = 16
PHASE_WORDS = (S_READ_NS, S_KERNEL_NS, S_PUBLISH_NS, S_IDLE_NS)
assert S_BATCH_HIST + BATCH_BUCKETS <= STAGE_WORDS

# Stage states (S_STATE)
STARTING, READY, RUNNING, STOPPING, STOPPED, FAILED = range(1, 7)
STATE_NAMES = {0: "new", STARTING: "starting", READY: "ready", RUNNING: "running", STOPPING: "stopping",
               STOPPED: "stopped", FAILED: "failed"}

# Run states (G_RUN_STATE)
RUN_STARTING, RUN_RUNNING, RUN_STOPPING, RUN_STOPPED = range(1, 5)

PAYLOAD_WORDS = GLOBAL_WORDS + MAX_STAGES * STAGE_WORDS
# 5: inference's slot holds per-member counters, its model name moved to custom words 48..63 (pipeline.registry)
LAYOUT = segment.layout_hash("control-block", 5, GLOBAL_WORDS, STAGE_WORDS, HIST_BUCKETS, MAX_STAGES, CUSTOM_WORDS)


class ControlBlock:
    """Views over the control segment: ``globals`` (int64[GLOBAL_WORDS]) and ``stages[i]`` (int64[320])."""

    def __init__(self, seg: segment.Segment):
        self.segment = seg
        self.words = seg.payload(0, np.int64, PAYLOAD_WORDS)
        self.globals = self.words[:GLOBAL_WORDS]
        self.stages = [self.words[GLOBAL_WORDS + i * STAGE_WORDS: GLOBAL_WORDS + (i + 1) * STAGE_WORDS]
                       for i in range(MAX_STAGES)]

    @classmethod
    def create(cls, name: str) -> "ControlBlock":
        return cls(segment.create(name, PAYLOAD_WORDS * 8, LAYOUT, MAX_STAGES, STAGE_WORDS * 8))

    @classmethod
    def attach(cls, name: str) -> "ControlBlock":
        return cls(segment.attach(name, LAYOUT))

    @classmethod
    def local(cls) -> "ControlBlock":
        """A process-private block with the same layout (fused mode, tests)."""
        block = cls.__new__(cls)
        block.segment = None
        block.words = np.zeros(PAYLOAD_WORDS, np.int64)
        block.globals = block.words[:GLOBAL_WORDS]
        block.stages = [block.words[GLOBAL_WORDS + i * STAGE_WORDS: GLOBAL_WORDS + (i + 1) * STAGE_WORDS]
                        for i in range(MAX_STAGES)]
        return block

    def close(self) -> None:
        self.words = self.globals = None
        self.stages = []
        if self.segment is not None:
            self.segment.close()


@njit(cache=True)
def bucket_of(value_ns):
    if value_ns < 1:
        return 0
    mantissa, exponent = math.frexp(float(value_ns))  # value = mantissa * 2**exponent, mantissa in [0.5, 1)
    b = 4 * (exponent - 1) + int((mantissa * 2.0 - 1.0) * 4.0)
    return b if b < HIST_BUCKETS else HIST_BUCKETS - 1


@njit(cache=True)
def origin_wall_ns(globals_, origin_ts):
    """The wall time a record's origin stands for, to age it against the wall clock; 0 = not measurable (an
    unpaced replay publishes as fast as it can, so no wall time belongs to an origin). Live sources: origin_ts
    itself. A paced replay: when its pacer scheduled that origin (lateness of the pacer counts as latency)."""
    mode = globals_[G_REPLAY_CLOCK]
    if mode == REPLAY_NONE:
        return origin_ts
    wall0 = globals_[G_REPLAY_WALL0_NS]
    if mode != REPLAY_PACED or wall0 == 0 or origin_ts <= 0:
        return 0
    return wall0 + np.int64((origin_ts - globals_[G_REPLAY_EVENT0_NS]) * 1e6 / globals_[G_REPLAY_SPEED_PPM])


@njit(cache=True)
def batch_bucket(n):
    """floor(log2 n) for n >= 1, capped at the last bucket."""
    b = 0
    while n > 1 and b < BATCH_BUCKETS - 1:
        n >>= 1
        b += 1
    return b


def batch_bucket_range(b: int) -> tuple[int, int]:
    """The sizes bucket ``b`` holds: (first, last); the last bucket's last is -1 (no bound)."""
    return 1 << b, ((1 << (b + 1)) - 1 if b < BATCH_BUCKETS - 1 else -1)


@njit(cache=True)
def record_latency(stage_slot, offset, value_ns):
    stage_slot[offset + bucket_of(value_ns)] += 1


def bucket_upper_ns(b: int) -> float:
    return 2.0 ** (b // 4) * (1.0 + ((b % 4) + 1) / 4.0)


def percentile_ns(hist: np.ndarray, q: float) -> float:
    """Upper edge of the bucket holding the q-quantile (0 < q <= 1); nan when empty."""
    total = int(hist.sum())
    if total == 0:
        return float("nan")
    rank = math.ceil(q * total)
    cumulative = np.cumsum(hist)
    return bucket_upper_ns(int(np.searchsorted(cumulative, rank)))


@njit(cache=True)
def disable_trading(globals_, reason, stage, now_ns):
    """Drop ``trading_enabled``; the first caller's reason wins (latched). Returns True if this call was first.

    Any process may call it concurrently: the reason, stage and time are written before the flag, so a
    reader that sees the flag at 0 after a kill count > 0 finds the reason.
    """
    first = fetch_add(globals_, G_KILL_COUNT, 1) == 0
    if first:
        globals_[G_KILL_REASON] = reason
        globals_[G_KILL_STAGE] = stage
        globals_[G_KILL_TIME_NS] = now_ns
    store_release(globals_, G_TRADING_ENABLED, 0)
    return first


@njit(cache=True)
def claim_first(globals_, word):
    """Atomically count a claim on ``globals_[word]``; True for the first claimer."""
    return fetch_add(globals_, word, 1) == 0


def read_text(words_: np.ndarray, first: int, words: int) -> str:
    """UTF-8 text kept in ``words`` int64 words from ``first`` (of the globals or a slot), NUL-padded."""
    return np.ascontiguousarray(words_[first:first + words]).tobytes().rstrip(b"\0").decode("utf-8", "replace")


ELLIPSIS = "…"


def write_text(globals_: np.ndarray, first: int, words: int, text: str) -> None:
    """A text too long for its field is cut at the last word that fits, marked with an ellipsis."""
    room = words * 8
    raw = text.encode("utf-8")
    if len(raw) > room:
        keep = raw[:room - len(ELLIPSIS.encode())].decode("utf-8", "ignore")  # never half a character
        cut = keep.rstrip()
        if not text[len(cut):len(cut) + 1].isspace():  # mid-word: back to the last space, if there is one
            cut = keep[:keep.rfind(" ")].rstrip() if " " in keep else keep
        raw = (cut + ELLIPSIS).encode("utf-8")
    globals_[first:first + words] = np.frombuffer(raw.ljust(room, b"\0"), np.int64)


def trip(globals_: np.ndarray, reason: int, stage: int, text: str, wall_ns: int, mono_ns: int) -> bool:
    """``disable_trading`` plus the latched detail (monotonic time, text, trip count) when this call was
    the first; returns whether it was.

    The latched kill times are re-read once the flag is down: ``wall_ns``/``mono_ns`` were read before the
    decision and a tripping process preempted in between would otherwise stamp a time at which execute
    still traded. Every order execute accepted carries a clock read taken before it saw the flag up, so
    before these."""
    first = disable_trading(globals_, reason, stage, wall_ns)
    if first:
        globals_[G_KILL_TIME_NS] = max(wall_ns, time.time_ns())
        globals_[G_KILL_MONO_NS] = max(mono_ns, time.monotonic_ns())
        set_kill_text(globals_, text)
        globals_[G_TRIPS] += 1
    return first


def kill_text(globals_: np.ndarray) -> str:
    return read_text(globals_, G_KILL_TEXT, KILL_TEXT_WORDS)


def set_kill_text(globals_: np.ndarray, text: str) -> None:
    write_text(globals_, G_KILL_TEXT, KILL_TEXT_WORDS, text)


def conditions_text(globals_: np.ndarray) -> str:
    return read_text(globals_, G_CONDITIONS_TEXT, CONDITIONS_TEXT_WORDS)


def set_conditions_text(globals_: np.ndarray, text: str) -> None:
    write_text(globals_, G_CONDITIONS_TEXT, CONDITIONS_TEXT_WORDS, text)


def rearm(globals_: np.ndarray, now_ns: int) -> None:
    """Clear the latched kill and enable trading. Only the watchdog calls this, after its checks."""
    globals_[G_KILL_REASON] = 0  # no reason
    globals_[G_KILL_STAGE] = 0
    globals_[G_KILL_COUNT] = 0
    set_kill_text(globals_, "")
    globals_[G_ARMED_NS] = now_ns
    _enable(globals_)


@njit(cache=True)
def _enable(globals_):
    # Release: the cleared kill state is visible before the flag that lets orders through.
    store_release(globals_, G_TRADING_ENABLED, 1)
