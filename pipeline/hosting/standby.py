"""Model swaps through a standby inference process: the new model set is loaded by another process, which takes the
stage over at a batch boundary, so the serving process never pauses for a load (an onnxruntime session's opening
holds the GIL for milliseconds: pipeline.hosting.model_swap's in-process swap cannot stay under one).

For each request (``bot4 model publish``/``rollback``) the supervisor spawns a standby: ``stage_host`` for the
inference slot, which does not claim the slot. It loads and warms the model set in a thread at ``SCHED_IDLE`` (the
serving process on the same core keeps the CPU whenever it wants it), then offers itself by storing its pid in the
handover word of ``/bot4.<run>.inference`` (:class:`InferenceShared`). The serving process looks at the word at
every batch boundary; it hands over by a compare-and-swap of the pid to its negation, writes the standby's pid into
the inference slot and exits 0 (the slot stays RUNNING); the standby serves from the next batch, with the run's
history in the same segment. The supervisor cancels a standby by a compare-and-swap of its pid to 0, so exactly one
of a cancel and a handover wins; it adopts the standby as the inference process when the serving one exited with
the standby's pid in the slot. A standby that dies, hangs or fails to load changes nothing, and the publisher is told.

Concurrency: the handover word is written only by compare-and-swap (standby 0 -> pid; server pid -> -pid; supervisor
pid -> 0) and reset to 0 by the standby once it serves; the history is written by the serving process alone.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import posix_ipc
from numba import njit

from pipeline import names
from pipeline.hosting import model_swap
from shm import control as cb
from shm import segment
from shm.atomics import compare_exchange, load_acquire, store_release
from stages.records import N_FEATURES
from stages.universe import MAX_KEYS
from stages.windows import MAX_WINDOW

WAKE = "inference-standby"  # the semaphore the server posts after a handover (names.semaphore)
WAKE_WAIT_S = 0.02  # a standby re-checks the word (a cancel, the run stopping) this often while it waits
# Words of the segment's first line. HANDED_NS: when the server handed over (monotonic clock); LAST_HANDOVER_NS: how
# long the stage then had no process serving (the standby writes it: bench/standby_swap.py reads it per swap).
HANDOVER, STANDBY_START_NS, HANDED_NS, LAST_HANDOVER_NS = 0, 1, 2, 3
LINE_WORDS = 16
SPARE = LINE_WORDS - 1  # a word nobody reads: warming the atomics writes it
HISTORY_BYTES = MAX_KEYS * MAX_WINDOW * N_FEATURES * 4
LAYOUT = segment.layout_hash("inference-shared", 1, LINE_WORDS, MAX_KEYS, MAX_WINDOW, N_FEATURES)


@njit(cache=True)
def _swap(words, index, expected, desired):
    return compare_exchange(words, index, expected, desired)


@njit(cache=True)
def _load(words, index):
    return load_acquire(words, index)


@njit(cache=True)
def _store(words, index, value):
    store_release(words, index, value)


def enabled(config) -> bool:
    """A live run swaps model sets through a standby process (inference.swap) when it hosts inference."""
    from pipeline import graph
    return config.inference.swap == "standby" and any(s.name == "inference" for s in graph.stages(config))


class InferenceShared:
    """``/bot4.<run>.inference``: the handover word (and the standby's start time) and the run's per-instrument
    history (stages.windows), which outlives a swap. The supervisor creates it; inference processes attach."""

    def __init__(self, seg: segment.Segment, wake: posix_ipc.Semaphore):
        self.segment, self.wake = seg, wake  # wake: posted by the server once it handed over
        self.words = seg.payload(0, np.int64, LINE_WORDS)
        self.counts = seg.payload(LINE_WORDS * 8, np.int64, MAX_KEYS)
        self.ring = seg.payload(LINE_WORDS * 8 + MAX_KEYS * 8, np.float32,
                                MAX_KEYS * MAX_WINDOW * N_FEATURES).reshape(MAX_KEYS, MAX_WINDOW, N_FEATURES)

    @classmethod
    def create(cls, run: str) -> InferenceShared:
        seg = segment.create(names.inference_shared(run), LINE_WORDS * 8 + MAX_KEYS * 8 + HISTORY_BYTES, LAYOUT, 1, 8)
        try:
            segment.unlink_semaphore(names.semaphore(run, WAKE))  # a crashed run's, if any (the segment was stale)
            return cls(seg, posix_ipc.Semaphore(names.semaphore(run, WAKE), posix_ipc.O_CREX, mode=0o600))
        except BaseException:
            seg.close()
            seg.unlink()
            raise

    @classmethod
    def attach(cls, run: str) -> InferenceShared:
        seg = segment.attach(names.inference_shared(run), LAYOUT)
        try:
            return cls(seg, posix_ipc.Semaphore(names.semaphore(run, WAKE)))
        except BaseException:
            seg.close()
            raise

    def warm(self) -> None:
        """Load the atomics' machine code (ms each): before serving, never at a handover."""
        _store(self.words, SPARE, 0)
        _swap(self.words, SPARE, 0, 0)
        _load(self.words, SPARE)

    def offered(self) -> int:
        """The pid of a standby waiting to take over, else 0 (a plain load: cheap at every batch boundary)."""
        pid = int(_load(self.words, HANDOVER))
        return pid if pid > 0 else 0

    def close(self) -> None:
        self.words = self.counts = self.ring = None
        self.segment.close()
        self.wake.close()

    def unlink(self) -> None:
        """The supervisor's, after close: the segment and the semaphore go with the run."""
        self.segment.unlink()
        try:
            posix_ipc.unlink_semaphore(self.wake.name)
        except posix_ipc.ExistentialError:
            pass


def hand_over(shared: InferenceShared, pid: int, slot: np.ndarray) -> bool:
    """The serving process, at a batch boundary: give the stage to the standby ``pid`` (True), unless the supervisor
    cancelled it first. The slot names the standby before this process exits, so the watchdog never sees the stage
    without a live process."""
    shared.words[HANDED_NS] = time.monotonic_ns()  # before the swap publishes it (seq_cst)
    if not segment.pid_alive(pid) or not _swap(shared.words, HANDOVER, pid, -pid):
        return False
    slot[cb.S_PID_START_NS] = int(shared.words[STANDBY_START_NS])
    slot[cb.S_PID] = pid
    shared.wake.release()  # a woken sleeper is scheduled ahead of the busy: the standby serves at once
    os.nice(19)  # this process's way out must not take the core from its successor (allowed unprivileged)
    return True


def offer(shared: InferenceShared) -> None:
    """The standby, loaded and warm: offer to take over (its start time first, so the server can name it)."""
    me = os.getpid()
    shared.words[STANDBY_START_NS] = segment.process_start_ns(me)
    if not _swap(shared.words, HANDOVER, 0, me):
        raise RuntimeError(f"the handover word holds {int(shared.words[HANDOVER])}, not 0: another standby?")


def await_takeover(shared: InferenceShared, stopping: Callable[[], bool]) -> int:
    """The standby, after ``offer``: once the server handed over, how long ago it did (ns; the word is reset for the
    next swap); 0 when the supervisor cancelled the swap or ``stopping()`` (the run stops: no handover comes)."""
    me = os.getpid()
    while True:
        word = int(_load(shared.words, HANDOVER))
        if word == -me:
            paused = max(1, time.monotonic_ns() - int(shared.words[HANDED_NS]))
            shared.words[LAST_HANDOVER_NS] = paused
            _store(shared.words, HANDOVER, 0)
            return paused
        if word != me or (stopping() and _swap(shared.words, HANDOVER, me, 0)):
            return 0
        try:
            shared.wake.acquire(WAKE_WAIT_S)  # a stale post (a standby that died just after its handover) only loops
        except posix_ipc.BusyError:
            pass


def can_leave_idle() -> bool:
    """Whether a thread of ours set to SCHED_IDLE may return to SCHED_OTHER (root or CAP_SYS_NICE, or RLIMIT_NICE
    allowing nice 0): then a standby starts at idle priority as a whole, and serves at the normal one."""
    result: list[bool] = []

    def probe():
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            result.append(True)
        except OSError:
            result.append(False)
    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return result[0]


def start_idle(pid: int) -> None:
    """The supervisor, at a standby's spawn: its start-up (imports, kernels) at idle priority, when it can leave it."""
    if can_leave_idle():
        try:
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass


def brace() -> None:
    """The standby, loaded, before it offers to serve: its wake-up at the handover must not queue behind the busy
    processes of its core, so it waits at SCHED_FIFO 1 where that is allowed (asleep on the semaphore meanwhile),
    else at the normal policy (from idle, where it started)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        if os.sched_getscheduler(0) == os.SCHED_IDLE:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def settle() -> None:
    """The standby, serving: the normal policy, as every stage has (topology priorities are applied after)."""
    if os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def load_at_idle(load: Callable[[], object]) -> object:
    """``load()`` in a thread at SCHED_IDLE (the process's other threads wait): the serving inference process pinned
    to the same core is never kept from its CPU by it. Its exception is raised here."""
    out: dict = {}

    def body():
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass  # not allowed here: an ordinary thread, sharing the core fairly
        try:
            out["value"] = load()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            out["error"] = exc

    worker = threading.Thread(target=body, name="standby-load", daemon=True)
    worker.start()
    worker.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class StandbySwaps:
    """The supervisor's side: takes model requests, spawns one standby at a time, answers for a standby that died
    or hung, cancels or adopts it. One thread (the supervisor's loop) owns it."""

    def __init__(self, table, shared: InferenceShared, spawn: Callable[[int, int, str], subprocess.Popen],
                 timeout_s: float, say: Callable[[str], None], refused: np.ndarray, serving_pid: Callable[[], int]):
        self.table, self.shared, self.spawn, self.timeout_s, self.say = table, shared, spawn, timeout_s, say
        self.serving_pid = serving_pid  # the inference slot's pid: a standby named there is the stage
        self.refused = refused  # inference's publish_refused word: counted here for the refusals said here
        self.seen = int(table.read(model_swap.RESULT)[0]["seq"])
        self.standby: subprocess.Popen | None = None
        self.request_seq = 0
        self.deadline = 0.0

    def tick(self, serving: bool) -> None:
        """At every supervisor poll: a standby's end (answered for it when it could not), or the next request
        (only while ``serving``: the inference process runs)."""
        if self.standby is not None:
            if self.standby.poll() is not None and self._cancel():
                self._answer_for_standby(self._how(self.standby.returncode))
            elif time.monotonic() > self.deadline and self._cancel():
                self._kill()
                self._answer_for_standby(f"the standby took over {self.timeout_s:g} s (inference.standby_timeout_s) "
                                         "and was stopped")
            return
        if not serving or int(self.table.seqs[model_swap.REQUEST * model_swap.SEQ_STRIDE]) // 2 == self.seen:
            return
        rec, seq = self.table.read(model_swap.REQUEST)
        self.seen = seq
        action, path = int(rec["action"]), model_swap.text_of(rec)
        if action == model_swap.ROLLBACK:
            path = model_swap.text_of(self.table.read(model_swap.PREVIOUS)[0])
            if not path:
                self._refuse(seq, "nothing to roll back to: no swap since the run started")
                return
        elif action != model_swap.PUBLISH:
            self._refuse(seq, f"unknown action {action}")
            return
        self.request_seq, self.deadline = seq, time.monotonic() + self.timeout_s
        self.standby = self.spawn(seq, action, str(Path(path)))

    def adopt(self, serving_pid_in_slot: int) -> subprocess.Popen | None:
        """The serving inference process exited: its successor when it handed over (the slot names the standby),
        else None (a death: the standby is cancelled and its publisher told)."""
        if self.standby is None:
            return None
        if serving_pid_in_slot == self.standby.pid and int(self.shared.words[HANDOVER]) in (0, -self.standby.pid):
            adopted, self.standby = self.standby, None
            return adopted
        orphan = self.cancel("the inference stage died before the swap")
        if orphan is not None:  # handed over, but the server died before the slot named it: not the stage
            orphan.kill()
            orphan.wait()
        return None

    def cancel(self, why: str) -> subprocess.Popen | None:
        """Stop a standby that has not taken over (the run stops, or the stage died), telling its publisher; the
        standby itself when it has taken over already (it is the stage: the caller adopts it)."""
        if self.standby is None:
            return None
        if self._cancel():
            self._kill()
            self._answer_for_standby(why)
            return None
        taken, self.standby = self.standby, None
        return taken

    def _cancel(self) -> bool:
        """Withdraw the standby's offer; False when it has already taken over (then it is the stage)."""
        pid = self.standby.pid
        word = int(self.shared.words[HANDOVER])
        if word == -pid or self.serving_pid() == pid:  # handed over (and maybe reset since, by the standby)
            return False
        if word == pid and not _swap(self.shared.words, HANDOVER, pid, 0):
            return False  # the server won the race: handed over
        return True

    def _kill(self) -> None:
        if self.standby.poll() is None:
            self.standby.send_signal(signal.SIGKILL)
        self.standby.wait()

    def _answer_for_standby(self, why: str) -> None:
        """The standby ended without taking over: the publisher is answered unless the standby answered itself."""
        seq, self.standby = self.request_seq, None
        if int(self.table.read(model_swap.RESULT)[0]["seq"]) < seq:
            self._refuse(seq, f"refused: {why}; the model set in use stays")

    def _refuse(self, seq: int, text: str) -> None:
        model_swap.refuse(self.table, seq, text)
        self.refused[0] += 1
        self.say(f"bot4: model request {seq}: {text}")

    @staticmethod
    def _how(code: int) -> str:
        return (f"the standby inference process died (signal {signal.Signals(-code).name})" if code < 0 else
                f"the standby inference process exited (code {code}) without taking over")
