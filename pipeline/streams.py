"""The journal's streams, declared once: what each holds and which tap ring carries it in a live run. The
journal process, the recorder, fused mode's journal, journal replay and status all read this table."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages import records


@dataclass(frozen=True)
class Stream:
    name: str          # the journal's file stem and the recorder's stream
    dtype: np.dtype
    tap: str           # the ring that taps it off the hot path live (producer.journal)
    recorded: bool = True  # copied into the database by the recorder


# Order is the journal's and the recorder's (counters, segment ids, the summary).
STREAMS = (Stream("market", records.MARKET_EVENT, "feed.journal"),
           Stream("intent", records.ORDER_INTENT, "strategy.journal"),
           Stream("exec", records.EXEC_REPORT, "execute.journal"),
           Stream("quarantine", records.MARKET_EVENT, "validate.journal"),  # validate taps what it refused
           # What each execute step consumed, in order: a live run's journal replays to the same reports.
           # Only for replay, so not in the database.
           Stream("execute_step", records.EXECUTE_STEP, "execute.steps", recorded=False))
NAMES = tuple(s.name for s in STREAMS)
RECORDED = tuple(s.name for s in STREAMS if s.recorded)
BY_NAME = {s.name: s for s in STREAMS}
