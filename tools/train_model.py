"""Train the directional model and export it as ONNX plus JSON metadata.

    python -m tools.train_model [--seed S] [--events N] [--horizon H] [--l2 L [L ...]] [--fit-stride K]
                                [--out models/directional_v1.onnx]

Features come from ``pipeline.hosting.fused.collect_features``: the real synthetic feed, validate and feature
kernels with the default configuration, so training and serving see the same market and the same code.
Unpaced, the feed's synthetic clock has a 100 us mean gap between events (whatever ``feed.rate_eps`` says),
the default ``feed.rate_eps`` of 10,000 events/s that a live run paces at, so ``--events`` sets the market
time: the default 6,000,000 events are ~600 s, about twenty regimes per symbol (``feed.regime_mean_s``
30 s) and ten half-lives of the slowest clock-based features (60 s).

Label: for a feature record of stream (venue, symbol), 1 if that stream's mid ((bid + ask) / 2) is
higher ``horizon`` records later in the same stream, 0 if lower. Records with no future that far and
records whose future mid is unchanged are dropped: the model estimates P(up | the mid moved), which is
symmetric around 0.5, so a strategy can read 0.5 as "no view". (Keeping ties as 0 would bias every
prediction towards "down" in quiet markets.) Rows with a non-finite feature are dropped too.

Model: logistic regression on standardised features, fitted by Newton/IRLS with an L2 penalty on the
weights (not the intercept). Inputs a candidate leaves out get weight 0 (the graph still takes every
feature, in FEATURE_NAMES order).

Split by time into three periods of labelled rows: the first 60 % train, the next 15 % validation, the
last 25 % test. A row whose label horizon reaches into the next period is purged from its own, so no
later period's price leaks into an earlier one's labels. Selection sees train and validation only: every
candidate input set (``input_candidates``) with every penalty of the ``--l2`` grid is fitted on train
(standardised by train's mean and std) and scored by validation log loss; the lowest wins, the first
listed on a tie. The winner is refitted on train + validation (one period now: only its boundary with
test is purged) and evaluated on test once. The JSON records every candidate's validation figures, the
choice, each period's origin_seq/origin_ts range and the test metrics.

Fits use every ``--fit-stride``-th row of their period; validation and test are scored on every row.
Neighbouring rows are nearly the same observation: a label spans the next 20 records of its stream (~120
rows of all streams), so its neighbours share most of its future and all of its slow features. On the
default history (of the per-event market, before shocks scaled with time), fits on every 4th, 16th and
64th training row scored 0.68251, 0.68256 and 0.68287 validation log loss against 0.68253 on every row
(all-price-vwap_dev, best penalty of each), and a fit on every row took 6-8 s against ~1 s on every 16th
(selection makes 64 fits).

Graph: features[N, N_FEATURES] -> Sub(mean) -> Div(std) -> MatMul(coef) -> Add(intercept) -> Sigmoid -> Reshape
-> prob_up[N]; opset 17. The same seed gives a byte-identical .onnx (no timestamps in the graph; the
creation time is in the JSON only), and reductions avoid multithreaded BLAS, whose summation order can vary:
the fits and every score that selection compares use einsum's own single-threaded loops.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, FEATURE_VECTOR, N_FEATURES, RECORDS_VERSION

MODEL_NAME = "directional_v1"
MODEL_VERSION = 1
OPSET = 17
IR_VERSION = 8  # the IR that introduced opset 17 features; every onnxruntime >= 1.12 reads it
TRAIN_FRACTION = 0.60       # of labelled rows, in time order
VALIDATION_FRACTION = 0.15  # the next rows; test is the remaining 25 %
VERIFY_TOLERANCE = 1e-5

DEFAULT_SEED = 7
DEFAULT_EVENTS = 6_000_000  # ~600 s of synthetic market time (see the module docstring); ~1.9 GB of vectors
DEFAULT_FIT_STRIDE = 10
DEFAULT_HORIZON = 20
# The penalty grid selection searches (one value fixes the penalty). The penalty is on the summed log
# loss, so what it does scales with the rows fitted: at ~360k (the default history, every 10th row),
# 0.1 to 100 barely move the weights; the decades run on until the shrinkage is strong.
DEFAULT_L2 = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
DEFAULT_OUT = Path("models") / f"{MODEL_NAME}.onnx"

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

LABEL_DEFINITION = (
    "y = 1 if mid[t+H] > mid[t] else 0, where mid = (bid + ask) / 2 and t+H is the H-th later feature record "
    "of the same (venue, symbol); rows without a record H later, with mid[t+H] == mid[t], or with a "
    "non-finite feature are dropped, so prob_up = P(mid up | mid moved)")


def label_mid_direction(feats: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (indices into time-ordered ``feats``) with a label, their labels, and each row's future index."""
    if horizon < 1:
        raise ValueError(f"horizon={horizon} must be >= 1")
    mid = (feats["bid"] + feats["ask"]) * 0.5
    stream = feats["venue"].astype(np.int64) << 16 | feats["symbol"].astype(np.int64)
    rows, futures = [], []
    for key in np.unique(stream):
        idx = np.flatnonzero(stream == key)
        if idx.size > horizon:
            rows.append(idx[:-horizon])
            futures.append(idx[horizon:])
    if not rows:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    rows_a, fut_a = np.concatenate(rows), np.concatenate(futures)
    order = np.argsort(rows_a, kind="stable")
    rows_a, fut_a = rows_a[order], fut_a[order]
    delta = mid[fut_a] - mid[rows_a]
    # per record first: indexing the values by row would copy them all (~1.3 GB at the default history)
    finite = np.isfinite(feats["values"]).all(axis=1)[rows_a] & np.isfinite(delta)
    keep = finite & (delta != 0.0)
    return rows_a[keep], (delta[keep] > 0.0).astype(np.float64), fut_a[keep]


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


def purged_split(rows: np.ndarray, future: np.ndarray) -> dict[str, np.ndarray]:
    """Masks over labelled rows: ``train``, ``validation``, ``refit`` (train + validation) and ``test``.

    The periods start at the rows at the 0, TRAIN_FRACTION and TRAIN_FRACTION + VALIDATION_FRACTION
    points; a row is kept in its period only if its label's future record lies in the same period."""
    start_validation = rows[int(rows.size * TRAIN_FRACTION)]
    start_test = rows[int(rows.size * (TRAIN_FRACTION + VALIDATION_FRACTION))]
    return {
        "train": future < start_validation,
        "validation": (rows >= start_validation) & (future < start_test),
        "refit": future < start_test,
        "test": rows >= start_test,
    }


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


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for tied scores."""
    n1 = float(y.sum())
    n0 = float(y.size - n1)
    if n1 == 0 or n0 == 0:
        return float("nan")
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) * 0.5
    ranks = avg_rank[inverse]
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) * 0.5) / (n1 * n0))


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    pc = np.clip(p, 1e-15, 1.0 - 1e-15)
    base = float(y.mean()) if y.size else float("nan")
    return {
        "rows": int(y.size),
        "accuracy": float(((p > 0.5) == (y == 1)).mean()) if y.size else float("nan"),
        "log_loss": float(-(y * np.log(pc) + (1.0 - y) * np.log(1.0 - pc)).mean()) if y.size else float("nan"),
        "auc": roc_auc(y, p),
        "base_rate": base,
        "majority_accuracy": max(base, 1.0 - base),
        "base_rate_log_loss": _constant_log_loss(base),
    }


def _constant_log_loss(base: float) -> float:
    if not 0.0 < base < 1.0:
        return float("nan")
    return float(-(base * np.log(base) + (1.0 - base) * np.log(1.0 - base)))


def build_graph(mean: np.ndarray, std: np.ndarray, coef: np.ndarray, intercept: float,
                props: dict[str, str]) -> onnx.ModelProto:
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
        nodes, MODEL_NAME,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", N_FEATURES])],
        [helper.make_tensor_value_info("prob_up", TensorProto.FLOAT, ["N"])],
        inits,
        doc_string="P(mid rises over the label horizon | it moves); inputs in FEATURE_NAMES order")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="bot4.tools.train_model", producer_version=str(MODEL_VERSION))
    model.ir_version = IR_VERSION
    model.model_version = MODEL_VERSION
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model


def _collect(seed: int, n_events: int) -> np.ndarray:
    from pipeline.hosting.fused import collect_features
    return collect_features(seed=seed, n_events=n_events)


def _range(feats: np.ndarray, rows: np.ndarray) -> dict:
    if rows.size == 0:
        return {"rows": 0}
    first, last = feats[rows[0]], feats[rows[-1]]
    return {"rows": int(rows.size), "origin_seq": [int(first["origin_seq"]), int(last["origin_seq"])],
            "origin_ts": [int(first["origin_ts"]), int(last["origin_ts"])],
            "market_s": round((int(last["origin_ts"]) - int(first["origin_ts"])) * 1e-9, 3)}


def command_line(seed: int, n_events: int, horizon: int, l2_grid: Sequence[float], fit_stride: int,
                 out: Path | str) -> str:
    return (f"python -m tools.train_model --seed {seed} --events {n_events} --horizon {horizon} "
            f"--l2 {' '.join(repr(v) for v in l2_grid)} --fit-stride {fit_stride} --out {out}")


def _l2_grid(l2: float | Sequence[float]) -> tuple[float, ...]:
    grid = (float(l2),) if np.isscalar(l2) else tuple(float(v) for v in l2)
    if not grid or not all(np.isfinite(v) and v >= 0.0 for v in grid):
        raise ValueError(f"l2={l2!r} must be one or more finite penalties >= 0")
    return grid


def train(seed: int = DEFAULT_SEED, n_events: int = DEFAULT_EVENTS, horizon: int = DEFAULT_HORIZON,
          out: Path | str = DEFAULT_OUT, l2: float | Sequence[float] = DEFAULT_L2,
          features: np.ndarray | None = None, fit_stride: int = DEFAULT_FIT_STRIDE) -> dict:
    """Collect features (or use ``features``), select inputs and penalty on validation, refit, export ``out``
    and its metadata; returns the metadata. ``l2`` is the penalty grid (one value fixes it); fits use every
    ``fit_stride``-th row of their period, scores every row."""
    out = Path(out)
    l2_grid = _l2_grid(l2)
    if fit_stride < 1:
        raise ValueError(f"fit_stride={fit_stride} must be >= 1")
    feats = _collect(seed, n_events) if features is None else features
    if feats.dtype != FEATURE_VECTOR:
        raise ValueError(f"features dtype={feats.dtype} is not FEATURE_VECTOR")
    wrong = np.flatnonzero(feats["schema_hash"] != FEATURE_SCHEMA_HASH)
    if wrong.size:
        raise ValueError(f"{wrong.size} feature records carry schema_hash={int(feats['schema_hash'][wrong[0]])}, "
                         f"expected={FEATURE_SCHEMA_HASH}")
    seq = feats["origin_seq"]
    if not (seq[1:] >= seq[:-1]).all():  # collect_features's are in order already: no ~2 GB copy
        feats = feats[np.argsort(seq, kind="stable")]

    rows, y, future = label_mid_direction(feats, horizon)
    if rows.size < 10:
        raise ValueError(f"only {rows.size} labelled rows from {feats.size} feature records; need more events")
    masks = purged_split(rows, future)
    period_rows = {name: rows[mask] for name, mask in masks.items()}
    period_y = {name: y[mask] for name, mask in masks.items()}
    fit_rows = {name: period_rows[name][::fit_stride] for name in ("train", "refit")}
    fit_y = {name: period_y[name][::fit_stride] for name in ("train", "refit")}
    for name, labels in (("train", fit_y["train"]), ("validation", period_y["validation"]),
                         ("refit", fit_y["refit"])):
        if labels.size == 0 or labels.min() == labels.max():
            raise ValueError(f"{name} labels: rows={labels.size}, all one class or none after purging "
                             f"(fit_stride={fit_stride}); need more events or a shorter horizon")
    x_all = feats["values"]

    # Selection: train -> validation only; the test rows are not read until the chosen model is refitted.
    candidates = input_candidates()
    table, best, validation_metrics = select_configuration(
        x_all[fit_rows["train"]], fit_y["train"], x_all[period_rows["validation"]], period_y["validation"],
        candidates, l2_grid)
    chosen_inputs, chosen_l2 = table[best]["inputs"], table[best]["l2"]
    excluded = dict(candidates)[chosen_inputs]
    used = np.array([f not in excluded for f in FEATURE_NAMES])

    fit = fit_inputs(x_all[fit_rows["refit"]], fit_y["refit"], used, chosen_l2)
    test_rows = period_rows["test"]
    metrics = {
        "test": classification_metrics(period_y["test"], fit.predict_rows(x_all, test_rows)),
        "validation": validation_metrics,  # the chosen configuration fitted on train alone
        "refit": classification_metrics(period_y["refit"], fit.predict_rows(x_all, period_rows["refit"])),
    }

    props = {"feature_schema_hash": str(FEATURE_SCHEMA_HASH), "feature_names": ",".join(FEATURE_NAMES),
             "horizon": str(horizon), "seed": str(seed), "events": str(n_events)}
    model_bytes = build_graph(fit.mean, fit.std, fit.coef, fit.intercept, props).SerializeToString(deterministic=True)

    meta = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "kind": "logistic_regression",
        "input": {"name": "features", "dtype": "float32", "shape": ["N", N_FEATURES]},
        "output": {"name": "prob_up", "dtype": "float32", "shape": ["N"]},
        "feature_names": list(FEATURE_NAMES),
        "feature_schema_hash": FEATURE_SCHEMA_HASH,
        "records_version": RECORDS_VERSION,
        "onnx_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "opset": OPSET,
        "ir_version": IR_VERSION,
        "training": {
            "source": "pipeline.hosting.fused.collect_features" if features is None else "caller-supplied features",
            "seed": seed,
            "events": n_events,
            "feature_records": int(feats.size),
            "horizon": horizon,
            "label": LABEL_DEFINITION,
            "labelled_rows": int(rows.size),
            "split": f"time-ordered: first {TRAIN_FRACTION:.0%} of labelled rows train, next "
                     f"{VALIDATION_FRACTION:.0%} validation, rest test; a row whose label horizon reaches the "
                     "next period is purged; the final model is refitted on train + validation (refit), "
                     "purged only at the test boundary",
            "train": _range(feats, period_rows["train"]),
            "validation": _range(feats, period_rows["validation"]),
            "refit": _range(feats, period_rows["refit"]),
            "test": _range(feats, test_rows),
            "fit_stride": fit_stride,
            "fitted_rows": {"train": int(fit_y["train"].size), "refit": int(fit_y["refit"].size)},
            "selection": {
                "criterion": "lowest validation log loss of a fit on train (standardised by train); the "
                             "first in table order on a tie; test not used",
                "l2_grid": list(l2_grid),
                "input_candidates": {name: list(names) for name, names in candidates},
                "candidates": table,
                "chosen": {"inputs": chosen_inputs, "l2": chosen_l2},
            },
            "inputs": chosen_inputs,
            "l2": chosen_l2,
            "newton_iterations": fit.iterations,
            "weight_zero_features": list(excluded),
        },
        "weights": {"mean": fit.mean.tolist(), "std": fit.std.tolist(), "coef": fit.coef.tolist(),
                    "intercept": fit.intercept},
        "metrics": metrics,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(seed, n_events, horizon, l2_grid, fit_stride, out),
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    meta_path = out.with_suffix(".json")
    out.write_bytes(model_bytes)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    try:
        _verify(out, x_all[test_rows] if test_rows.size else x_all[fit_rows["refit"]], fit.predict)
    except Exception:
        out.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        raise
    return meta


def _verify(path: Path, x: np.ndarray, reference) -> None:
    """Load through the serving path and compare with the numpy model."""
    from stages.inference import OnnxModel
    model = OnnxModel.load(path)
    got = model.predict(np.ascontiguousarray(x, dtype=np.float32)).astype(np.float64)
    want = reference(x)
    err = float(np.max(np.abs(got - want))) if x.size else 0.0
    if not err <= VERIFY_TOLERANCE:
        raise RuntimeError(f"model={path}: onnxruntime differs from the numpy model by max_abs={err:.3g} "
                           f"> {VERIFY_TOLERANCE}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.train_model", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="synthetic market seed")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="market events to simulate")
    parser.add_argument("--horizon", type=int, default=DEFAULT_HORIZON,
                        help="label horizon in records of the same (venue, symbol)")
    parser.add_argument("--l2", type=float, nargs="+", default=list(DEFAULT_L2),
                        help="L2 penalties on standardised weights that selection tries (one value fixes it)")
    parser.add_argument("--fit-stride", type=int, default=DEFAULT_FIT_STRIDE,
                        help="fit on every K-th row of a period (scores use every row)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="ONNX path; metadata goes beside it (.json)")
    args = parser.parse_args(argv)
    meta = train(args.seed, args.events, args.horizon, args.out, args.l2, fit_stride=args.fit_stride)
    training, test = meta["training"], meta["metrics"]["test"]
    for row in training["selection"]["candidates"]:
        # five decimals: on the default history neighbouring penalties differ in the fifth
        print(f"candidate inputs={row['inputs']} l2={row['l2']!r} validation log_loss={row['validation_log_loss']:.5f} "
              f"auc={row['validation_auc']:.4f} accuracy={row['validation_accuracy']:.4f}")
    spans = " ".join(f"{name}={training[name].get('market_s', 0.0):.0f}s" for name in ("train", "validation", "test"))
    print(f"model={args.out} inputs={training['inputs']} l2={training['l2']!r} rows train={training['train']['rows']} "
          f"validation={training['validation']['rows']} refit={training['refit']['rows']} test={test['rows']} "
          f"fitted train={training['fitted_rows']['train']} refit={training['fitted_rows']['refit']} "
          f"market {spans} accuracy={test['accuracy']:.4f} log_loss={test['log_loss']:.4f} auc={test['auc']:.4f} "
          f"base_rate={test['base_rate']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
