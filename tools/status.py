"""``bot4 status RUN``: the live figures of a run (pipeline.status_view), or its last account once it is gone."""
from __future__ import annotations

import sys
import time

from pipeline.status_view import StatusView, supervisor_alive
from shm import control as cb


def main(run: str) -> int:
    from pipeline import names
    from shm.segment import SegmentError
    try:
        block = cb.ControlBlock.attach(names.control(run))
    except SegmentError as exc:
        from pipeline.safety import postmortem
        account = postmortem.read(run)
        if account:
            print("\n".join(postmortem.describe(account)))
        else:
            print(f"bot4 status: {exc}", file=sys.stderr)
        return 1
    view = StatusView(block)
    view.lines()
    if supervisor_alive(block):
        time.sleep(1.0)
    print("\n".join(view.lines()))
    return 0 if supervisor_alive(block) else 1
