"""A model set's voters composed into one ONNX graph, run by one onnxruntime session per batch.

Why: every ``session.run`` costs ~14 us of fixed overhead whatever the graph (measured on the 1.3 KB logistic), so
four members pay ~56 us per batch before any arithmetic. The composed graph holds every member's nodes unchanged
under a prefix ``m<i>/``, reading the shared inputs ``features`` [N, 28], ``window`` [N, K, 28] (K the set's longest
window; a member with a shorter one reads its tail through a Slice), ``nodes`` [N, U, 28] and ``target`` [N], and
answers ``probs`` [M, N], row i member i's prob_up (``m<i>/prob_up``): one output to allocate and to check.

One graph imports one opset per domain, so a member written for an older default opset is moved to the set's
newest: as it is when the checker takes every node of it under the newer opset (the shipped GBT's Reshape and
Sigmoid: their newer versions add types and a defaulted attribute), else through onnx.version_converter (46 ms for
the shipped GBT, against ~1 ms: the host loads in steps of about a ms). Either way the probe below compares the
answers bit for bit.

``fuse`` refuses (returns the reason) rather than run a composed graph whose answers differ in a single bit from the
members' own sessions on a probe batch: the fused path must give the orders the per-member path gives.
"""
from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from stages.records import N_FEATURES

# onnx is imported where a graph is composed, not here: its import takes ~1.5 s (ml_dtypes), and the supervisor's
# preflight and every inference process import this module on their way to a start, most with nothing to fuse
if TYPE_CHECKING:
    import onnx

FEATURES, WINDOW, NODES, TARGET = "features", "window", "nodes", "target"
OUTPUT = "probs"
PROBE_ROWS = 7


def member_output(i: int) -> str:
    return f"m{i}/prob_up"


def _shared_inputs(window_len: int, n_nodes: int) -> dict[str, onnx.ValueInfoProto]:
    from onnx import TensorProto, helper
    return {FEATURES: helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["N", N_FEATURES]),
            WINDOW: helper.make_tensor_value_info(WINDOW, TensorProto.FLOAT, ["N", window_len, N_FEATURES]),
            NODES: helper.make_tensor_value_info(NODES, TensorProto.FLOAT, ["N", n_nodes, N_FEATURES]),
            TARGET: helper.make_tensor_value_info(TARGET, TensorProto.INT64, ["N"])}


def compose_steps(graphs: list[tuple[bytes, int]], window_len: int,
                  n_nodes: int) -> Generator[None, None, bytes]:
    """One graph of the members ``graphs`` ((ONNX bytes, window K or 0), in member order) over the shared inputs;
    row i of its output OUTPUT is member i's prob_up. Yields after each member (their protobuf copies are most of
    the ~8 ms a set of four takes). Raises ValueError for a member it cannot place."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    models = [onnx.load_from_string(raw) for raw, _ in graphs]
    versions: dict[str, int] = {}
    for model in models:
        for op in model.opset_import:
            versions[op.domain] = max(versions.get(op.domain, 0), op.version)
    shared = _shared_inputs(window_len, n_nodes)
    fused = onnx.GraphProto(name="fused_members")
    functions, rows, used = [], [], set()
    for i, (model, (_, k)) in enumerate(zip(models, graphs)):
        yield
        model = _at_opset(model, versions)
        prefix = f"m{i}/"
        constants = {init.name for init in model.graph.initializer}
        names = [inp.name for inp in model.graph.input if inp.name not in constants]
        unknown = [name for name in names if name not in shared]
        if unknown or len(model.graph.output) != 1:
            raise ValueError(f"member {i}: inputs {names} outputs {[o.name for o in model.graph.output]}; a fused "
                             f"member reads only {sorted(shared)} and answers one prob_up")
        graph = onnx.compose.add_prefix(model, prefix).graph
        rename = {prefix + name: name for name in names}
        if WINDOW in names and k != window_len:  # the shared window holds the set's longest: this member's tail
            tail = prefix + "window_tail"
            rename[prefix + WINDOW] = tail
            fused.initializer.extend([
                numpy_helper.from_array(np.array([window_len - k], np.int64), prefix + "tail_start"),
                numpy_helper.from_array(np.array([window_len], np.int64), prefix + "tail_end"),
                numpy_helper.from_array(np.array([1], np.int64), prefix + "tail_axis")])
            fused.node.append(helper.make_node("Slice", [WINDOW, prefix + "tail_start", prefix + "tail_end",
                                                         prefix + "tail_axis"], [tail], name=prefix + "window_tail"))
        for node in graph.node:
            node.input[:] = [rename.get(name, name) for name in node.input]
        if graph.output[0].name != member_output(i):
            raise ValueError(f"member {i}: output {model.graph.output[0].name!r}; a fused member answers prob_up")
        used.update(names)
        fused.node.extend(graph.node)
        fused.initializer.extend(graph.initializer)
        fused.value_info.extend(graph.value_info)
        functions += model.functions
        rows.append(member_output(i))
    # The answers [N] end to end, then one Reshape to [M, N]: two nodes, not one per member (~0.4 us each)
    fused.initializer.append(numpy_helper.from_array(np.array([len(graphs), -1], np.int64), "probs_shape"))
    fused.node.append(helper.make_node("Concat", rows, ["probs_flat"], name="probs_flat", axis=0))
    fused.node.append(helper.make_node("Reshape", ["probs_flat", "probs_shape"], [OUTPUT], name=OUTPUT))
    fused.input.extend(shared[name] for name in shared if name in used)
    fused.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [len(graphs), "N"]))
    model = helper.make_model(fused, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(versions.items())],
                              functions=functions)
    model.ir_version = max(m.ir_version for m in models)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _at_opset(model: onnx.ModelProto, versions: dict[str, int]) -> onnx.ModelProto:
    """``model`` importing ``versions`` (each domain's newest in the set): as it is if the checker takes it so,
    else converted (the default domain; another domain's ops are taken as they are)."""
    import onnx
    from onnx import helper, version_converter
    if all(versions[op.domain] == op.version for op in model.opset_import):
        return model
    moved = onnx.ModelProto()
    moved.CopyFrom(model)
    del moved.opset_import[:]
    moved.opset_import.extend(helper.make_opsetid(op.domain, versions[op.domain]) for op in model.opset_import)
    try:
        onnx.checker.check_model(moved)
        return moved
    except onnx.checker.ValidationError:
        converted = version_converter.convert_version(model, versions[""])
        del converted.opset_import[:]
        converted.opset_import.extend(helper.make_opsetid(op.domain, versions[op.domain])
                                      for op in model.opset_import)
        return converted


def probe_feeds(input_names: list[str], window_len: int, n_nodes: int) -> dict[str, np.ndarray]:
    """A batch of PROBE_ROWS seeded rows for every shared input named (wide values: trees take both branches)."""
    rng = np.random.default_rng(15)
    shapes = {FEATURES: (PROBE_ROWS, N_FEATURES), WINDOW: (PROBE_ROWS, window_len, N_FEATURES),
              NODES: (PROBE_ROWS, n_nodes, N_FEATURES)}
    feeds = {name: rng.normal(0, 3, shapes[name]).astype(np.float32) for name in input_names if name in shapes}
    if TARGET in input_names:
        feeds[TARGET] = np.arange(PROBE_ROWS, dtype=np.int64) % max(n_nodes, 1)
    return feeds


def differs(session: ort.InferenceSession, members: list[ort.InferenceSession], feeds: dict[str, np.ndarray],
            member_feeds: list[dict[str, np.ndarray]]) -> str:
    """"" when the fused session answers each member's output bit for bit as the member's own session does on
    ``feeds``; else which member differs."""
    fused = session.run([OUTPUT], feeds)[0]
    for i, (own, feed) in enumerate(zip(members, member_feeds)):
        alone = own.run(None, feed)[0]
        if alone.dtype != fused[i].dtype or alone.shape != fused[i].shape or alone.tobytes() != fused[i].tobytes():
            return f"member {i}'s fused answers differ from its own session's on a probe batch"
    return ""
