"""Small ONNX members built in place (onnx's helper API), for the ensemble's tests and bench: logistic graphs with
chosen coefficients, one that raises at run time on some input, and the registry layout they live in."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, N_FEATURES

OPSET = 17


def logistic_graph(weights: np.ndarray, bias: float, fail_below: float | None = None) -> bytes:
    """prob_up = sigmoid(features @ weights + bias). With ``fail_below``, a batch whose first feature of its first
    row is below it fails in onnxruntime (a Reshape to twice the batch's length)."""
    w = numpy_helper.from_array(np.asarray(weights, np.float32).reshape(N_FEATURES, 1), "w")
    b = numpy_helper.from_array(np.array([bias], np.float32), "b")
    flat = numpy_helper.from_array(np.array([-1], np.int64), "flat")
    nodes = [helper.make_node("MatMul", ["features", "w"], ["z0"]),
             helper.make_node("Add", ["z0", "b"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["p2"]),
             helper.make_node("Reshape", ["p2", "flat"], ["p" if fail_below is not None else "prob_up"])]
    inits = [w, b, flat]
    if fail_below is not None:
        inits += [numpy_helper.from_array(np.array([0, 0], np.int64), "starts"),
                  numpy_helper.from_array(np.array([1, 1], np.int64), "ends"),
                  numpy_helper.from_array(np.array([fail_below], np.float32), "limit"),
                  numpy_helper.from_array(np.array([1], np.int64), "one")]
        nodes += [helper.make_node("Slice", ["features", "starts", "ends"], ["x00"]),
                  helper.make_node("Reshape", ["x00", "flat"], ["x0"]),
                  helper.make_node("Less", ["x0", "limit"], ["bad"]),
                  helper.make_node("Cast", ["bad"], ["bad_i"], to=TensorProto.INT64),
                  helper.make_node("Add", ["bad_i", "one"], ["factor"]),
                  helper.make_node("Shape", ["p"], ["n"]),
                  helper.make_node("Mul", ["n", "factor"], ["target"]),
                  helper.make_node("Reshape", ["p", "target"], ["prob_up"])]
    graph = helper.make_graph(nodes, "member", [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                                              ["N", N_FEATURES])],
                              [helper.make_tensor_value_info("prob_up", TensorProto.FLOAT, ["N"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_member(root: Path, name: str, version: str, graph: bytes, **extra) -> Path:
    """``root/name/version/model.onnx`` + ``model.json`` (the metadata the loader checks, plus ``extra``)."""
    where = root / name / version
    where.mkdir(parents=True, exist_ok=True)
    (where / "model.onnx").write_bytes(graph)
    meta = {"name": name, "version": int(version.lstrip("v")), "member_kind": "vector",
            "feature_names": list(FEATURE_NAMES), "feature_schema_hash": FEATURE_SCHEMA_HASH,
            "onnx_sha256": hashlib.sha256(graph).hexdigest(), "calibration": {"method": "none"}, **extra}
    (where / "model.json").write_text(json.dumps(meta))
    return where


def write_ensemble(root: Path, version: int, members: list[dict], min_confidence: float = 0.0, **extra) -> Path:
    """``root/ensemble/v<version>/ensemble.json`` over ``members`` ({"path", "weight"[, "calibration"]})."""
    where = root / "ensemble" / f"v{version}"
    where.mkdir(parents=True, exist_ok=True)
    doc = {"name": "ensemble", "version": version, "members": members, "min_confidence": min_confidence,
           "feature_schema_hash": FEATURE_SCHEMA_HASH, **extra}
    (where / "ensemble.json").write_text(json.dumps(doc))
    return where


def coefficients(seed: int, scale: float = 0.05) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, N_FEATURES).astype(np.float32)


def registry_with_members(root: Path, n: int = 2, seed: int = 0) -> list[str]:
    """``n`` logistic members ``lin<i>/v1`` under ``root``; returns their paths relative to ``root``."""
    paths = []
    for i in range(n):
        write_member(root, f"lin{i}", "v1", logistic_graph(coefficients(seed + i), 0.1 * i))
        paths.append(f"lin{i}/v1")
    return paths


def window_graph(weights: np.ndarray) -> bytes:
    """A sequence member: prob_up = sigmoid(sum over the window of weights[s, j] * window[n, s, j]), weights [K, 28]."""
    k = weights.shape[0]
    w = numpy_helper.from_array(np.asarray(weights, np.float32).reshape(k * N_FEATURES, 1), "w")
    shape = numpy_helper.from_array(np.array([-1, k * N_FEATURES], np.int64), "shape")
    flat = numpy_helper.from_array(np.array([-1], np.int64), "flat")
    nodes = [helper.make_node("Reshape", ["window", "shape"], ["rows"]),
             helper.make_node("MatMul", ["rows", "w"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["p2"]),
             helper.make_node("Reshape", ["p2", "flat"], ["prob_up"])]
    graph = helper.make_graph(nodes, "window_member", [helper.make_tensor_value_info(
        "window", TensorProto.FLOAT, ["N", k, N_FEATURES])], [helper.make_tensor_value_info(
            "prob_up", TensorProto.FLOAT, ["N"])], [w, shape, flat])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def nodes_graph(weights: np.ndarray, bias: np.ndarray) -> bytes:
    """A graph member: prob_up = sigmoid(sum_{u,j} weights[u, j] * nodes[n, u, j] + bias[target[n]]),
    weights [U, 28], bias [U]."""
    u = weights.shape[0]
    w = numpy_helper.from_array(np.asarray(weights, np.float32).reshape(u * N_FEATURES, 1), "w")
    b = numpy_helper.from_array(np.asarray(bias, np.float32), "b")
    shape = numpy_helper.from_array(np.array([-1, u * N_FEATURES], np.int64), "shape")
    flat = numpy_helper.from_array(np.array([-1], np.int64), "flat")
    nodes = [helper.make_node("Reshape", ["nodes", "shape"], ["rows"]),
             helper.make_node("MatMul", ["rows", "w"], ["z0"]),
             helper.make_node("Reshape", ["z0", "flat"], ["z1"]),
             helper.make_node("Gather", ["b", "target"], ["bt"]),
             helper.make_node("Add", ["z1", "bt"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["prob_up"])]
    graph = helper.make_graph(nodes, "nodes_member", [
        helper.make_tensor_value_info("nodes", TensorProto.FLOAT, ["N", u, N_FEATURES]),
        helper.make_tensor_value_info("target", TensorProto.INT64, ["N"])], [helper.make_tensor_value_info(
            "prob_up", TensorProto.FLOAT, ["N"])], [w, b, shape, flat])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
