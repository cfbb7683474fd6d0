"""The model registry under ``models/``: a directory per member version, ``<name>/v<N>/model.onnx`` +
``model.json``, and per ensemble version ``ensemble/v<N>/ensemble.json``. A version is never overwritten: a new one
takes the next number, and its directory is created exclusively (two trainers racing get different versions).
Member paths in ensemble.json are relative to the registry root.

A trainer killed while writing leaves a version directory without model.json (model.json is written last, after
model.onnx; ensemble.json after every member): the loaders refuse it as a model without metadata, and the next run
takes the next number.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

MEMBER_KINDS = ("vector", "sequence", "graph")
_VERSION = re.compile(r"^v([1-9][0-9]*)$")


def versions(root: Path | str, name: str) -> list[int]:
    base = Path(root) / name
    if not base.is_dir():
        return []
    return sorted(int(m.group(1)) for m in (_VERSION.match(p.name) for p in base.iterdir()) if m)


def claim(root: Path | str, name: str) -> tuple[int, Path]:
    """Create the next version directory of ``name`` (exclusively) and return (version, directory)."""
    base = Path(root) / name
    base.mkdir(parents=True, exist_ok=True)
    version = (versions(root, name) or [0])[-1] + 1
    while True:
        path = base / f"v{version}"
        try:
            path.mkdir()
            return version, path
        except FileExistsError:
            version += 1


def _write_new(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet (a version's files are written once), whole or not at all: written
    beside, then hard-linked to its name (which fails if the name exists), so a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    try:
        os.link(partial, path)
    finally:
        partial.unlink()


def write_member(directory: Path, onnx_bytes: bytes, metadata: dict) -> Path:
    """model.onnx and model.json (the metadata bound to the graph by its sha256) into a claimed directory."""
    metadata = dict(metadata, onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest())
    _write_new(directory / "model.onnx", onnx_bytes)
    _write_new(directory / "model.json", (json.dumps(metadata, indent=2) + "\n").encode())
    return directory / "model.onnx"


def write_ensemble(directory: Path, spec: dict) -> Path:
    path = directory / "ensemble.json"
    _write_new(path, (json.dumps(spec, indent=2) + "\n").encode())
    return path


def read_member(root: Path | str, entry: str) -> tuple[Path, dict]:
    """(model.onnx path, metadata) of a member path relative to ``root``: a version directory, or a shipped
    ``.onnx`` with its ``.json`` beside; refuses a member_kind this build cannot feed."""
    path = Path(root) / entry
    onnx_path = path / "model.onnx" if path.is_dir() else path
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    kind = meta.get("member_kind", "vector")
    if kind not in MEMBER_KINDS:
        raise ValueError(f"member {entry}: member_kind={kind!r}; this build knows {', '.join(MEMBER_KINDS)}")
    return onnx_path, meta
