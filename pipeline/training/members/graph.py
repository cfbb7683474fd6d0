"""The cross-asset graph member: every instrument a node, one message-passing layer, then an MLP on the decision's
node.

Nodes: the instruments of the training rows, in instrument-key order (model.json ``nodes``: [venue, symbol] pairs).
Input ``nodes`` float32 [N, U, 28] (each node's latest feature vector at the decision, zeros before its first) and
``target`` int64 [N] (the decision's node). Adjacency A: the absolute correlations of the nodes' mid returns over
the fitted training rows (each row's cross-section: the latest mids), zero diagonal, each row normalised to sum 1;
a constant in the graph, recorded in model.json. With X the standardised nodes (price levels zeroed), the layer is
H = [X, A @ X] (each node beside its neighbours' weighted mean); the MLP reads the target node's row of H and the
target's one-hot (so it can tell the instruments apart), chosen on validation log loss like the sequence member.

Graph (no batched MatMul: onnxruntime runs one as N tiny GEMMs, ~16 us of 36 at 64 rows; every MatMul/Gemm here
has a constant right side): the MLP's first layer on [X_t, (A X)_t, e_t] is written on the raw nodes with the
standardisation folded in (``folded_first_layer``) and split by what it reads, as two Gemm whose C chains them:
  neighbours = Gemm(Reshape(nodes, [N, U*28]) * Gather(A_rep, target), [W_nei; ...; W_nei], C = Gather(B, target))
  z0         = Gemm(GatherND(nodes, target), W_self, C = neighbours)
then Relu (fused into the Gemm by onnxruntime) -> MatMul/Add -> Sigmoid -> prob_up. A_rep[t] is A's row t repeated
over the 28 features (A[t, t] = 0: the target's own slot adds nothing there) and W_nei is stacked U times, so the
GEMM on [N, U*28] sums sum_u A[t, u] n_u W_nei; B[t] = W_onehot[t] + b0 is the target's constant (its one-hot
weights, the mean's shift). Per 64 rows (one thread, p50 of session.run): 26 us at 8 hidden units and 33 at 32,
against 36 and 39 for the batched form, and 26 and 60 for projecting every node first ([N, U, 28] @ [W_self, W_nei],
then a per-target weighted sum: U times the hidden width in GEMM work).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from pipeline.training.datasets import Dataset
from pipeline.training.members import mlp
from pipeline.training.members.base import OUTPUT, FittedMember
from pipeline.training.members.sequence import require_history
from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, N_FEATURES
from stages.universe import MAX_SYMBOLS

DEFAULT_FIT_STRIDE = 10
_MID = FEATURE_NAMES.index("mid")


def adjacency(nodes: np.ndarray, segment_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, corr): |corr| of the nodes' log mid returns between consecutive rows of one segment where every node
    has a mid, zero diagonal, rows normalised to sum 1 (a row of zeros stays zeros)."""
    mid = nodes[:, :, _MID].astype(np.float64)
    ok = (mid > 0).all(axis=1)
    both = ok[1:] & ok[:-1] & (segment_start[1:] == segment_start[:-1])
    u = nodes.shape[1]
    corr = np.zeros((u, u))
    if both.sum() > 2:
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.log(np.where(ok[:, None], mid, 1.0))
            returns = (r[1:] - r[:-1])[both]
            corr = np.nan_to_num(np.corrcoef(returns.T).reshape(u, u))
    a = np.abs(corr)
    np.fill_diagonal(a, 0.0)
    sums = a.sum(axis=1, keepdims=True)
    return np.divide(a, sums, out=np.zeros_like(a), where=sums > 0), corr


def folded_first_layer(clf, mean: np.ndarray, inv: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The MLP's first layer on [n_t, (A n)_t, e] (raw nodes) giving what it gives on [X_t, (A X)_t, e]."""
    w, b = clf.coefs_[0].astype(np.float64), clf.intercepts_[0].astype(np.float64)
    f = N_FEATURES
    shift = np.asarray(mean, np.float64) * np.asarray(inv, np.float64)
    out = w.copy()
    out[:f] *= inv[:, None]
    out[f:2 * f] *= inv[:, None]
    out[2 * f:] -= a.sum(axis=1)[:, None] * (shift @ w[f:2 * f])[None, :]
    return out, b - shift @ w[:f]


def head_inputs(nodes: np.ndarray, target: np.ndarray, mean, inv, a: np.ndarray) -> np.ndarray:
    """numpy's version of the graph up to the MLP (float64): [X_t, (A X)_t, onehot(t)]."""
    x = (nodes.astype(np.float64) - mean) * inv
    ax = np.matmul(a, x)
    rows = np.arange(len(target))
    return np.concatenate([x[rows, target], ax[rows, target], np.eye(a.shape[0])[target]], axis=1)


def first_layer_nodes(first: tuple[np.ndarray, np.ndarray], a: np.ndarray) -> tuple[list, list]:
    """ONNX nodes and initialisers from the inputs ``nodes`` and ``target`` to ``mlp_z0``, the first layer's output
    before its Relu; ``first`` is ``folded_first_layer``'s (w, b), w's rows [W_self; W_nei; W_onehot]."""
    w, b = first
    f, u = N_FEATURES, a.shape[0]
    nodes = [helper.make_node("Reshape", ["nodes", "flat_shape"], ["nodes_flat"]),
             helper.make_node("Gather", ["neighbour_weights", "target"], ["target_weights"], axis=0),
             helper.make_node("Mul", ["nodes_flat", "target_weights"], ["weighted"]),
             helper.make_node("Gather", ["mlp_b0_target", "target"], ["target_bias"], axis=0),
             helper.make_node("Gemm", ["weighted", "mlp_w0_neighbours", "target_bias"], ["neighbour_part"]),
             helper.make_node("Unsqueeze", ["target", "axis1"], ["target_index"]),
             helper.make_node("GatherND", ["nodes", "target_index"], ["target_node"], batch_dims=1),
             helper.make_node("Gemm", ["target_node", "mlp_w0_self", "neighbour_part"], ["mlp_z0"])]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array((w[2 * f:] + b[None, :]).astype(np.float32), "mlp_b0_target"),
             numpy_helper.from_array(w[:f].astype(np.float32), "mlp_w0_self"),
             numpy_helper.from_array(np.array([-1, u * f], np.int64), "flat_shape"),
             numpy_helper.from_array(np.repeat(a, f, axis=1).astype(np.float32), "neighbour_weights"),
             numpy_helper.from_array(np.tile(w[f:2 * f], (u, 1)).astype(np.float32), "mlp_w0_neighbours")]
    return nodes, inits


@dataclass(frozen=True)
class GraphTrainer:
    hidden: int = mlp.DEFAULT_HIDDEN
    fit_stride: int = DEFAULT_FIT_STRIDE
    name: str = "graph"
    member_kind: str = "graph"

    def fit(self, train: Dataset, validation: Dataset, seed: int) -> FittedMember:
        require_history(train, self.name)
        h = train.history
        node_keys = np.unique(h.key[train.position]).tolist()

        def feeds(ds: Dataset) -> dict[str, np.ndarray]:
            require_history(ds, self.name)
            keys = ds.history.key[ds.position]
            found = np.isin(keys, node_keys)
            if not found.all():
                raise ValueError(f"graph member: rows of instrument keys {sorted(set(keys[~found].tolist()))} that "
                                 f"are not among its nodes {node_keys}")
            return {"nodes": ds.history.cross_section(ds.position, node_keys),
                    "target": np.searchsorted(node_keys, keys).astype(np.int64)}

        fit_rows = np.arange(0, len(train), self.fit_stride)
        fitted = feeds(train.take(fit_rows))
        mean, inv = mlp.scaling(fitted["nodes"])
        a, corr = adjacency(fitted["nodes"], h.segment_start[train.position[fit_rows]])
        valid = feeds(validation)
        clf, table = mlp.fit(head_inputs(fitted["nodes"], fitted["target"], mean, inv, a), train.y[fit_rows],
                             head_inputs(valid["nodes"], valid["target"], mean, inv, a), validation.y, seed,
                             hidden=self.hidden)
        u = len(node_keys)
        nodes, inits = first_layer_nodes(folded_first_layer(clf, mean, inv, a), a)
        head, head_inits = mlp.head_nodes(clf, "mlp_z0", from_layer=1)
        pairs = [[k // MAX_SYMBOLS, k % MAX_SYMBOLS] for k in node_keys]
        props = {"feature_schema_hash": str(FEATURE_SCHEMA_HASH), "feature_names": ",".join(FEATURE_NAMES),
                 "horizon": str(train.horizon), "nodes": repr(pairs)}
        onnx_bytes = mlp.finish_model(
            nodes + head, inits + head_inits,
            [helper.make_tensor_value_info("nodes", TensorProto.FLOAT, ["N", u, N_FEATURES]),
             helper.make_tensor_value_info("target", TensorProto.INT64, ["N"])], self.name, props)
        metadata = {
            "kind": "message_passing_mlp", "member_kind": "graph", "nodes": pairs,
            "adjacency": {"matrix": a.tolist(), "return_correlation": corr.tolist(),
                          "definition": "|corr| of the nodes' log mid returns between consecutive fitted training "
                                        "rows, zero diagonal, rows normalised to sum 1"},
            "input": [{"name": "nodes", "dtype": "float32", "shape": ["N", u, N_FEATURES]},
                      {"name": "target", "dtype": "int64", "shape": ["N"]}], "output": OUTPUT,
            "opset": mlp.OPSET, "ir_version": mlp.IR_VERSION,
            "fit": {"fit_stride": self.fit_stride, "fitted_rows": int(fit_rows.size), "library": "scikit-learn "
                    "MLPClassifier (adam, relu), one BLAS thread",
                    "selection": {"criterion": "lowest validation log loss; first in grid order on a tie",
                                  "candidates": table}},
        }
        return FittedMember(
            onnx_bytes, metadata,
            lambda f: mlp.probabilities(clf, head_inputs(f["nodes"], f["target"], mean, inv, a)), feeds)
