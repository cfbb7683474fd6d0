"""Vectorised conversion of decoded JSON values (Python lists) into int64/float64 columns.

The fast path converts a whole column in one numpy call. Only when that fails (some value is not a
number, or out of range) does the slow path look at each message's values, so one bad message costs
that message, never the file. Both paths accept the same values for a clean column.
"""
from __future__ import annotations

import numpy as np

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MS_MAX = INT64_MAX // 1_000_000  # the largest ms (or µs/1000) value whose ns still fits int64


def int_rows(rows: list, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(int64 table of shape (len(rows), width), per-row ok mask) from tuples of decoded JSON values.
    A row holding anything but in-range integers is not ok (its values are zeroed)."""
    try:
        arr = np.array(rows)
        if arr.dtype == np.int64 and arr.shape == (len(rows), width):
            return arr, np.ones(len(rows), np.bool_)
    except (ValueError, TypeError, OverflowError):
        pass
    out = np.zeros((len(rows), width), np.int64)
    ok = np.ones(len(rows), np.bool_)
    for i, row in enumerate(rows):
        if all(isinstance(v, int) and INT64_MIN <= v <= INT64_MAX for v in row):
            out[i] = row
        else:
            ok[i] = False
    return out, ok


def float_column(values: list, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(float64 array, per-message ok mask or None); ``counts`` = values per message, in order."""
    try:
        arr = np.array(values, dtype=np.float64)
        if arr.shape == (len(values),):
            return arr, None
    except (ValueError, TypeError, OverflowError):
        pass
    out = np.full(len(values), np.nan)
    ok = np.ones(len(counts), np.bool_)
    start = 0
    for m, c in enumerate(counts.tolist()):
        chunk = values[start:start + c]
        try:
            part = np.array(chunk, dtype=np.float64)
            if part.shape == (c,):
                out[start:start + c] = part
            else:
                ok[m] = False
        except (ValueError, TypeError, OverflowError):
            ok[m] = False
        start += c
    return out, ok


def ms_to_ns(ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ns, ok): ok is False where the ms value would overflow int64 ns."""
    ok = (ms >= -MS_MAX) & (ms <= MS_MAX)
    return np.where(ok, ms, 0) * 1_000_000, ok
