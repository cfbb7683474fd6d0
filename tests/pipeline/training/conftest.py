import numpy as np
import pytest

from pipeline.training.datasets import Dataset
from stages.records import N_FEATURES


def make_dataset(n: int, span: int = 5, seed: int = 0, signal: float = 1.0) -> Dataset:
    """Rows at positions 0, 2, 4, ... (every other record labelled); each label reads ``span`` records later; y
    depends on feature 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    y = (signal * x[:, 0] + rng.normal(size=n) > 0).astype(np.float64)
    position = np.arange(n, dtype=np.int64) * 2
    return Dataset(x, y, np.zeros(n, np.int64), position * 1000, position, position, position + span, 3)


@pytest.fixture(scope="session")
def synthetic_vectors():
    """Feature vectors of two short synthetic markets (the real feed, validate and feature kernels)."""
    from pipeline.hosting.fused import collect_features
    return {seed: collect_features(seed=seed, n_events=30_000) for seed in (1, 2)}
