"""Gradient-boosted trees (LightGBM), converted to ONNX with onnxmltools.

Fit: binary log loss, one thread and LightGBM's deterministic mode (the same data and seed give the same trees, so
the same ONNX bytes). For each configuration of the grid, boosting stops when validation log loss has not improved
for ``patience`` rounds; the configuration with the lowest validation log loss at its best round wins (first in grid
order on a tie). Test is never seen. The price levels (mid, microprice) are zeroed before fitting, as the logistic
baseline leaves them out: a raw price names the instrument and its price regime rather than its direction, and a
constant column is never split on.

Graph: onnxmltools' TreeEnsembleClassifier (zipmap off) gives ``label`` and ``probabilities`` [N, 2]; a Gather of
column 1 makes ``prob_up`` [N] and ``label`` is dropped, so the graph has the baseline's interface. The export is
checked against LightGBM's own probabilities on the validation rows (max abs difference <= ``EXPORT_TOLERANCE``;
the trees' thresholds become float32 in ONNX and the scores are summed in float32).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from pipeline.training.datasets import Dataset
from pipeline.training.members.base import INPUT, OUTPUT, FittedMember
from pipeline.training.members.logistic import PRICE_LEVELS
from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, N_FEATURES

OPSET = 15            # the highest onnxmltools' LightGBM converter targets
ML_OPSET = 1
EXPORT_TOLERANCE = 1e-5
# (num_leaves, min_data_in_leaf as a fraction of fitted rows): small trees, as the signal is weak and rows overlap
DEFAULT_GRID = ((7, 0.002), (15, 0.005), (31, 0.01))
DEFAULT_LEARNING_RATE = 0.05
DEFAULT_MAX_ROUNDS = 400
DEFAULT_PATIENCE = 30
DEFAULT_FIT_STRIDE = 10
_DROPPED = np.array([f in PRICE_LEVELS for f in FEATURE_NAMES])


def _inputs(x: np.ndarray) -> np.ndarray:
    out = np.array(x, np.float32, copy=True)
    out[:, _DROPPED] = 0.0
    return out


def float32_thresholds(model_text: str) -> str:
    """The model with every split threshold t replaced by the largest float32 <= t.

    For a float32 input x, ``x <= t`` and ``x <= down32(t)`` agree, so LightGBM's predictions do not change; and
    ONNX stores thresholds as float32, where rounding t to nearest could send an x equal to the rounded value
    down the other branch (seen: 0.025 off on a test row). After this, the cast is exact."""
    # tree_sizes gives each tree's length in bytes (for parallel parsing); the edit changes them, and without
    # the line LightGBM parses the trees in sequence.
    lines = [line for line in model_text.split("\n") if not line.startswith("tree_sizes=")]
    for i, line in enumerate(lines):
        if line.startswith("threshold="):
            t = np.array(line[len("threshold="):].split(), np.float64)
            t32 = t.astype(np.float32)
            above = t32.astype(np.float64) > t
            t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
            lines[i] = "threshold=" + " ".join(repr(float(v)) for v in t32.astype(np.float64))
    return "\n".join(lines)


def to_onnx(booster, name: str, props: dict[str, str]) -> onnx.ModelProto:
    """The booster as a graph ``features`` float32 [N, 28] -> ``prob_up`` float32 [N]."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = onnxmltools.convert_lightgbm(booster, name=name, initial_types=[("features", FloatTensorType(
        [None, N_FEATURES]))], zipmap=False, target_opset=OPSET)
    graph = model.graph
    probabilities = next(o.name for o in graph.output if o.name != "label")
    graph.initializer.append(helper.make_tensor("up_column", TensorProto.INT64, [], [1]))
    graph.node.append(helper.make_node("Gather", [probabilities, "up_column"], ["prob_up"], axis=1,
                                       name="prob_up_column"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("prob_up", TensorProto.FLOAT, ["N"]))
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.doc_string = "P(mid rises over the label horizon | it moves); inputs in FEATURE_NAMES order"
    model.producer_name, model.producer_version = "bot4.pipeline.training", "1"
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model


@dataclass(frozen=True)
class GbtTrainer:
    grid: Sequence[tuple[int, float]] = DEFAULT_GRID
    learning_rate: float = DEFAULT_LEARNING_RATE
    max_rounds: int = DEFAULT_MAX_ROUNDS
    patience: int = DEFAULT_PATIENCE
    fit_stride: int = DEFAULT_FIT_STRIDE
    name: str = "gbt"
    member_kind: str = "vector"

    def fit(self, train: Dataset, validation: Dataset, seed: int) -> FittedMember:
        import lightgbm as lgb

        fit_rows = np.arange(0, len(train), self.fit_stride)
        x_train, y_train = _inputs(train.x[fit_rows]), train.y[fit_rows]
        x_valid = _inputs(validation.x)
        table, boosters = [], []
        for num_leaves, leaf_fraction in self.grid:
            params = {"objective": "binary", "metric": "binary_logloss", "learning_rate": self.learning_rate,
                      "num_leaves": num_leaves, "min_data_in_leaf": max(20, int(leaf_fraction * fit_rows.size)),
                      "feature_fraction": 0.8, "feature_fraction_seed": seed, "bagging_fraction": 0.8,
                      "bagging_freq": 1, "bagging_seed": seed, "seed": seed, "num_threads": 1,
                      "deterministic": True, "force_row_wise": True, "verbose": -1}
            d_train = lgb.Dataset(x_train, y_train, free_raw_data=False)
            d_valid = lgb.Dataset(x_valid, validation.y, reference=d_train)
            booster = lgb.train(params, d_train, self.max_rounds, valid_sets=[d_valid], valid_names=["validation"],
                                callbacks=[lgb.early_stopping(self.patience, verbose=False)])
            table.append({"num_leaves": num_leaves, "min_data_in_leaf": params["min_data_in_leaf"],
                          "best_rounds": int(booster.best_iteration),
                          "validation_log_loss": float(booster.best_score["validation"]["binary_logloss"])})
            boosters.append(booster)
        best = min(range(len(table)), key=lambda i: table[i]["validation_log_loss"])
        # Keep only the rounds up to the best: the exported model is the one validation chose.
        booster = lgb.Booster(model_str=float32_thresholds(
            boosters[best].model_to_string(num_iteration=boosters[best].best_iteration)))
        props = {"feature_schema_hash": str(FEATURE_SCHEMA_HASH), "feature_names": ",".join(FEATURE_NAMES),
                 "horizon": str(train.horizon)}
        onnx_bytes = to_onnx(booster, self.name, props).SerializeToString(deterministic=True)

        def predict(x: np.ndarray) -> np.ndarray:
            return booster.predict(_inputs(x)).astype(np.float64)

        metadata = {
            "kind": "lightgbm", "input": INPUT, "output": OUTPUT, "opset": OPSET, "ml_opset": ML_OPSET,
            "ir_version": onnx.load_from_string(onnx_bytes).ir_version,
            "fit": {"fit_stride": self.fit_stride, "fitted_rows": int(fit_rows.size),
                    "learning_rate": self.learning_rate, "max_rounds": self.max_rounds, "patience": self.patience,
                    "zeroed_features": list(PRICE_LEVELS), "chosen": table[best],
                    "selection": {"criterion": "lowest validation log loss at the early-stopping round; first in "
                                               "grid order on a tie", "candidates": table},
                    "lightgbm": lgb.__version__, "trees": booster.num_trees()},
        }
        return FittedMember(onnx_bytes, metadata, predict)
