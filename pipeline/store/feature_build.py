"""Offline feature store: recorded market events -> the feature stage's vectors -> Parquet.

    bot4 features build --config replay.toml --out features.parquet    # the config's feed.files
    bot4 features build --journal ./j --out features.parquet           # a journal's market stream

The rows come from the same kernels as live and fused mode (validate, then feature), fed the recorded
events in order and in batches of ``rings.batch``, so each row is bit for bit the vector the feature stage
produced (or would produce) for that event. A row is point-in-time: the feature kernel folds events in
stream order and every clock feature is aged to the row's own ``origin_ts``, so a row uses only events at
or before it (a journal and a merged replay are in receive-time order). Quarantined events get no row.

Columns: origin_ts, origin_seq (int64), venue, symbol (uint16; names in the file metadata), kind (uint8),
schema_hash (uint32), bid, ask, bid_sz, ask_sz, then one float64 column per feature in FEATURE_NAMES order.
``stage_ts`` (when a stage ran) is not a feature and is left out. File metadata (``bot4.*`` keys): the
feature schema version, hash and names, the venue and symbol names, and the source.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import Config, ConfigError
from pipeline.hosting.chain import Chain
from pipeline.plan import resolve
from stages import records

ROW_GROUP = 1 << 17
BOOK_COLUMNS = ("bid", "ask", "bid_sz", "ask_sz")
TRADE_COLUMNS = ("side", "price", "size")  # the event's own trade or liquidation (0 for books)


@dataclass
class BuildResult:
    path: Path
    rows: int
    market_events: int
    quarantined: int


def arrow_schema(metadata: dict[str, str] | None = None) -> pa.Schema:
    fields = [pa.field("origin_ts", pa.int64()), pa.field("origin_seq", pa.int64()), pa.field("venue", pa.uint16()),
              pa.field("symbol", pa.uint16()), pa.field("kind", pa.uint8()), pa.field("schema_hash", pa.uint32())]
    fields += [pa.field(name, pa.float64()) for name in BOOK_COLUMNS]
    fields += [pa.field("side", pa.int8()), pa.field("price", pa.float64()), pa.field("size", pa.float64())]
    fields += [pa.field(name, pa.float64()) for name in records.FEATURE_NAMES]
    return pa.schema(fields, metadata=metadata)


def file_metadata(config: Config, source: str) -> dict[str, str]:
    return {"bot4.feature_schema_version": str(records.FEATURE_SCHEMA_VERSION),
            "bot4.feature_schema_hash": str(records.FEATURE_SCHEMA_HASH),
            "bot4.feature_names": json.dumps(list(records.FEATURE_NAMES)),
            "bot4.venues": json.dumps(list(config.feed.venues)),
            "bot4.symbols": json.dumps(list(config.feed.symbols)),
            "bot4.source": source}


def to_table(vectors: np.ndarray, schema: pa.Schema) -> pa.Table:
    """FEATURE_VECTOR records -> columns (copies; the values matrix is split column by column)."""
    columns = [vectors[name].copy() for name in ("origin_ts", "origin_seq", "venue", "symbol", "kind", "schema_hash")]
    columns += [vectors[name].copy() for name in BOOK_COLUMNS + TRADE_COLUMNS]
    values = vectors["values"]
    columns += [np.ascontiguousarray(values[:, j]) for j in range(records.N_FEATURES)]
    return pa.Table.from_arrays(columns, schema=schema)


class FeatureRunner:
    """Validate and feature kernels over a recorded market stream, re-cut into batches of ``rings.batch``
    as fused mode does. ``stats`` (per stage) and ``state`` (the feature kernel's, with its local online
    store) are readable after a run."""

    def __init__(self, config: Config):
        self.batch = config.rings.batch
        self.chain = Chain(resolve(config), ("validate", "feature"))
        self.stats = {name: self.chain.stats(name) for name in self.chain.path}
        self.state = self.chain.state("feature")

    def run(self, market: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Yields each batch's vectors (a view, overwritten by the next batch)."""
        from pipeline.hosting.fused import _rebatch

        for chunk in _rebatch(market, self.batch):
            n = self.chain.run(chunk, len(chunk), int(chunk["origin_ts"][-1]))
            yield self.chain.out["feature"][:n]


def build(config: Config, market: Iterable[np.ndarray], out: Path | str, source: str) -> BuildResult:
    """Write the feature rows of ``market`` to the Parquet file ``out`` (replaced if it exists)."""
    from stages import validate

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = arrow_schema(file_metadata(config, source))
    tmp = out.with_name(out.name + ".partial")
    rows = 0
    pending: list[np.ndarray] = []
    pending_rows = 0
    runner = FeatureRunner(config)
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for vectors in runner.run(market):
            pending.append(vectors.copy())
            pending_rows += len(vectors)
            if pending_rows >= ROW_GROUP:
                writer.write_table(to_table(np.concatenate(pending), schema))
                rows += pending_rows
                pending, pending_rows = [], 0
        if pending_rows or rows == 0:
            chunk = np.concatenate(pending) if pending else np.zeros(0, records.FEATURE_VECTOR)
            writer.write_table(to_table(chunk, schema))
            rows += pending_rows
    tmp.replace(out)  # a reader never sees a half-written file under the final name
    quarantined = int(runner.stats["validate"][validate.ST_QUARANTINED])
    return BuildResult(out, rows, rows + quarantined, quarantined)


def read(path: Path | str) -> tuple[np.ndarray, dict[str, str]]:
    """A feature Parquet file back as FEATURE_VECTOR records (stage_ts 0) and its ``bot4.*`` metadata;
    refuses a file written for another feature schema."""
    table = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items() if k.startswith(b"bot4.")}
    found = meta.get("bot4.feature_schema_hash")
    if found != str(records.FEATURE_SCHEMA_HASH):
        raise ValueError(f"{path}: bot4.feature_schema_hash={found}, this build's is {records.FEATURE_SCHEMA_HASH}; "
                         "rebuild it with bot4 features build")
    missing = [f.name for f in arrow_schema() if f.name not in table.column_names]
    if missing:
        raise ValueError(f"{path}: columns {missing} are missing (a file of an older build); "
                         "rebuild it with bot4 features build")
    out = np.zeros(table.num_rows, records.FEATURE_VECTOR)
    for name in ("origin_ts", "origin_seq", "venue", "symbol", "kind", "schema_hash") + BOOK_COLUMNS + TRADE_COLUMNS:
        out[name] = table.column(name).to_numpy()
    for j, name in enumerate(records.FEATURE_NAMES):
        out["values"][:, j] = table.column(name).to_numpy()
    return out, meta


def market_source(config: Config, journal: str | None) -> tuple[Iterable[np.ndarray], str]:
    """The recorded market stream to build from: a journal's ``market`` stream, or the config's replay files."""
    if journal:
        from pipeline.store.journal import JournalReader, segment_paths
        if not segment_paths(journal, "market"):
            raise ConfigError(f"--journal {journal}: no market stream there; give a directory written by "
                              "bot4 run --journal or bot4 fused --journal")
        return JournalReader(journal, "market", records.MARKET_EVENT).batches(), f"journal {journal}"
    if config.feed.source != "replay":
        raise ConfigError(f"feed.source={config.feed.source!r}: features are built from recorded data; set "
                          "feed.source = \"replay\" with feed.files, or give --journal DIR")
    from pipeline.sources.replay_feed import load_recording
    stream, _ = load_recording(config)
    return [stream], "replay " + ", ".join(str(f) for f in config.feed.files)
