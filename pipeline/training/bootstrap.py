"""Block-bootstrap standard errors of a fold's figures (arch's circular block bootstrap).

Neighbouring rows are not independent draws: a label spans the next H records of its stream, so rows near each
other share most of their future (and their slow features). Resampling single rows would treat them as independent
and understate the error; resampling blocks at least one label span long keeps each label's overlap inside a block.
The block length is the 99th percentile, over rows, of the number of rows between a row and the record its label
reads (``block_rows``).
"""
from __future__ import annotations

import numpy as np
from arch.bootstrap import CircularBlockBootstrap

from pipeline.training.datasets import Dataset

DEFAULT_REPS = 200


def block_rows(ds: Dataset) -> int:
    """Rows one label spans (99th percentile over rows): the bootstrap's block length, at least 1."""
    if not len(ds):
        return 1
    ends = np.searchsorted(ds.position, ds.label_end, side="left")
    return max(1, int(np.ceil(np.percentile(ends - np.arange(len(ds)), 99))))


def standard_errors(statistic, block: int, reps: int, seed: int, *data: np.ndarray) -> np.ndarray:
    """Standard deviation over ``reps`` circular block resamples of ``statistic(*data)`` (an array of figures);
    NaN where fewer than two resamples gave a finite value."""
    if block < 1:
        raise ValueError(f"block={block} must be >= 1")
    if reps < 2:
        raise ValueError(f"reps={reps} must be >= 2")
    boot = CircularBlockBootstrap(block, *data, seed=np.random.default_rng(seed))
    draws = np.atleast_2d(boot.apply(statistic, reps))
    out = np.full(draws.shape[1], np.nan)
    for j in range(draws.shape[1]):
        finite = draws[np.isfinite(draws[:, j]), j]
        if finite.size >= 2:
            out[j] = finite.std(ddof=1)
    return out
