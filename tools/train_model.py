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

Model (its code: pipeline/training/members/logistic.py, the baseline member of ``bot4 train``, which trains it
in walk-forward folds beside the other members): logistic regression on standardised features, fitted by
Newton/IRLS with an L2 penalty on the
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
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.training.datasets import LABEL_DEFINITION, in_order, label_mid_direction
from pipeline.training.members.logistic import (DEFAULT_L2, IR_VERSION, OPSET, build_graph, fit_inputs,
                                                input_candidates, select_configuration)
from pipeline.training.metrics import classification_metrics, roc_auc  # noqa: F401 (tests import it from here)
from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, N_FEATURES, RECORDS_VERSION

MODEL_NAME = "directional_v1"
MODEL_VERSION = 1
TRAIN_FRACTION = 0.60       # of labelled rows, in time order
VALIDATION_FRACTION = 0.15  # the next rows; test is the remaining 25 %
VERIFY_TOLERANCE = 1e-5

DEFAULT_SEED = 7
DEFAULT_EVENTS = 6_000_000  # ~600 s of synthetic market time (see the module docstring); ~1.9 GB of vectors
DEFAULT_FIT_STRIDE = 10
DEFAULT_HORIZON = 20
DEFAULT_OUT = Path("models") / f"{MODEL_NAME}.onnx"

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
    feats = in_order(_collect(seed, n_events) if features is None else features)
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
    model_bytes = build_graph(fit.mean, fit.std, fit.coef, fit.intercept, props, MODEL_NAME, MODEL_VERSION,
                              "bot4.tools.train_model").SerializeToString(deterministic=True)

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
