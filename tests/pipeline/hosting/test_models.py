"""The inference host's model sets (pipeline.hosting.models): loading and refusing, the vote's numbers, members
that fail or run late, and the same orders twice in fused mode with an ensemble."""
import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.hosting import models
from stages import ensemble as vote
from stages import inference
from stages.records import FEATURE_SCHEMA_HASH, N_FEATURES, RISK_DECISION
from tests.onnx_members import coefficients, logistic_graph, registry_with_members, write_ensemble, write_member


def _x(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 5.0, (n, N_FEATURES)).astype(np.float32)


def _raw(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"features": x})[0]


def test_the_shipped_model_alone_should_give_its_own_numbers_with_confidence_one():
    loaded = models.load(inference.DEFAULT_MODEL)
    x = _x(16)
    prob, confidence, alive, scale = models.Models(loaded, 16).predict(np.zeros(16, RISK_DECISION), x, 16)
    expected = inference.OnnxModel.load().predict(x)
    np.testing.assert_array_equal(prob, expected.astype(np.float64))  # bit for bit: the same orders as before
    assert (confidence == 1.0).all() and (alive == 1).all() and (scale == 1.0).all()  # no sizer: the rule
    assert loaded.doc is None and loaded.version == 1


def test_the_stage_should_give_what_combine_gives_on_the_members_outputs(tmp_path):
    paths = registry_with_members(tmp_path, 3)
    platt = {"method": "platt", "a": 1.7, "b": -0.2}
    iso = {"method": "isotonic", "x": [0.0, 0.4, 0.6, 1.0], "y": [0.05, 0.3, 0.8, 0.95]}
    write_member(tmp_path, "lin1", "v1", logistic_graph(coefficients(1), 0.1), calibration=iso)
    where = write_ensemble(tmp_path, 1, [{"path": paths[0], "weight": 2.0, "calibration": platt},
                                         {"path": paths[1], "weight": 1.0},
                                         {"path": paths[2], "weight": 0.5}], min_confidence=0.2)
    n = 64
    x = _x(n)
    prob, confidence, alive, _ = models.Models(models.load(where), n).predict(np.zeros(n, RISK_DECISION), x, n)
    # The same figures the long way: each graph in its own session, calibrated, then combined.
    probs = np.zeros((3, n))
    raws = [_raw(tmp_path / p / "model.onnx", x) for p in paths]
    vote.calibrate(raws[0], n, vote.CAL_PLATT, 1.7, -0.2, np.zeros(1), np.zeros(1), probs[0])
    vote.calibrate(raws[1], n, vote.CAL_ISOTONIC, 0.0, 0.0, np.array(iso["x"]), np.array(iso["y"]), probs[1])
    probs[2] = raws[2]
    want_p, want_c = np.zeros(n), np.zeros(n)
    vote.combine(probs, np.array([2.0, 1.0, 0.5]), np.ones(3, np.uint8), n, 0.2, want_p, want_c)
    np.testing.assert_array_equal(prob, want_p)
    np.testing.assert_array_equal(confidence, want_c)
    assert (alive == 3).all()
    assert (prob[confidence < 0.2] == 0.5).all() and (confidence < 0.2).any() and (confidence >= 0.2).any()


def _refusal(tmp_path, change) -> str:
    paths = registry_with_members(tmp_path, 2)
    members = [{"path": p, "weight": 1.0} for p in paths]
    where = write_ensemble(tmp_path, 1, members)
    change(tmp_path, where)
    with pytest.raises(models.ModelLoadError) as refused:
        models.load(where)
    return str(refused.value)


def _edit_meta(root, member, **fields):
    path = root / member / "v1" / "model.json"
    meta = json.loads(path.read_text())
    meta.update(fields)
    path.write_text(json.dumps(meta))


def _edit_doc(where, **fields):
    path = where / "ensemble.json"
    doc = json.loads(path.read_text())
    doc.update(fields)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("change, words", [
    (lambda root, where: _edit_meta(root, "lin1", member_kind="qtable"),
         ["member_kind='qtable'", "known:", "'sequence'"]),
    (lambda root, where: _edit_meta(root, "lin0", feature_schema_hash=FEATURE_SCHEMA_HASH ^ 1),
     ["feature_schema_hash"]),
    (lambda root, where: _edit_doc(where, feature_schema_hash=7), ["ensemble=", "feature_schema_hash", "found=7"]),
    (lambda root, where: (root / "lin1" / "v1" / "model.onnx").write_bytes(logistic_graph(coefficients(9), 0.0)),
     ["onnx_sha256"]),
    (lambda root, where: (root / "lin0" / "v1" / "model.json").unlink(), ["model.json", "missing"]),
    (lambda root, where: _edit_doc(where, members=[{"path": "lin0/v1", "weight": -1}]), ["weight=-1"]),
    (lambda root, where: _edit_doc(where, members=[{"path": "lin0/v1", "weight": 1,
                                                    "calibration": {"method": "magic"}}]), ["calibration"]),
    (lambda root, where: _edit_doc(where, members=[{"path": "lin0/v1", "weight": 1, "calibration": {
        "method": "isotonic", "x": [0.5, 0.1], "y": [0, 1]}}]), ["isotonic"]),
    (lambda root, where: _edit_doc(where, members=[{"path": "lin0/v1", "weight": 1}] * 5), ["at most 4"]),
    (lambda root, where: _edit_doc(where, members=[]), ["non-empty"]),
    (lambda root, where: _edit_doc(where, min_confidence=2), ["min_confidence=2"]),
    (lambda root, where: (where / "ensemble.json").write_text("{not json"), ["not JSON"]),
])
def test_the_loader_should_refuse_what_cannot_serve_by_name(tmp_path, change, words):
    text = _refusal(tmp_path, change)
    for word in words:
        assert word in text, text


def test_a_vector_graph_declared_a_sequence_member_should_be_refused(tmp_path):
    shipped = inference.DEFAULT_MODEL
    shutil.copy(shipped, tmp_path / "m.onnx")
    meta = json.loads(inference.metadata_path_for(shipped).read_text())
    (tmp_path / "m.json").write_text(json.dumps({**meta, "member_kind": "sequence", "window": 8}))
    with pytest.raises(models.ModelLoadError, match=r"inputs expected=\[\('window'"):
        models.load(tmp_path / "m.onnx")


def _with_failing_member(tmp_path, max_failures=3, timeout_us=0.0):
    write_member(tmp_path, "good", "v1", logistic_graph(coefficients(1), 0.2))
    write_member(tmp_path, "flaky", "v1", logistic_graph(coefficients(2), -0.1, fail_below=-100.0))
    where = write_ensemble(tmp_path, 1, [{"path": "good/v1", "weight": 1.0}, {"path": "flaky/v1", "weight": 1.0}])
    return models.Models(models.load(where), 16, timeout_us, max_failures)


def test_a_member_that_raises_should_lose_its_vote_for_that_batch_and_be_counted(tmp_path):
    model = _with_failing_member(tmp_path)
    x, d = _x(8), np.zeros(8, RISK_DECISION)
    alive = model.predict(d, x, 8)[2]
    assert (alive == 2).all()
    x[0, 0] = -1e6  # the flaky graph fails on this batch
    prob, confidence, alive, _ = model.predict(d, x, 8)
    good_alone = _raw(tmp_path / "good" / "v1" / "model.onnx", x)
    assert (alive == 1).all()
    np.testing.assert_allclose(prob, good_alone.astype(np.float64), rtol=0, atol=1e-15)
    # coverage (half the weight answered, agreeing with itself) times the strength of its view
    np.testing.assert_allclose(confidence, 0.5 * 2 * np.abs(prob - 0.5), rtol=1e-12)
    flaky = model.members[1].stats
    assert (flaky.calls, flaky.failures, flaky.timeouts, flaky.disabled) == (2, 1, 0, False)
    assert "Reshape" in flaky.last_error or "reshape" in flaky.last_error
    x[0, 0] = 1.0
    assert (model.predict(d, x, 8)[2] == 2).all()  # back in the vote at the next good batch


def test_a_member_failing_batches_in_a_row_should_be_disabled_and_said_so(tmp_path):
    model = _with_failing_member(tmp_path, max_failures=3)
    x, d = _x(4), np.zeros(4, RISK_DECISION)
    x[0, 0] = -1e6
    for _ in range(3):
        model.predict(d, x, 4)
    assert model.members[1].stats.disabled
    x[0, 0] = 1.0
    assert (model.predict(d, x, 4)[2] == 1).all()  # disabled: not asked again
    assert model.members[1].stats.calls == 3
    lines = model.status_lines()
    assert len(lines) == 1 and "flaky" in lines[0] and "disabled after 3" in lines[0]
    slot = np.zeros(384, np.int64)
    model.publish(slot)
    from pipeline import registry
    from shm import control as cb
    inf = registry.BY_NAME["inference"]
    assert slot[cb.S_CUSTOM + inf.counter("m1_disabled")] == 1
    assert slot[cb.S_CUSTOM + inf.counter("m1_failures")] == 3
    assert slot[cb.S_CUSTOM + inf.counter("m0_calls")] == 4 and slot[cb.S_CUSTOM + inf.counter("m0_p50_ns")] > 0


def test_members_over_their_budget_should_be_dropped_and_no_view_left(tmp_path):
    model = _with_failing_member(tmp_path, max_failures=100, timeout_us=0.001)  # 1 ns: no member makes it
    x, d = _x(4), np.zeros(4, RISK_DECISION)
    prob, confidence, alive, _ = model.predict(d, x, 4)
    assert (prob == 0.5).all() and (confidence == 0.0).all() and (alive == 0).all()
    assert [m.stats.timeouts for m in model.members] == [1, 1]
    assert model.no_view_batches == 1


def test_fused_mode_with_an_ensemble_should_give_the_same_orders_twice(tmp_path):
    from pipeline.hosting.fused import run_fused
    from tests.conftest import signal_config
    write_member(tmp_path, "lin0", "v1", logistic_graph(coefficients(5, 0.2), 0.0))
    write_member(tmp_path, "flaky", "v1", logistic_graph(coefficients(6, 0.2), 0.0, fail_below=2.0))
    shutil.copy(inference.DEFAULT_MODEL, tmp_path / "directional_v1.onnx")
    shutil.copy(inference.metadata_path_for(inference.DEFAULT_MODEL), tmp_path / "directional_v1.json")
    where = write_ensemble(tmp_path, 1, [{"path": "directional_v1.onnx", "weight": 2.0},
                                         {"path": "lin0/v1", "weight": 1.0}, {"path": "flaky/v1", "weight": 1.0}],
                           min_confidence=0.1)
    config = signal_config(feed={"seed": 11}, inference={"ensemble": str(where)})
    first, second = run_fused(config, 20_000), run_fused(config, 20_000)
    assert len(first.intents) > 0
    assert first.intents.tobytes() == second.intents.tobytes()
    assert first.reports.tobytes() == second.reports.tobytes()
    alone = run_fused(signal_config(feed={"seed": 11}), 20_000)
    assert alone.intents.tobytes() != first.intents.tobytes()  # the ensemble, not the shipped model, decided
