"""Ensemble inference cost: p50 and p99 per batch (1, 16, 64, 256 decisions) and per decision, for the shipped
logistic model alone beside 2- and 3-member vector ensembles, beside itself with the shipped sizer
(``models/qnet/v1``: argmax of q -> size_scale) and beside the shipped ensembles (``models/ensemble/v1``, ``v2``), through ``pipeline.hosting.models.Models.predict``
(every member's session, its calibration, the vote: what the inference host runs per batch), in one invocation.

Members: the shipped ``directional_v1``; a logistic graph built here with other coefficients (Platt-calibrated);
a LightGBM model (64 trees, 15 leaves) fitted on synthetic rows and converted with onnxmltools when lightgbm and
onnxmltools are installed (else a third logistic graph). Also, for the shipped model alone: ``session.run`` (output
allocated by onnxruntime) against an IO binding into a preallocated output (``OnnxModel.predict(out=)``), to say
whether the binding pays; and the history's advance alone (stages.windows with no window or node to write: what
every model set now pays per batch, vector members only included). Rounds interleave the cases; the process is
pinned to one CPU; each case is warmed.

With ``--sequence DIR`` and ``--graph DIR`` (trained members; the defaults models/sequence/v1 and models/graph/v1
are used when present) two more cases: the shipped logistic and the third member with the sequence member, and
with both (4 members, the most a set may hold). The decisions carry the synthetic feed's six instruments in turn,
so the run's history (windows, latest vectors) advances as in a run.

The ensembles above run a session per member (``fuse=False``). With ``--members DIR`` (what bench.member_budget
writes: gbt, sequence, graph as the trainers make them and gbt_<N>n, sequence_k<K>h<H>, graph_h<H> sized for the
budget) the issue's target, all four kinds: the shipped logistic, a GBT, the sequence and the graph member, each
set both per member and fused (pipeline.hosting.member_fusion: one session run per batch), with the shipped GBT
(models/gbt/v2), with DIR's default-sized members, and with DIR's sized ones; and the sized GBT, sequence and graph
without the logistic (the shipped ensemble gives the logistic no weight: it does not earn its place). The last lines
give each fused set against its per-member run, and p50 at 64 decisions against the 50 us target.

    flock /tmp/bot4-bench.lock python -m bench.ensemble_inference [--batches 2000] [--rounds 3] [--members DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.hosting import models
from stages import inference, windows
from stages.records import N_FEATURES, RISK_DECISION
from tests.onnx_members import coefficients, logistic_graph, write_ensemble, write_member

SIZES = (1, 16, 64, 256)
TARGET_US_AT_64 = 50.0
FUSED, ALONE = "fused", "per member"
MODELS = Path(__file__).resolve().parent.parent / "models"


def _lightgbm_graph() -> bytes | None:
    """A small LightGBM classifier as a vector member's graph (prob_up = P(class 1)), or None without the libs."""
    try:
        import lightgbm
        import onnx
        import onnxmltools
        from onnx import helper, numpy_helper
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, N_FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 3] * x[:, 5] + rng.normal(size=4000) > 0).astype(int)
    clf = lightgbm.LGBMClassifier(n_estimators=64, num_leaves=15, verbose=-1).fit(x, y)
    model = onnxmltools.convert_lightgbm(clf, initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
                                         zipmap=False, target_opset=15)
    graph = model.graph
    probs = next(o.name for o in graph.output if o.name != "label")
    graph.initializer.extend([numpy_helper.from_array(np.array([1], np.int64), "one_col"),
                              numpy_helper.from_array(np.array([-1], np.int64), "flat_col")])
    graph.node.extend([helper.make_node("Gather", [probs, "one_col"], ["p_col"], axis=1),
                       helper.make_node("Reshape", ["p_col", "flat_col"], ["prob_up"])])
    while len(graph.output):
        graph.output.pop()
    graph.output.append(helper.make_tensor_value_info("prob_up", onnx.TensorProto.FLOAT, ["N"]))
    return model.SerializeToString()


def _sized(where: Path, prefix: str) -> str:
    """The one member dir under ``where`` named ``prefix`` + a size (bench.member_budget's naming)."""
    found = sorted(p.name for p in where.iterdir() if p.name.startswith(prefix) and (p / "v1").is_dir())
    if len(found) != 1:
        raise SystemExit(f"--members {where}: expected one {prefix}* member, found {found}")
    return found[0]


def _four_kinds(root: Path, trained: Path, cap: int) -> dict[str, models.Models]:
    """Every kind in one set, per member and fused: with the shipped GBT, the trained defaults, the sized ones."""
    for name in (p.name for p in trained.iterdir() if (p / "v1").is_dir()):
        shutil.copytree(trained / name / "v1", root / f"t_{name}" / "v1")
    shutil.copytree(MODELS / "gbt" / "v2", root / "shipped_gbt" / "v1")
    sets = {"shipped GBT v2, trained seq+graph": ("shipped_gbt", "t_sequence", "t_graph"),
            "trained gbt, seq, graph": ("t_gbt", "t_sequence", "t_graph"),
            "sized " + ", ".join(_sized(trained, p) for p in ("gbt_", "sequence_", "graph_")): tuple(
                "t_" + _sized(trained, p) for p in ("gbt_", "sequence_", "graph_"))}
    out = {}
    sized = list(sets.values())[-1]
    for i, (label, names, baseline) in enumerate([(label, names, True) for label, names in sets.items()] + [
            ("sized, without the logistic baseline", sized, False)]):
        where = write_ensemble(root, 10 + i, [{"path": "directional_v1.onnx", "weight": 1.0}] * baseline + [
            {"path": f"{n}/v1", "weight": 1.0} for n in names])
        if not baseline:  # GBT, sequence and graph: the shipped ensemble leaves the logistic out (no weight)
            label = label.replace("sized", "3 kinds, sized", 1)
        else:
            label = "4 kinds, " + label
        for mode in (ALONE, FUSED):
            loaded = models.load(where, fuse=mode == FUSED)
            if mode == FUSED and loaded.fused is None:
                raise SystemExit(f"{label}: not fused ({loaded.fuse_note})")
            out[f"{label}: {mode}"] = models.Models(loaded, cap)
    return out


def _cases(root: Path, sequence: Path | None, graph: Path | None) -> dict[str, models.Models]:
    shutil.copy(inference.DEFAULT_MODEL, root / "directional_v1.onnx")
    shutil.copy(inference.metadata_path_for(inference.DEFAULT_MODEL), root / "directional_v1.json")
    write_member(root, "lin", "v1", logistic_graph(coefficients(1), 0.05),
                 calibration={"method": "platt", "a": 1.3, "b": 0.0})
    trees = _lightgbm_graph()
    third = "gbt" if trees is not None else "lin2"
    write_member(root, third, "v1", trees if trees is not None else logistic_graph(coefficients(2), -0.05),
                 calibration={"method": "isotonic", "x": [0.0, 0.5, 1.0], "y": [0.02, 0.5, 0.98]})
    two = write_ensemble(root, 1, [{"path": "directional_v1.onnx", "weight": 1.0}, {"path": "lin/v1", "weight": 1.0}])
    per_member = lambda where, sizer="": models.load(where, sizer=sizer, fuse=False)  # noqa: E731
    three = write_ensemble(root, 2, [{"path": "directional_v1.onnx", "weight": 1.0}, {"path": "lin/v1", "weight": 1.0},
                                     {"path": f"{third}/v1", "weight": 1.0}])
    cap = max(SIZES)
    cases = {"single (shipped logistic)": models.Models(models.load(root / "directional_v1.onnx"), cap),
             "ensemble of 2 (logistic x2)": models.Models(per_member(two), cap),
             f"ensemble of 3 (+ {'LightGBM 64 trees' if trees is not None else 'logistic'})": models.Models(
                 per_member(three), cap),
             "single + sizer (models/qnet/v1)": models.Models(models.load(root / "directional_v1.onnx",
                                                                          sizer=MODELS / "qnet" / "v1"), cap)}
    for version, what in (("v1", "106 trees, the converter's classifier"), ("v2", "88 trees, one regressor margin")):
        if (MODELS / "ensemble" / version).is_dir():  # the shipped ensembles: their GBT alone
            cases[f"shipped ensemble/{version} (GBT: {what})"] = models.Models(
                per_member(MODELS / "ensemble" / version), cap)
    # at most 4 members (pipeline.registry.MAX_MEMBERS): the shipped logistic and the third member, then these
    members = [{"path": "directional_v1.onnx", "weight": 1.0}, {"path": f"{third}/v1", "weight": 1.0}]
    for name, where in (("sequence", sequence), ("graph", graph)):
        if where is None:
            continue
        shutil.copytree(where, root / name / "v1")
        members.append({"path": f"{name}/v1", "weight": 1.0})
        label = f"ensemble of {len(members)} (logistic, {third}, " + ", ".join(
            m["path"].split("/")[0] for m in members[2:]) + ")"
        cases[label] = models.Models(per_member(write_ensemble(root, len(members) + 1, members)), cap)
    return cases


def _time_batches(predict, n: int, batches: int, x: np.ndarray, d: np.ndarray) -> np.ndarray:
    out = np.empty(batches, np.int64)
    for i in range(batches):
        t0 = time.perf_counter_ns()
        predict(d, x, n)
        out[i] = time.perf_counter_ns() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    shipped_models = Path(inference.DEFAULT_MODEL).parent
    ap.add_argument("--sequence", type=Path, default=shipped_models / "sequence" / "v1")
    ap.add_argument("--graph", type=Path, default=shipped_models / "graph" / "v1")
    ap.add_argument("--members", type=Path, help="bench.member_budget's output: every kind in one set, fused")
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    print(f"load average before: {os.getloadavg()}")
    x = np.random.default_rng(1).normal(0, 3, (max(SIZES), N_FEATURES)).astype(np.float32)
    d = np.zeros(max(SIZES), RISK_DECISION)
    d["values"] = x
    d["venue"], d["symbol"] = np.arange(max(SIZES)) % 6 // 3, np.arange(max(SIZES)) % 3  # the feed's 6 instruments
    with tempfile.TemporaryDirectory() as tmp:
        cases = _cases(Path(tmp), *(p if p.is_dir() else None for p in (args.sequence, args.graph)))
        if args.members is not None:
            cases |= _four_kinds(Path(tmp), args.members, max(SIZES))
        shipped = inference.OnnxModel.load()
        out = np.zeros(max(SIZES), np.float32)
        ring, counts = windows.empty_history()
        no_window, no_nodes, no_target = (np.zeros((0, 0, N_FEATURES), np.float32),
                                          np.zeros((0, 0, N_FEATURES), np.float32), np.zeros(0, np.int64))
        raw = {"history advance alone (what a vector set adds)": lambda dd, _x, n: windows.advance(
                   dd, n, ring, counts, 0, no_window, no_target, no_nodes, no_target),
               "shipped: session.run (allocating)": lambda _d, xx, n: shipped.predict(xx[:n]),
               "shipped: IO binding into a preallocated out": lambda _d, xx, n: shipped.predict(xx[:n], out=out)}
        timings: dict[tuple[str, int], list[np.ndarray]] = {}
        every = {**{name: m.predict for name, m in cases.items()}, **raw}
        for fn in every.values():
            for n in SIZES:
                _time_batches(fn, n, 50, x, d)
        for _ in range(args.rounds):
            for name, fn in every.items():
                for n in SIZES:
                    timings.setdefault((name, n), []).append(_time_batches(fn, n, args.batches, x, d))
    print(f"load average after: {os.getloadavg()}")
    print(f"{'case':<48}{'batch':>6}{'p50 us':>9}{'p99 us':>9}{'p50 ns/decision':>17}")
    for (name, n), parts in timings.items():
        t = np.concatenate(parts)
        p50, p99 = np.percentile(t, 50), np.percentile(t, 99)
        print(f"{name:<48}{n:>6}{p50 / 1e3:>9.1f}{p99 / 1e3:>9.1f}{p50 / n:>17.0f}")
    p50 = {key: np.percentile(np.concatenate(parts), 50) for key, parts in timings.items()}
    single = next(iter(cases))
    for name in list(cases)[1:]:
        print(f"{name} / single, p50 by batch size: " + ", ".join(
            f"{n}: {p50[(name, n)] / p50[(single, n)]:.2f}x" for n in SIZES))
    for name in (c for c in cases if c.endswith(f": {FUSED}")):
        alone = name[:-len(FUSED)] + ALONE
        print(f"{name} / {ALONE}, p50 by batch size: " + ", ".join(
            f"{n}: {p50[(name, n)] / p50[(alone, n)]:.2f}x" for n in SIZES))
        at_64 = p50[(name, 64)] / 1e3
        print(f"  p50 at 64 decisions {at_64:.1f} us: {'within' if at_64 <= TARGET_US_AT_64 else 'over'} the "
              f"{TARGET_US_AT_64:.0f} us target ({at_64 / 64 * 1e3:.0f} ns per decision)")


if __name__ == "__main__":
    main()
