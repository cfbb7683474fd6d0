"""``bot4 train``'s work: walk-forward folds over a Dataset, every member fitted, exported, checked and calibrated
per fold, the ensemble's weights and threshold chosen on validation, figures on test with block-bootstrap standard
errors; the last fold's models are the ones written to the registry (their test figures are the last fold's).

Every figure is of the ONNX graph run by onnxruntime (the file that would serve), calibrated with the stage's
``calibrate`` and voted with its ``combine``. A held-out dataset (``holdout``), if given, is scored by the final
models only: no choice reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from pipeline.training import bootstrap, calibration, voting
from pipeline.training.datasets import Dataset
from pipeline.training.folds import Fold, label_span_records, walk_forward
from pipeline.training.members import MEMBER_NAMES, FittedMember, trainer
from pipeline.training.metrics import classification_metrics, log_loss_and_auc

EXPORT_TOLERANCE = 1e-5  # float32 graph against the library's float64 prediction
PREDICT_CHUNK = 1 << 16   # rows per onnxruntime call: a sequence member's windows are 1.8 KB a row


@dataclass(frozen=True)
class Settings:
    members: tuple[str, ...] = ("logistic", "gbt")
    n_folds: int = 4
    embargo: int | None = None        # records; None: one label span (99th percentile)
    validation_fraction: float = 0.25
    seed: int = 1
    bootstrap_reps: int = bootstrap.DEFAULT_REPS
    min_coverage: float = voting.DEFAULT_MIN_COVERAGE
    fit_stride: int = 10
    baseline: str = "logistic"


@dataclass
class Result:
    settings: Settings
    folds: list[dict] = field(default_factory=list)
    final: dict[str, FittedMember] = field(default_factory=dict)
    calibrations: dict[str, dict] = field(default_factory=dict)
    ensemble: dict = field(default_factory=dict)
    holdout: dict | None = None
    embargo: int = 0


def onnx_predict(onnx_bytes: bytes, x: np.ndarray | dict) -> np.ndarray:
    """The graph's prob_up for ``x``: a vector member's features, or {input name: array}."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    feeds = x if isinstance(x, dict) else {"features": np.ascontiguousarray(x, np.float32)}
    return session.run(["prob_up"], feeds)[0].astype(np.float64)


def member_predict(fitted: FittedMember, ds: Dataset, check: bool = False) -> tuple[np.ndarray, float]:
    """The graph's probabilities on ``ds``'s rows, in chunks (a member's inputs are gathered per chunk), and the
    largest difference from the library's own when ``check``."""
    out, err = np.empty(len(ds)), 0.0
    for lo in range(0, len(ds), PREDICT_CHUNK):
        feeds = fitted.feeds(ds.take(np.arange(lo, min(lo + PREDICT_CHUNK, len(ds)))))
        out[lo:lo + PREDICT_CHUNK] = got = onnx_predict(fitted.onnx_bytes, feeds)
        if check and got.size:
            err = max(err, float(np.max(np.abs(got - fitted.predict(feeds)))))
    return out, err


def check_export(name: str, fitted: FittedMember, x: np.ndarray | Dataset) -> tuple[np.ndarray, float]:
    """The graph's probabilities on ``x`` (a vector member's features, or a Dataset's rows), refused if they stray
    from the library's own by > EXPORT_TOLERANCE."""
    if isinstance(x, Dataset):
        got, err = member_predict(fitted, x, check=True)
    else:
        got = onnx_predict(fitted.onnx_bytes, x)
        err = float(np.max(np.abs(got - fitted.predict(x)))) if x.size else 0.0
    if not err <= EXPORT_TOLERANCE:
        raise RuntimeError(f"member {name}: the ONNX graph differs from the fitted model by max_abs={err:.3g} "
                           f"> {EXPORT_TOLERANCE}")
    return got, err


def scored(y: np.ndarray, p: np.ndarray, block: int, reps: int, seed: int) -> dict:
    m = classification_metrics(y, p)
    se = bootstrap.standard_errors(log_loss_and_auc, block, reps, seed, y, p) if y.size else [np.nan, np.nan]
    return dict(m, log_loss_se=float(se[0]), auc_se=float(se[1]), block_rows=block, bootstrap_reps=reps)


def _score_set(names, probs: dict[str, np.ndarray], weights, min_confidence: float, y: np.ndarray, block: int,
               settings: Settings) -> dict:
    out = {name: scored(y, probs[name], block, settings.bootstrap_reps, settings.seed) for name in names}
    stacked = np.stack([probs[name] for name in names])
    prob, _ = voting.vote(stacked, np.asarray(weights), 0.0)
    out["ensemble"] = scored(y, prob, block, settings.bootstrap_reps, settings.seed)
    thresholds = sorted({0.0, min_confidence} | set(voting.coverage_thresholds(stacked, np.asarray(weights))))
    out["ensemble"]["precision_coverage"] = voting.precision_coverage(stacked, np.asarray(weights), y, thresholds)
    gated = voting.precision_coverage(stacked, np.asarray(weights), y, [min_confidence])[0]
    out["ensemble"]["at_min_confidence"] = gated
    if len(names) > 1:  # what agreement gating does when every member votes, whatever weights were chosen
        equal = np.full(len(names), 1.0 / len(names))
        out["ensemble"]["equal_weights_precision_coverage"] = voting.precision_coverage(
            stacked, equal, y, voting.coverage_thresholds(stacked, equal))
    return out


def run_fold(ds: Dataset, fold: Fold, settings: Settings) -> tuple[dict, dict[str, FittedMember], dict, dict]:
    train, valid, test = (ds.take(getattr(fold, name)) for name in ("train", "validation", "test"))
    for what, part in (("train", train), ("validation", valid), ("test", test)):
        part.require_trainable(f"fold {fold.index} {what}")
    names = settings.members
    fitted, cals, valid_cal, test_cal, export_err, cal_tables = {}, {}, {}, {}, {}, {}
    for name in names:
        options = {"fit_stride": settings.fit_stride}
        fitted[name] = trainer(name, **options).fit(train, valid, settings.seed)
        p_test, export_err[name] = check_export(name, fitted[name], test)
        p_valid = member_predict(fitted[name], valid)[0]
        cals[name], cal_tables[name] = calibration.choose(p_valid, valid.y)
        valid_cal[name] = calibration.apply(cals[name], p_valid)
        test_cal[name] = calibration.apply(cals[name], p_test)
    choice = voting.choose(np.stack([valid_cal[n] for n in names]), valid.y, names.index(settings.baseline),
                           settings.min_coverage)
    report = {
        "fold": fold.index,
        "periods": fold.periods(ds),
        "export_max_abs_error": export_err,
        "calibration": {n: {"chosen": cals[n], "candidates": cal_tables[n]} for n in names},
        "ensemble_choice": choice,
        "test": _score_set(names, test_cal, choice["weights"], choice["min_confidence"], test.y,
                           bootstrap.block_rows(test), settings),
    }
    return report, fitted, cals, choice


def train(ds: Dataset, settings: Settings, holdout: Dataset | None = None, log=print) -> Result:
    unknown = [m for m in settings.members if m not in MEMBER_NAMES]
    if unknown:
        raise ValueError(f"members {unknown}: known are {', '.join(MEMBER_NAMES)}")
    if settings.baseline not in settings.members:
        raise ValueError(f"the baseline member {settings.baseline!r} must be among the members {settings.members}")
    ds.require_trainable("dataset")
    embargo = label_span_records(ds) if settings.embargo is None else settings.embargo
    result = Result(settings, embargo=embargo)
    for fold in walk_forward(ds, settings.n_folds, embargo, settings.validation_fraction):
        report, fitted, cals, choice = run_fold(ds, fold, settings)
        result.folds.append(report)
        log(fold_line(report, settings.members))
        result.final, result.calibrations, result.ensemble = fitted, cals, choice
    if holdout is not None:
        holdout.require_trainable("held-out dataset")
        probs = {n: calibration.apply(result.calibrations[n], member_predict(result.final[n], holdout)[0])
                 for n in settings.members}
        result.holdout = {"source": holdout.source, **_score_set(
            settings.members, probs, result.ensemble["weights"], result.ensemble["min_confidence"], holdout.y,
            bootstrap.block_rows(holdout), settings)}
        log(scores_line("held-out", result.holdout, settings.members))
    return result


def scores_line(label: str, scores: dict, names) -> str:
    parts = [f"{n} log_loss={scores[n]['log_loss']:.5f}±{scores[n]['log_loss_se']:.5f} "
             f"auc={scores[n]['auc']:.4f}±{scores[n]['auc_se']:.4f}" for n in (*names, "ensemble")]
    gated = scores["ensemble"]["at_min_confidence"]
    return (f"{label} rows={scores['ensemble']['rows']} " + " | ".join(parts)
            + f" | gated coverage={gated['coverage']:.3f} precision={gated['precision']:.4f}")


def fold_line(report: dict, names) -> str:
    weights = ",".join(f"{n}={w:g}" for n, w in zip(names, report["ensemble_choice"]["weights"]))
    return (scores_line(f"fold {report['fold']} test", report["test"], names)
            + f" | weights {weights} min_confidence={report['ensemble_choice']['min_confidence']:.4f}")


def write_registry(result: Result, ds: Dataset, root, command: str, created_utc: str) -> dict[str, str]:
    """Each final member as ``<name>/v<N>`` and the ensemble as ``ensemble/v<N>`` under ``root``; returns the
    paths written, relative to ``root``. Members the vote gives no weight are written (they are trained and
    scored) but left out of ensemble.json."""
    from pipeline.training import registry
    from pipeline.training.datasets import LABEL_DEFINITION
    from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, RECORDS_VERSION

    settings, last = result.settings, result.folds[-1]
    training = {**ds.source, "horizon": ds.horizon, "label": LABEL_DEFINITION, "labelled_rows": len(ds),
                "folds": settings.n_folds, "embargo_records": result.embargo,
                "validation_fraction": settings.validation_fraction, "seed": settings.seed,
                "periods": last["periods"],
                "model_of": f"fold {last['fold']} of {settings.n_folds} (the last): trained on its train period, "
                            "chosen and calibrated on its validation period, scored on its test period",
                "command": command}
    written, paths = {}, []
    for name in settings.members:
        fitted = result.final[name]
        version, directory = registry.claim(root, name)
        meta = {"name": name, "version": version, "member_kind": "vector", **fitted.metadata,
                "feature_names": list(FEATURE_NAMES), "feature_schema_hash": FEATURE_SCHEMA_HASH,
                "records_version": RECORDS_VERSION, "calibration": result.calibrations[name],
                "training": training,
                "metrics": {"test": last["test"][name], "folds": [f["test"][name] for f in result.folds],
                            **({"holdout": result.holdout[name]} if result.holdout else {})},
                "created_utc": created_utc, "command": command}
        registry.write_member(directory, fitted.onnx_bytes, meta)
        written[name] = f"{name}/v{version}"
        paths.append(written[name])
    weights = result.ensemble["weights"]
    version, directory = registry.claim(root, "ensemble")
    spec = {"name": "ensemble", "version": version,
            "members": [{"path": written[n], "weight": w} for n, w in zip(settings.members, weights) if w > 0],
            "min_confidence": result.ensemble["min_confidence"], "feature_schema_hash": FEATURE_SCHEMA_HASH,
            "left_out": [{"path": written[n], "reason": "no weight on validation (does not beat the baseline, or "
                                                         "the vote's log loss is lower without it)"}
                         for n, w in zip(settings.members, weights) if w <= 0],
            "choice": result.ensemble,
            "metrics": {"test": last["test"]["ensemble"], "folds": [f["test"]["ensemble"] for f in result.folds],
                        **({"holdout": result.holdout["ensemble"]} if result.holdout else {})},
            "folds": result.folds, "training": training, "created_utc": created_utc}
    registry.write_ensemble(directory, spec)
    written["ensemble"] = f"ensemble/v{version}"
    return written
