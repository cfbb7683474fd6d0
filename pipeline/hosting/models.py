"""The inference host's models: one ONNX model (the shipped default) or an ensemble version, loaded and verified
whole, then run batch by batch: every member on the batch, its output calibrated, the vote (stages.ensemble).

What can be loaded (``load``; ``verify`` is the same without opening sessions kept):

- a single model: an ``.onnx`` file with its ``.json`` beside (today's ``models/directional_v1.onnx``), or a
  member version dir ``models/<name>/<version>/`` holding ``model.onnx`` and ``model.json``. It runs as a vote of
  one that is never combined: prob_up is the model's own number, confidence 1, one member alive;
- an ensemble version: ``models/ensemble/<version>/`` (or its ``ensemble.json``), whose members' paths are
  relative to the ``models/`` dir two levels above it.

``load_steps`` loads in steps of about a millisecond each (opening a small graph's session is the longest), so the
inference host loads a published model set in its idle spells, a step at a time (a loader thread did worse in a
first, unlocked measurement: onnxruntime appears to hold the GIL while it opens a session, and on the host's pinned
core a thread takes the core itself). Every member is verified as ``stages.inference.OnnxModel.load`` verifies a
model (metadata present, feature schema hash and names, the graph's sha256, the session's inputs and outputs); a
member kind without an input builder (``INPUT_BUILDERS``) is refused by name. Python runs per member per batch,
never per record.

Member kinds (model.json's ``member_kind``): ``vector`` reads the decision's features [N, 28]; ``sequence`` reads
``window`` [N, K, 28], the last K vectors of the decision's stream; ``graph`` reads ``nodes`` [N, U, 28] (the latest
vector of each of its U instruments) and ``target`` [N]. Both read the run's ``History`` (stages.windows), which
every batch advances, one vector per decision in order, before any member runs: fused mode (every feature vector)
and a live run (risk's one decision per feature vector, in order) give a member the same inputs. The history is
handed from set to set on a swap; a restarted inference process starts it empty (a sequence member's first
windows are then edge-padded, a graph member's unseen nodes zeros).

Several voters (``fuse``, inference.fuse_members) also get one composed graph (``FusedMembers``): one session run
per batch answers every member, bit for bit as their own sessions; a batch whose fused run raises or answers a
non-finite number runs per member, so a member's faults are found and counted as below. The sizer runs alone.

A member that raises, or that takes longer than its budget (live runs only: fused mode and backtests never time
out, so they stay deterministic), has no vote in that batch and is counted; the confidence's coverage says so.
After ``max_failures`` such batches in a row it is disabled for the rest of the run (or until a swap). With no
member left the batch has no view: prob_up 0.5, confidence 0, no member alive.

A sizer (member_kind "qvalue": input ``features`` [N, 28], output ``q`` [N, A], the action table ``size_scales`` of
length A in its model.json) is no voter: it answers each decision's ``size_scale``, the scale of the action of its
largest q (stages.strategy multiplies the signal strategy's order sizes by it). It is named by ``inference.sizer``
or by an ensemble's ``"sizer"`` (a path under ``models/``, like the members'). Without one, or in a batch where it
fails, every size_scale is 1 (the rule it replaces); its failures are counted as a member's are.
"""
from __future__ import annotations

import hashlib
import json
import math
import operator
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipeline import registry
from pipeline.hosting import member_fusion
from shm import control as cb
from stages import ensemble as vote
from stages import inference
from stages import windows
from stages.records import FEATURE_SCHEMA_HASH, N_FEATURES
from stages.universe import MAX_SYMBOLS, MAX_VENUES, instrument_key

ENSEMBLE_FILE = "ensemble.json"
MEMBER_ONNX, MEMBER_JSON = "model.onnx", "model.json"


class ModelLoadError(ValueError):
    """A model or ensemble version that cannot serve this build; the text names the file and what is wrong."""


class VectorInput:
    """A vector member's input: the decisions' features, already in ``x[:n]`` (stages.inference.prepare)."""

    def __init__(self, meta: dict, path: Path):
        pass

    def check(self, session: ort.InferenceSession, path: Path) -> None:
        inference.check_session(session, path)

    def build(self, decisions: np.ndarray, n: int, x: np.ndarray) -> dict[str, np.ndarray]:
        return {inference.INPUT_NAME: x[:n]}

    def sources(self, x: np.ndarray) -> tuple:
        return (x,)

    def warm_inputs(self) -> dict[str, np.ndarray]:
        return {inference.INPUT_NAME: np.zeros((1, N_FEATURES), np.float32)}


def _check_io(session: ort.InferenceSession, path: Path, expected: list[tuple[str, str, list]]) -> None:
    """The session's inputs are ``expected`` ((name, type, shape), "N" for any batch size) and its output prob_up."""
    found = [(i.name, i.type, [d if isinstance(d, int) else "N" for d in i.shape]) for i in session.get_inputs()]
    outputs = session.get_outputs()
    if found != expected:
        raise inference.ModelMismatchError(f"model={path}: inputs expected={expected} found={found}")
    if len(outputs) != 1 or outputs[0].name != inference.OUTPUT_NAME or outputs[0].type != "tensor(float)":
        desc = [(o.name, o.type, o.shape) for o in outputs]
        raise inference.ModelMismatchError(f"model={path}: outputs expected=[('prob_up', tensor(float), [N])] "
                                           f"found={desc}")


class SequenceInput:
    """A sequence member's input ``window`` float32 [N, K, 28]: each decision's stream's last K vectors, oldest
    first (stages.windows); K is model.json's ``window``."""

    def __init__(self, meta: dict, path: Path):
        k = meta.get("window")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= windows.MAX_WINDOW:
            raise ModelLoadError(f"model={path}: window={k!r}; a sequence member needs \"window\": an integer in "
                                 f"[1, {windows.MAX_WINDOW}] (the vectors per input row)")
        self.window = k
        self.batch: BatchInputs | None = None

    def check(self, session: ort.InferenceSession, path: Path) -> None:
        _check_io(session, path, [("window", "tensor(float)", ["N", self.window, N_FEATURES])])

    def build(self, decisions: np.ndarray, n: int, x: np.ndarray) -> dict[str, np.ndarray]:
        windows_ = self.batch.windows
        k_max = windows_.shape[1]
        rows = windows_[:n] if k_max == self.window else np.ascontiguousarray(windows_[:n, k_max - self.window:])
        return {"window": rows}

    def sources(self, x: np.ndarray) -> tuple | None:
        """None when ``build`` copies (a window shorter than the set's): not a prefix of a buffer to bind."""
        return (self.batch.windows,) if self.batch.windows.shape[1] == self.window else None

    def warm_inputs(self) -> dict[str, np.ndarray]:
        return {"window": np.zeros((1, self.window, N_FEATURES), np.float32)}


class GraphInput:
    """A graph member's inputs: ``nodes`` float32 [N, U, 28] (every instrument of model.json's ``nodes``, a list of
    [venue, symbol] pairs in node order: its latest vector, zeros before its first) and ``target`` int64 [N] (the
    decision's node). A decision of an instrument that is not a node has no view from this member: the graph runs
    on node 0 for it and the host answers prob 0.5 for that row (``stages.ensemble.answer``)."""

    def __init__(self, meta: dict, path: Path):
        pairs = meta.get("nodes")
        keys = []
        if isinstance(pairs, list) and pairs:
            for pair in pairs:
                if not (isinstance(pair, list) and len(pair) == 2 and all(
                        isinstance(v, int) and not isinstance(v, bool) for v in pair)
                        and 0 <= pair[0] < MAX_VENUES and 0 <= pair[1] < MAX_SYMBOLS):
                    keys = None
                    break
                keys.append(instrument_key(pair[0], pair[1]))
        if not keys or len(set(keys)) != len(keys):
            raise ModelLoadError(f"model={path}: nodes={pairs!r}; a graph member needs \"nodes\": a non-empty list "
                                 f"of distinct [venue, symbol] pairs (venue < {MAX_VENUES}, symbol < {MAX_SYMBOLS})")
        self.node_keys = np.array(keys, np.int64)
        self.batch: BatchInputs | None = None

    def check(self, session: ort.InferenceSession, path: Path) -> None:
        _check_io(session, path, [("nodes", "tensor(float)", ["N", len(self.node_keys), N_FEATURES]),
                                  ("target", "tensor(int64)", ["N"])])

    def build(self, decisions: np.ndarray, n: int, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"nodes": self.batch.nodes[:n], "target": self.batch.graph_target[:n]}

    def sources(self, x: np.ndarray) -> tuple:
        return self.batch.nodes, self.batch.graph_target

    def warm_inputs(self) -> dict[str, np.ndarray]:
        return {"nodes": np.zeros((1, len(self.node_keys), N_FEATURES), np.float32), "target": np.zeros(1, np.int64)}


# member_kind -> its input builder (one instance per member; "sequence" and "graph" read the run's history).
INPUT_BUILDERS = {"vector": VectorInput, "sequence": SequenceInput, "graph": GraphInput}


class History:
    """The run's per-instrument history (stages.windows): it belongs to the run, not to a model set, so a swap hands
    it to the new set (a swapped-in sequence member does not start cold), and a standby that takes the stage over
    reads it where the process before it left it (``shared``: pipeline.hosting.standby.InferenceShared); a restarted
    inference process starts with an empty one. Advanced once per batch, whatever the members, by the set in use of
    the serving process (one thread)."""

    def __init__(self, shared=None):
        if shared is None:
            self.ring, self.counts = windows.empty_history()
        else:
            self.ring, self.counts = shared.ring, shared.counts

    def clear(self) -> None:
        self.ring[:] = 0.0
        self.counts[:] = 0


class BatchInputs:
    """A model set's per-batch inputs built from the history: the longest window its sequence members read (the
    others take its tail) and the nodes of its graph members (which must share one node list)."""

    def __init__(self, members: list, history: History, capacity: int):
        self.history = history
        seq = [m.builder.window for m in members if m.kind == "sequence"]
        graphs = [m.builder for m in members if m.kind == "graph"]
        self.window_len = max(seq, default=0)
        self.node_keys = graphs[0].node_keys if graphs else np.zeros(0, np.int64)  # one list (load_steps checks)
        for b in (m.builder for m in members):
            b.batch = self
        self.grow(capacity)

    def grow(self, capacity: int) -> None:
        self.windows = np.zeros((capacity if self.window_len else 0, self.window_len, N_FEATURES), np.float32)
        u = len(self.node_keys)
        self.nodes = np.zeros((capacity if u else 0, u, N_FEATURES), np.float32)
        self.target = np.zeros(capacity if u else 0, np.int64)
        self.graph_target = np.zeros_like(self.target)
        self.off_graph = np.zeros(len(self.target), bool)

    def advance(self, decisions: np.ndarray, n: int) -> None:
        h = self.history
        windows.advance_inputs(decisions, n, h.ring, h.counts, self.window_len, self.windows, self.node_keys,
                               self.nodes, self.target, self.graph_target, self.off_graph)


SIZER_KIND = "qvalue"  # not a voter (not in INPUT_BUILDERS): Sizer
SIZER_OUTPUT = "q"
MAX_SIZE_SCALE = 4.0
CALIBRATIONS = {"none": vote.CAL_NONE, "platt": vote.CAL_PLATT, "isotonic": vote.CAL_ISOTONIC}


@dataclass
class Calibration:
    method: int = vote.CAL_NONE
    a: float = 1.0
    b: float = 0.0
    xs: np.ndarray = field(default_factory=lambda: np.zeros(1))
    ys: np.ndarray = field(default_factory=lambda: np.zeros(1))


def parse_calibration(doc, where: str) -> Calibration:
    """A ``calibration`` object (spec: none, platt a/b, isotonic x/y) checked: finite, x increasing, y in [0, 1]."""
    if doc is None:
        return Calibration()
    if not isinstance(doc, dict) or doc.get("method") not in CALIBRATIONS:
        raise ModelLoadError(f"{where}: calibration={doc!r}; expected {{\"method\": one of {sorted(CALIBRATIONS)}}}")
    method = CALIBRATIONS[doc["method"]]
    if method == vote.CAL_PLATT:
        a, b = doc.get("a"), doc.get("b")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b)):
            raise ModelLoadError(f"{where}: platt calibration a={a!r} b={b!r}; both must be finite numbers")
        return Calibration(method, float(a), float(b))
    if method == vote.CAL_ISOTONIC:
        try:
            xs, ys = np.asarray(doc.get("x"), np.float64), np.asarray(doc.get("y"), np.float64)
        except (TypeError, ValueError):
            xs = ys = np.zeros(0)
        if xs.ndim != 1 or xs.shape != ys.shape or len(xs) < 2 or not np.all(np.isfinite(xs)) \
                or np.any(np.diff(xs) <= 0) or not np.all((ys >= 0) & (ys <= 1)):
            raise ModelLoadError(f"{where}: isotonic calibration needs x (increasing, finite) and y (in [0, 1]) "
                                 "of the same length >= 2")
        return Calibration(method, 1.0, 0.0, xs, ys)
    return Calibration()


@dataclass
class MemberStats:
    """One member's counters (published to inference's slot by ``Models.publish``)."""
    calls: int = 0
    failures: int = 0
    timeouts: int = 0
    in_a_row: int = 0           # failed or late batches in a row
    disabled: bool = False
    last_error: str = ""
    max_ns: int = 0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(cb.HIST_BUCKETS, np.int64))  # ns per call


class BoundRuns:
    """One session's runs through IO bindings, one per batch size, each over the first n rows of the buffers it was
    bound to (``sources``: the caller's x, the history's inputs): a run then converts no input, validates no feed
    and allocates no output, ~6 us less than ``session.run`` here. Bound again when the buffers change (a grow,
    another caller's x). The answer is a view of a buffer that the next run of n rows overwrites. One thread."""

    def __init__(self, session: ort.InferenceSession, output: str, rows: int = 0):
        self.session, self.output, self.rows = session, output, rows  # answers [rows, n], or [n] when rows is 0
        self._bindings: dict[int, tuple[ort.IOBinding, np.ndarray]] = {}
        self._sources: tuple = ()

    def run(self, sources: tuple, builder, decisions: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
        if len(sources) != len(self._sources) or not all(map(operator.is_, sources, self._sources)):
            self._bindings.clear()
            self._sources = sources
        bound = self._bindings.get(n)
        if bound is None:
            binding = self.session.io_binding()
            for name, rows in builder.build(decisions, n, x).items():
                if not rows.flags.c_contiguous:
                    raise ValueError(f"input {name} is not C-contiguous: cannot be bound without a copy")
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(rows))  # shares rows' memory
            out = np.empty((self.rows, n) if self.rows else n, np.float32)
            binding.bind_ortvalue_output(self.output, ort.OrtValue.ortvalue_from_numpy(out))
            bound = self._bindings[n] = (binding, out)
        self.session.run_with_iobinding(bound[0])
        return bound[1]


class Member:
    """One verified ONNX member and its session (one thread, sequential). Not thread-safe."""

    def __init__(self, path: Path, meta: dict, session: ort.InferenceSession, kind: str, weight: float,
                 calibration: Calibration, builder, onnx_bytes: bytes = b""):
        self.path, self.metadata, self.session, self.kind = path, meta, session, kind
        self.onnx_bytes = onnx_bytes  # the verified graph, for member_fusion
        self.weight, self.calibration = weight, calibration
        self.builder = builder
        self.output_names = (session.get_outputs()[0].name,)
        self.bound = BoundRuns(session, self.output_names[0])
        self.stats = MemberStats()

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.path.stem))


def _member_files(path: Path) -> tuple[Path, Path]:
    if path.suffix == ".onnx":
        return path, inference.metadata_path_for(path)
    return path / MEMBER_ONNX, path / MEMBER_JSON


def _read_json(path: Path, what: str) -> dict:
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ModelLoadError(f"{what}={path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ModelLoadError(f"{what}={path}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ModelLoadError(f"{what}={path}: not a JSON object")
    return doc


def run_steps(steps: Generator):
    """What a step generator (``load_steps``, ``member_steps``) returns, all steps taken at once."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def _fault(exc: Exception) -> str:
    """An exception in one line: its type and the first line of its text."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _open_session(onnx_bytes: bytes, onnx_path: Path,
                  check: Callable[[ort.InferenceSession, Path], None]) -> ort.InferenceSession:
    try:
        options = inference.session_options()
        options.log_severity_level = 4  # a run-time failure is counted and kept (MemberStats), not logged per batch
        session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
        check(session, onnx_path)
    except inference.ModelMismatchError as exc:
        raise ModelLoadError(str(exc)) from None
    except Exception as exc:  # onnxruntime's own: a file that is not a graph it can run
        raise ModelLoadError(f"model={onnx_path}: onnxruntime cannot open it ({_fault(exc)})") from None
    return session


class Sizer:
    """A verified qvalue member (module docstring): ``choose`` writes each decision's size_scale. Not thread-safe."""

    def __init__(self, path: Path, meta: dict, session: ort.InferenceSession, scales: np.ndarray):
        self.path, self.metadata, self.session, self.scales = path, meta, session, scales
        self.stats = MemberStats()

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.path.stem))

    def q(self, x: np.ndarray) -> np.ndarray:
        """q float32 [n, A] for float32 features ``x[n, N_FEATURES]``."""
        return self.session.run((SIZER_OUTPUT,), {inference.INPUT_NAME: x})[0]

    def choose(self, decisions: np.ndarray, x: np.ndarray, n: int, out: np.ndarray) -> None:
        """``out[:n]`` = the scale of each row's largest q (the first of equals)."""
        q = self.q(x[:n])
        if q.shape != (n, len(self.scales)):
            raise ValueError(f"output q shape {q.shape}, expected ({n}, {len(self.scales)})")
        self.scales.take(np.argmax(q, axis=1), out=out[:n])


def parse_size_scales(doc, where: str) -> np.ndarray:
    """A sizer's action table: 2 or more finite scales in [0, MAX_SIZE_SCALE], one per column of q."""
    ok = isinstance(doc, list) and len(doc) >= 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= MAX_SIZE_SCALE
        for v in doc)
    if not ok:
        raise ModelLoadError(f"{where}: size_scales={doc!r}; expected a list of 2 or more numbers in "
                             f"[0, {MAX_SIZE_SCALE:g}] (the order size multiple of each action, one per column of q)")
    return np.asarray(doc, np.float64)


def _check_sizer_session(session: ort.InferenceSession, onnx_path: Path, actions: int) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != inference.INPUT_NAME or inputs[0].type != "tensor(float)" \
            or len(inputs[0].shape) != 2 or inputs[0].shape[1] != N_FEATURES:
        raise inference.ModelMismatchError(
            f"model={onnx_path}: inputs expected=[({inference.INPUT_NAME!r}, tensor(float), [N, {N_FEATURES}])] "
            f"found={[(i.name, i.type, i.shape) for i in inputs]}")
    if len(outputs) != 1 or outputs[0].name != SIZER_OUTPUT or outputs[0].type != "tensor(float)" \
            or len(outputs[0].shape) != 2 or isinstance(outputs[0].shape[1], int) and outputs[0].shape[1] != actions:
        raise inference.ModelMismatchError(
            f"model={onnx_path}: outputs expected=[({SIZER_OUTPUT!r}, tensor(float), [N, {actions}])] (one column "
            f"per size_scales entry) found={[(o.name, o.type, o.shape) for o in outputs]}")


def _verified_files(path: Path) -> tuple[Path, dict, bytes]:
    """(the graph's path, its metadata, its bytes) of a member version dir or an .onnx with its .json, the metadata
    checked against the graph and this build's features (stages.inference.check_metadata)."""
    onnx_path, meta_path = _member_files(path)
    if not onnx_path.is_file() or not meta_path.is_file():
        raise ModelLoadError(f"model={path}: needs {onnx_path.name} and {meta_path.name} "
                             f"({'present' if onnx_path.is_file() else 'missing'}, "
                             f"{'present' if meta_path.is_file() else 'missing'}); a model without metadata is refused")
    meta = _read_json(meta_path, "metadata")
    onnx_bytes = onnx_path.read_bytes()
    try:
        inference.check_metadata(meta, onnx_path, meta_path, onnx_bytes)
    except inference.ModelMismatchError as exc:
        raise ModelLoadError(str(exc)) from None
    return onnx_path, meta, onnx_bytes


def sizer_steps(path: Path | str) -> Generator[None, None, Sizer]:
    """A sizer (a qvalue member's version dir or .onnx with its .json), verified as a member is; yields once."""
    path = Path(path)
    onnx_path, meta, onnx_bytes = _verified_files(path)
    if meta.get("member_kind") != SIZER_KIND:
        raise ModelLoadError(f"sizer={path}: member_kind={meta.get('member_kind')!r}; a sizer is a "
                             f"{SIZER_KIND!r} member")
    scales = parse_size_scales(meta.get("size_scales"), f"sizer={path}")
    yield
    session = _open_session(onnx_bytes, onnx_path,
                            lambda sess, where: _check_sizer_session(sess, where, len(scales)))
    return Sizer(onnx_path, meta, session, scales)


def member_steps(path: Path, weight: float = 1.0, calibration: dict | None = None) -> Generator[None, None, Member]:
    """A member (an .onnx with its .json, or a version dir with model.onnx and model.json), verified; yields
    between the reading and the session's opening, each under ~1 ms for a small graph (a host loads between
    batches, one step at a time)."""
    onnx_path, meta, onnx_bytes = _verified_files(path)
    kind = meta.get("member_kind", "vector")  # the baseline predates member kinds: a vector model
    if kind == SIZER_KIND:
        raise ModelLoadError(f"model={path}: member_kind={kind!r} is a sizer, not a voter; name it as inference.sizer "
                             "or as an ensemble's \"sizer\"")
    if kind not in INPUT_BUILDERS:
        raise ModelLoadError(f"model={path}: member_kind={kind!r} is not one this build runs "
                             f"(known: {sorted(INPUT_BUILDERS)})")
    builder = INPUT_BUILDERS[kind](meta, path)
    yield
    session = _open_session(onnx_bytes, onnx_path, builder.check)
    cal = parse_calibration(calibration if calibration is not None else meta.get("calibration"), f"model={path}")
    return Member(onnx_path, meta, session, kind, weight, cal, builder, onnx_bytes)


class FusedMembers:
    """The set's voters composed into one graph (pipeline.hosting.member_fusion): one ``run`` per batch answers every
    member's raw prob_up (a row each), bit for bit what their own sessions answer. Its stats time the fused call
    (the members' own histograms are fed only by the per-member path). Not thread-safe."""

    def __init__(self, session: ort.InferenceSession, count: int):
        self.session = session
        self.input_names = tuple(i.name for i in session.get_inputs())
        self.output_names = (member_fusion.OUTPUT,)
        self.bound = BoundRuns(session, member_fusion.OUTPUT, count)
        self.stats = MemberStats()
        self.batch: BatchInputs | None = None

    def build(self, decisions: np.ndarray, n: int, x: np.ndarray) -> dict[str, np.ndarray]:
        batch = self.batch
        sources = {member_fusion.FEATURES: x, member_fusion.WINDOW: batch.windows, member_fusion.NODES: batch.nodes,
                   member_fusion.TARGET: batch.graph_target}
        return {name: sources[name][:n] for name in self.input_names}

    def run(self, x: np.ndarray, n: int) -> np.ndarray:
        """The members' raw answers [members, n] (BoundRuns.run)."""
        batch = self.batch
        return self.bound.run((x, batch.windows, batch.nodes, batch.graph_target), self, None, x, n)


def _own_feeds(member: Member, shared: dict[str, np.ndarray], window_len: int) -> dict[str, np.ndarray]:
    """What member's own session reads, cut from the fused graph's shared inputs."""
    if member.kind == "sequence":
        return {"window": np.ascontiguousarray(shared[member_fusion.WINDOW][:, window_len - member.builder.window:])}
    if member.kind == "graph":
        return {"nodes": shared[member_fusion.NODES], "target": shared[member_fusion.TARGET]}
    return {inference.INPUT_NAME: shared[member_fusion.FEATURES]}


def fusion_steps(members: list[Member]) -> Generator[None, None, tuple[FusedMembers | None, str]]:
    """(the members fused, "") or (None, why not): composed (a step per member), opened, then checked bit for bit
    against the members' own sessions on a probe batch; yields between them."""
    window_len = max((m.builder.window for m in members if m.kind == "sequence"), default=0)
    graphs = [m.builder.node_keys for m in members if m.kind == "graph"]
    n_nodes = len(graphs[0]) if graphs else 0
    try:
        raw = yield from member_fusion.compose_steps([(m.onnx_bytes, m.builder.window if m.kind == "sequence" else 0)
                                                      for m in members], window_len, n_nodes)
    except Exception as exc:  # onnx's own (a converter or checker refusal): the set runs per member
        return None, f"cannot compose the members' graphs ({_fault(exc)})"
    yield
    try:
        options = inference.session_options()
        options.log_severity_level = 4
        session = ort.InferenceSession(raw, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return None, f"onnxruntime cannot open the composed graph ({_fault(exc)})"
    yield
    fused = FusedMembers(session, len(members))
    feeds = member_fusion.probe_feeds(list(fused.input_names), window_len, n_nodes)
    try:
        why = member_fusion.differs(session, [m.session for m in members], feeds,
                                    [_own_feeds(m, feeds, window_len) for m in members])
    except Exception as exc:  # a member that raises on the probe: its faults are counted per member instead
        why = f"a probe batch raised ({_fault(exc)})"
    return (None, why) if why else (fused, "")


@dataclass
class Loaded:
    """What ``load`` read: the members, the ensemble's doc (None for a single model) and its identity."""
    path: Path
    members: list[Member]
    min_confidence: float
    doc: dict | None
    name: str
    version: int
    sha256_head: int
    sizer: Sizer | None = None
    fused: FusedMembers | None = None
    fuse_note: str = ""  # why a set of several voters runs per member although fusing was asked ("" otherwise)


def ensemble_file(path: Path) -> Path | None:
    if path.name == ENSEMBLE_FILE:
        return path
    if path.is_dir() and (path / ENSEMBLE_FILE).is_file():
        return path / ENSEMBLE_FILE
    return None


def load(path: Path | str, min_confidence: float = -1.0, sizer: Path | str = "", fuse: bool = True) -> Loaded:
    """Read and verify a single model or an ensemble version (module docstring); ``min_confidence`` < 0 takes the
    ensemble's own; ``sizer``: a qvalue member, instead of the ensemble's own ("" = the ensemble's, if any);
    ``fuse``: several voters also get one fused session (``fusion_steps``; inference.fuse_members). Raises
    ModelLoadError (a ValueError) naming the file and the fault."""
    return run_steps(load_steps(path, min_confidence, sizer, fuse))


def load_steps(path: Path | str, min_confidence: float = -1.0, sizer: Path | str = "",
               fuse: bool = True) -> Generator[None, None, Loaded]:
    """``load`` in steps (``member_steps``, ``fusion_steps``): the inference host takes one between two batches."""
    loaded = yield from _voter_steps(path, min_confidence)
    if fuse and len(loaded.members) > 1:
        yield
        loaded.fused, loaded.fuse_note = yield from fusion_steps(loaded.members)
    if sizer:
        loaded.sizer = yield from sizer_steps(sizer)
    elif loaded.doc is not None and loaded.doc.get("sizer") is not None:
        named = loaded.doc["sizer"]
        doc_path = ensemble_file(Path(path))
        if not isinstance(named, str) or not named:
            raise ModelLoadError(f"ensemble={doc_path}: sizer={named!r}; expected a path under models/ "
                                 "(e.g. \"qnet/v1\")")
        loaded.sizer = yield from sizer_steps(doc_path.parent.parent.parent / named)
    if loaded.sizer is not None:
        loaded.name += f", sized by {loaded.sizer.name}"
    return loaded


def _voter_steps(path: Path | str, min_confidence: float) -> Generator[None, None, Loaded]:
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model={path}: no such file or directory")
    doc_path = ensemble_file(path)
    if doc_path is None:
        member = yield from member_steps(path)
        digest = hashlib.sha256(member.path.read_bytes()).hexdigest()
        version = member.metadata.get("version")
        return Loaded(path, [member], 0.0, None, member.name, version if isinstance(version, int) else 0,
                      int(digest[:registry.SHA256_HEAD_HEX], 16))
    raw = doc_path.read_bytes()
    doc = _read_json(doc_path, "ensemble")
    where = f"ensemble={doc_path}"
    if doc.get("feature_schema_hash") != FEATURE_SCHEMA_HASH:
        raise ModelLoadError(f"{where}: feature_schema_hash expected={FEATURE_SCHEMA_HASH} "
                             f"found={doc.get('feature_schema_hash')}; retrain the ensemble for these features")
    entries = doc.get("members")
    if not isinstance(entries, list) or not entries:
        raise ModelLoadError(f"{where}: members must be a non-empty list of {{\"path\", \"weight\"}}")
    root = doc_path.parent.parent.parent  # models/ensemble/<version>/ensemble.json -> models/
    members = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ModelLoadError(f"{where}: members[{i}]={entry!r}; expected {{\"path\": str, \"weight\": number}}")
        weight = entry.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise ModelLoadError(f"{where}: members[{i}].weight={weight!r}; use a finite number > 0")
        members.append((yield from member_steps(root / entry["path"], float(weight), entry.get("calibration"))))
    if len({tuple(m.builder.node_keys) for m in members if m.kind == "graph"}) > 1:
        raise ModelLoadError(f"{where}: its graph members list different nodes; one ensemble's graph members must "
                             "list the same [venue, symbol] nodes in the same order")
    if len(members) > registry.MAX_MEMBERS:
        raise ModelLoadError(f"{where}: {len(members)} members; this build runs at most {registry.MAX_MEMBERS}")
    floor = doc.get("min_confidence", 0.0)
    if not isinstance(floor, (int, float)) or not 0 <= floor <= 1:
        raise ModelLoadError(f"{where}: min_confidence={floor!r}; use a number in [0, 1]")
    version = doc.get("version")
    name = f"{doc.get('name', 'ensemble')}: " + "+".join(m.name for m in members)
    return Loaded(path, members, float(min_confidence if min_confidence >= 0 else floor), doc, name,
                  version if isinstance(version, int) else 0,
                  int(hashlib.sha256(raw).hexdigest()[:registry.SHA256_HEAD_HEX], 16))


def _counter_words(s: MemberStats) -> tuple:
    """A MemberStats as registry.MEMBER_COUNTERS."""
    p50, p99 = cb.percentile_ns(s.hist, 0.5), cb.percentile_ns(s.hist, 0.99)
    return (s.calls, s.failures, s.timeouts, int(s.disabled), 0 if p50 != p50 else int(p50),
            0 if p99 != p99 else int(p99), s.max_ns)


class Models:
    """The loaded models run per batch: ``predict(decisions, x, n)`` -> (prob_up float64[n], confidence float64[n],
    members_alive uint8[n], size_scale float64[n]), views of buffers reused by the next call. One thread (the
    host's). ``sizer``: anything with ``choose(decisions, x, n, out)`` and ``stats`` (a Sizer; training hands
    fused mode its behaviour policy here)."""

    def __init__(self, loaded: Loaded, capacity: int, timeout_us: float = 0.0, max_failures: int = 100,
                 history: History | None = None):
        self.loaded = loaded
        self.members = loaded.members
        self.sizer = loaded.sizer
        self.fused = loaded.fused
        self.single = loaded.doc is None
        self.timeout_ns = int(timeout_us * 1_000)  # 0: never (fused mode and backtests: deterministic)
        self.max_failures = max_failures
        self.min_confidence = loaded.min_confidence
        m = len(self.members)
        self.weights = np.array([mb.weight for mb in self.members], np.float64)
        self.alive = np.zeros(m, np.uint8)
        self.no_view_batches = 0
        # The members' calibrations packed for the fused path's one-call vote (stages.ensemble.vote_members).
        cals = [mb.calibration for mb in self.members]
        self.cal_methods = np.array([c.method for c in cals], np.int64)
        self.cal_a, self.cal_b = np.array([c.a for c in cals], np.float64), np.array([c.b for c in cals], np.float64)
        self.cal_len = np.array([len(c.xs) for c in cals], np.int64)
        self.cal_xs, self.cal_ys = (np.zeros((m, int(self.cal_len.max(initial=1))), np.float64) for _ in range(2))
        for i, c in enumerate(cals):
            self.cal_xs[i, :len(c.xs)], self.cal_ys[i, :len(c.ys)] = c.xs, c.ys
        self.graph_rows = np.array([mb.kind == "graph" for mb in self.members], np.bool_)
        self.history = history if history is not None else History()
        self.inputs = BatchInputs(self.members, self.history, max(capacity, 1))
        if self.fused is not None:
            self.fused.batch = self.inputs
        self._capacity = 0
        self._grow(max(capacity, 1))

    def _grow(self, capacity: int) -> None:
        self._capacity = capacity
        self.inputs.grow(capacity)
        m = len(self.members)
        self.probs = np.zeros((m, capacity), np.float64)
        self.prob = np.zeros(capacity)
        self.confidence = np.zeros(capacity)
        self.size_scale = np.ones(capacity)
        # Constant answers, filled once: per batch the host hands out views, it does not fill arrays.
        self.no_view = np.full(capacity, 0.5)
        self.zeros, self.ones = np.zeros(capacity), np.ones(capacity)
        self.alive_counts = np.repeat(np.arange(m + 1, dtype=np.uint8)[:, None], capacity, axis=1)
        self.alive_out = self.alive_counts[0]

    def warm(self) -> None:
        run_steps(self.warm_steps())

    def warm_steps(self) -> Generator[None, None, None]:
        """One run of every member on a row of zeros, uncounted (a session's first run is slow: allocations); yields
        after each."""
        for member in self.members:
            member.session.run(member.output_names, member.builder.warm_inputs())
            yield
        if self.fused is not None:
            self.fused.session.run(self.fused.output_names, member_fusion.probe_feeds(
                list(self.fused.input_names), self.inputs.window_len, len(self.inputs.node_keys)))
            yield
        if self.sizer is not None:
            x = np.zeros((1, N_FEATURES), np.float32)
            self.sizer.choose(x[:0], x, 1, np.ones(1))
            yield

    def warm_host(self, decisions: np.ndarray, x: np.ndarray) -> None:
        """One decision through ``predict`` on a scratch history, every counter left as it was: the njit code a batch
        calls (history, calibration, vote, sizer) loads now, not in the first batch served after a start or a
        standby's handover (milliseconds)."""
        holders = [*self.members, *(h for h in (self.fused, self.sizer) if h is not None)]
        kept = [h.stats for h in holders]
        history, no_view = self.inputs.history, self.no_view_batches
        self.inputs.history = History()
        for holder in holders:
            holder.stats = MemberStats()
        try:
            self.predict(decisions, x, 1)
        finally:
            self.inputs.history, self.no_view_batches = history, no_view
            for holder, stats in zip(holders, kept):
                holder.stats = stats

    def predict(self, decisions: np.ndarray, x: np.ndarray, n: int):
        if n > self._capacity:
            self._grow(n)
        self.inputs.advance(decisions, n)  # every batch, whatever the members: the history is the run's
        fused = self.fused
        count = self._run_fused(x, n) if fused is not None and not fused.stats.disabled else -1
        voted = count >= 0  # the fused path votes in the same call (the same arithmetic)
        if count < 0:  # not fused, or the fused run failed: each member on its own, its faults its own
            count = 0
            for i, member in enumerate(self.members):
                answered = self._run(member, decisions, x, n, self.probs[i])
                self.alive[i] = answered
                count += answered
        self.alive_out = self.alive_counts[count]
        if count == 0:
            self.no_view_batches += 1
        scale = self._size(decisions, x, n)
        if self.single:  # a vote of one is not combined: prob_up is the model's own number, as before ensembles
            if count:
                return self.probs[0, :n], self.ones[:n], self.alive_out[:n], scale
            return self.no_view[:n], self.zeros[:n], self.alive_out[:n], scale
        if not voted:
            vote.combine(self.probs, self.weights, self.alive, n, self.min_confidence, self.prob, self.confidence)
        return self.prob[:n], self.confidence[:n], self.alive_out[:n], scale

    def _size(self, decisions: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
        """The sizer's size_scale for each decision; 1 (the rule without a sizer) when there is none, or when it
        fails or is late in this batch (counted as a member's failures are)."""
        sizer = self.sizer
        if sizer is None or sizer.stats.disabled:
            return self.ones[:n]
        stats = sizer.stats
        stats.calls += 1
        started = time.perf_counter_ns()
        try:
            sizer.choose(decisions, x, n, self.size_scale)
        except Exception as exc:  # the sizer's own fault: this batch is sized by the rule
            stats.failures += 1
            stats.last_error = _fault(exc)[:200]
            self._missed(sizer)
            return self.ones[:n]
        if self._late(stats, started):
            self._missed(sizer)
            return self.ones[:n]
        stats.in_a_row = 0
        return self.size_scale[:n]

    def _late(self, stats: MemberStats, started: int, budget_ns: int = -1) -> bool:
        """Account a call that began at ``started``; True if it overran the budget (counted; -1: a member's)."""
        return self._account(stats, time.perf_counter_ns() - started, self.timeout_ns if budget_ns < 0 else budget_ns)

    @staticmethod
    def _account(stats: MemberStats, took: int, budget_ns: int) -> bool:
        stats.hist[cb.bucket_of(took)] += 1
        stats.max_ns = max(stats.max_ns, took)
        if budget_ns and took > budget_ns:
            stats.timeouts += 1
            stats.last_error = f"took {took / 1e3:.0f} us > budget {budget_ns / 1e3:.0f} us"
            return True
        return False

    def _run_fused(self, x: np.ndarray, n: int) -> int:
        """Every member's calibrated probabilities from one fused run, voted into ``prob``/``confidence``; the
        members answering, or -1 when the run raised or a member's answer is not n finite numbers (counted: this
        batch then runs per member). A fused call over the members' budgets together (the most the per-member path
        takes before every member is late) is every member's late call: no vote in the batch, each member counted
        late. After max_failures failed or late fused batches in a row the set runs per member, where each member's
        own budget drops the late one."""
        fused = self.fused
        stats = fused.stats
        stats.calls += 1
        started = time.perf_counter_ns()
        try:
            raws = fused.run(x, n)
        except Exception as exc:  # a member's fault: the per-member path finds whose and counts it there
            return self._fused_failed(_fault(exc))
        took = time.perf_counter_ns() - started
        budget = self.timeout_ns * len(self.members)
        late = bool(budget) and took > budget
        self.alive.fill(not late)  # no member here is disabled: disabling one disables the fused run (_missed)
        if vote.vote_members(raws, n, self.alive, self.cal_methods, self.cal_a, self.cal_b, self.cal_xs, self.cal_ys,
                             self.cal_len, self.graph_rows, self.inputs.off_graph, self.weights, self.min_confidence,
                             self.probs, self.prob, self.confidence) < 0:
            return self._fused_failed(f"a member answered {int(np.isfinite(raws).sum())} finite numbers of "
                                      f"{raws.size}")
        if self._account(stats, took, budget):
            self._missed(fused)
        else:
            stats.in_a_row = 0
        count = 0
        for member in self.members:
            s = member.stats
            s.calls += 1
            if late:
                s.timeouts += 1
                s.last_error = f"late with the fused run ({stats.last_error})"
                self._missed(member)
                continue
            s.in_a_row = 0
            count += 1
        return count

    def _fused_failed(self, why: str) -> int:
        stats = self.fused.stats
        stats.failures += 1
        stats.last_error = why[:200]
        self._missed(self.fused)
        return -1

    def _run(self, member: Member, decisions: np.ndarray, x: np.ndarray, n: int, row: np.ndarray) -> int:
        """Member's calibrated probabilities into ``row[:n]``; 1 if it answered in time."""
        stats = member.stats
        if stats.disabled:
            return 0
        stats.calls += 1
        started = time.perf_counter_ns()
        try:
            sources = member.builder.sources(x)
            if sources is not None:
                raw = member.bound.run(sources, member.builder, decisions, x, n)
            else:
                raw = member.session.run(member.output_names, member.builder.build(decisions, n, x))[0]
                if raw.shape != (n,):
                    raise ValueError(f"output shape {raw.shape}, expected ({n},)")
        except Exception as exc:  # the member's own fault (a graph that raises on this input): no vote this batch
            stats.failures += 1
            stats.last_error = _fault(exc)[:200]
            return self._missed(member)
        if self._late(stats, started):
            return self._missed(member)
        cal = member.calibration
        vote.answer(raw, n, cal.method, cal.a, cal.b, cal.xs, cal.ys, member.kind == "graph", self.inputs.off_graph,
                    row)
        stats.in_a_row = 0
        return 1

    def _missed(self, member: Member | Sizer | FusedMembers) -> int:
        stats = member.stats
        stats.in_a_row += 1
        if stats.in_a_row >= self.max_failures:
            stats.disabled = True
            if isinstance(member, Member) and self.fused is not None:  # the fused graph would still run it
                self.fused.stats.disabled = True
                self.fused.stats.last_error = f"member {member.name} disabled"
        return 0

    def publish(self, slot: np.ndarray) -> None:
        """The members' counters into inference's slot (pipeline.registry.INFERENCE_COUNTERS); a few us, so the
        host calls it every so many batches, not every batch."""
        process = registry.BY_NAME["inference"]
        custom = slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
        custom[process.counter("members")] = len(self.members)
        custom[process.counter("members_alive")] = int(self.alive.sum())  # the last batch's
        custom[process.counter("no_view_batches")] = self.no_view_batches
        first = process.counter("m0_calls")
        width = len(registry.MEMBER_COUNTERS)
        for i in range(registry.MAX_MEMBERS):
            words = custom[first + i * width:first + (i + 1) * width]
            if i >= len(self.members):
                words[:] = 0
                continue
            words[:] = _counter_words(self.members[i].stats)
        fused = custom[process.counter("fused_calls"):process.counter("fused_calls") + width]
        fused[:] = 0 if self.fused is None else _counter_words(self.fused.stats)

    def publish_identity(self, slot: np.ndarray) -> None:
        """Which model or ensemble serves the run: version, the head of its file's sha256 and its name."""
        process = registry.BY_NAME["inference"]
        slot[cb.S_CUSTOM + process.counter("model_version")] = self.loaded.version
        slot[cb.S_CUSTOM + process.counter("model_sha256_head")] = self.loaded.sha256_head
        cb.write_text(slot, *registry.MODEL_NAME_WORDS, self.loaded.name)

    def status_lines(self) -> list[str]:
        """What an operator should know about members that fail (empty when all is well)."""
        lines = [f"members run one by one: {self.loaded.fuse_note}"] if self.loaded.fuse_note else []
        for i, m in enumerate(self.members):
            s = m.stats
            if s.disabled:
                lines.append(f"member {i} {m.name} disabled after {s.in_a_row} failed batches in a row "
                             f"(last: {s.last_error})")
        if isinstance(self.sizer, Sizer) and self.sizer.stats.disabled:
            lines.append(f"sizer {self.sizer.name} disabled after {self.sizer.stats.in_a_row} failed batches in a "
                         f"row: orders sized by the rule (size_scale 1) (last: {self.sizer.stats.last_error})")
        return lines
