"""Labelled rows for training: feature vectors X [n, N_FEATURES] float32, label y, stream key, origin_ts, origin_seq,
in time order.

Label (the directional model's, unchanged): for a feature record of stream (venue, symbol), 1 if that stream's mid
((bid + ask) / 2) is higher ``horizon`` records later in the same stream, 0 if lower. Records with no future that far,
records whose future mid is unchanged and records with a non-finite feature are dropped: the model estimates
P(up | the mid moved), so 0.5 reads as "no view".

Every row also carries ``position`` (its record's index in the source's time order, all segments end to end) and
``label_end`` (the position of the record its label reads), which is what folds purge on. Several sources (seeds,
files) are segments laid end to end: a label never reads across a segment, and the stream key carries the segment so
that the same (venue, symbol) of two seeds are two streams.

A Dataset built from feature records also keeps their ``History`` (every record's values, labelled or not, as the
inference host sees them, non-finite as 0; each record's stream predecessor; its instrument key and segment), indexed
by ``position``: the sequence and graph members gather a fold's windows and cross-sections from it on demand, so
memory stays one copy of the records' values (112 bytes a record) rather than K of them per row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from stages.records import FEATURE_SCHEMA_HASH, FEATURE_VECTOR, N_FEATURES
from stages.universe import MAX_SYMBOLS

LABEL_DEFINITION = (
    "y = 1 if mid[t+H] > mid[t] else 0, where mid = (bid + ask) / 2 and t+H is the H-th later feature record "
    "of the same (venue, symbol); rows without a record H later, with mid[t+H] == mid[t], or with a "
    "non-finite feature are dropped, so prob_up = P(mid up | mid moved)")
_CHUNK = 1 << 18


def label_mid_direction(feats: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (indices into time-ordered ``feats``) with a label, their labels, and each row's future index."""
    if horizon < 1:
        raise ValueError(f"horizon={horizon} must be >= 1")
    mid = (feats["bid"] + feats["ask"]) * 0.5
    stream = feats["venue"].astype(np.int64) << 16 | feats["symbol"].astype(np.int64)
    rows, futures = [], []
    for key in np.unique(stream):
        idx = np.flatnonzero(stream == key)
        if idx.size > horizon:
            rows.append(idx[:-horizon])
            futures.append(idx[horizon:])
    if not rows:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    rows_a, fut_a = np.concatenate(rows), np.concatenate(futures)
    order = np.argsort(rows_a, kind="stable")
    rows_a, fut_a = rows_a[order], fut_a[order]
    delta = mid[fut_a] - mid[rows_a]
    # per record first: indexing the values by row would copy them all (~1.3 GB at the default history)
    finite = np.isfinite(feats["values"]).all(axis=1)[rows_a] & np.isfinite(delta)
    keep = finite & (delta != 0.0)
    return rows_a[keep], (delta[keep] > 0.0).astype(np.float64), fut_a[keep]


@dataclass(frozen=True)
class History:
    """Every feature record of the source, all segments end to end (index = a row's ``position``)."""
    values: np.ndarray       # float32 [R, N_FEATURES], non-finite -> 0 (the host's rule, stages.windows)
    previous: np.ndarray     # int64 [R]: the index of the same stream's previous record, -1 for its first
    key: np.ndarray          # int64 [R]: stages.universe.instrument_key(venue, symbol)
    segment_start: np.ndarray  # int64 [R]: the index of the first record of the record's segment

    def windows(self, positions: np.ndarray, k: int) -> np.ndarray:
        """float32 [n, k, N_FEATURES]: each position's stream's last k records up to it, oldest first; slots
        before the stream's first record hold that first record (the host's edge padding)."""
        out = np.empty((positions.size, k, N_FEATURES), np.float32)
        idx = np.asarray(positions, np.int64)
        for s in range(k - 1, -1, -1):
            out[:, s] = self.values[idx]
            back = self.previous[idx]
            idx = np.where(back >= 0, back, idx)
        return out

    def cross_section(self, positions: np.ndarray, node_keys: Sequence[int]) -> np.ndarray:
        """float32 [n, U, N_FEATURES]: at each position, the latest record (at or before it, in its segment) of
        each instrument key in ``node_keys``; zeros where that instrument has none yet."""
        positions = np.asarray(positions, np.int64)
        out = np.zeros((positions.size, len(node_keys), N_FEATURES), np.float32)
        everything = np.arange(self.key.size, dtype=np.int64)
        for u, key in enumerate(node_keys):
            last = np.maximum.accumulate(np.where(self.key == key, everything, -1))[positions]
            seen = last >= self.segment_start[positions]
            out[seen, u] = self.values[last[seen]]
        return out


def history_of(feats: np.ndarray, offset: int) -> History:
    """The History of one segment's time-ordered records, its indices shifted by ``offset``."""
    values = np.empty((feats.size, N_FEATURES), np.float32)
    for i in range(0, feats.size, _CHUNK):
        chunk = feats["values"][i:i + _CHUNK]
        values[i:i + _CHUNK] = np.where(np.isfinite(chunk), chunk, 0.0)
    key = feats["venue"].astype(np.int64) * MAX_SYMBOLS + feats["symbol"].astype(np.int64)  # universe.instrument_key
    previous = np.full(feats.size, -1, np.int64)
    order = np.argsort(key, kind="stable")  # by stream, time order kept within one
    same = key[order][1:] == key[order][:-1]
    previous[order[1:][same]] = order[:-1][same] + offset
    return History(values, previous, key, np.full(feats.size, offset, np.int64))


def join_histories(parts: Sequence[History | None]) -> History | None:
    if not parts or any(p is None for p in parts):
        return None
    return History(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("values", "previous", "key", "segment_start")))


@dataclass(frozen=True)
class Dataset:
    """Rows in time order (``position`` increasing). Checked on construction: a model never sees a NaN row,
    a label outside {0, 1} or rows out of order."""
    x: np.ndarray            # float32 [n, N_FEATURES], FEATURE_NAMES order
    y: np.ndarray            # float64 [n], 0 or 1
    stream: np.ndarray       # int64 [n]: segment << 32 | venue << 16 | symbol
    origin_ts: np.ndarray    # int64 [n]
    origin_seq: np.ndarray   # int64 [n]
    position: np.ndarray     # int64 [n]: the record's index in the source's time order
    label_end: np.ndarray    # int64 [n]: the position of the record the label reads (> position)
    horizon: int
    source: dict = field(default_factory=dict)
    history: History | None = None  # every feature record (module docstring); None for rows made without records

    def __post_init__(self):
        n = self.y.shape[0]
        if self.x.dtype != np.float32 or self.x.ndim != 2 or self.x.shape != (n, N_FEATURES):
            raise ValueError(f"x: dtype={self.x.dtype} shape={self.x.shape}, expected float32 ({n}, {N_FEATURES})")
        for name in ("stream", "origin_ts", "origin_seq", "position", "label_end"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name}: shape={getattr(self, name).shape}, expected ({n},)")
        bad = np.flatnonzero(~np.isfinite(self.x).all(axis=1))
        if bad.size:
            raise ValueError(f"x: {bad.size} rows with a non-finite feature (first row={int(bad[0])}); "
                             "drop them before training")
        if n and not np.isin(self.y, (0.0, 1.0)).all():
            raise ValueError("y: labels must be 0 or 1")
        if n and not ((np.diff(self.position) > 0).all() and (self.label_end > self.position).all()):
            raise ValueError("position: rows must be in time order with each label_end after its row")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, idx: np.ndarray) -> Dataset:
        return Dataset(self.x[idx], self.y[idx], self.stream[idx], self.origin_ts[idx], self.origin_seq[idx],
                       self.position[idx], self.label_end[idx], self.horizon, self.source, self.history)

    def span(self) -> dict:
        """The rows' origin ranges, for the metadata's periods."""
        if not len(self):
            return {"rows": 0}
        return {"rows": len(self), "position": [int(self.position[0]), int(self.position[-1])],
                "origin_seq": [int(self.origin_seq[0]), int(self.origin_seq[-1])],
                "origin_ts": [int(self.origin_ts[0]), int(self.origin_ts[-1])]}

    def require_trainable(self, what: str) -> None:
        """Refuse an empty or single-class set by name: nothing can be fitted or scored on it."""
        if not len(self):
            raise ValueError(f"{what}: no labelled rows; give more events or a shorter --horizon")
        if self.y.min() == self.y.max():
            raise ValueError(f"{what}: rows={len(self)} all have label {int(self.y[0])}; a classifier needs both "
                             "classes: give more events or a shorter --horizon")


def in_order(feats: np.ndarray) -> np.ndarray:
    """FEATURE_VECTOR records of this feature schema, sorted by origin_seq (not copied when they already are)."""
    if feats.dtype != FEATURE_VECTOR:
        raise ValueError(f"features dtype={feats.dtype} is not FEATURE_VECTOR")
    wrong = np.flatnonzero(feats["schema_hash"] != FEATURE_SCHEMA_HASH)
    if wrong.size:
        raise ValueError(f"{wrong.size} feature records carry schema_hash={int(feats['schema_hash'][wrong[0]])}, "
                         f"expected={FEATURE_SCHEMA_HASH}")
    seq = feats["origin_seq"]
    if not (seq[1:] >= seq[:-1]).all():  # collect_features's are in order already: no ~2 GB copy
        feats = feats[np.argsort(seq, kind="stable")]
    return feats


def from_vectors(feats: np.ndarray, horizon: int, segment: int = 0, offset: int = 0,
                 source: dict | None = None) -> Dataset:
    """Label FEATURE_VECTOR records (sorted by origin_seq here if they are not) into a Dataset; ``offset`` is
    added to every position (the records of earlier segments)."""
    feats = in_order(feats)
    rows, y, future = label_mid_direction(feats, horizon)
    x = np.empty((rows.size, N_FEATURES), np.float32)
    values = feats["values"]
    for i in range(0, rows.size, _CHUNK):  # a float64 copy of every row at once would be ~1.3 GB per 6M rows
        x[i:i + _CHUNK] = values[rows[i:i + _CHUNK]]
    stream = (np.int64(segment) << 32) | (feats["venue"][rows].astype(np.int64) << 16) | feats["symbol"][rows]
    return Dataset(x, y, stream.astype(np.int64), feats["origin_ts"][rows].astype(np.int64),
                   feats["origin_seq"][rows].astype(np.int64), rows.astype(np.int64) + offset,
                   future.astype(np.int64) + offset, horizon, dict(source or {}, feature_records=int(feats.size)),
                   history_of(feats, offset))


def concat(parts: Sequence[Dataset], source: dict) -> Dataset:
    if not parts:
        raise ValueError("no datasets to join")
    if len({p.horizon for p in parts}) != 1:
        raise ValueError(f"datasets with different horizons: {[p.horizon for p in parts]}")
    return Dataset(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("x", "y", "stream", "origin_ts", "origin_seq", "position", "label_end")),
                   parts[0].horizon, source, join_histories([p.history for p in parts]))


def _segments(named_vectors: Iterable[tuple[str, np.ndarray]], horizon: int, source: dict) -> Dataset:
    parts, offset, records = [], 0, []
    for segment, (name, feats) in enumerate(named_vectors):
        parts.append(from_vectors(feats, horizon, segment, offset))
        offset += int(feats.size)
        records.append({"segment": segment, "name": name, "feature_records": int(feats.size),
                        "labelled_rows": len(parts[-1])})
    return concat(parts, dict(source, segments=records, feature_records=offset))


def from_seeds(seeds: Sequence[int], events: int, horizon: int) -> Dataset:
    """The synthetic market of each seed through the real validate and feature kernels, seeds end to end."""
    from pipeline.hosting.fused import collect_features
    return _segments(((f"seed {s}", collect_features(seed=s, n_events=events)) for s in seeds), horizon,
                     {"source": "pipeline.hosting.fused.collect_features", "seeds": list(seeds), "events": events})


def from_parquet(paths: Sequence[Path | str], horizon: int) -> Dataset:
    """Feature Parquet files written by ``bot4 features build``, each a segment."""
    from pipeline.store import feature_build
    return _segments(((str(p), feature_build.read(p)[0]) for p in paths), horizon,
                     {"source": "parquet", "files": [str(p) for p in paths]})


def from_journal(directory: Path | str, horizon: int, config=None) -> Dataset:
    """A journal's market stream through validate and feature (as ``bot4 features build --journal`` does)."""
    from pipeline.config import Config
    from pipeline.store import feature_build
    config = config or Config()
    market, source = feature_build.market_source(config, str(directory))
    runner = feature_build.FeatureRunner(config)
    vectors = [v.copy() for v in runner.run(market)]
    feats = np.concatenate(vectors) if vectors else np.zeros(0, FEATURE_VECTOR)
    return _segments([(source, feats)], horizon, {"source": "journal", "files": [str(directory)]})
