"""The seqlock tables a run keeps in shared memory beside its rings, by name and layout: the online feature
store (the latest FEATURE_VECTOR per instrument key; the feature stage is its only writer), the GARCH
parameters in use (one slot; the supervisor and refits publish, risk reads) and the allocator's weights (one
slot; the supervisor, operators and the auto-tuner publish, the strategy stage reads). Their readers and publishers
are in ``pipeline.store``; the supervisor creates both, the stages attach them.
"""
from __future__ import annotations

from pipeline import names
from shm.seqlock import SeqlockTable
from stages import garch
from stages.records import FEATURE_VECTOR
from stages.strategies.allocator import PUBLISHED_WEIGHTS
from stages.universe import MAX_KEYS

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
