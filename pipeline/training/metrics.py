"""Classification figures of a probability against 0/1 labels (scikit-learn's log loss and AUC)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

_EPS = 1e-15


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """AUC with average ranks for tied scores; NaN when only one class is present."""
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, p))


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    return float(log_loss(y, np.clip(p, _EPS, 1.0 - _EPS), labels=(0.0, 1.0))) if y.size else float("nan")


def _constant_log_loss(base: float) -> float:
    if not 0.0 < base < 1.0:
        return float("nan")
    return float(-(base * np.log(base) + (1.0 - base) * np.log(1.0 - base)))


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    base = float(y.mean()) if y.size else float("nan")
    return {
        "rows": int(y.size),
        "accuracy": float(((p > 0.5) == (y == 1)).mean()) if y.size else float("nan"),
        "log_loss": _log_loss(y, p),
        "auc": roc_auc(y, p),
        "base_rate": base,
        "majority_accuracy": max(base, 1.0 - base),
        "base_rate_log_loss": _constant_log_loss(base),
    }


def log_loss_and_auc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """[log loss, AUC]: the two figures every fold reports (the bootstrap's statistic)."""
    return np.array([_log_loss(y, p), roc_auc(y, p)])
