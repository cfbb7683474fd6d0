"""Members sized for the inference budget beside the trainers' defaults: held-out log loss and AUC (block-bootstrap
standard errors, and the paired difference against the default with its own), and each graph's p50 per batch of
64 in onnxruntime (one thread, pinned), in one invocation on the same data.

Sized: the GBT within ``--max-nodes`` tree nodes (pipeline.training.members.gbt's node budget) at a higher learning
rate, so that fewer trees reach the loss; the sequence member over a shorter window with fewer hidden units; the
graph member with fewer hidden units. The fold is the trainer's (the last walk-forward fold: fitted on its train
period, chosen and calibrated on its validation period); held-out seeds are scored by the fitted graphs only. Every
variant is written as a member version under ``--out`` (NAME/v1, model.json as ``bot4 train`` writes it) for
bench.ensemble_inference to run.

    python -m bench.member_budget --seeds 1,2 --events 300000 --holdout-seeds 11 --out /tmp/sized

(the timings take /tmp/bot4-bench.lock themselves: the fits, minutes long, do not hold it)
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipeline.training import bootstrap, calibration, datasets
from pipeline.training import registry as model_registry
from pipeline.training.folds import label_span_records, walk_forward
from pipeline.training.members import trainer
from pipeline.training.metrics import log_loss_and_auc
from pipeline.training.trainer import member_predict, scored
from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, RECORDS_VERSION

BATCH = 64
BENCH_LOCK = "/tmp/bot4-bench.lock"


def variants(max_nodes: int, learning_rate: float, window: int, hidden: int) -> list[tuple[str, str, dict, str]]:
    """(label, member name, trainer options, the label it is paired with: its default)."""
    return [("gbt", "gbt", {}, ""),
            (f"gbt_{max_nodes}n", "gbt", {"max_nodes": max_nodes, "learning_rate": learning_rate}, "gbt"),
            ("sequence", "sequence", {}, ""),
            (f"sequence_k{window}h{hidden}", "sequence", {"window": window, "hidden": hidden}, "sequence"),
            ("graph", "graph", {}, ""),
            (f"graph_h{hidden}", "graph", {"hidden": hidden}, "graph")]


def p50_us(onnx_bytes: bytes, feeds: np.ndarray | dict[str, np.ndarray], runs: int) -> float:
    """p50 of ``runs`` session runs on the first BATCH rows, under the shared bench lock (the fits are not)."""
    with open(BENCH_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _p50_us(onnx_bytes, feeds, runs)


def _p50_us(onnx_bytes: bytes, feeds: np.ndarray | dict[str, np.ndarray], runs: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    feeds = feeds if isinstance(feeds, dict) else {"features": feeds}
    feeds = {k: np.ascontiguousarray(v[:BATCH], np.float32 if v.dtype.kind == "f" else v.dtype)
             for k, v in feeds.items()}
    for _ in range(100):
        session.run(None, feeds)
    t = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        session.run(None, feeds)
        t[i] = time.perf_counter_ns() - t0
    return float(np.percentile(t, 50)) / 1e3


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=_int_list, default=[1, 2])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--holdout-seeds", type=_int_list, default=[11])
    ap.add_argument("--horizon", type=int, default=20)
    ap.add_argument("--max-nodes", type=int, default=600)
    ap.add_argument("--learning-rate", type=float, default=0.2)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reps", type=int, default=100, help="block-bootstrap resamples")
    ap.add_argument("--runs", type=int, default=3000, help="timed onnxruntime runs per graph")
    ap.add_argument("--out", type=Path, required=True, help="where the variants are written (NAME/v1)")
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    command = "python -m bench.member_budget " + shlex.join(sys.argv[1:])
    print(f"load average before: {os.getloadavg()}")
    ds = datasets.from_seeds(args.seeds, args.events, args.horizon)
    holdout = datasets.from_seeds(args.holdout_seeds, args.events, args.horizon)
    fold = walk_forward(ds, 1, label_span_records(ds))[-1]
    train, valid = ds.take(fold.train), ds.take(fold.validation)
    block = bootstrap.block_rows(holdout)
    print(f"rows: train {len(train):,} validation {len(valid):,} held-out {len(holdout):,} (block {block} rows)")
    probs, rows = {}, []
    for label, name, options, paired in variants(args.max_nodes, args.learning_rate, args.window, args.hidden):
        started = time.perf_counter()
        fitted = trainer(name, fit_stride=10, **options).fit(train, valid, args.seed)
        cal = calibration.choose(member_predict(fitted, valid)[0], valid.y)[0]
        probs[label] = calibration.apply(cal, member_predict(fitted, holdout)[0])
        figures = scored(holdout.y, probs[label], block, args.reps, args.seed)
        row = {"member": label, "log_loss": figures["log_loss"], "log_loss_se": figures["log_loss_se"],
               "auc": figures["auc"], "auc_se": figures["auc_se"],
               "p50_us_per_64": p50_us(fitted.onnx_bytes, fitted.feeds(holdout.take(np.arange(BATCH))), args.runs),
               "fit_s": time.perf_counter() - started}
        if paired:  # the same resampled blocks for both: the difference's own error
            diff = lambda y, a, b: log_loss_and_auc(y, a) - log_loss_and_auc(y, b)  # noqa: E731
            se = bootstrap.standard_errors(diff, block, args.reps, args.seed, holdout.y, probs[label], probs[paired])
            point = diff(holdout.y, probs[label], probs[paired])
            row.update(vs=paired, d_log_loss=float(point[0]), d_log_loss_se=float(se[0]), d_auc=float(point[1]),
                       d_auc_se=float(se[1]))
        if name == "gbt":
            row["nodes"], row["trees"] = fitted.metadata["fit"]["chosen"]["nodes"], fitted.metadata["fit"]["trees"]
        rows.append(row)
        directory = args.out / label / "v1"
        directory.mkdir(parents=True, exist_ok=False)
        model_registry.write_member(directory, fitted.onnx_bytes, {
            "name": label, "version": 1, "member_kind": "vector", **fitted.metadata,
            "feature_names": list(FEATURE_NAMES), "feature_schema_hash": FEATURE_SCHEMA_HASH,
            "records_version": RECORDS_VERSION, "calibration": cal, "metrics": {"holdout": figures},
            "training": {**ds.source, "horizon": ds.horizon, "periods": fold.periods(ds), "command": command}})
        print(json.dumps(row))
    print(f"load average after: {os.getloadavg()}")
    print(f"{'member':<22}{'log loss':>18}{'AUC':>16}{'p50 us/64':>11}  paired with the default")
    for r in rows:
        pair = (f"  d log loss {r['d_log_loss']:+.5f}±{r['d_log_loss_se']:.5f}, d AUC {r['d_auc']:+.4f}±"
                f"{r['d_auc_se']:.4f}" if "vs" in r else "")
        size = f" ({r['trees']} trees, {r['nodes']} nodes)" if "nodes" in r else ""
        print(f"{r['member']:<22}{r['log_loss']:>10.5f}±{r['log_loss_se']:.5f}{r['auc']:>9.4f}±{r['auc_se']:.4f}"
              f"{r['p50_us_per_64']:>11.1f}{pair}{size}")


if __name__ == "__main__":
    main()
