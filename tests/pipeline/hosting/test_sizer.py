"""The sizer (a qvalue member) in the inference host: argmax of q -> size_scale, the loader's refusals, a failing
sizer sized by the rule, and fused mode with a sizer: the same orders twice, none at scale 0."""
import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.hosting import models
from stages import inference
from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, N_FEATURES, RISK_DECISION
from tests.onnx_members import registry_with_members, write_ensemble


def q_graph(weights: np.ndarray, fail_below: float | None = None) -> bytes:
    """q = features @ weights ([28, A]). With ``fail_below``: a batch whose first feature of its first row is below
    it fails (a Reshape to a length the batch does not have)."""
    w = numpy_helper.from_array(np.asarray(weights, np.float32), "w")
    nodes = [helper.make_node("MatMul", ["features", "w"], ["q0" if fail_below is not None else "q"])]
    inits = [w]
    if fail_below is not None:
        inits += [numpy_helper.from_array(np.array([0, 0], np.int64), "starts"),
                  numpy_helper.from_array(np.array([1, 1], np.int64), "ends"),
                  numpy_helper.from_array(np.array([fail_below], np.float32), "limit"),
                  numpy_helper.from_array(np.array([-1], np.int64), "flat"),
                  numpy_helper.from_array(np.array([1, 0], np.int64), "base")]
        nodes += [helper.make_node("Slice", ["features", "starts", "ends"], ["x00"]),
                  helper.make_node("Reshape", ["x00", "flat"], ["x0"]),
                  helper.make_node("Less", ["x0", "limit"], ["bad"]),
                  helper.make_node("Cast", ["bad"], ["bad_i"], to=TensorProto.INT64),
                  helper.make_node("Mul", ["bad_i", "base"], ["extra"]),
                  helper.make_node("Shape", ["q0"], ["shape"]),
                  helper.make_node("Add", ["shape", "extra"], ["target"]),
                  helper.make_node("Reshape", ["q0", "target"], ["q"])]
    graph = helper.make_graph(nodes, "sizer", [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                                             ["N", N_FEATURES])],
                              [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["N", w.dims[1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_sizer(root, graph: bytes, scales, name="qnet", version="v1", **extra):
    where = root / name / version
    where.mkdir(parents=True, exist_ok=True)
    (where / "model.onnx").write_bytes(graph)
    meta = {"name": name, "version": int(version.lstrip("v")), "member_kind": "qvalue", "size_scales": scales,
            "feature_names": list(FEATURE_NAMES), "feature_schema_hash": FEATURE_SCHEMA_HASH,
            "onnx_sha256": hashlib.sha256(graph).hexdigest(), **extra}
    (where / "model.json").write_text(json.dumps(meta))
    return where


def _weights(seed=4, actions=3):
    return np.random.default_rng(seed).normal(0.0, 1.0, (N_FEATURES, actions))


def _x(n, seed=3):
    return np.random.default_rng(seed).normal(0.0, 5.0, (n, N_FEATURES)).astype(np.float32)


def test_the_sizer_should_answer_the_scale_of_each_rows_largest_q(tmp_path):
    w = _weights()
    where = write_sizer(tmp_path, q_graph(w), [0.0, 0.5, 1.0])
    model = models.Models(models.load(inference.DEFAULT_MODEL, sizer=where), 64)
    x = _x(64)
    prob, confidence, alive, scale = model.predict(np.zeros(64, RISK_DECISION), x, 64)
    want = np.array([0.0, 0.5, 1.0])[np.argmax(x.astype(np.float64) @ w, axis=1)]
    np.testing.assert_array_equal(scale, want)
    assert set(np.unique(scale)) == {0.0, 0.5, 1.0}  # every action chosen somewhere: the test can see a mix-up
    # the vote is untouched by the sizer
    np.testing.assert_array_equal(prob, inference.OnnxModel.load().predict(x).astype(np.float64))
    assert (alive == 1).all() and model.sizer.stats.calls == 1
    assert model.loaded.name.endswith("sized by qnet")


def test_an_ensemble_should_name_its_sizer_and_the_config_should_override_it(tmp_path):
    paths = registry_with_members(tmp_path, 2)
    write_sizer(tmp_path, q_graph(_weights()), [0.0, 1.0, 2.0], version="v1")
    other = write_sizer(tmp_path, q_graph(-_weights()), [0.0, 1.0, 2.0], version="v2")
    where = write_ensemble(tmp_path, 1, [{"path": p, "weight": 1.0} for p in paths], sizer="qnet/v1")
    assert models.load(where).sizer.path == tmp_path / "qnet" / "v1" / "model.onnx"
    assert models.load(where, sizer=other).sizer.path == other / "model.onnx"
    assert models.load(tmp_path / paths[0]).sizer is None


def _sizer_refusal(tmp_path, scales=(0.0, 0.5, 1.0), actions=3, **extra):
    where = write_sizer(tmp_path, q_graph(_weights(actions=actions)), list(scales) if scales is not None else None,
                        **extra)
    with pytest.raises(models.ModelLoadError) as refused:
        models.load(inference.DEFAULT_MODEL, sizer=where)
    return str(refused.value)


@pytest.mark.parametrize("scales, actions, words", [
    ((0.0, 0.5), 3, ["outputs expected", "[N, 2]"]),       # the table does not match q's columns
    ((0.0, 0.5, 1.0, 1.5), 3, ["[N, 4]"]),
    ((0.5,), 1, ["size_scales=[0.5]", "2 or more"]),
    ((0.0, -0.5, 1.0), 3, ["size_scales", "[0, 4]"]),
    ((0.0, 9.0, 1.0), 3, ["size_scales"]),
    ((0.0, "big", 1.0), 3, ["size_scales"]),
    (None, 3, ["size_scales=None"]),
])
def test_a_bad_action_table_should_be_refused_by_name(tmp_path, scales, actions, words):
    text = _sizer_refusal(tmp_path, scales, actions)
    for word in words:
        assert word in text, text


def test_a_sizer_is_no_voter_and_a_voter_no_sizer(tmp_path):
    where = write_sizer(tmp_path, q_graph(_weights()), [0.0, 1.0, 2.0])
    with pytest.raises(models.ModelLoadError, match="is a sizer, not a voter"):
        models.load(where)
    ensemble = write_ensemble(tmp_path, 1, [{"path": "qnet/v1", "weight": 1.0}])
    with pytest.raises(models.ModelLoadError, match="is a sizer, not a voter"):
        models.load(ensemble)
    voter = registry_with_members(tmp_path, 1)[0]
    with pytest.raises(models.ModelLoadError, match="member_kind='vector'; a sizer is a 'qvalue' member"):
        models.load(inference.DEFAULT_MODEL, sizer=tmp_path / voter)
    text = _sizer_refusal(tmp_path, feature_schema_hash=FEATURE_SCHEMA_HASH ^ 1)
    assert "feature_schema_hash" in text
    bad_doc = write_ensemble(tmp_path, 2, [{"path": voter, "weight": 1.0}], sizer=3)
    with pytest.raises(models.ModelLoadError, match="sizer=3"):
        models.load(bad_doc)


def test_a_failing_sizer_should_leave_the_batch_to_the_rule_and_be_disabled_after_enough(tmp_path):
    where = write_sizer(tmp_path, q_graph(_weights(), fail_below=-100.0), [0.0, 0.5, 1.0])
    model = models.Models(models.load(inference.DEFAULT_MODEL, sizer=where), 16, max_failures=2)
    x, d = _x(8), np.zeros(8, RISK_DECISION)
    assert not (model.predict(d, x, 8)[3] == 1.0).all()
    x[0, 0] = -1e6
    assert (model.predict(d, x, 8)[3] == 1.0).all()
    stats = model.sizer.stats
    assert (stats.calls, stats.failures, stats.disabled) == (2, 1, False)
    model.predict(d, x, 8)
    assert stats.disabled and "sizer qnet disabled after 2" in model.status_lines()[0]
    x[0, 0] = 1.0
    assert (model.predict(d, x, 8)[3] == 1.0).all() and stats.calls == 3  # not asked again


def test_fused_mode_with_a_sizer_should_give_the_same_orders_twice_and_none_at_scale_zero(tmp_path):
    from pipeline.hosting.fused import run_fused
    from stages import records
    from tests.conftest import signal_config

    mixed = write_sizer(tmp_path, q_graph(_weights(seed=8) * 0.01), [0.0, 0.5, 1.0], version="v1")
    flat = write_sizer(tmp_path, q_graph(np.zeros((N_FEATURES, 2))), [0.0, 1.0], version="v2")  # ties: action 0
    events = 12_000
    config = signal_config(feed={"seed": 11}, inference={"sizer": str(mixed)})
    first, second = run_fused(config, events), run_fused(config, events)
    assert len(first.intents) > 0
    assert first.intents.tobytes() == second.intents.tobytes()
    assert first.reports.tobytes() == second.reports.tobytes()
    rule = run_fused(signal_config(feed={"seed": 11}), events)
    assert rule.intents.tobytes() != first.intents.tobytes()  # the sizer, not the rule, sized them
    nothing = run_fused(signal_config(feed={"seed": 11}, inference={"sizer": str(flat)}), events)
    sized = nothing.intents[nothing.intents["strategy"] != records.STRAT_RISK_REDUCE]
    assert len(rule.intents) > 0 and len(sized) == 0


def test_a_live_run_with_a_flat_sizer_should_send_no_order(live, tmp_path):
    """The live inference host's path (pipeline.hosting.stage_host): a sizer whose every answer is scale 0."""
    from tests.conftest import SIGNAL_ARGS
    flat = write_sizer(tmp_path, q_graph(np.zeros((N_FEATURES, 2))), [0.0, 1.0])
    # No budget: a late sizer's batch is sized by the rule (scale 1), and a loaded machine must not make it late.
    run = live(*SIGNAL_ARGS, "--quiet", "--events", "20000", "--rate", "20000", "--set", f"inference.sizer={flat}",
               "--set", "inference.member_timeout_us=0")
    code, output = run.finish(timeout=240)
    assert code == 0, output
    assert "records per stage" in output and "inference 0->" not in output, output
    assert "orders 0, fills 0" in output, output
