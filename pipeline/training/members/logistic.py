"""The logistic baseline: L2-penalised logistic regression on standardised features, fitted by Newton/IRLS,
exported as a small ONNX graph (see tools/train_model.py for how the shipped directional_v1 was made).

Inputs a candidate leaves out get weight 0 (the graph still takes every feature, in FEATURE_NAMES order). Selection
fits every candidate input set (``input_candidates``) with every penalty of the grid on train (standardised by
train's mean and std) and scores it by validation log loss; the lowest wins, the first listed on a tie.

Graph: features[N, N_FEATURES] -> Sub(mean) -> Div(std) -> MatMul(coef) -> Add(intercept) -> Sigmoid -> Reshape
-> prob_up[N]; opset 17. Reductions avoid multithreaded BLAS, whose summation order can vary: the fits and every
score that selection compares use einsum's own single-threaded loops, so the same data gives the same bytes.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.training.datasets import Dataset
from pipeline.training.members.base import INPUT, OUTPUT, FittedMember
from pipeline.training.metrics import classification_metrics
from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, N_FEATURES

OPSET = 17
IR_VERSION = 8  # the IR that introduced opset 17 features; every onnxruntime >= 1.12 reads it
# The penalty grid selection searches. The penalty is on the summed log loss, so what it does scales with the rows
# fitted: at ~360k rows, 0.1 to 100 barely move the weights; the decades run on until the shrinkage is strong.
DEFAULT_L2 = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
DEFAULT_FIT_STRIDE = 10

# Never inputs: raw price levels name the instrument and its price regime rather than its direction.
PRICE_LEVELS = ("mid", "microprice")
# Clock-based groups selection may leave out, each subset of them in turn (the event-count rvol_bps and
# momentum_bps stay in every candidate). On the synthetic feed vwap_dev_h duplicates mom_h (trades print
# at the touch, so the trade VWAP tracks the mean mid: correlation 1.000 at 10 s and 60 s over the default
# 600 s), and mom_10s/mom_60s correlate 0.73.
INPUT_GROUPS = (
    ("rvol", ("rvol_1s_bps", "rvol_10s_bps", "rvol_60s_bps")),
    ("mom", ("mom_1s_bps", "mom_10s_bps", "mom_60s_bps")),
    ("vwap_dev", ("vwap_dev_10s_bps", "vwap_dev_60s_bps")),
)
_unknown = set(PRICE_LEVELS).union(*(names for _, names in INPUT_GROUPS)) - set(FEATURE_NAMES)
assert not _unknown, f"INPUT_GROUPS names features not in FEATURE_NAMES: {sorted(_unknown)}"

def input_candidates() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(name, features left out) for each subset of INPUT_GROUPS left out, price levels always out.

    Ordered by the number of groups left out, then by INPUT_GROUPS order; the name reads as a subtraction,
    e.g. ``all-price-mom``."""
    candidates = []
    for k in range(len(INPUT_GROUPS) + 1):
        for subset in itertools.combinations(INPUT_GROUPS, k):
            name = "-".join(["all", "price"] + [group for group, _ in subset])
            candidates.append((name, PRICE_LEVELS + tuple(f for _, names in subset for f in names)))
    return tuple(candidates)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500.0, 500.0)))


def fit_logistic(z: np.ndarray, y: np.ndarray, l2: float, max_iter: int = 100,
                 tol: float = 1e-10) -> tuple[np.ndarray, float, int]:
    """Newton/IRLS for L2-penalised logistic regression on standardised ``z``: (coef, intercept, iterations)."""
    n, k = z.shape
    design = np.empty((n, k + 1))
    design[:, 0] = 1.0
    design[:, 1:] = z
    penalty = np.full(k + 1, l2)
    penalty[0] = 0.0
    beta = np.zeros(k + 1)
    for it in range(1, max_iter + 1):
        # einsum without optimize runs its own single-threaded loops: same bits every run.
        p = _sigmoid(np.einsum("ni,i->n", design, beta))
        grad = np.einsum("ni,n->i", design, p - y) + penalty * beta
        # two operands, the weights folded into one: ~3x faster than a three-operand einsum, same loops' order
        hess = np.einsum("ni,nj->ij", design * (p * (1.0 - p))[:, None], design) + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < tol:
            break
    return beta[1:].copy(), float(beta[0]), it


@dataclass(frozen=True)
class LogisticFit:
    """A fitted model over all N_FEATURES columns; an unused input has mean 0, std 1 and coef 0."""
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: float
    iterations: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        # einsum rather than a BLAS matmul: the same bits every run, so selection's comparisons repeat.
        return _sigmoid(np.einsum("ni,i->n", (x - self.mean) / self.std, self.coef) + self.intercept)

    def predict_rows(self, x: np.ndarray, rows: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
        """``predict(x[rows])`` a chunk at a time: a period's rows are ~1 GB of float64 at once."""
        return np.concatenate([self.predict(x[rows[i:i + chunk]]) for i in range(0, rows.size, chunk)]
                              or [np.zeros(0)])


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and std of ``x``; a constant column gets std 1 (it carries no signal and stays at 0)."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[~(std > 1e-12)] = 1.0
    return mean, std


def fit_inputs(x: np.ndarray, y: np.ndarray, used: np.ndarray, l2: float,
               scale: tuple[np.ndarray, np.ndarray] | None = None) -> LogisticFit:
    """Fit on the ``used`` columns of ``x``, standardised by ``scale`` (default: ``x``'s own mean and std)."""
    mean, std = standardiser(x) if scale is None else scale
    mean, std = np.where(used, mean, 0.0), np.where(used, std, 1.0)
    coef = np.zeros(N_FEATURES)
    coef[used], intercept, iterations = fit_logistic(((x - mean) / std)[:, used], y, l2)
    return LogisticFit(mean, std, coef, intercept, iterations)


def select_configuration(x_train: np.ndarray, y_train: np.ndarray, x_validation: np.ndarray,
                         y_validation: np.ndarray, candidates,
                         l2_grid: Sequence[float]) -> tuple[list[dict], int, dict]:
    """Fit every (candidate, penalty) on train and score it on validation: the table (one row per fit),
    the winner's index in it and the winner's validation metrics.

    The winner has the lowest validation log loss; on a tie, the first in table order (candidates in their
    order, each with the penalties in grid order)."""
    scale = standardiser(x_train)
    table, metrics = [], []
    for name, excluded in candidates:
        used = np.array([f not in excluded for f in FEATURE_NAMES])
        for l2 in l2_grid:
            fit = fit_inputs(x_train, y_train, used, l2, scale)
            m = classification_metrics(y_validation, fit.predict(x_validation))
            table.append({"inputs": name, "l2": l2, "validation_log_loss": m["log_loss"],
                          "validation_auc": m["auc"], "validation_accuracy": m["accuracy"],
                          "newton_iterations": fit.iterations})
            metrics.append(m)
    best = min(range(len(table)), key=lambda i: table[i]["validation_log_loss"])
    return table, best, metrics[best]


def build_graph(mean: np.ndarray, std: np.ndarray, coef: np.ndarray, intercept: float, props: dict[str, str],
                name: str = "logistic", version: int = 1, producer: str = "bot4.pipeline.training") -> onnx.ModelProto:
    """The logistic model as an ONNX graph; float32 weights, dynamic batch."""
    inits = [
        numpy_helper.from_array(mean.astype(np.float32), "mean"),
        numpy_helper.from_array(std.astype(np.float32), "std"),
        numpy_helper.from_array(coef.astype(np.float32).reshape(N_FEATURES, 1), "coef"),
        numpy_helper.from_array(np.array([intercept], np.float32), "intercept"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat_shape"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centered"], name="center"),
        helper.make_node("Div", ["centered", "std"], ["standardized"], name="scale"),
        helper.make_node("MatMul", ["standardized", "coef"], ["score"], name="score"),
        helper.make_node("Add", ["score", "intercept"], ["logit"], name="logit"),
        helper.make_node("Sigmoid", ["logit"], ["prob_col"], name="sigmoid"),
        helper.make_node("Reshape", ["prob_col", "flat_shape"], ["prob_up"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", N_FEATURES])],
        [helper.make_tensor_value_info("prob_up", TensorProto.FLOAT, ["N"])],
        inits,
        doc_string="P(mid rises over the label horizon | it moves); inputs in FEATURE_NAMES order")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=producer, producer_version=str(version))
    model.ir_version = IR_VERSION
    model.model_version = version
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model




@dataclass(frozen=True)
class LogisticTrainer:
    """The baseline in the member framework: selection (inputs x penalty) on validation, fit on every
    ``fit_stride``-th training row; no refit on train + validation (validation then calibrates it)."""
    l2_grid: Sequence[float] = DEFAULT_L2
    fit_stride: int = DEFAULT_FIT_STRIDE
    name: str = "logistic"
    member_kind: str = "vector"

    def fit(self, train: Dataset, validation: Dataset, seed: int) -> FittedMember:
        # seed: IRLS has no randomness; the argument is the members' common interface
        fit_rows = np.arange(0, len(train), self.fit_stride)
        x_train, y_train = train.x[fit_rows].astype(np.float64), train.y[fit_rows]
        x_valid = validation.x.astype(np.float64)
        candidates = input_candidates()
        table, best, _ = select_configuration(x_train, y_train, x_valid, validation.y, candidates, self.l2_grid)
        chosen = table[best]
        excluded = dict(candidates)[chosen["inputs"]]
        used = np.array([f not in excluded for f in FEATURE_NAMES])
        fit = fit_inputs(x_train, y_train, used, chosen["l2"])
        props = {"feature_schema_hash": str(FEATURE_SCHEMA_HASH), "feature_names": ",".join(FEATURE_NAMES),
                 "horizon": str(train.horizon)}
        onnx_bytes = build_graph(fit.mean, fit.std, fit.coef, fit.intercept, props,
                                 name=self.name).SerializeToString(deterministic=True)
        metadata = {
            "kind": "logistic_regression", "input": INPUT, "output": OUTPUT, "opset": OPSET,
            "ir_version": IR_VERSION,
            "fit": {"fit_stride": self.fit_stride, "fitted_rows": int(fit_rows.size), "inputs": chosen["inputs"],
                    "l2": chosen["l2"], "newton_iterations": fit.iterations,
                    "weight_zero_features": list(excluded),
                    "selection": {"criterion": "lowest validation log loss of a fit on train; first in table "
                                               "order on a tie", "l2_grid": list(self.l2_grid),
                                  "candidates": table}},
            "weights": {"mean": fit.mean.tolist(), "std": fit.std.tolist(), "coef": fit.coef.tolist(),
                        "intercept": fit.intercept},
        }
        return FittedMember(onnx_bytes, metadata, lambda x: fit.predict(np.asarray(x, np.float64)))
