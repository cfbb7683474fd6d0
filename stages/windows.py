"""The inference host's per-instrument history, and the inputs the sequence and graph members read from it.

The history is each instrument key's last ``MAX_WINDOW`` feature vectors, a ring per key in arrival order
(``ring[key, count % MAX_WINDOW]``), with ``counts[key]`` vectors seen so far; non-finite values are kept as 0 (the
training windows apply the same rule). ``advance`` takes a batch of records (RISK_DECISION in a live run,
FEATURE_VECTOR in fused mode: both carry venue, symbol and values) and, for each record i in order, first pushes its
vector, then writes record i's inputs:

- ``windows[i]``: the last ``window_len`` vectors of i's stream, oldest first; slots before the stream's first
  vector hold a copy of that first vector (edge padding);
- ``nodes[i, u]``: the latest vector of instrument ``node_keys[u]`` (zeros if none seen yet), and ``target[i]``:
  the node of i's own instrument, -1 if it is not among ``node_keys``.

A record whose key is outside the universe (``MAX_KEYS``) is not kept; its window is its own vector repeated.
Pure: arrays in, arrays out; the caller owns them (one thread).
"""
import numpy as np
from numba import njit

from stages.records import N_FEATURES
from stages.universe import MAX_KEYS, instrument_key

MAX_WINDOW = 64


def empty_history() -> tuple[np.ndarray, np.ndarray]:
    """(ring float32 [MAX_KEYS, MAX_WINDOW, N_FEATURES], counts int64 [MAX_KEYS]) of a run that has seen nothing."""
    return np.zeros((MAX_KEYS, MAX_WINDOW, N_FEATURES), np.float32), np.zeros(MAX_KEYS, np.int64)


@njit(cache=True)
def advance(records, n, ring, counts, window_len, windows, node_keys, nodes, target):
    """Push ``records[:n]`` into the history and write their inputs (module docstring); returns n. Needs
    ``window_len <= MAX_WINDOW``, ``windows`` [>= n, window_len, N_FEATURES] when ``window_len > 0``, ``nodes``
    [>= n, len(node_keys), N_FEATURES] and ``target`` [>= n] when ``node_keys`` is not empty."""
    n_nodes = node_keys.shape[0]
    for i in range(n):
        key = instrument_key(records[i]["venue"], records[i]["symbol"])
        values = records[i]["values"]
        kept = key < MAX_KEYS
        if kept:
            c = counts[key]
            slot = c % MAX_WINDOW
            for j in range(N_FEATURES):
                v = values[j]
                ring[key, slot, j] = v if np.isfinite(v) else 0.0
            counts[key] = c + 1
        if window_len > 0:
            for s in range(window_len):
                if not kept:
                    for j in range(N_FEATURES):
                        v = values[j]
                        windows[i, s, j] = v if np.isfinite(v) else 0.0
                    continue
                idx = counts[key] - window_len + s
                # Before the first vector: the first one, still at slot 0 (the ring cannot have wrapped yet, as
                # counts[key] < window_len <= MAX_WINDOW).
                src = 0 if idx < 0 else idx % MAX_WINDOW
                for j in range(N_FEATURES):
                    windows[i, s, j] = ring[key, src, j]
        if n_nodes > 0:
            t = -1
            for u in range(n_nodes):
                k = node_keys[u]
                if k == key:
                    t = u
                if counts[k] == 0:
                    for j in range(N_FEATURES):
                        nodes[i, u, j] = 0.0
                else:
                    src = (counts[k] - 1) % MAX_WINDOW
                    for j in range(N_FEATURES):
                        nodes[i, u, j] = ring[k, src, j]
            target[i] = t
    return n


@njit(cache=True)
def advance_inputs(records, n, ring, counts, window_len, windows, node_keys, nodes, target, graph_target, off_graph):
    """``advance``, then for a graph's rows ``graph_target[i]``: the node to run on (``target[i]``, node 0 for a
    record whose instrument is not a node) and ``off_graph[i]``: it is not (its graph answer is no view)."""
    advance(records, n, ring, counts, window_len, windows, node_keys, nodes, target)
    if node_keys.shape[0] > 0:
        for i in range(n):
            t = target[i]
            off_graph[i] = t < 0
            graph_target[i] = t if t >= 0 else 0
    return n
