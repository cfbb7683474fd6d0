"""An ensemble's voters fused into one ONNX graph (pipeline.hosting.member_fusion, models.FusedMembers): the same
numbers bit for bit as each member's own session, every kind included (the shipped GBT's older opset converted, two
windows of different length from one shared input); a fused run that raises or answers non-finite numbers falls
back to the per-member path for that batch and is counted; a late fused run drops every member's vote; the counters
in inference's slot; inference.fuse_members off gives the same orders."""
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline import registry as process_registry
from pipeline.hosting import member_fusion, models
from shm import control as cb
from stages.records import N_FEATURES, RISK_DECISION
from tests.onnx_members import (coefficients, logistic_graph, nodes_graph, window_graph, write_ensemble,
                                write_member)

SHIPPED_GBT = Path(__file__).resolve().parents[3] / "models" / "gbt" / "v2"
NODES = [[0, 0], [0, 1], [1, 0], [1, 2]]


def _decisions(n, rng):
    d = np.zeros(n, RISK_DECISION)
    d["venue"], d["symbol"] = rng.integers(0, 2, n), rng.integers(0, 3, n)  # (0, 2), (1, 1): not nodes
    d["values"] = rng.normal(0.0, 3.0, (n, N_FEATURES))
    return d


def _x(d):
    return np.ascontiguousarray(d["values"], np.float32)


def _write(root: Path, *extra: tuple[str, bytes, dict]) -> Path:
    """An ensemble of a logistic member, the shipped GBT, a sequence member (K=5), a graph member; ``extra``
    (name, graph, model.json fields) replaces the last ones."""
    rng = np.random.default_rng(4)
    write_member(root, "lin", "v1", logistic_graph(coefficients(1, 0.2), 0.1),
                 calibration={"method": "platt", "a": 1.2, "b": -0.1})
    shutil.copytree(SHIPPED_GBT, root / "gbt" / "v1")
    write_member(root, "seq", "v1", window_graph(rng.normal(0, 0.1, (5, N_FEATURES))), member_kind="sequence",
                 window=5)
    write_member(root, "gnn", "v1", nodes_graph(rng.normal(0, 0.1, (len(NODES), N_FEATURES)),
                                                np.array([0.2, -0.1, 0.0, 0.3])), member_kind="graph", nodes=NODES)
    names = ["lin", "gbt", "seq", "gnn"]
    for i, (name, graph, fields) in enumerate(extra):
        write_member(root, name, "v1", graph, **fields)
        names[len(names) - len(extra) + i] = name
    return write_ensemble(root, 1, [{"path": f"{name}/v1", "weight": 1.0 + i / 4} for i, name in enumerate(names)],
                          min_confidence=0.05)


def _same_answers(fused: models.Models, alone: models.Models, batches: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        n = int(rng.integers(1, 300))
        d = _decisions(n, rng)
        got, want = fused.predict(d, _x(d), n), alone.predict(d, _x(d), n)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("second_window", [None, 3])
def test_fused_members_should_answer_bit_for_bit_what_their_own_sessions_answer(tmp_path, second_window):
    extra = () if second_window is None else (("seq3", window_graph(np.random.default_rng(5).normal(
        0, 0.1, (second_window, N_FEATURES))), {"member_kind": "sequence", "window": second_window}),)
    where = _write(tmp_path, *extra)
    fused, alone = models.Models(models.load(where), 64), models.Models(models.load(where, fuse=False), 64)
    assert fused.fused is not None and fused.loaded.fuse_note == "" and alone.fused is None
    _same_answers(fused, alone, 40)
    assert fused.fused.stats.calls == 40 and fused.fused.stats.failures == 0
    # the per-member path never ran: the members' own histograms are empty, their calls counted
    assert all(m.stats.calls == 40 and m.stats.hist.sum() == 0 for m in fused.members)
    assert fused.fused.stats.hist.sum() == 40
    # raw answers of the last batch, fused against each member's own session on the same built inputs
    n = 37
    d = _decisions(n, np.random.default_rng(9))
    fused.predict(d, _x(d), n)
    raws = fused.fused.session.run(fused.fused.output_names, fused.fused.build(None, n, _x(d)))[0]
    for member, raw in zip(fused.members, raws):
        own = member.session.run(member.output_names, member.builder.build(d, n, _x(d)))[0]
        assert own.tobytes() == raw.tobytes()


def test_a_host_reusing_its_input_buffer_should_be_answered_from_its_new_rows_through_the_bound_runs(tmp_path):
    """The host fills one x buffer per batch: the IO bindings (made once per batch size, fused and per member) must
    read the rows as they are now, not as they were bound. The reference binds afresh every batch (a new x)."""
    where = _write(tmp_path)
    fused, alone = models.Models(models.load(where), 64), models.Models(models.load(where, fuse=False), 64)
    fresh = models.Models(models.load(where, fuse=False), 64)
    x = np.zeros((64, N_FEATURES), np.float32)
    rng = np.random.default_rng(21)
    for _ in range(30):
        n = int(rng.choice([1, 16, 64]))
        d = _decisions(n, rng)
        x[:n] = d["values"]
        want = [a.copy() for a in fresh.predict(d, _x(d), n)]
        for got in (fused.predict(d, x, n), alone.predict(d, x, n)):
            for a, b in zip(got, want):
                assert a.tobytes() == b.tobytes()
    assert sorted(fused.fused.bound._bindings) == [1, 16, 64]  # bound once per size, reused since
    assert all(sorted(m.bound._bindings) == [1, 16, 64] for m in alone.members)
    assert fused.fused.stats.failures == 0 and all(m.stats.failures == 0 for m in alone.members)


def _opset10_graph() -> bytes:
    """prob_up = sigmoid(Pad(features) @ w) at opset 10, where Pad's pads are an attribute (an input from 11 on):
    the checker refuses it under opset 17 as it is, so the fusion converts it."""
    w = numpy_helper.from_array(coefficients(4, 0.2).astype(np.float32).reshape(N_FEATURES, 1), "w")
    flat = numpy_helper.from_array(np.array([-1], np.int64), "flat")
    nodes = [helper.make_node("Pad", ["features"], ["padded"], pads=[0, 0, 0, 0]),
             helper.make_node("MatMul", ["padded", "w"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["p2"]),
             helper.make_node("Reshape", ["p2", "flat"], ["prob_up"])]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                                           ["N", N_FEATURES])],
                              [helper.make_tensor_value_info("prob_up", TensorProto.FLOAT, ["N"])], [w, flat])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    model.ir_version = 6
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_a_member_of_an_older_opset_the_checker_refuses_as_it_is_should_be_converted_and_still_agree(tmp_path):
    where = _write(tmp_path, ("old", _opset10_graph(), {}))
    fused, alone = models.Models(models.load(where), 64), models.Models(models.load(where, fuse=False), 64)
    assert fused.fused is not None, fused.loaded.fuse_note
    _same_answers(fused, alone, 10)


def test_a_fused_run_that_raises_should_fall_back_to_each_member_for_that_batch_and_be_counted(tmp_path):
    where = _write(tmp_path, ("flaky", logistic_graph(coefficients(2, 0.2), 0.0, fail_below=-5.0), {}))
    fused, alone = models.Models(models.load(where), 64), models.Models(models.load(where, fuse=False), 64)
    assert fused.fused is not None  # the probe batch does not trip it
    rng = np.random.default_rng(2)
    for i in range(12):
        n = 20
        d = _decisions(n, rng)
        d["values"][0, 0] = -9.0 if i % 3 == 0 else 1.0  # every third batch the flaky member raises
        got, want = fused.predict(d, _x(d), n), alone.predict(d, _x(d), n)
        for a, b in zip(got, want):
            assert a.tobytes() == b.tobytes()
        assert (got[2] == (3 if i % 3 == 0 else 4)).all()
    stats = fused.fused.stats
    assert (stats.calls, stats.failures, stats.disabled) == (12, 4, False)
    flaky = fused.members[3].stats
    assert (flaky.calls, flaky.failures) == (12, 4)
    assert fused.members[0].stats.hist.sum() == 4  # a member is timed alone only in the batches run per member
    assert "Reshape" in stats.last_error or "reshape" in stats.last_error


def test_a_member_answering_non_finite_numbers_should_send_the_batch_to_the_per_member_path(tmp_path):
    weights = coefficients(3, 0.2)
    weights[0] = np.inf  # inf * 0 on a row whose first feature is 0: NaN
    where = _write(tmp_path, ("nan", logistic_graph(weights, 0.0), {}))
    fused, alone = models.Models(models.load(where), 64), models.Models(models.load(where, fuse=False), 64)
    rng = np.random.default_rng(3)
    d = _decisions(16, rng)
    d["values"][5, 0] = 0.0
    got, want = fused.predict(d, _x(d), 16), alone.predict(d, _x(d), 16)
    for a, b in zip(got, want):
        assert a.tobytes() == b.tobytes()
    assert fused.fused.stats.failures == 1 and "finite" in fused.fused.stats.last_error
    assert all(m.stats.hist.sum() == 1 for m in fused.members)  # that batch ran per member


def test_a_late_fused_run_should_drop_every_vote_and_after_max_failures_run_per_member(tmp_path):
    where = _write(tmp_path)
    model = models.Models(models.load(where), 64, timeout_us=0.001, max_failures=3)  # 1 ns: nothing makes it
    d = _decisions(8, np.random.default_rng(6))
    prob, confidence, alive, _ = model.predict(d, _x(d), 8)
    assert (prob == 0.5).all() and (confidence == 0).all() and (alive == 0).all()
    assert [m.stats.timeouts for m in model.members] == [1] * 4 and model.fused.stats.timeouts == 1
    for _ in range(2):
        model.predict(d, _x(d), 8)
    assert model.fused.stats.disabled and all(m.stats.disabled for m in model.members)


def test_the_fused_runs_counters_should_reach_inferences_slot(tmp_path):
    model = models.Models(models.load(_write(tmp_path)), 64)
    d = _decisions(64, np.random.default_rng(8))
    for _ in range(5):
        model.predict(d, _x(d), 64)
    slot = np.zeros(cb.STAGE_WORDS, np.int64)
    model.publish(slot)
    inf = process_registry.BY_NAME["inference"]
    word = lambda name: slot[cb.S_CUSTOM + inf.counter(name)]  # noqa: E731
    assert word("fused_calls") == 5 and word("fused_failures") == 0 and word("fused_p50_ns") > 0
    assert word("m2_calls") == 5 and word("m2_p50_ns") == 0  # not timed alone: the fused run's time is the one
    unfused = models.Models(models.load(_write(tmp_path / "b"), fuse=False), 64)
    unfused.predict(d, _x(d), 64)
    unfused.publish(slot)
    assert word("fused_calls") == 0 and word("m2_p50_ns") > 0


def test_a_single_model_should_not_be_fused():
    assert models.load(SHIPPED_GBT).fused is None


def test_compose_should_refuse_a_member_reading_an_input_no_set_shares():
    graph = logistic_graph(coefficients(1), 0.0).replace(b"features", b"featurez")
    with pytest.raises(ValueError, match="reads only"):
        models.run_steps(member_fusion.compose_steps([(graph, 0)], 0, 0))


def test_fused_mode_should_give_the_same_orders_with_fuse_members_on_and_off(tmp_path):
    from pipeline.hosting.fused import run_fused
    from tests.conftest import signal_config
    where = _write(tmp_path)
    on = run_fused(signal_config(feed={"seed": 11}, inference={"ensemble": str(where)}), 20_000)
    off = run_fused(signal_config(feed={"seed": 11}, inference={"ensemble": str(where), "fuse_members": False}),
                    20_000)
    assert len(on.intents) > 0
    assert on.intents.tobytes() == off.intents.tobytes() and on.reports.tobytes() == off.reports.tobytes()
