import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from stages.inference import DEFAULT_MODEL, ModelMismatchError, OnnxModel, finish, prepare
from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, N_FEATURES, PREDICTION, RISK_DECISION

REPO = Path(__file__).resolve().parents[2]

COPIED_FIELDS = ("origin_ts", "origin_seq", "venue", "symbol", "reasons", "bid", "ask", "position",
                 "buy_budget", "sell_budget", "sigma_bps")


def _decisions(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = np.zeros(n, RISK_DECISION)
    d["origin_ts"] = 1_700_000_000_000_000_000 + np.arange(n) * 1_000
    d["origin_seq"] = np.arange(1, n + 1)
    d["stage_ts"] = 42
    d["venue"] = rng.integers(0, 3, n)
    d["symbol"] = rng.integers(0, 4, n)
    d["reasons"] = rng.integers(0, 16, n)
    d["bid"] = 100.0 + rng.normal(size=n)
    d["ask"] = d["bid"] + 0.01
    d["position"] = rng.normal(size=n)
    d["buy_budget"] = rng.random(n)
    d["sell_budget"] = rng.random(n)
    d["sigma_bps"] = rng.random(n) * 10
    d["values"] = rng.normal(size=(n, N_FEATURES)) * 5
    return d


def _exercise_kernels() -> None:
    """Asserts prepare/finish semantics; run both jitted and, in a subprocess, with NUMBA_DISABLE_JIT=1."""
    decisions = _decisions(6)
    n = 4
    x = np.full((8, N_FEATURES), -7.0, np.float32)
    assert prepare(decisions, n, x) == n
    np.testing.assert_array_equal(x[:n], decisions["values"][:n].astype(np.float32))
    assert (x[n:] == -7.0).all(), "prepare wrote past n"

    prob = np.linspace(0.1, 0.9, 8)
    confidence = np.linspace(0.0, 1.0, 8)
    alive = np.arange(8, dtype=np.uint8)
    scale = np.linspace(0.0, 2.0, 8)
    out = np.zeros(8, PREDICTION)
    out["origin_seq"] = -1
    assert finish(decisions, n, prob, confidence, alive, scale, out, 123_456_789) == n
    for name in COPIED_FIELDS:
        np.testing.assert_array_equal(out[name][:n], decisions[name][:n], err_msg=name)
    np.testing.assert_array_equal(out["prob_up"][:n], prob[:n])
    np.testing.assert_array_equal(out["confidence"][:n], confidence[:n])
    np.testing.assert_array_equal(out["members_alive"][:n], alive[:n])
    np.testing.assert_array_equal(out["size_scale"][:n], scale[:n])
    assert (out["stage_ts"][:n] == 123_456_789).all()
    assert (out["origin_seq"][n:] == -1).all(), "finish wrote past n"
    assert prepare(decisions, 0, x) == 0 and finish(decisions, 0, prob, confidence, alive, scale, out, 1) == 0


def test_prepare_and_finish_should_copy_decisions_into_predictions():
    _exercise_kernels()


def test_kernels_should_behave_the_same_without_jit():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    script = ("import stages.inference as s, inspect; "
              "assert inspect.isfunction(s.prepare), 'JIT still on'; "
              "from tests.stages.test_inference import _exercise_kernels; _exercise_kernels()")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def _initializers(path: Path) -> dict[str, np.ndarray]:
    graph = onnx.load(str(path)).graph
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


def _logistic(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    z = ((x.astype(np.float64) - w["mean"]) / w["std"]) @ w["coef"].reshape(-1).astype(np.float64)
    return 1.0 / (1.0 + np.exp(-(z + float(w["intercept"][0]))))


def _features_like(w: dict[str, np.ndarray], n: int, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (w["mean"] + w["std"] * rng.normal(size=(n, N_FEATURES)) * 2).astype(np.float32)


def test_shipped_model_should_match_the_logistic_formula_from_its_initializers():
    proto = onnx.load(str(DEFAULT_MODEL))
    assert [node.op_type for node in proto.graph.node] == ["Sub", "Div", "MatMul", "Add", "Sigmoid", "Reshape"]
    w = _initializers(DEFAULT_MODEL)
    model = OnnxModel.load()
    assert model.path == DEFAULT_MODEL and model.metadata["feature_schema_hash"] == FEATURE_SCHEMA_HASH

    x = _features_like(w, 257)
    got = model.predict(x)
    assert got.dtype == np.float32 and got.shape == (257,)
    np.testing.assert_allclose(got, _logistic(x, w), rtol=0, atol=1e-5)

    buffer = np.full(512, -1.0, np.float32)
    bound = model.predict(x, out=buffer)
    assert bound.base is buffer or np.shares_memory(bound, buffer)
    np.testing.assert_array_equal(bound, got)
    assert (buffer[257:] == -1.0).all()
    assert model.predict(x[:0], out=buffer).shape == (0,)


def test_shipped_metadata_should_describe_training_and_metrics():
    meta = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert meta["feature_names"] == list(FEATURE_NAMES)
    for key in ("accuracy", "log_loss", "auc", "base_rate"):
        assert np.isfinite(meta["metrics"]["test"][key]), key
    assert meta["command"].startswith("python -m tools.train_model")
    assert {"seed", "events", "horizon", "label", "train", "test"} <= set(meta["training"])


def test_session_should_be_single_threaded_on_cpu():
    model = OnnxModel.load()
    opts = model.session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert model.session.get_providers() == ["CPUExecutionProvider"]


def test_a_batch_should_flow_through_prepare_predict_finish():
    model = OnnxModel.load()
    decisions = _decisions(16)
    x = np.zeros((64, N_FEATURES), np.float32)
    prob = np.zeros(64, np.float32)
    out = np.zeros(64, PREDICTION)
    n = prepare(decisions, 16, x)
    model.predict(x[:n], out=prob)
    assert finish(decisions, n, prob.astype(np.float64), np.ones(n), np.ones(n, np.uint8), np.ones(n), out,
                  5) == 16
    np.testing.assert_allclose(out["prob_up"][:n], _logistic(decisions["values"].astype(np.float32),
                                                              _initializers(DEFAULT_MODEL)), atol=1e-5)


def _tampered_copy(tmp_path: Path, **changes) -> Path:
    onnx_path = tmp_path / DEFAULT_MODEL.name
    shutil.copyfile(DEFAULT_MODEL, onnx_path)
    meta = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    meta.update(changes)
    onnx_path.with_suffix(".json").write_text(json.dumps(meta))
    return onnx_path


def test_load_should_refuse_a_model_with_another_feature_schema_hash(tmp_path):
    other = FEATURE_SCHEMA_HASH ^ 0x5A5A
    path = _tampered_copy(tmp_path, feature_schema_hash=other)
    with pytest.raises(ModelMismatchError) as err:
        OnnxModel.load(path)
    text = str(err.value)
    assert f"expected={FEATURE_SCHEMA_HASH}" in text and f"found={other}" in text and str(path) in text


def test_load_should_refuse_a_model_with_other_feature_names(tmp_path):
    names = list(FEATURE_NAMES)
    names[0], names[1] = names[1], names[0]
    with pytest.raises(ModelMismatchError, match="feature_names"):
        OnnxModel.load(_tampered_copy(tmp_path, feature_names=names))


def test_load_should_refuse_metadata_written_for_another_graph(tmp_path):
    with pytest.raises(ModelMismatchError, match="onnx_sha256"):
        OnnxModel.load(_tampered_copy(tmp_path, onnx_sha256="0" * 64))


def test_load_should_refuse_a_model_without_metadata(tmp_path):
    path = tmp_path / "bare.onnx"
    shutil.copyfile(DEFAULT_MODEL, path)
    with pytest.raises(FileNotFoundError, match="metadata"):
        OnnxModel.load(path)


def test_roc_auc_should_match_counting_pairs():
    from tools.train_model import roc_auc
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.4).astype(np.float64)
    p = np.round(rng.random(300) + 0.3 * y, 1)  # rounded so ties occur
    pos, neg = p[y == 1], p[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(y, p) == pytest.approx(pairs, abs=1e-12)


def test_trainer_should_produce_a_deterministic_model_that_loads(tmp_path):
    from tools.train_model import train
    first = tmp_path / "a" / "small.onnx"
    second = tmp_path / "b" / "small.onnx"
    meta = train(seed=11, n_events=6_000, horizon=5, out=first)
    train(seed=11, n_events=6_000, horizon=5, out=second)
    assert first.read_bytes() == second.read_bytes()

    model = OnnxModel.load(first)
    assert model.metadata["training"]["seed"] == 11 and model.metadata["training"]["horizon"] == 5
    assert model.metadata["metrics"]["test"]["rows"] > 0
    w = _initializers(first)
    x = _features_like(w, 33)
    np.testing.assert_allclose(model.predict(x), _logistic(x, w), rtol=0, atol=1e-5)
    assert meta["onnx_sha256"] == model.metadata["onnx_sha256"]


def test_purged_split_should_keep_every_label_inside_its_own_period():
    from tools.train_model import purged_split
    rows = np.arange(0, 400, 2)  # every other record is labelled
    future = rows + 7
    masks = purged_split(rows, future)
    start_validation, start_test = rows[120], rows[150]
    train, validation, refit, test = (masks[k] for k in ("train", "validation", "refit", "test"))
    assert not (train & validation).any() and not (refit & test).any()
    assert (future[train] < start_validation).all()
    assert (rows[validation] >= start_validation).all() and (future[validation] < start_test).all()
    assert (future[refit] < start_test).all() and (train | validation).sum() < refit.sum()
    assert (rows[test] >= start_test).all() and test.sum() == rows.size - 150


def test_selection_and_refit_should_not_read_the_test_period(tmp_path):
    from pipeline.hosting.fused import collect_features
    from tools.train_model import train
    feats = collect_features(seed=11, n_events=6_000)
    first = train(seed=11, horizon=5, out=tmp_path / "a" / "m.onnx", features=feats)
    test_start_seq = first["training"]["test"]["origin_seq"][0]
    changed = feats.copy()
    later = changed["origin_seq"] >= test_start_seq
    # feature values only: bid/ask (and so the labels and the split) stay as they were
    changed["values"][later] = -3.0 * changed["values"][later] + 1.0
    second = train(seed=11, horizon=5, out=tmp_path / "b" / "m.onnx", features=changed)
    assert second["training"]["selection"] == first["training"]["selection"]
    assert second["weights"] == first["weights"] and second["onnx_sha256"] == first["onnx_sha256"]
    assert second["metrics"]["test"] != first["metrics"]["test"]
    assert first["training"]["selection"]["chosen"] == {"inputs": first["training"]["inputs"],
                                                        "l2": first["training"]["l2"]}


def test_fits_should_use_every_kth_row_and_scores_every_row(tmp_path):
    from pipeline.hosting.fused import collect_features
    from tools.train_model import train
    feats = collect_features(seed=11, n_events=6_000)
    every = train(seed=11, horizon=5, out=tmp_path / "a" / "m.onnx", features=feats, fit_stride=1)
    thinned = train(seed=11, horizon=5, out=tmp_path / "b" / "m.onnx", features=feats, fit_stride=3)
    t1, t3 = every["training"], thinned["training"]
    for period in ("train", "refit"):
        assert t1["fitted_rows"][period] == t1[period]["rows"]
        assert t3["fitted_rows"][period] == -(-t3[period]["rows"] // 3)
    for period in ("validation", "test"):
        assert thinned["metrics"][period]["rows"] == every["metrics"][period]["rows"] == t1[period]["rows"]
    assert t3["train"] == t1["train"] and "--fit-stride 3" in thinned["command"]
    assert t1["test"]["market_s"] > 0
