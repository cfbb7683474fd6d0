"""Sequence and graph members in the inference host (pipeline.hosting.models over stages.windows): their inputs
from the run's history, the same predictions however the decisions are batched (fused mode runs every feature
vector in groups, a live run risk's decisions in ring batches: the same vectors in the same per-stream order), the
history handed on at a swap, refused model.json files, and the same orders twice in fused mode."""
import json

import numpy as np
import pytest

from pipeline.hosting import models
from stages.records import N_FEATURES, RISK_DECISION
from tests.onnx_members import (coefficients, logistic_graph, nodes_graph, window_graph, write_ensemble,
                                write_member)

K = 5
NODES = [[0, 0], [0, 1], [1, 0]]


def _decisions(n, seed=0):
    rng = np.random.default_rng(seed)
    d = np.zeros(n, RISK_DECISION)
    d["venue"], d["symbol"] = rng.integers(0, 2, n), rng.integers(0, 3, n)  # (1, 1), (1, 2), (0, 2): no nodes
    d["values"] = rng.normal(0.0, 1.0, (n, N_FEATURES))
    d["values"][rng.random(n) < 0.05, 7] = np.nan
    return d


def _x(decisions):
    return np.ascontiguousarray(decisions["values"], np.float32)


def _reference_windows(decisions, k):
    """Each decision's stream's last k vectors, oldest first, edge-padded, NaN as 0: plain Python, per record."""
    seen, out = {}, np.zeros((len(decisions), k, N_FEATURES), np.float32)
    for i, d in enumerate(decisions):
        stream = seen.setdefault((int(d["venue"]), int(d["symbol"])), [])
        stream.append(np.nan_to_num(d["values"].astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0))
        rows = stream[-k:]
        out[i] = np.stack([rows[0]] * (k - len(rows)) + rows)
    return out


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture
def registry(tmp_path):
    rng = np.random.default_rng(7)
    w_seq = rng.normal(0.0, 0.1, (K, N_FEATURES)).astype(np.float32)
    w_nodes, bias = rng.normal(0.0, 0.1, (len(NODES), N_FEATURES)).astype(np.float32), np.array([0.3, -0.2, 0.1])
    write_member(tmp_path, "seq", "v1", window_graph(w_seq), member_kind="sequence", window=K)
    write_member(tmp_path, "gnn", "v1", nodes_graph(w_nodes, bias), member_kind="graph", nodes=NODES)
    write_member(tmp_path, "lin", "v1", logistic_graph(coefficients(1), 0.0))
    ens = write_ensemble(tmp_path, 1, [{"path": "lin/v1", "weight": 1.0}, {"path": "seq/v1", "weight": 1.0},
                                       {"path": "gnn/v1", "weight": 1.0}])
    return tmp_path, w_seq, w_nodes, bias, ens


def _predict_in_batches(model, decisions, cuts):
    out = []
    edges = [0, *cuts, len(decisions)]
    for lo, hi in zip(edges[:-1], edges[1:]):
        part = decisions[lo:hi]
        out.append(model.predict(part, _x(part), hi - lo)[0].copy())
    return np.concatenate(out)


def test_a_sequence_member_should_read_its_streams_last_k_vectors(registry):
    root, w_seq, *_ = registry
    d = _decisions(300)
    prob = models.Models(models.load(root / "seq" / "v1"), 64).predict(d, _x(d), len(d))[0]
    expected = _sigmoid(_reference_windows(d, K).reshape(len(d), -1).astype(np.float64) @ w_seq.reshape(-1))
    np.testing.assert_allclose(prob, expected, atol=1e-6)


def test_a_graph_member_should_read_every_nodes_latest_vector_and_answer_half_off_its_nodes(registry):
    root, _, w_nodes, bias, _ = registry
    d = _decisions(300, 1)
    prob = models.Models(models.load(root / "gnn" / "v1"), 64).predict(d, _x(d), len(d))[0]
    latest, expected = {}, np.full(len(d), 0.5)
    for i, rec in enumerate(d):
        pair = [int(rec["venue"]), int(rec["symbol"])]
        latest[tuple(pair)] = np.nan_to_num(rec["values"].astype(np.float32), nan=0.0)
        nodes = np.stack([latest.get(tuple(p), np.zeros(N_FEATURES, np.float32)) for p in NODES])
        if pair in NODES:
            expected[i] = _sigmoid(float((nodes.astype(np.float64) * w_nodes).sum()) + bias[NODES.index(pair)])
    np.testing.assert_allclose(prob, expected, atol=1e-6)
    assert (prob == 0.5).sum() == sum([int(v), int(s)] not in NODES for v, s in zip(d["venue"], d["symbol"]))


def test_predictions_should_not_depend_on_how_decisions_are_batched(registry):
    """Fused mode predicts per group of feature vectors, a live run per ring batch of risk decisions (one per
    vector, in order): the same vectors in the same order must give the same numbers, bit for bit."""
    root, *_, ens = registry
    d = _decisions(1000, 2)
    whole = models.Models(models.load(ens), 1000).predict(d, _x(d), len(d))[0].copy()
    rng = np.random.default_rng(3)
    for _ in range(3):
        cuts = sorted(rng.choice(999, 60, replace=False) + 1)
        np.testing.assert_array_equal(_predict_in_batches(models.Models(models.load(ens), 16), d, cuts), whole)


def test_a_swap_should_hand_the_history_to_the_new_model_set_and_a_restart_starts_cold(registry):
    root, *_, ens = registry
    d = _decisions(400, 4)
    whole = models.Models(models.load(ens), 400).predict(d, _x(d), len(d))[0].copy()
    history = models.History()
    before = models.Models(models.load(root / "lin" / "v1"), 64, history=history)  # a vector-only set still keeps it
    before.predict(d[:250], _x(d[:250]), 250)
    after = models.Models(models.load(ens), 64, history=history)
    np.testing.assert_array_equal(after.predict(d[250:], _x(d[250:]), 150)[0], whole[250:])
    cold = models.Models(models.load(ens), 64).predict(d[250:], _x(d[250:]), 150)[0]
    assert not np.array_equal(cold, whole[250:])


def _meta_refusal(root, name, **change):
    meta_path = root / name / "v1" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta.update(change)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(models.ModelLoadError) as err:
        models.load(root / name / "v1")
    return str(err.value)


@pytest.mark.parametrize("window", [0, 65, "5", True, None, 4])
def test_a_sequence_member_with_a_bad_window_should_be_refused_by_name(registry, window):
    text = _meta_refusal(registry[0], "seq", window=window)
    assert ("window=" in text and "[1, 64]" in text) or ("inputs expected" in text and "4" in text), text


@pytest.mark.parametrize("nodes", [[[9, 0], [0, 1], [1, 0]], [[0, 0], [0, 0], [1, 0]], [], "x", [[0, 0, 1]],
                                   [[0, 0], [0, 1]]])
def test_a_graph_member_with_bad_nodes_should_be_refused_by_name(registry, nodes):
    text = _meta_refusal(registry[0], "gnn", nodes=nodes)
    assert "nodes=" in text or ("inputs expected" in text and "'nodes'" in text), text


def test_graph_members_of_one_ensemble_must_share_their_nodes(registry):
    root = registry[0]
    write_member(root, "gnn2", "v1", nodes_graph(np.zeros((3, N_FEATURES)), np.zeros(3)), member_kind="graph",
                 nodes=[[0, 0], [1, 0], [0, 1]])
    ens = write_ensemble(root, 2, [{"path": "gnn/v1", "weight": 1.0}, {"path": "gnn2/v1", "weight": 1.0}])
    with pytest.raises(models.ModelLoadError, match="graph members list different nodes"):
        models.load(ens)


def test_fused_mode_should_give_the_predictions_a_live_host_gives_and_the_same_orders_twice(registry, monkeypatch):
    """Fused mode predicts on every feature vector of a group; a live inference host gets risk's decisions (one per
    vector, in order) in ring batches. Replaying fused mode's vectors as RISK_DECISION records in batches of 64
    through a fresh model set gives fused mode's predictions, bit for bit."""
    from pipeline.hosting.fused import run_fused
    from tests.conftest import signal_config
    root, *_, ens = registry
    seen, said = [], []
    original = models.Models.predict

    def recording(self, decisions, x, n):
        out = original(self, decisions, x, n)
        seen.append(decisions[:n].copy())
        said.append(out[0].copy())
        return out

    monkeypatch.setattr(models.Models, "predict", recording)
    config = signal_config(feed={"seed": 11}, inference={"ensemble": str(ens)})
    first = run_fused(config, 20_000)
    monkeypatch.setattr(models.Models, "predict", original)
    second = run_fused(config, 20_000)
    assert len(first.intents) > 0
    assert first.intents.tobytes() == second.intents.tobytes()
    assert first.reports.tobytes() == second.reports.tobytes()
    vectors, fused = np.concatenate(seen), np.concatenate(said)
    decisions = np.zeros(len(vectors), RISK_DECISION)
    for name in ("venue", "symbol", "values"):
        decisions[name] = vectors[name]
    assert len({(int(v), int(s)) for v, s in zip(decisions["venue"], decisions["symbol"])}) == 6
    live = _predict_in_batches(models.Models(models.load(ens), 64), decisions, list(range(64, len(decisions), 64)))
    np.testing.assert_array_equal(live, fused)
