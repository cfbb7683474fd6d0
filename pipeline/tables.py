"""The seqlock tables a run keeps in shared memory beside its rings, by name and layout: the online feature
store (the latest FEATURE_VECTOR per instrument key; the feature stage is its only writer), the GARCH
parameters in use (one slot; the supervisor and refits publish, risk reads) and the allocator's weights (one
slot; the supervisor, operators and the auto-tuner publish, the strategy stage reads). Their readers and publishers
are in ``pipeline.store``; the supervisor creates both, the stages attach them.

Beside them, execute's positions (:class:`PositionsTable`, no seqlock): the supervisor creates it, execute holds
it as its kernel state's positions, cash and fees, tools read it.
"""
from __future__ import annotations

import numpy as np

from pipeline import names
from shm import segment
from shm.seqlock import SeqlockTable
from stages import garch
from stages.records import FEATURE_VECTOR
from stages.strategies.allocator import PUBLISHED_WEIGHTS
from stages.universe import MAX_KEYS, MAX_SYMBOLS, MAX_VENUES, instrument_key

GARCH_SLOT = 0
WEIGHTS_SLOT = 0


def feature_table(run: str, create: bool = False) -> SeqlockTable:
    make = SeqlockTable.create if create else SeqlockTable.attach
    return make(names.feature_store(run), FEATURE_VECTOR, MAX_KEYS)


def garch_table(run: str, create: bool = False) -> SeqlockTable:
    make = SeqlockTable.create if create else SeqlockTable.attach
    return make(names.garch_params(run), garch.PUBLISHED_GARCH, 1)


def weights_table(run: str, create: bool = False) -> SeqlockTable:
    make = SeqlockTable.create if create else SeqlockTable.attach
    return make(names.allocator_weights(run), PUBLISHED_WEIGHTS, 1)


POSITION, CASH, FEES = range(3)  # rows of PositionsTable.values, per instrument key
NAME_BYTES = 32
INSTRUMENT_NAMES = np.dtype([("n_venues", np.int64), ("n_symbols", np.int64),
                             ("venues", np.uint8, (MAX_VENUES, NAME_BYTES)),
                             ("symbols", np.uint8, (MAX_SYMBOLS, NAME_BYTES))])
POSITIONS_LAYOUT = segment.layout_hash("positions-table", 1, MAX_KEYS, INSTRUMENT_NAMES)


class PositionsTable:
    """``/bot4.<run>.positions``: execute's position (base units), cash and fees (quote units) per instrument key,
    and the run's venue and symbol names (written once by the supervisor, before execute starts).

    A live execute's kernel state holds the rows of ``values`` as its own positions, cash and fees arrays, so
    publishing them costs the hot path nothing. Concurrency: execute is the only writer; every value is an aligned
    8-byte word, so a reader sees each one whole, but values of different keys or rows may be from different steps."""

    def __init__(self, seg: segment.Segment):
        self.segment = seg
        self.values = seg.payload(0, np.float64, 3 * MAX_KEYS).reshape(3, MAX_KEYS)
        self.names = seg.payload(self.values.nbytes, INSTRUMENT_NAMES, 1)

    @classmethod
    def create(cls, run: str, venues, symbols) -> PositionsTable:
        table = cls(segment.create(names.positions(run), 3 * MAX_KEYS * 8 + INSTRUMENT_NAMES.itemsize,
                                   POSITIONS_LAYOUT, MAX_KEYS, 8))
        record = table.names[0]
        record["n_venues"], record["n_symbols"] = len(venues), len(symbols)
        for field, given in (("venues", venues), ("symbols", symbols)):
            for i, name in enumerate(given):
                raw = name.encode()[:NAME_BYTES]  # a label: a venue name longer than the field is cut
                record[field][i, :len(raw)] = np.frombuffer(raw, np.uint8)
        return table

    @classmethod
    def attach(cls, run: str) -> PositionsTable:
        return cls(segment.attach(names.positions(run), POSITIONS_LAYOUT))

    def instruments(self) -> list[tuple[int, str, str]]:
        """(key, venue name, symbol name) of every instrument of the run."""
        record = self.names[0]

        def text(row) -> str:
            return bytes(row).rstrip(b"\0").decode("utf-8", "ignore")

        return [(instrument_key(v, s), text(record["venues"][v]), text(record["symbols"][s]))
                for v in range(int(record["n_venues"])) for s in range(int(record["n_symbols"]))]

    def close(self) -> None:
        """Drop the views, then the mapping (views must not outlive it)."""
        self.values = self.names = None
        self.segment.close()
