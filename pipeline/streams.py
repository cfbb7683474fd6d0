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


# Order is the journal's and the recorder's (counters, segment ids, the summary).
STREAMS = (Stream("market", records.MARKET_EVENT, "feed.journal"),
           Stream("intent", records.ORDER_INTENT, "strategy.journal"),
           Stream("exec", records.EXEC_REPORT, "execute.journal"),
           Stream("quarantine", records.MARKET_EVENT, "validate.journal"))  # validate taps what it refused
NAMES = tuple(s.name for s in STREAMS)
BY_NAME = {s.name: s for s in STREAMS}
