"""The recorder: copies the journal into PostgreSQL, completely, without ever touching the hot path.

It tails the journal's segment files (the journal process already drains the stages' taps), so the
pipeline never waits for the database and the database can never miss a record: when PostgreSQL is slow
or restarting the recorder falls behind, reconnects with backoff, and catches up from where its last
transaction ended. Each batch is one binary ``COPY`` plus the stream's new position in
``bot4_recorder_progress``, in one transaction: a batch lands exactly once.

Tables are TimescaleDB hypertables (with a compression policy) when the extension is available, and
plain tables range-partitioned by day on ``ts`` otherwise; the schema is created at start.
Run: ``python -m pipeline.recorder --dsn DSN --journal DIR [--follow]``.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import signal
import struct
import sys
import time
from dataclasses import dataclass, field

import asyncpg
import numpy as np

from pipeline.journal import JournalReader, segment_paths
from stages import records

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds: PostgreSQL's timestamp zero
BATCH_RECORDS = 65_536


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str
    np_type: str          # big-endian numpy type of the binary COPY field
    source: str           # record field, or "ts:<field>" for a timestamptz from a ns field, "field[0]" for level 0


def _market_columns():
    return [Column("ts", "timestamptz", ">i8", "ts:exch_ts"), Column("origin_ts", "bigint", ">i8", "origin_ts"),
            Column("origin_seq", "bigint", ">i8", "origin_seq"), Column("exch_ts", "bigint", ">i8", "exch_ts"),
            Column("venue_seq", "bigint", ">i8", "venue_seq"), Column("venue", "smallint", ">i2", "venue"),
            Column("symbol", "smallint", ">i2", "symbol"), Column("kind", "smallint", ">i2", "kind"),
            Column("side", "smallint", ">i2", "side"), Column("price", "double precision", ">f8", "price"),
            Column("size", "double precision", ">f8", "size"),
            Column("bid_px", "double precision", ">f8", "bid_px[0]"),
            Column("bid_sz", "double precision", ">f8", "bid_sz[0]"),
            Column("ask_px", "double precision", ">f8", "ask_px[0]"),
            Column("ask_sz", "double precision", ">f8", "ask_sz[0]")]


def _intent_columns():
    return [Column("ts", "timestamptz", ">i8", "ts:origin_ts"), Column("origin_ts", "bigint", ">i8", "origin_ts"),
            Column("origin_seq", "bigint", ">i8", "origin_seq"), Column("stage_ts", "bigint", ">i8", "stage_ts"),
            Column("intent_id", "bigint", ">i8", "intent_id"), Column("venue", "smallint", ">i2", "venue"),
            Column("symbol", "smallint", ">i2", "symbol"), Column("kind", "smallint", ">i2", "kind"),
            Column("side", "smallint", ">i2", "side"), Column("strategy", "smallint", ">i2", "strategy"),
            Column("price", "double precision", ">f8", "price"), Column("qty", "double precision", ">f8", "qty"),
            *_intent_risk_columns()]


def _intent_risk_columns():
    """Why each order has its size (added after the first schema: existing tables gain them with default 0)."""
    return [Column("risk_reasons", "integer", ">i4", "risk_reasons"),
            *(Column(name, "double precision", ">f8", name)
              for name in ("kelly_f", "budget", "horizon_sigma_bps", "heat", "drawdown"))]


def _exec_columns():
    return [Column("ts", "timestamptz", ">i8", "ts:origin_ts"), Column("origin_ts", "bigint", ">i8", "origin_ts"),
            Column("origin_seq", "bigint", ">i8", "origin_seq"), Column("stage_ts", "bigint", ">i8", "stage_ts"),
            Column("order_id", "bigint", ">i8", "order_id"), Column("venue", "smallint", ">i2", "venue"),
            Column("symbol", "smallint", ">i2", "symbol"), Column("side", "smallint", ">i2", "side"),
            Column("state", "smallint", ">i2", "state"), Column("liquidity", "smallint", ">i2", "liquidity"),
            Column("strategy", "smallint", ">i2", "strategy"), Column("reject_reason", "smallint", ">i2", "reject_reason"),
            Column("price", "double precision", ">f8", "price"), Column("qty", "double precision", ">f8", "qty"),
            Column("leaves", "double precision", ">f8", "leaves"), Column("fee", "double precision", ">f8", "fee"),
            Column("position", "double precision", ">f8", "position")]


@dataclass(frozen=True)
class Table:
    stream: str
    name: str
    dtype: np.dtype
    columns: list


TABLES = (Table("market", "market_events", records.MARKET_EVENT, _market_columns()),
          Table("intent", "order_intents", records.ORDER_INTENT, _intent_columns()),
          Table("exec", "exec_reports", records.EXEC_REPORT, _exec_columns()),
          Table("quarantine", "quarantined_events", records.MARKET_EVENT,
                _market_columns() + [Column("reason", "smallint", ">i2", "reason")]))
ST_RECONNECTS = len(TABLES)


def encode_copy(table: Table, batch: np.ndarray) -> bytes:
    """PostgreSQL binary COPY of ``batch``, built column-wise by numpy (no per-row Python)."""
    fields = [("n", ">i2")]
    for i, c in enumerate(table.columns):
        fields += [(f"l{i}", ">i4"), (f"v{i}", c.np_type)]
    rows = np.empty(len(batch), np.dtype(fields))
    rows["n"] = len(table.columns)
    for i, c in enumerate(table.columns):
        rows[f"l{i}"] = np.dtype(c.np_type).itemsize
        if c.source.startswith("ts:"):
            rows[f"v{i}"] = batch[c.source[3:]] // 1000 - PG_EPOCH_US
        elif c.source.endswith("[0]"):
            rows[f"v{i}"] = batch[c.source[:-3]][:, 0]
        else:
            rows[f"v{i}"] = batch[c.source]
    return b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0) + rows.tobytes() + b"\xff\xff"


def read_from(directory: str, stream: str, dtype: np.dtype, position: int, limit: int) -> np.ndarray:
    """Up to ``limit`` journal records from ``position`` (0-based over the whole stream)."""
    reader = JournalReader(directory, stream, dtype)
    skipped = 0
    for s in reader.segments:
        if position < skipped + s.record_count:
            start = position - skipped
            count = min(limit, s.record_count - start)
            view = np.memmap(s.path, dtype=dtype, mode="r", offset=s.header.header_bytes + start * dtype.itemsize,
                             shape=(count,))
            return np.array(view)
        skipped += s.record_count
    return np.zeros(0, dtype)


@dataclass
class RecorderStats:
    rows: dict = field(default_factory=lambda: {t.stream: 0 for t in TABLES})
    reconnects: int = 0
    last_error: str = ""


class Recorder:
    def __init__(self, dsn: str, journal_dir: str):
        self.dsn = dsn
        self.journal_dir = journal_dir
        self.conn: asyncpg.Connection | None = None
        self.timescale = False
        self.positions: dict[str, int] = {}
        self.partitions: set[str] = set()
        self.stats = RecorderStats()

    async def connect(self) -> None:
        self.conn = await asyncpg.connect(self.dsn, timeout=5)
        await self.ensure_schema()
        rows = await self.conn.fetch("SELECT stream, records FROM bot4_recorder_progress")
        self.positions = {t.stream: 0 for t in TABLES} | {r["stream"]: r["records"] for r in rows}
        self.partitions = set()

    async def ensure_schema(self) -> None:
        c = self.conn
        available = await c.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
        if available:
            await c.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            self.timescale = True
        await c.execute("CREATE TABLE IF NOT EXISTS bot4_recorder_progress (stream text PRIMARY KEY, "
                        "records bigint NOT NULL, updated timestamptz NOT NULL DEFAULT now())")
        for t in TABLES:
            cols = ", ".join(f"{col.name} {col.pg_type} NOT NULL" for col in t.columns)
            if self.timescale:
                await c.execute(f"CREATE TABLE IF NOT EXISTS {t.name} ({cols})")
                await c.execute(f"SELECT create_hypertable('{t.name}', 'ts', if_not_exists => TRUE)")
                await c.execute(f"ALTER TABLE {t.name} SET (timescaledb.compress)")
                await c.execute(f"SELECT add_compression_policy('{t.name}', INTERVAL '7 days', if_not_exists => TRUE)")
            else:
                await c.execute(f"CREATE TABLE IF NOT EXISTS {t.name} ({cols}) PARTITION BY RANGE (ts)")
        for col in _intent_risk_columns():
            await c.execute(f"ALTER TABLE order_intents ADD COLUMN IF NOT EXISTS {col.name} {col.pg_type} "
                            "NOT NULL DEFAULT 0")
        # The journal keeps market events as they arrived; what validation passed is the rest.
        await c.execute("CREATE OR REPLACE VIEW validated_market_events AS SELECT m.* FROM market_events m "
                        "WHERE NOT EXISTS (SELECT 1 FROM quarantined_events q "
                        "WHERE q.origin_seq = m.origin_seq AND q.origin_ts = m.origin_ts)")

    async def _ensure_partitions(self, table: Table, batch: np.ndarray, ts_field: str) -> None:
        if self.timescale:
            return
        days = np.unique(batch[ts_field] // 86_400_000_000_000)
        for day in days:
            start = datetime.datetime.fromtimestamp(int(day) * 86400, datetime.timezone.utc)
            name = f"{table.name}_{start:%Y%m%d}"
            if name in self.partitions:
                continue
            end = start + datetime.timedelta(days=1)
            await self.conn.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table.name} "
                                    f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
            self.partitions.add(name)

    async def step(self) -> int:
        """Copy at most one batch per stream; returns rows written."""
        written = 0
        for t in TABLES:
            if not segment_paths(self.journal_dir, t.stream):
                continue
            position = self.positions.get(t.stream, 0)
            batch = read_from(self.journal_dir, t.stream, t.dtype, position, BATCH_RECORDS)
            if not len(batch):
                continue
            ts_field = next(c.source[3:] for c in t.columns if c.source.startswith("ts:"))
            async with self.conn.transaction():
                await self._ensure_partitions(t, batch, ts_field)
                await self.conn.copy_to_table(t.name, source=io.BytesIO(encode_copy(t, batch)),
                                              columns=[c.name for c in t.columns], format="binary")
                await self.conn.execute("INSERT INTO bot4_recorder_progress (stream, records) VALUES ($1, $2) "
                                        "ON CONFLICT (stream) DO UPDATE SET records = $2, updated = now()",
                                        t.stream, position + len(batch))
            self.positions[t.stream] = position + len(batch)
            self.stats.rows[t.stream] += len(batch)
            written += len(batch)
        return written

    async def run(self, follow: bool, stop: asyncio.Event, min_backoff_s: float = 0.05,
                  max_backoff_s: float = 2.0) -> None:
        """Copy until caught up (or, with ``follow``, until ``stop`` and caught up), surviving restarts."""
        backoff = min_backoff_s
        while True:
            try:
                if self.conn is None or self.conn.is_closed():
                    await self.connect()
                    backoff = min_backoff_s
                written = await self.step()
                if written:
                    continue
                if not follow or stop.is_set():
                    return
                await asyncio.sleep(0.02)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
                self.stats.reconnects += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if self.conn is not None:
                    self.conn.terminate()
                    self.conn = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max_backoff_s)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


async def record_journal(dsn: str, journal_dir: str) -> RecorderStats:
    """Copy everything the journal holds now, then close (backfill, tests, ``bot4 record``)."""
    recorder = Recorder(dsn, journal_dir)
    try:
        await recorder.run(follow=False, stop=asyncio.Event())
    finally:
        await recorder.close()
    return recorder.stats


async def _main(args) -> int:
    recorder = Recorder(args.dsn, args.journal)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    await recorder.run(args.follow, stop)
    await recorder.close()
    seconds = time.monotonic() - started
    rows = recorder.stats.rows
    print(f"recorded {sum(rows.values()):,} rows in {seconds:.1f} s ({', '.join(f'{k} {v:,}' for k, v in rows.items())}); "
          f"reconnects {recorder.stats.reconnects}" + (f" (last: {recorder.stats.last_error})" if
                                                        recorder.stats.reconnects else ""), flush=True)
    return 0


async def _process(block, slot, recorder: Recorder) -> None:
    """Pipeline host: follow the journal until the supervisor stops us, then catch up and return."""
    from shm import control as cb
    stop = asyncio.Event()
    stats = slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]

    async def watch():
        while not slot[cb.S_STOP]:
            slot[cb.S_HEARTBEAT_NS] = time.time_ns()
            if int(block.globals[cb.G_RUN_STATE]) == cb.RUN_RUNNING:
                slot[cb.S_STATE] = cb.RUNNING
            for i, t in enumerate(TABLES):
                stats[i] = recorder.stats.rows[t.stream]
            stats[ST_RECONNECTS] = recorder.stats.reconnects
            slot[cb.S_IN] = sum(recorder.stats.rows.values())
            await asyncio.sleep(0.01)
        stop.set()

    watcher = asyncio.ensure_future(watch())
    await recorder.run(True, stop)
    await watcher
    for i, t in enumerate(TABLES):
        stats[i] = recorder.stats.rows[t.stream]
    slot[cb.S_IN] = sum(recorder.stats.rows.values())
    await recorder.close()


def process_main() -> int:
    from pipeline.child import start
    from shm import control as cb

    child = start("recorder")
    config, block, slot = child.config, child.block, child.slot
    slot[cb.S_STATE] = cb.READY  # the database may be down: the recorder catches up when it comes back
    try:
        asyncio.run(_process(block, slot, Recorder(config.recorder.dsn, config.journal.dir)))
        slot[cb.S_STATE] = cb.STOPPED
        return 0
    finally:
        del slot
        block.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # started by the supervisor with a launch spec on stdin
        return process_main()
    parser = argparse.ArgumentParser(prog="python -m pipeline.recorder", description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--journal", required=True, help="journal directory")
    parser.add_argument("--follow", action="store_true", help="keep tailing until SIGTERM, then catch up and exit")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
