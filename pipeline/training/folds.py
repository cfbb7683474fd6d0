"""Walk-forward folds over a time-ordered Dataset, purged and embargoed at each boundary.

The rows are cut into ``n_folds + 1`` blocks of equal row count. Fold k (1..n_folds) tests on block k and learns
from blocks 0..k-1 (an expanding window): the last ``validation_fraction`` of those rows are its validation period
(early stopping, hyperparameters, calibration, the ensemble's weights and threshold), the rest its training period.
Test is never read for a choice.

At each boundary (train | validation, validation | test), at the position ``b`` of the first row after it:
- purge: a row before ``b`` whose label reads a record at or after ``b`` is dropped (its label would see the next
  period's prices);
- embargo: a row after ``b`` within ``embargo`` records of it is dropped (its slow features still remember the end
  of the previous period, which the earlier period's labels read).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.training.datasets import Dataset


@dataclass(frozen=True)
class Fold:
    index: int
    train: np.ndarray       # row indices into the dataset
    validation: np.ndarray
    test: np.ndarray

    def periods(self, ds: Dataset) -> dict:
        """Each period's rows and origin ranges."""
        return {name: ds.take(getattr(self, name)).span() for name in ("train", "validation", "test")}


def label_span_records(ds: Dataset) -> int:
    """Records between a row and the record its label reads: the 99th percentile (a default embargo)."""
    return int(np.ceil(np.percentile(ds.label_end - ds.position, 99))) if len(ds) else 0


def _period(ds: Dataset, lo: int, hi: int, embargo: int, purge_end: bool = True) -> np.ndarray:
    """Rows [lo, hi): the embargo after the boundary at ``lo`` and the purge before the boundary at ``hi``."""
    rows = np.arange(lo, hi)
    if lo > 0:
        rows = rows[ds.position[rows] >= ds.position[lo] + embargo]
    if purge_end and hi < len(ds):
        rows = rows[ds.label_end[rows] < ds.position[hi]]
    return rows


def walk_forward(ds: Dataset, n_folds: int, embargo: int, validation_fraction: float = 0.25) -> list[Fold]:
    if n_folds < 1:
        raise ValueError(f"n_folds={n_folds} must be >= 1")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction={validation_fraction} must be in (0, 1)")
    if embargo < 0:
        raise ValueError(f"embargo={embargo} must be >= 0 records")
    n = len(ds)
    edges = [round(n * b / (n_folds + 1)) for b in range(n_folds + 2)]
    folds = []
    for k in range(1, n_folds + 1):
        test_start, test_end = edges[k], edges[k + 1]
        valid_start = round(test_start * (1.0 - validation_fraction))
        # The test block's end is no boundary of this fold (nothing after it is fitted on): no purge there.
        folds.append(Fold(k, _period(ds, 0, valid_start, embargo), _period(ds, valid_start, test_start, embargo),
                          _period(ds, test_start, test_end, embargo, purge_end=False)))
    return folds
