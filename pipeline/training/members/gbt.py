"""Gradient-boosted trees (LightGBM), converted to ONNX with onnxmltools.

Fit: binary log loss, one thread and LightGBM's deterministic mode (the same data and seed give the same trees, so
the same ONNX bytes). For each configuration of the grid, boosting stops when validation log loss has not improved
for ``patience`` rounds. Of every (configuration, number of rounds) whose validation log loss is within
``loss_tolerance`` of the lowest, the one with the fewest tree nodes wins (then the lower loss, then grid order):
inference time grows with the nodes, and a few ten-thousandths of a nat are not worth twice the time. Test is never
seen. The price levels (mid, microprice) are zeroed before fitting, as the logistic
baseline leaves them out: a raw price names the instrument and its price regime rather than its direction, and a
constant column is never split on.

Graph: onnxmltools converts the booster (a TreeEnsembleClassifier giving ``label`` and ``probabilities`` [N, 2]);
its trees are then put in a TreeEnsembleRegressor summing the margin, followed by a Sigmoid and a Reshape to
``prob_up`` [N], the baseline's interface. The same trees and sums, without the classifier's label and two-column
output: 20 % less time per batch of 64 in onnxruntime (124 against 158 us, same machine, same invocation). The
export is checked against LightGBM's own probabilities on the validation rows (max abs difference <=
``EXPORT_TOLERANCE``; the trees' thresholds become float32 in ONNX and the scores are summed in float32).
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
# Nats of validation log loss given up for a smaller model: the GBT's lead over the logistic baseline on held-out
# seeds was 0.034 nats (models/gbt/v1), so this keeps >= 99 % of it.
DEFAULT_LOSS_TOLERANCE = 0.0002
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
    trees = next(n for n in graph.node if n.op_type == "TreeEnsembleClassifier")
    a = {att.name: helper.get_attribute_value(att) for att in trees.attribute}
    if a["post_transform"] != b"LOGISTIC" or set(a["class_ids"]) != {0} or a.get("base_values"):
        raise ValueError("the converted booster is not a binary classifier of one logistic margin")
    margin = helper.make_node(
        "TreeEnsembleRegressor", ["features"], ["margin"], domain="ai.onnx.ml", name="margin", n_targets=1,
        aggregate_function="SUM", post_transform="NONE",
        **{k: a[k] for k in ("nodes_falsenodeids", "nodes_featureids", "nodes_modes", "nodes_nodeids",
                             "nodes_treeids", "nodes_truenodeids", "nodes_values", "nodes_missing_value_tracks_true")},
        target_ids=[0] * len(a["class_ids"]), target_nodeids=a["class_nodeids"], target_treeids=a["class_treeids"],
        target_weights=a["class_weights"])
    del graph.node[:], graph.initializer[:], graph.output[:]
    graph.initializer.append(helper.make_tensor("flat", TensorProto.INT64, [1], [-1]))
    graph.node.extend([margin, helper.make_node("Sigmoid", ["margin"], ["probability"], name="probability"),
                       helper.make_node("Reshape", ["probability", "flat"], ["prob_up"], name="prob_up")])
    graph.output.append(helper.make_tensor_value_info("prob_up", TensorProto.FLOAT, ["N"]))
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.doc_string = "P(mid rises over the label horizon | it moves); inputs in FEATURE_NAMES order"
    model.producer_name, model.producer_version = "bot4.pipeline.training", "1"
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model


def _nodes_by_rounds(booster) -> np.ndarray:
    """Tree nodes (splits and leaves) of the booster's first r trees, at index r - 1."""
    return np.cumsum([2 * tree["num_leaves"] - 1 for tree in booster.dump_model()["tree_info"]])


@dataclass(frozen=True)
class GbtTrainer:
    grid: Sequence[tuple[int, float]] = DEFAULT_GRID
    learning_rate: float = DEFAULT_LEARNING_RATE
    max_rounds: int = DEFAULT_MAX_ROUNDS
    patience: int = DEFAULT_PATIENCE
    fit_stride: int = DEFAULT_FIT_STRIDE
    loss_tolerance: float = DEFAULT_LOSS_TOLERANCE
    max_nodes: int = 0  # tree nodes the export may hold (0: no budget); inference's time grows with them
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
            curve: dict = {}
            booster = lgb.train(params, d_train, self.max_rounds, valid_sets=[d_valid], valid_names=["validation"],
                                callbacks=[lgb.early_stopping(self.patience, verbose=False),
                                           lgb.record_evaluation(curve)])
            losses = np.asarray(curve["validation"]["binary_logloss"], np.float64)[:booster.best_iteration]
            table.append({"num_leaves": num_leaves, "min_data_in_leaf": params["min_data_in_leaf"],
                          "best_rounds": int(booster.best_iteration), "validation_log_loss": float(losses.min())})
            boosters.append((booster, losses))
        sizes = [_nodes_by_rounds(b) for b, _ in boosters]
        budget = self.max_nodes or np.iinfo(np.int64).max
        fits = [(i, r) for i, (_, losses) in enumerate(boosters) for r in range(1, losses.size + 1)
                if sizes[i][r - 1] <= budget]
        if not fits:
            raise ValueError(f"gbt: max_nodes={self.max_nodes} holds no tree of the grid {list(self.grid)}; give "
                             f"at least {min(int(s[0]) for s in sizes)}")
        floor = min(float(boosters[i][1][r - 1]) for i, r in fits) + self.loss_tolerance
        # (nodes, loss, grid index, rounds) of every candidate size within budget and tolerance; the first is taken
        best_nodes, _, best, rounds = min(
            (int(sizes[i][r - 1]), float(boosters[i][1][r - 1]), i, r) for i, r in fits
            if boosters[i][1][r - 1] <= floor)
        chosen = dict(table[best], rounds=rounds, nodes=best_nodes,
                      validation_log_loss_at_rounds=float(boosters[best][1][rounds - 1]))
        # Keep only the rounds chosen: the exported model is the one validation chose.
        booster = lgb.Booster(model_str=float32_thresholds(boosters[best][0].model_to_string(num_iteration=rounds)))
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
                    "zeroed_features": list(PRICE_LEVELS), "chosen": chosen,
                    "selection": {"criterion": f"fewest tree nodes among (configuration, rounds) within "
                                               f"{self.loss_tolerance} nats of the lowest validation log loss"
                                               + (f" of those within {self.max_nodes} nodes" if self.max_nodes
                                                  else "") + "; then the lower loss, then grid order",
                                  "max_nodes": self.max_nodes, "candidates": table},
                    "lightgbm": lgb.__version__, "trees": booster.num_trees()},
        }
        return FittedMember(onnx_bytes, metadata, predict)
