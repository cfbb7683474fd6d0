"""The sequence and graph members' training: the windows and cross-sections gathered from every feature record
(labelled or not) are the ones the inference host builds from the same records, each member fits on a small sample
and its ONNX graph gives scikit-learn's numbers, and the files it writes load and serve in the host."""
import numpy as np
import onnx
import pytest

from pipeline.hosting import models
from pipeline.training import datasets, trainer
from pipeline.training.members import trainer as member_trainer
from stages import inference, windows
from stages.records import N_FEATURES
from tests.onnx_members import coefficients, logistic_graph, write_ensemble, write_member


@pytest.fixture(scope="module")
def seeds(synthetic_vectors):
    feats = {s: datasets.in_order(v) for s, v in synthetic_vectors.items()}
    ds = datasets.concat([datasets.from_vectors(feats[1], 20, 0, 0),
                          datasets.from_vectors(feats[2], 20, 1, feats[1].size)], {"source": "test"})
    return feats, ds


def test_training_windows_should_be_the_hosts_windows_over_every_record(seeds):
    feats, ds = seeds
    f = feats[1]
    ring, counts = windows.empty_history()
    host = np.zeros((f.size, 16, N_FEATURES), np.float32)
    nodes = np.zeros((f.size, 6, N_FEATURES), np.float32)
    keys = np.array([0, 1, 2, 8, 9, 10], np.int64)
    for lo in range(0, f.size, 256):  # the host's batches, every record of the stream (labelled or not)
        part = f[lo:lo + 256]
        windows.advance(part, part.size, ring, counts, 16, host[lo:lo + 256], keys, nodes[lo:lo + 256],
                        np.zeros(part.size, np.int64))
    first = ds.position < f.size  # rows of segment 0
    rows = ds.position[first]
    assert rows.size < f.size  # unlabelled records exist and still fill the windows
    np.testing.assert_array_equal(ds.history.windows(rows, 16), host[rows])
    np.testing.assert_array_equal(ds.history.cross_section(rows, keys.tolist()), nodes[rows])
    # segment 1's first rows do not see segment 0's records
    second = ds.position[~first][:5]
    assert (ds.history.cross_section(second, keys.tolist()) == 0).any()


@pytest.mark.parametrize("name", ["sequence", "graph"])
def test_a_member_should_fit_export_and_serve_in_the_host_with_the_trainers_numbers(seeds, name, tmp_path):
    feats, ds = seeds
    n = len(ds)
    train, valid = ds.take(np.arange(0, n // 2)), ds.take(np.arange(n // 2, 3 * n // 4))
    test = ds.take(np.arange(3 * n // 4, n))
    fitted = member_trainer(name, fit_stride=4).fit(train, valid, seed=1)
    graph = onnx.load_from_string(fitted.onnx_bytes)
    expected_inputs = {"sequence": ["window"], "graph": ["nodes", "target"]}[name]
    assert [i.name for i in graph.graph.input] == expected_inputs
    probs, err = trainer.check_export(name, fitted, test)
    assert err <= trainer.EXPORT_TOLERANCE and probs.shape == (len(test),)
    assert fitted.metadata["member_kind"] == name
    # the file served by the host, fed every record of segment 1 in batches, gives the trainer's numbers at its rows
    extra = {"window": fitted.metadata["window"]} if name == "sequence" else {"nodes": fitted.metadata["nodes"]}
    where = write_member(tmp_path, name, "v1", fitted.onnx_bytes, member_kind=name, **extra)
    host = models.Models(models.load(where), 256)
    f = feats[2]
    served = np.zeros(f.size)
    x = np.zeros((256, N_FEATURES), np.float32)
    for lo in range(0, f.size, 256):
        part = f[lo:lo + 256]
        inference.prepare(part, part.size, x)
        served[lo:lo + part.size] = host.predict(part, x, part.size)[0]
    rows = test.position - feats[1].size
    np.testing.assert_allclose(served[rows], probs, atol=1e-6)


def test_the_trainer_should_score_every_member_per_fold_and_on_the_holdout(seeds):
    _, ds = seeds
    settings = trainer.Settings(members=("logistic", "sequence", "graph"), n_folds=1, bootstrap_reps=5,
                                fit_stride=8)
    result = trainer.train(ds, settings, holdout=ds.take(np.arange(len(ds) - 2000, len(ds))), log=lambda _: None)
    for name in ("logistic", "sequence", "graph", "ensemble"):
        assert 0 < result.folds[0]["test"][name]["log_loss"] < 1 and name in result.holdout


def test_a_member_needs_the_records_behind_the_rows():
    from tests.pipeline.training.conftest import make_dataset
    with pytest.raises(ValueError, match="needs the feature records"):
        member_trainer("sequence").fit(make_dataset(500), make_dataset(200, seed=1), seed=1)


@pytest.mark.parametrize("name", ["sequence", "graph"])
def test_sequence_and_graph_members_should_take_their_hidden_units(seeds, name):
    _, ds = seeds
    half = len(ds) // 2
    fitted = member_trainer(name, hidden=4, fit_stride=5).fit(ds.take(np.arange(half)),
                                                              ds.take(np.arange(half, len(ds))), 1)
    first_layer = [i for i in onnx.load_from_string(fitted.onnx_bytes).graph.initializer
                   if i.name == "mlp_w0" or i.name.startswith("mlp_w0_")]  # the graph's: _self, _neighbours
    assert first_layer and all(tuple(i.dims)[1] == 4 for i in first_layer)
    assert all(row["hidden"] == 4 for row in fitted.metadata["fit"]["selection"]["candidates"])


def test_the_graph_member_should_run_no_batched_matmul_and_give_numpys_numbers_for_every_target(seeds):
    _, ds = seeds
    n = len(ds)
    fitted = member_trainer("graph", hidden=8, fit_stride=8).fit(ds.take(np.arange(n // 2)),
                                                                 ds.take(np.arange(n // 2, 3 * n // 4)), 1)
    graph = onnx.load_from_string(fitted.onnx_bytes).graph
    constants = {i.name for i in graph.initializer}
    products = [node for node in graph.node if node.op_type in ("MatMul", "Gemm", "Einsum")]
    assert products and all(node.op_type != "Einsum" and constants & set(node.input[:2]) for node in products)
    feeds = fitted.feeds(ds.take(np.arange(3 * n // 4, n)))
    u = feeds["nodes"].shape[1]
    rows = np.concatenate([np.flatnonzero(feeds["target"] == t)[:20] for t in range(u)])
    assert np.unique(feeds["target"][rows]).size == u
    nodes, target = feeds["nodes"][rows], feeds["target"][rows]
    # a node before its first record is zeros: the target itself, and a neighbour of it
    unseen_self, unseen_neighbour = nodes.copy(), nodes.copy()
    unseen_self[np.arange(rows.size), target] = 0.0
    unseen_neighbour[np.arange(rows.size), (target + 1) % u] = 0.0
    cases = {"nodes": np.concatenate([nodes, unseen_self, unseen_neighbour]),
             "target": np.concatenate([target] * 3)}
    got = trainer.onnx_predict(fitted.onnx_bytes, cases)
    want = fitted.predict(cases)
    assert np.max(np.abs(got - want)) <= 1e-6
    assert np.ptp(want) > 0.01  # the rows and targets do not all give one number
    assert trainer.onnx_predict(fitted.onnx_bytes, {"nodes": nodes[:0], "target": target[:0]}).shape == (0,)


def test_the_trained_graph_member_should_fuse_with_another_member_bit_for_bit(seeds, tmp_path):
    feats, ds = seeds
    n = len(ds)
    fitted = member_trainer("graph", hidden=8, fit_stride=8).fit(ds.take(np.arange(n // 2)),
                                                                 ds.take(np.arange(n // 2, 3 * n // 4)), 1)
    write_member(tmp_path, "lin", "v1", logistic_graph(coefficients(1, 0.2), 0.1))
    write_member(tmp_path, "gnn", "v1", fitted.onnx_bytes, member_kind="graph", nodes=fitted.metadata["nodes"])
    where = write_ensemble(tmp_path, 1, [{"path": "lin/v1", "weight": 1.0}, {"path": "gnn/v1", "weight": 1.0}])
    fused, alone = models.Models(models.load(where), 256), models.Models(models.load(where, fuse=False), 256)
    assert fused.fused is not None and fused.loaded.fuse_note == ""
    f = feats[2]
    x = np.zeros((256, N_FEATURES), np.float32)
    for lo in range(0, f.size, 256):
        part = f[lo:lo + 256]
        inference.prepare(part, part.size, x)
        for a, b in zip(fused.predict(part, x, part.size), alone.predict(part, x, part.size)):
            assert a.tobytes() == b.tobytes()
    assert fused.fused.stats.calls == -(-f.size // 256) and fused.fused.stats.failures == 0
