"""A member's calibration, fitted on validation data and applied with the kernel the inference stage runs
(``stages.ensemble.calibrate``), so offline figures are those of what serves.

Representations (model.json's ``calibration``): ``{"method": "platt", "a": A, "b": B}`` (p' = sigmoid(A logit(p) +
B)), ``{"method": "isotonic", "x": [...], "y": [...]}`` (p' = interp(p, x, y)) or ``{"method": "none"}``.

Choice: the validation rows are cut in two halves in time order; each method is fitted on the first and scored (log
loss) on the second; the lowest wins ("none" on a tie, then platt), and is refitted on all of validation.
"""
from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from pipeline.training.metrics import log_loss_and_auc
from stages.ensemble import CAL_ISOTONIC, CAL_NONE, CAL_PLATT, calibrate

METHODS = ("none", "platt", "isotonic")
_EPS = 1e-7  # the kernel's clip of p before its logit
_CODES = {"none": CAL_NONE, "platt": CAL_PLATT, "isotonic": CAL_ISOTONIC}


def fit(method: str, p: np.ndarray, y: np.ndarray) -> dict:
    if method == "none":
        return {"method": "none"}
    if method == "platt":
        c = np.clip(p, _EPS, 1.0 - _EPS)
        logit = np.log(c / (1.0 - c)).reshape(-1, 1)
        model = LogisticRegression(C=np.inf).fit(logit, y)  # unpenalised: two parameters on many rows
        return {"method": "platt", "a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}
    if method == "isotonic":
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return {"method": "isotonic", "x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist()}
    raise ValueError(f"calibration method={method!r}; known: {', '.join(METHODS)}")


def apply(calibration: dict, p: np.ndarray) -> np.ndarray:
    """``p`` through ``stages.ensemble.calibrate`` with this representation (float64 out)."""
    method = calibration.get("method")
    if method not in _CODES:
        raise ValueError(f"calibration method={method!r}; known: {', '.join(METHODS)}")
    xs = np.asarray(calibration.get("x", [0.0, 1.0]), np.float64)
    ys = np.asarray(calibration.get("y", [0.0, 1.0]), np.float64)
    src = np.ascontiguousarray(p, np.float64)
    out = np.empty_like(src)
    calibrate(src, src.size, _CODES[method], float(calibration.get("a", 1.0)), float(calibration.get("b", 0.0)),
              xs, ys, out)
    return out


def choose(p: np.ndarray, y: np.ndarray) -> tuple[dict, list[dict]]:
    """The calibration chosen on validation (``p``, ``y`` in time order) and each method's held-out log loss."""
    half = p.size // 2
    table = []
    for method in METHODS:
        fitted = fit(method, p[:half], y[:half])
        table.append({"method": method, "second_half_log_loss": float(log_loss_and_auc(y[half:],
                                                                                         apply(fitted, p[half:]))[0])})
    best = min(range(len(table)), key=lambda i: table[i]["second_half_log_loss"])
    return fit(table[best]["method"], p, y), table
