"""The online feature store of a live run: the latest feature vector per (venue, symbol) in shared memory.

The supervisor creates ``/bot4.<run>.features`` (a :class:`shm.seqlock.SeqlockTable` of FEATURE_VECTOR,
one slot per instrument key: ``stages.universe.instrument_key``); the feature stage is its only writer (at
the end of each batch, every key the batch touched); any process on the host may read it at any time without
stopping or slowing the writer, and never sees a half-written vector (the seqlock protocol is in
``shm/seqlock.py``). The segment goes with the run.
"""
from __future__ import annotations

import numpy as np

from pipeline import tables
from shm.seqlock import SeqlockTable
from stages.records import FEATURE_SCHEMA_HASH, FEATURE_VECTOR
from stages.universe import MAX_KEYS, instrument_key, key_symbol, key_venue


def create(run: str) -> SeqlockTable:
    return tables.feature_table(run, create=True)


def attach(run: str) -> SeqlockTable:
    return tables.feature_table(run)


class FeatureStoreReader:
    """Reads a running pipeline's latest vectors. Not for the hot path (one Python call per read)."""

    def __init__(self, run: str):
        self.table = attach(run)

    def latest(self, venue: int, symbol: int) -> tuple[np.ndarray, int] | None:
        """(the latest vector of (venue, symbol), how many times it was written), or None if never."""
        record, writes = self.table.read(instrument_key(venue, symbol))
        if writes == 0:
            return None
        if record["schema_hash"] != FEATURE_SCHEMA_HASH:
            raise ValueError(f"{self.table.segment.name}: schema_hash={int(record['schema_hash'])}, this build's is "
                             f"{FEATURE_SCHEMA_HASH}: the run was started from other code")
        return record, writes

    def snapshot(self) -> np.ndarray:
        """The latest vector of every key written so far (each read on its own: a consistent vector per key,
        not one instant across keys)."""
        found = []
        for key in range(MAX_KEYS):
            got = self.latest(key_venue(key), key_symbol(key))
            if got is not None:
                found.append(got[0])
        return np.array(found, FEATURE_VECTOR)

    def close(self) -> None:
        self.table.close()
