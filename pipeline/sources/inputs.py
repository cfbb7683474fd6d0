"""Reading recorded files (plain, gzip or zip, told apart by their magic bytes) and the parse result.

A corrupt or truncated compressed stream is not an exception: what decompressed is kept, and the damage
is counted (``corrupt_compression``) like any malformed line, so one bad file cannot stop a replay.
"""
from __future__ import annotations

import io
import os
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from stages.records import MARKET_EVENT

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
EXAMPLES_KEEP = 20
EXCERPT_CHARS = 160


@dataclass
class ParseResult:
    """Records decoded from one input, and an account of every input line that produced none.

    ``bad`` counts malformed input (undecodable: not JSON, a field that is not a number, a wrong field
    count...) by reason; ``ignored`` counts well-formed input that carries no market event (blank lines,
    event types this parser does not map) by reason. ``examples`` keeps the first few bad lines as
    (line number, reason, excerpt). ``lines`` counts non-blank input lines (CSV: data rows, header
    excluded). ``origin_seq`` is 0 in every record: :func:`merge` assigns it.
    """
    source: str
    format: str
    records: np.ndarray
    lines: int = 0
    bad: dict = field(default_factory=dict)
    ignored: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)

    @property
    def n_bad(self) -> int:
        return sum(self.bad.values())

    def summary(self) -> str:
        parts = [f"{self.source}: {self.format}, {self.lines} lines -> {len(self.records)} records"]
        if self.bad:
            parts.append("bad " + ", ".join(f"{k}={v}" for k, v in sorted(self.bad.items())))
        if self.ignored:
            parts.append("ignored " + ", ".join(f"{k}={v}" for k, v in sorted(self.ignored.items())))
        return "; ".join(parts)


class Tally:
    """Counts bad and ignored input by reason, keeping the first few bad lines as examples."""

    def __init__(self):
        self.bad: dict = {}
        self.ignored: dict = {}
        self.examples: list = []

    def bad_line(self, line: int, reason: str, text=b"", count: int = 1) -> None:
        self.bad[reason] = self.bad.get(reason, 0) + count
        if len(self.examples) < EXAMPLES_KEEP:
            if isinstance(text, (bytes, bytearray, memoryview)):
                text = bytes(text[:EXCERPT_CHARS]).decode("utf-8", "replace")
            self.examples.append((int(line), reason, str(text)[:EXCERPT_CHARS]))

    def ignore(self, reason: str, count: int = 1) -> None:
        if count:
            self.ignored[reason] = self.ignored.get(reason, 0) + count

    def result(self, source: str, fmt: str, records: np.ndarray, lines: int) -> ParseResult:
        self.examples.sort(key=lambda e: e[0])
        return ParseResult(source, fmt, records, lines, dict(self.bad), dict(self.ignored), self.examples)


def _gunzip(data: bytes, tally: Tally) -> bytes:
    out = []
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out.append(d.decompress(data))
            out.append(d.flush())
        except zlib.error as exc:
            tally.bad_line(0, "corrupt_compression", str(exc))
            break
        if not d.eof:
            tally.bad_line(0, "corrupt_compression", "truncated gzip stream")
            break
        data = d.unused_data
        if data[:2] != GZIP_MAGIC:
            if data.strip(b"\0"):
                tally.bad_line(0, "corrupt_compression", "trailing bytes after the gzip stream")
            break
    return b"".join(out)


def _unzip(data: bytes, tally: Tally) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) != 1:
                tally.bad_line(0, "corrupt_compression", f"zip with {len(members)} members, expected 1")
                return b""
            return zf.read(members[0])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        tally.bad_line(0, "corrupt_compression", f"zip: {exc}")
        return b""


@dataclass
class Loaded:
    """A file already read and decompressed (so sniffing and parsing read it once)."""
    data: bytes
    label: str
    tally: Tally


def load(source) -> Loaded:
    tally = Tally()
    data, label = read_input(source, tally)
    return Loaded(data, label, tally)


def read_input(source, tally: Tally) -> tuple[bytes, str]:
    """(decompressed bytes, label) from a path, the bytes themselves or a Loaded; compression by magic bytes."""
    if isinstance(source, Loaded):
        for reason, n in source.tally.bad.items():
            tally.bad[reason] = tally.bad.get(reason, 0) + n
        tally.examples.extend(source.tally.examples)
        return source.data, source.label
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = bytes(source), "<bytes>"
    else:
        label = os.fspath(source)
        with open(label, "rb") as f:
            data = f.read()
    if data[:2] == GZIP_MAGIC:
        data = _gunzip(data, tally)
    elif data[:4] == ZIP_MAGIC:
        data = _unzip(data, tally)
    return data, label


def empty_records(n: int = 0) -> np.ndarray:
    return np.zeros(n, MARKET_EVENT)
