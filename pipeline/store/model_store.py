"""Models handed to a running pipeline: ``bot4 model publish RUN DIR`` and ``bot4 model rollback RUN``.

The supervisor of a run with an inference stage creates ``/bot4.<run>.model`` (pipeline.hosting.model_swap has its
layout). A request carries an action and a path. With standby swaps (``inference.swap = standby``, the default:
pipeline.hosting.standby) the supervisor spawns a standby inference process that loads the set and takes the stage
over at a batch boundary; in-process (``in_process``) the serving process loads it in steps between batches and swaps
at a batch boundary. Either way the answer comes in ``RESULT`` with the request's sequence: taken, or refused and why
(a refused publication changes nothing). Rollback returns to the model set in use before the last swap (loaded again
by a standby; held loaded in-process). The segment goes with the run.
"""
from __future__ import annotations

import time

from pipeline import names
from pipeline.hosting.model_swap import REQUEST, RESULT, message, table, text_of
from shm import segment
from shm.seqlock import SeqlockTable
from shm.segment import SegmentError


class PublishError(ValueError):
    """A model set that must not, or cannot, reach the running pipeline."""


def create(run: str):
    return table(run, create=True)


def attach(run: str) -> SeqlockTable:
    try:
        found = table(run)
    except SegmentError:
        if names.control(run) in segment.list_segments(names.run_prefix(run)):
            raise PublishError(f"run {run!r} has no inference stage: no model to replace") from None
        raise PublishError(f"no run named {run!r} is running (no {names.control(run)} in /dev/shm)") from None
    h = found.segment.header
    pid, start = int(h[segment.H_CREATOR_PID]), int(h[segment.H_CREATOR_START_NS])
    del h
    if not segment.process_alive(pid, start):
        found.close()
        raise PublishError(f"run {run!r} is not running: its supervisor (pid {pid}) is dead; its shared memory goes "
                           "at the next start under that name")
    return found


def request(run: str, action: int, path: str = "", timeout_s: float = 180.0) -> tuple[bool, int, str]:
    """Send a request to the running ``run`` and wait for its inference host's answer: (taken, the version in use,
    the model's name or why it was refused). Raises PublishError when nobody answers within ``timeout_s``."""
    found = attach(run)
    try:
        seq = found.publish(REQUEST, message(action, path))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rec, _ = found.read(RESULT)
            if int(rec["seq"]) >= seq:
                if int(rec["seq"]) > seq:  # a later request was answered: ours was superseded before it was seen
                    return False, int(rec["version"]), "superseded by a later request before the host saw it"
                return bool(rec["ok"]), int(rec["version"]), text_of(rec)
            time.sleep(0.01)
        raise PublishError(f"run {run!r}: its inference stage did not answer within {timeout_s:g} s (not running "
                           "yet, stopped or parked?); the request stays and is taken when it next serves a batch")
    finally:
        found.close()
