"""Inference stage: risk decisions in, predictions (probability that the mid rises) out.

A batch goes through three calls, so Python touches it three times, never once per record::

    prepare(decisions, n, x)                 njit: features -> float32 matrix x[:n]
    model.predict(x[:n], out=prob)           onnxruntime, single-threaded; out= is optional
    finish(decisions, n, prob, confidence, alive, scale, out, now_ns)  njit: one PREDICTION per decision

Models are ONNX files in ``models/`` with a JSON metadata file beside them (same stem). ``OnnxModel.load``
refuses a model trained on another feature schema: the features are positional, so a model fed columns
in another order or meaning would run and be silently wrong.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numba import njit

from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, N_FEATURES

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "directional_v1.onnx"

INPUT_NAME = "features"
OUTPUT_NAME = "prob_up"


@njit(cache=True)
def prepare(decisions, n, x):
    """Copy the features of ``decisions[:n]`` into ``x[:n, :N_FEATURES]`` (float32); needs ``n <= len(x)``."""
    for i in range(n):
        values = decisions[i]["values"]
        for j in range(N_FEATURES):
            x[i, j] = values[j]
    return n


@njit(cache=True)
def finish(decisions, n, prob_up, confidence, members_alive, size_scale, out, now_ns):
    """Write one PREDICTION per decision into ``out[:n]``; returns n. Needs ``n <= len(out)`` and ``n <=`` the
    length of ``prob_up``, ``confidence``, ``size_scale`` (float64) and ``members_alive`` (uint8)."""
    for i in range(n):
        d = decisions[i]
        out[i]["origin_ts"] = d["origin_ts"]
        out[i]["origin_seq"] = d["origin_seq"]
        out[i]["stage_ts"] = now_ns
        out[i]["venue"] = d["venue"]
        out[i]["symbol"] = d["symbol"]
        out[i]["reasons"] = d["reasons"]
        out[i]["bid"] = d["bid"]
        out[i]["ask"] = d["ask"]
        out[i]["position"] = d["position"]
        out[i]["buy_budget"] = d["buy_budget"]
        out[i]["sell_budget"] = d["sell_budget"]
        out[i]["sigma_bps"] = d["sigma_bps"]
        out[i]["prob_up"] = prob_up[i]
        out[i]["confidence"] = confidence[i]
        out[i]["members_alive"] = members_alive[i]
        out[i]["size_scale"] = size_scale[i]
        out[i]["equity"] = d["equity"]
        out[i]["drawdown"] = d["drawdown"]
        out[i]["heat"] = d["heat"]
        out[i]["garch_sigma_bps"] = d["garch_sigma_bps"]
        out[i]["horizon_sigma_bps"] = d["horizon_sigma_bps"]
        out[i]["reduce_qty"] = d["reduce_qty"]
        out[i]["kind"] = d["kind"]
        out[i]["side"] = d["side"]
        out[i]["price"] = d["price"]
        out[i]["size"] = d["size"]
        values = d["values"]
        for j in range(N_FEATURES):
            out[i]["values"][j] = values[j]
    return n


class ModelMismatchError(ValueError):
    """A model file does not fit this build (feature schema, feature names, file contents or graph)."""


def metadata_path_for(onnx_path: Path | str) -> Path:
    return Path(onnx_path).with_suffix(".json")


def check_metadata(meta: dict, onnx_path: Path, meta_path: Path, onnx_bytes: bytes) -> None:
    found_hash = meta.get("feature_schema_hash")
    if found_hash != FEATURE_SCHEMA_HASH:
        raise ModelMismatchError(
            f"model={onnx_path} metadata={meta_path}: feature_schema_hash expected={FEATURE_SCHEMA_HASH} "
            f"found={found_hash}; retrain with tools.train_model")
    found_names = tuple(meta.get("feature_names") or ())
    if found_names != FEATURE_NAMES:
        raise ModelMismatchError(
            f"model={onnx_path} metadata={meta_path}: feature_names expected={list(FEATURE_NAMES)} "
            f"found={list(found_names)}")
    # Binds the metadata to this exact graph, so a retrained .onnx cannot borrow an old .json.
    expected_sha = meta.get("onnx_sha256")
    if expected_sha is not None:
        found_sha = hashlib.sha256(onnx_bytes).hexdigest()
        if found_sha != expected_sha:
            raise ModelMismatchError(
                f"model={onnx_path} metadata={meta_path}: onnx_sha256 expected={expected_sha} found={found_sha}")


def verify_files(onnx_path: Path | str = DEFAULT_MODEL) -> None:
    """The checks ``OnnxModel.load`` makes of the files (metadata present, feature schema hash and names,
    the graph's digest), without opening a session: the supervisor's pre-flight, before any process starts."""
    onnx_path = Path(onnx_path)
    meta_path = metadata_path_for(onnx_path)
    if not meta_path.is_file():
        raise FileNotFoundError(f"model={onnx_path}: metadata file={meta_path} missing; "
                                "a model without metadata cannot be checked and is refused")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise ModelMismatchError(f"model={onnx_path} metadata={meta_path}: not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelMismatchError(f"model={onnx_path} metadata={meta_path}: not a JSON object")
    check_metadata(meta, onnx_path, meta_path, onnx_path.read_bytes())


def check_session(session: ort.InferenceSession, onnx_path: Path) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(float)" \
            or len(inputs[0].shape) != 2 or inputs[0].shape[1] != N_FEATURES:
        desc = [(i.name, i.type, i.shape) for i in inputs]
        raise ModelMismatchError(f"model={onnx_path}: inputs expected=[({INPUT_NAME!r}, tensor(float), "
                                 f"[N, {N_FEATURES}])] found={desc}")
    if len(outputs) != 1 or outputs[0].name != OUTPUT_NAME or outputs[0].type != "tensor(float)":
        desc = [(o.name, o.type, o.shape) for o in outputs]
        raise ModelMismatchError(f"model={onnx_path}: outputs expected=[({OUTPUT_NAME!r}, tensor(float), [N])] "
                                 f"found={desc}")
    # The graph carries its own schema hash too, for a model loaded with a hand-picked metadata file.
    props = session.get_modelmeta().custom_metadata_map
    if "feature_schema_hash" in props and int(props["feature_schema_hash"]) != FEATURE_SCHEMA_HASH:
        raise ModelMismatchError(f"model={onnx_path}: graph feature_schema_hash expected={FEATURE_SCHEMA_HASH} "
                                 f"found={props['feature_schema_hash']}")


def session_options() -> ort.SessionOptions:
    """One thread, sequential: the stage owns one core and must not spawn a thread pool onto the others."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


class OnnxModel:
    """A loaded, verified directional model. Not safe for use from multiple threads (one IO binding)."""

    __slots__ = ("path", "metadata", "session", "_binding")

    def __init__(self, path: Path, metadata: dict, session: ort.InferenceSession):
        self.path = path
        self.metadata = metadata
        self.session = session
        self._binding = session.io_binding()

    @classmethod
    def load(cls, onnx_path: Path | str = DEFAULT_MODEL, metadata_path: Path | str | None = None) -> OnnxModel:
        """Read, verify and open a model; raises ModelMismatchError if it was built for other features."""
        onnx_path = Path(onnx_path)
        meta_path = Path(metadata_path) if metadata_path is not None else metadata_path_for(onnx_path)
        if not meta_path.is_file():
            raise FileNotFoundError(f"model={onnx_path}: metadata file={meta_path} missing; "
                                    "a model without metadata cannot be checked and is refused")
        meta = json.loads(meta_path.read_text())
        onnx_bytes = onnx_path.read_bytes()
        check_metadata(meta, onnx_path, meta_path, onnx_bytes)
        session = ort.InferenceSession(onnx_bytes, sess_options=session_options(),
                                       providers=["CPUExecutionProvider"])
        check_session(session, onnx_path)
        return cls(onnx_path, meta, session)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.path.stem))

    def predict(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Probabilities that the mid goes up, for float32 ``x[n, N_FEATURES]`` (C-contiguous).

        Without ``out`` onnxruntime allocates and returns a new array (~4 us a call for 1-16 rows on
        the 2-core VM). With ``out`` (float32, contiguous, ``len(out) >= n``) it writes straight into
        ``out`` through an IO binding and ``out[:n]`` is returned: no allocation, but the binding calls
        cost ~2 us more per batch. Pick by what the host minds more, allocation or time.
        """
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise ValueError(f"features dtype={x.dtype} shape={x.shape}; expected float32 [n, {N_FEATURES}]")
        n = x.shape[0]
        if out is None:
            return self.session.run((OUTPUT_NAME,), {INPUT_NAME: x})[0]
        if out.dtype != np.float32 or out.ndim != 1 or out.shape[0] < n or not out.flags.c_contiguous:
            raise ValueError(f"out dtype={out.dtype} shape={out.shape}; expected contiguous float32 [>= {n}]")
        if n == 0:
            return out[:0]
        if not x.flags.c_contiguous:
            raise ValueError("features must be C-contiguous for the bound-input path")
        binding = self._binding
        binding.bind_cpu_input(INPUT_NAME, x)
        binding.bind_output(OUTPUT_NAME, "cpu", 0, np.float32, (n,), out.ctypes.data)
        self.session.run_with_iobinding(binding)
        return out[:n]
