"""Fast, total CSV reading for the replay parsers.

The fast path is one pandas C-engine read with fixed dtypes, taken only when a vectorised pre-check
shows every non-blank line has the expected number of fields (pandas would otherwise pad short rows with
NaN without a word). Anything it cannot take (a field that is not a number, a wrong field count, bytes
that are not UTF-8, a stray CR) sends the file down the slow path: a per-line Python reader that keeps
every good row and counts each bad one with its line number and reason. A clean file never pays for the
slow path; a dirty one still parses completely.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.sources.inputs import Tally
from pipeline.sources.pyvalues import INT64_MAX, INT64_MIN
from pipeline.sources.symbols import SymbolTable

INT, FLOAT, TEXT, SKIP = "int", "float", "text", "skip"
# An integer column that may hold something else (Tardis trade ids: numbers on Binance, UUIDs on BitMEX):
# it is read as int64 when every value in the file is an integer, and as all zeros otherwise.
OPTINT = "optint"


@dataclass
class Table:
    columns: dict          # name -> int64 / float64 array, or pd.Categorical for TEXT
    line: np.ndarray       # 1-based line number in the file of each row
    n_rows: int            # data rows seen (good + bad), blank lines excluded

    def __len__(self) -> int:
        return len(self.line)


def split_header(data: bytes) -> tuple[list[str], bytes]:
    """(header field names, body) of a CSV with a header line."""
    end = data.find(b"\n")
    if end < 0:
        end = len(data)
    header = data[:end].rstrip(b"\r").decode("utf-8", "replace").split(",")
    return [h.strip() for h in header], data[end + 1:]


def _line_bounds(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nl = np.flatnonzero(buf == 10)
    ends = nl if (len(buf) == 0 or buf[-1] == 10) else np.append(nl, len(buf))
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = nl[:len(ends) - 1] + 1
    return starts, ends


def read_table(body: bytes, spec: list, tally: Tally, first_line: int) -> Table:
    """Rows of ``body`` (no header) whose columns are ``spec`` = [(name, INT | FLOAT | TEXT | SKIP)], in
    file order. ``first_line`` is the file line number of the body's first line."""
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n")
    fast = None if b"\r" in body else _fast(body, spec, first_line)
    if fast is None and any(kind == OPTINT for _, kind in spec) and b"\r" not in body:
        fast = _fast(body, [(n, SKIP if k == OPTINT else k) for n, k in spec], first_line)
        if fast is not None:
            for name, kind in spec:
                if kind == OPTINT:
                    fast.columns[name] = np.zeros(len(fast), np.int64)
    if fast is not None:
        return fast
    return _slow(body, spec, tally, first_line)


def _fast(body: bytes, spec: list, first_line: int) -> Table | None:
    buf = np.frombuffer(body, np.uint8)
    starts, ends = _line_bounds(buf)
    commas = np.flatnonzero(buf == 44)
    n_fields = np.searchsorted(commas, ends) - np.searchsorted(commas, starts) + 1
    nonblank = ends > starts
    if not np.all(n_fields[nonblank] == len(spec)):
        return None
    line = np.flatnonzero(nonblank).astype(np.int64) + first_line
    names = [name for name, _ in spec]
    used = [name for name, kind in spec if kind != SKIP]
    dtypes = {name: {INT: np.int64, OPTINT: np.int64, FLOAT: np.float64, TEXT: "category"}[kind]
              for name, kind in spec if kind != SKIP}
    na = {name: [""] for name, kind in spec if kind == FLOAT}
    if not len(line):
        return Table({name: _empty(kind) for name, kind in spec if kind != SKIP}, line, 0)
    try:
        df = pd.read_csv(io.BytesIO(body), header=None, names=names, usecols=used, dtype=dtypes, engine="c",
                         quoting=csv.QUOTE_NONE, keep_default_na=False, na_values=na, index_col=False,
                         skip_blank_lines=True, encoding="utf-8")
    except Exception:  # whatever the C reader rejects, the per-line reader accounts for row by row
        return None
    if len(df) != len(line):
        return None
    cols = {}
    for name, kind in spec:
        if kind == TEXT:
            cols[name] = df[name].array if isinstance(df[name].dtype, pd.CategoricalDtype) else pd.Categorical(df[name])
        elif kind != SKIP:
            cols[name] = df[name].to_numpy()
    return Table(cols, line, len(line))


def _empty(kind):
    return pd.Categorical([]) if kind == TEXT else np.zeros(0, np.float64 if kind == FLOAT else np.int64)


def _slow(body: bytes, spec: list, tally: Tally, first_line: int) -> Table:
    values = {name: [] for name, kind in spec if kind != SKIP}
    used = [(i, name, kind) for i, (name, kind) in enumerate(spec) if kind != SKIP]
    lines = []
    n_rows = 0
    opt_failed = set()
    for i, ln in enumerate(body.split(b"\n")):
        line_no = first_line + i
        if ln.endswith(b"\r"):
            ln = ln[:-1]
        if not ln:
            continue
        n_rows += 1
        fields = ln.split(b",")
        if len(fields) != len(spec):
            tally.bad_line(line_no, "field_count", ln)
            continue
        row = []
        reason = None
        for j, name, kind in used:
            f = fields[j]
            try:
                if kind == OPTINT:
                    try:
                        v = int(f)
                    except ValueError:
                        v = None
                    if v is None or not INT64_MIN <= v <= INT64_MAX:
                        v = 0
                        opt_failed.add(name)
                elif kind == INT:
                    v = int(f)
                    if not INT64_MIN <= v <= INT64_MAX:
                        reason = "bad_number"
                        break
                elif kind == FLOAT:
                    v = float(f) if f.strip() else float("nan")
                else:
                    v = f.decode("utf-8")
            except UnicodeDecodeError:
                reason = "bad_text"
                break
            except ValueError:
                reason = "bad_number"
                break
            row.append(v)
        if reason is not None:
            tally.bad_line(line_no, reason, ln)
            continue
        for (_, name, _), v in zip(used, row):
            values[name].append(v)
        lines.append(line_no)
    cols = {}
    for _, name, kind in used:
        if kind == TEXT:
            cols[name] = pd.Categorical(values[name])
        elif kind == OPTINT and name in opt_failed:
            cols[name] = np.zeros(len(lines), np.int64)
        else:
            cols[name] = np.array(values[name], np.float64 if kind == FLOAT else np.int64)
    return Table(cols, np.array(lines, np.int64), n_rows)


def categorical_map(cat: pd.Categorical, mapping: dict, default=None) -> tuple[np.ndarray, np.ndarray]:
    """(mapped values, ok mask): each category looked up in ``mapping`` (exact, then lower-cased)."""
    cats = [str(c) for c in cat.categories]
    looked = [mapping.get(c, mapping.get(c.strip().lower(), default)) for c in cats]
    known = np.array([v is not None for v in looked] + [False], np.bool_)
    vals = np.array([v if v is not None else 0 for v in looked] + [0])
    codes = np.asarray(cat.codes, np.int64)  # -1 (missing) indexes the trailing "unknown" slot
    return vals[codes], known[codes]


def resolve_instruments(table: SymbolTable, venue, symbol, line: np.ndarray,
                        source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(venue ids, symbol ids, ok) per row; ``venue``/``symbol`` are a fixed name or a pd.Categorical
    column. Raises UnknownInstrumentError (strict table) naming the first line that uses an unknown name."""
    n = len(line)
    v_codes, v_names = _codes(venue, n)
    s_codes, s_names = _codes(symbol, n)
    combo = v_codes * (len(s_names) + 1) + s_codes
    uniq, first, inverse = np.unique(combo, return_index=True, return_inverse=True)
    vid = np.zeros(len(uniq), np.int64)
    sid = np.zeros(len(uniq), np.int64)
    good = np.zeros(len(uniq), np.bool_)
    for u, (c, row) in enumerate(zip(uniq.tolist(), first.tolist())):
        vc, sc = divmod(c, len(s_names) + 1)
        v_name = v_names[vc] if vc < len(v_names) else ""
        s_name = s_names[sc] if sc < len(s_names) else ""
        ids = table.lookup(v_name, s_name, source, int(line[row]))
        if ids is not None:
            vid[u], sid[u] = ids
            good[u] = True
    inverse = inverse.reshape(-1)
    return vid[inverse], sid[inverse], good[inverse]


def _codes(col, n: int) -> tuple[np.ndarray, list]:
    if isinstance(col, str):
        return np.zeros(n, np.int64), [col]
    codes = np.asarray(col.codes, np.int64).copy()
    names = [str(c) for c in col.categories]
    codes[codes < 0] = len(names)  # missing -> an index past the names (looked up as "")
    return codes, names


def message_ends(*columns) -> np.ndarray:
    """True on the last row of each run of rows that agree on every column (one venue message)."""
    n = len(columns[0]) if columns else 0
    last = np.ones(n, np.bool_)
    if n > 1:
        change = np.zeros(n - 1, np.bool_)
        for col in columns:
            a = np.asarray(col.codes) if isinstance(col, pd.Categorical) else np.asarray(col)
            change |= a[1:] != a[:-1]
        last[:-1] = change
    return last
