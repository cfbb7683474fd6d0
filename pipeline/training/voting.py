"""The ensemble's weights and threshold, chosen on validation and scored with the stage's own vote
(``stages.ensemble.combine``), so the offline figures are those of what runs.

- Eligible members: the baseline, and every member whose calibrated validation log loss beats the baseline's; the
  others get no weight (they are left out of the ensemble, and the report says so).
- Weights: the grid of weight vectors in steps of ``WEIGHT_STEP`` over the eligible members (summing to 1); the
  lowest validation log loss of the vote's probability wins (the first in grid order on a tie).
- ``min_confidence``: among the confidences at which the vote covers 100 %, 90 %, ..., 10 % of the validation rows,
  the one with the highest precision (share of covered rows whose side, prob_up above or below 0.5, was right) while
  covering at least ``min_coverage``; the lowest such threshold on a tie.
"""
from __future__ import annotations

import itertools

import numpy as np

from pipeline.training.metrics import log_loss_and_auc
from stages.ensemble import combine

WEIGHT_STEP = 0.25
COVERAGE_POINTS = tuple(round(1.0 - 0.1 * k, 1) for k in range(10))  # 1.0, 0.9, ..., 0.1
DEFAULT_MIN_COVERAGE = 0.5


def vote(probs: np.ndarray, weights: np.ndarray, min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """(prob_up, confidence) of every member answering; prob_up is 0.5 where confidence < min_confidence."""
    probs = np.ascontiguousarray(probs, np.float64)
    n = probs.shape[1]
    prob, confidence = np.empty(n), np.empty(n)
    combine(probs, np.ascontiguousarray(weights, np.float64), np.ones(probs.shape[0], np.bool_), n,
            float(min_confidence), prob, confidence)
    return prob, confidence


def precision_coverage(probs: np.ndarray, weights: np.ndarray, y: np.ndarray,
                       thresholds) -> list[dict]:
    """Per threshold: the share of rows with a view (coverage) and the share of those called right (precision)."""
    prob, confidence = vote(probs, weights, 0.0)
    rows = []
    for c in thresholds:
        covered = (confidence >= c) & (prob != 0.5)
        n = int(covered.sum())
        right = int(((prob[covered] > 0.5) == (y[covered] == 1)).sum())
        rows.append({"min_confidence": float(c), "coverage": n / max(1, y.size), "rows": n,
                     "precision": right / n if n else float("nan")})
    return rows


def coverage_thresholds(probs: np.ndarray, weights: np.ndarray) -> list[float]:
    """The confidences at which the vote covers each of COVERAGE_POINTS of the rows (distinct, increasing)."""
    _, confidence = vote(probs, weights, 0.0)
    qs = [float(np.quantile(confidence, 1.0 - c, method="lower")) if c < 1.0 else 0.0 for c in COVERAGE_POINTS]
    return sorted(set(qs))


def weight_grid(eligible: list[bool]) -> list[np.ndarray]:
    steps = int(round(1.0 / WEIGHT_STEP))
    idx = [i for i, ok in enumerate(eligible) if ok]
    grid = []
    for combo in itertools.product(range(steps + 1), repeat=len(idx)):
        if sum(combo) == steps:
            w = np.zeros(len(eligible))
            w[idx] = np.array(combo, np.float64) / steps
            grid.append(w)
    return grid


def choose(probs: np.ndarray, y: np.ndarray, baseline: int, min_coverage: float = DEFAULT_MIN_COVERAGE) -> dict:
    """Weights and min_confidence from calibrated validation probabilities ``probs`` [M, N]."""
    losses = [float(log_loss_and_auc(y, p)[0]) for p in probs]
    eligible = [m == baseline or losses[m] < losses[baseline] for m in range(len(losses))]
    table = []
    for w in weight_grid(eligible):
        prob, _ = vote(probs, w, 0.0)
        table.append({"weights": w.tolist(), "validation_log_loss": float(log_loss_and_auc(y, prob)[0])})
    best = min(range(len(table)), key=lambda i: table[i]["validation_log_loss"])
    weights = np.array(table[best]["weights"])
    curve = precision_coverage(probs, weights, y, coverage_thresholds(probs, weights))
    ok = [r for r in curve if r["coverage"] >= min_coverage and np.isfinite(r["precision"])] or curve[:1]
    chosen = max(ok, key=lambda r: (r["precision"], -r["min_confidence"]))
    return {"weights": weights.tolist(), "min_confidence": chosen["min_confidence"],
            "member_validation_log_loss": losses, "eligible": eligible, "weight_candidates": table,
            "validation_precision_coverage": curve, "min_coverage": min_coverage,
            "criterion": "weights: lowest validation log loss of the vote among members beating the baseline; "
                         "min_confidence: highest validation precision covering >= min_coverage"}
