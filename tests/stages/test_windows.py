"""stages.windows: the per-instrument history and the sequence and graph inputs built from it, record by record."""
import numpy as np

from stages import windows
from stages.records import N_FEATURES, RISK_DECISION
from stages.universe import instrument_key


def _records(streams, seed=0):
    """RISK_DECISION records of (venue, symbol) in the given order; record i's values are i + 1 + noise, so each
    record's vector is its own."""
    rng = np.random.default_rng(seed)
    recs = np.zeros(len(streams), RISK_DECISION)
    for i, (venue, symbol) in enumerate(streams):
        recs[i]["venue"], recs[i]["symbol"] = venue, symbol
        recs[i]["values"] = i + 1 + rng.random(N_FEATURES)
    return recs


def _advance(recs, k, node_pairs=(), history=None, splits=None):
    ring, counts = history if history is not None else windows.empty_history()
    n = len(recs)
    node_keys = np.array([instrument_key(v, s) for v, s in node_pairs], np.int64)
    out = np.zeros((n, k, N_FEATURES), np.float32)
    nodes = np.zeros((n, len(node_keys), N_FEATURES), np.float32)
    target = np.zeros(n, np.int64)
    edges = [0, *(splits or []), n]
    for lo, hi in zip(edges[:-1], edges[1:]):  # batches: each call writes its rows from 0
        windows.advance(recs[lo:hi], hi - lo, ring, counts, k, out[lo:hi], node_keys, nodes[lo:hi], target[lo:hi])
    return out, nodes, target, (ring, counts)


def test_a_window_should_hold_its_streams_last_vectors_oldest_first_padded_with_the_first():
    streams = [(0, 0), (0, 1), (0, 0), (0, 0), (0, 1), (0, 0), (0, 0)]
    recs = _records(streams)
    out, _, _, _ = _advance(recs, 3)
    v = recs["values"].astype(np.float32)
    a = [0, 2, 3, 5, 6]  # stream (0, 0)'s records
    np.testing.assert_array_equal(out[0], v[[0, 0, 0]])
    np.testing.assert_array_equal(out[2], v[[0, 0, 2]])
    np.testing.assert_array_equal(out[3], v[[0, 2, 3]])
    np.testing.assert_array_equal(out[6], v[a[-3:]])
    np.testing.assert_array_equal(out[1], v[[1, 1, 1]])  # the other stream's own history
    np.testing.assert_array_equal(out[4], v[[1, 1, 4]])


def test_windows_should_not_depend_on_how_records_are_cut_into_batches():
    rng = np.random.default_rng(1)
    streams = [(int(v), int(s)) for v, s in zip(rng.integers(0, 2, 700), rng.integers(0, 3, 700))]
    recs = _records(streams, 1)
    whole = _advance(recs, 64, [(0, 0), (1, 2), (0, 1)])
    cut = _advance(recs, 64, [(0, 0), (1, 2), (0, 1)], splits=sorted(rng.choice(699, 40, replace=False) + 1))
    for a, b in zip(whole[:3], cut[:3]):
        np.testing.assert_array_equal(a, b)
    # past the ring's length the window is still the stream's last 64, oldest first
    last = np.flatnonzero([s == (1, 2) for s in streams])[-64:]
    np.testing.assert_array_equal(whole[0][last[-1]], recs["values"][last].astype(np.float32))


def test_non_finite_values_should_be_kept_as_zero():
    recs = _records([(0, 0), (0, 0)])
    recs[0]["values"][3], recs[0]["values"][4], recs[1]["values"][5] = np.nan, np.inf, -np.inf
    out, nodes, _, _ = _advance(recs, 2, [(0, 0)])
    assert out[1, 0, 3] == 0 and out[1, 0, 4] == 0 and out[1, 1, 5] == 0 and np.isfinite(out).all()
    assert nodes[1, 0, 5] == 0 and np.isfinite(nodes).all()


def test_nodes_should_hold_each_instruments_latest_vector_and_zeros_before_its_first():
    recs = _records([(0, 0), (1, 0), (0, 0), (2, 7)])
    _, nodes, target, _ = _advance(recs, 0, [(1, 0), (0, 0), (3, 3)])
    v = recs["values"].astype(np.float32)
    np.testing.assert_array_equal(nodes[0, 0], 0)                  # (1, 0) not seen yet
    np.testing.assert_array_equal(nodes[0, 1], v[0])
    np.testing.assert_array_equal(nodes[1, 0], v[1])
    np.testing.assert_array_equal(nodes[2, 1], v[2])               # its own vector, just pushed
    np.testing.assert_array_equal(nodes[:, 2], 0)                  # (3, 3) never seen
    assert target.tolist() == [1, 0, 1, -1]                       # (2, 7) is no node


def test_a_key_outside_the_universe_should_not_be_kept_and_see_only_itself():
    recs = _records([(0, 0), (9, 0), (0, 0)])
    out, _, _, (ring, counts) = _advance(recs, 2)
    np.testing.assert_array_equal(out[1], recs["values"][[1, 1]].astype(np.float32))
    np.testing.assert_array_equal(out[2], recs["values"][[0, 2]].astype(np.float32))
    assert counts.sum() == 2


def test_the_history_should_carry_over_to_the_next_caller():
    recs = _records([(0, 0)] * 5)
    _, _, _, history = _advance(recs[:3], 4)
    out, _, _, _ = _advance(recs[3:], 4, history=history)
    np.testing.assert_array_equal(out[1], recs["values"][[1, 2, 3, 4]].astype(np.float32))
