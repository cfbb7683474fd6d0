"""What a member trainer gives back, and the interface the trainer drives."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from pipeline.training.datasets import Dataset
from stages.records import N_FEATURES

INPUT = {"name": "features", "dtype": "float32", "shape": ["N", N_FEATURES]}
OUTPUT = {"name": "prob_up", "dtype": "float32", "shape": ["N"]}


def vector_feeds(ds: Dataset) -> np.ndarray:
    return ds.x


@dataclass(frozen=True)
class FittedMember:
    onnx_bytes: bytes
    metadata: dict                                  # kind, opset, ir_version, the member's own training choices
    predict: Callable                               # the library's own prob_up (float64) of feeds(ds), for checking
    # A Dataset's rows as the graph's input: the features array of a vector member, or {input name: array} of a
    # sequence or graph member (gathered from the Dataset's History).
    feeds: Callable[[Dataset], np.ndarray | dict] = vector_feeds


class MemberTrainer(Protocol):
    name: str
    member_kind: str  # "vector": features [N, 28]; "sequence": window [N, K, 28]; "graph": nodes [N, U, 28], target

    def fit(self, train: Dataset, validation: Dataset, seed: int) -> FittedMember:
        """Fit on ``train``; every choice (early stopping, hyperparameters) on ``validation`` only."""
