"""The inference host's side of a model swap: the request table's record, and the swapper that sees requests at batch
boundaries, loads in steps between batches and swaps at one (pipeline.store.model_store has the publisher's side).

``/bot4.<run>.model`` is a four-slot :class:`shm.seqlock.SeqlockTable` of ``MODEL_MESSAGE``: slot ``REQUEST`` is
written by publishers (any number, ``write_contended``), slot ``RESULT`` by whoever answers (the inference host; in
a standby swap, pipeline.hosting.standby, the standby, or the supervisor for a standby that could not), with the
request's sequence: taken, or refused and why (a refused publication changes nothing). Slots ``IN_USE`` and
``PREVIOUS`` (the serving process's alone) hold the paths of the model set serving and of the one a rollback returns to:
the table lives as long as the run, so a restarted inference process resumes the published model set, not the
configured one, and can still roll back.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from pipeline import names
from shm.seqlock import SEQ_STRIDE, SeqlockTable

REQUEST, RESULT, IN_USE, PREVIOUS = range(4)
PUBLISH, ROLLBACK = 1, 2
TEXT_BYTES = 1024
MODEL_MESSAGE = np.dtype([("seq", np.int64),          # RESULT: the request's sequence it answers
                          ("action", np.int64),       # PUBLISH or ROLLBACK
                          ("ok", np.int64),           # RESULT: 1 taken, 0 refused
                          ("version", np.int64),      # RESULT: the version in use after it
                          ("written_ns", np.int64),
                          ("text", np.uint8, (TEXT_BYTES,))])  # REQUEST: the path; RESULT: the name or the refusal


def table(run: str, create: bool = False) -> SeqlockTable:
    make = SeqlockTable.create if create else SeqlockTable.attach
    return make(names.model_requests(run), MODEL_MESSAGE, 4)


def in_use(table: SeqlockTable) -> str:
    """The path of the model set the run's inference host last served ("" before any host served one)."""
    return text_of(table.read(IN_USE)[0])


def first_models(table: SeqlockTable, make, configured):
    """The model set a starting inference host serves first, and whether it is the one a restarted host served
    before its death (then its ``PREVIOUS`` still holds): the table's ``IN_USE`` (a publication outlives the
    process) while it loads, else the configured set. ``make(path)`` is the host's step generator (``Swapper``)."""
    from pipeline.hosting.models import ModelLoadError, run_steps
    resumed = in_use(table)
    if resumed and Path(resumed) != Path(configured).resolve():
        try:
            made = run_steps(make(Path(resumed)))
            print(f"inference: resumed the model set in use before the restart: {made.loaded.name} ({resumed})",
                  file=sys.stderr, flush=True)
            return made, True
        except ModelLoadError as exc:
            print(f"inference: the model set in use before the restart cannot be loaded ({exc}); serving the "
                  f"configured {configured}", file=sys.stderr, flush=True)
        return run_steps(make(Path(configured))), False
    return run_steps(make(Path(configured))), bool(resumed)  # the configured set, or the one in use if it is that


def message(action: int, text: str, seq: int = 0, ok: int = 0, version: int = 0) -> np.void:
    raw = text.encode("utf-8")[:TEXT_BYTES]
    out = np.zeros(1, MODEL_MESSAGE)
    out[0]["seq"], out[0]["action"], out[0]["ok"], out[0]["version"] = seq, action, ok, version
    out[0]["written_ns"] = time.time_ns()
    out[0]["text"][:len(raw)] = np.frombuffer(raw, np.uint8)
    return out[0]


def refuse(table: SeqlockTable, seq: int, text: str) -> None:
    """Answer request ``seq`` refused with ``text``, naming the version that stays in use."""
    table.publish(RESULT, message(0, text, seq, 0, int(table.read(IN_USE)[0]["version"])))


def text_of(rec) -> str:
    return bytes(rec["text"]).rstrip(b"\0").decode("utf-8", "replace")


class Swapper:
    """The inference host's side: sees requests at batch boundaries, loads between batches, swaps at one.

    ``make(path)`` is a step generator returning the new model set (pipeline.hosting.models.load_steps and the
    sessions' warming): ``poll`` takes one step of it per call, so a batch waits at most one step (~1 ms for a
    small graph). One thread (the host's) owns everything here. One load at a time: a request arriving during a
    load is seen when it is answered (the slot holds the latest request: of two during one load, the later wins and
    the earlier's publisher is told it was superseded).

    ``resumed``: ``current`` is the table's ``IN_USE`` set (a restarted host), so a rollback returns to the table's
    ``PREVIOUS``, loaded then (the set held loaded died with the process). ``takes_requests`` False: requests are
    the supervisor's (standby swaps, pipeline.hosting.standby); this only records the set in use and answers."""

    def __init__(self, table: SeqlockTable, make, current, resumed: bool = False, takes_requests: bool = True):
        self.table, self.make, self.takes_requests = table, make, takes_requests
        self.current, self.previous = current, None
        self.previous_path = text_of(table.read(PREVIOUS)[0]) if resumed else ""
        # The last request answered: one made while this host was down (a restart) is taken now, not lost.
        self.seen = int(table.read(RESULT)[0]["seq"])
        self.swaps = self.refused = 0
        self.longest_step_ns = 0
        self._steps = None
        self._pending_seq = 0
        self._record()

    @property
    def loading(self) -> bool:
        return self._steps is not None

    def poll(self) -> bool:
        """Take what is due at this batch boundary (one load step, a request); True when ``current`` changed."""
        if self._steps is not None:
            return self._step()  # a request waits until this load is answered
        if not self.takes_requests:  # standby swaps: the supervisor takes them (pipeline.hosting.standby)
            return False
        if int(self.table.seqs[REQUEST * SEQ_STRIDE]) // 2 == self.seen:  # a plain aligned load: cheap per batch
            return False
        rec, seq = self.table.read(REQUEST)
        self.seen = seq
        action, text = int(rec["action"]), text_of(rec)
        if action == ROLLBACK:
            if self.previous is None and self.previous_path:  # restarted since the last swap: load it again
                self._pending_seq = seq
                self._steps = self.make(Path(self.previous_path))
            elif self.previous is None:
                self.answer(seq, False, "nothing to roll back to: no swap since the run started")
            else:
                self.previous, self.current = self.current, self.previous
                self.swaps += 1
                self.answer(seq, True, self.current.loaded.name)
                return True
        elif action == PUBLISH:
            self._pending_seq = seq
            self._steps = self.make(Path(text))
        else:
            self.answer(seq, False, f"unknown action {action}")
        return False

    def _step(self) -> bool:
        started = time.perf_counter_ns()
        try:
            next(self._steps)
            return False
        except StopIteration as done:
            self._steps = None
            self.previous, self.current = self.current, done.value
            self.swaps += 1
            self.answer(self._pending_seq, True, self.current.loaded.name)
            return True
        except Exception as exc:  # reported to the publisher; the model set in use stays
            self._steps = None
            self.answer(self._pending_seq, False, f"refused: {exc}")
            return False
        finally:
            self.longest_step_ns = max(self.longest_step_ns, time.perf_counter_ns() - started)

    def _record(self) -> None:
        if self.previous is not None:
            self.previous_path = str(Path(self.previous.loaded.path).resolve())
        self.table.publish(PREVIOUS, message(0, self.previous_path))
        self.table.publish(IN_USE, message(0, str(Path(self.current.loaded.path).resolve()), 0, 1,
                                           self.current.loaded.version))

    def answer(self, seq: int, ok: bool, text: str) -> None:
        if ok:
            self._record()
        else:
            self.refused += 1
        self.table.publish(RESULT, message(0, text, seq, int(ok), self.current.loaded.version))
