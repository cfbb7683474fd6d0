"""What a member trainer gives back, and the interface the trainer drives."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from pipeline.training.datasets import Dataset
from stages.records import N_FEATURES

INPUT = {"name": "features", "dtype": "float32", "shape": ["N", N_FEATURES]}
OUTPUT = {"name": "prob_up", "dtype": "float32", "shape": ["N"]}


@dataclass(frozen=True)
class FittedMember:
    onnx_bytes: bytes
    metadata: dict                                  # kind, opset, ir_version, the member's own training choices
    predict: Callable[[np.ndarray], np.ndarray]     # the library's own prob_up (float64), for checking the export


class MemberTrainer(Protocol):
    name: str
    member_kind: str  # "vector": input features [N, 28]

    def fit(self, train: Dataset, validation: Dataset, seed: int) -> FittedMember:
        """Fit on ``train``; every choice (early stopping, hyperparameters) on ``validation`` only."""
