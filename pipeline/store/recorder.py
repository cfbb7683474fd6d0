"""The recorder: copies the journal into PostgreSQL, completely, without ever touching the hot path.

It tails the journal's segment files (the journal process already drains the stages' taps), so the
pipeline never waits for the database and the database can never miss a record: when PostgreSQL is slow
or restarting the recorder falls behind, reconnects with backoff, and catches up from where its last
transaction ended. Each batch is one binary ``COPY`` plus the stream's new position in
``bot4_journal_progress``, keyed by the journal's id and the stream, in one transaction: a batch lands
exactly once, and another journal recorded into the same database starts from its own position.

Every row carries its ``journal_id`` and ``run_id`` (from the segment header; 0 in rows of older
recorders). The names behind the rows' venue and symbol indices are in ``bot4_instruments`` (run_id, venue,
symbol, venue_name, symbol_name), filled from the segment headers, with ``bot4_runs`` (journal_id, run_id,
source, venues, symbols); the views ``<table>_named`` join them in. The old per-stream table
``bot4_recorder_progress`` is left as it was: its positions cannot be attributed to a journal.

Tables are TimescaleDB hypertables (with a compression policy) when the extension is available, and
plain tables range-partitioned by day on ``ts`` otherwise; the schema is created at start.

Errors: a connection refused or reset, a timeout, a server shutting down or starting, too many connections
(SQLSTATE classes 08, 25, 40, 53, 55, 57, 58) are transient: reconnect with backoff. Anything else (wrong
password, missing role or database, insufficient privilege, a bad DSN, an unreadable journal) is permanent:
the recorder stops and names the cause, password masked.

Run: ``python -m pipeline.store.recorder --dsn postgresql://USER@HOST/DB --journal DIR [--follow]``. The DSN
carries no password (it would be visible in ps): PostgreSQL's own PGPASSFILE (a 0600 file), ~/.pgpass
or PGPASSWORD supply it. SIGTERM or SIGINT: without --follow stop after the current batch; with --follow
stop following, catch up and exit, unless the database is unreachable then (backing off or connecting):
stop at once. A second signal stops at once. Exit codes: 0 everything the journal held is in the database;
2 bad arguments (a password in --dsn, no journal directory); 3 permanent database error; 4 the journal cannot be read; 5 stopped
by a signal before catching up (the rest stays in the journal; the next run continues from the position).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import os
import signal
import struct
import sys
import time
from dataclasses import dataclass, field

import asyncpg
import numpy as np

from pipeline import registry, streams
from pipeline.hosting.agent import Agent, AgentRunner, AgentTerminated, no_wait
from pipeline.hosting.child import start
from pipeline.redact import has_password, mask
from pipeline.store.journal import JournalError, JournalReader, SegmentHeader, journal_id, segment_paths
from shm import control as cb
from stages import records

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds: PostgreSQL's timestamp zero
BATCH_RECORDS = 65_536
REFUSED_AFTER_CONNECTED_RETRY_S = 30.0  # see Recorder._refused_while_restarting
COMMAND_TIMEOUT_S = 30.0
EXIT_OK, EXIT_USAGE, EXIT_PERMANENT, EXIT_JOURNAL, EXIT_STOPPED = 0, 2, 3, 4, 5
SCHEMA_LOCK = 0x626F7434_7265636F  # pg_advisory_xact_lock key: one recorder at a time changes the schema
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "25", "40", "53", "55", "57", "58"})


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str
    np_type: str          # big-endian numpy type of the binary COPY field
    source: str           # record field; "ts:<field>" a timestamptz from a ns field; "field[0]" level 0;
                          # "id:journal_id" / "id:run_id" the segment's ids


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


def _id_columns():
    """The journal and run a row came from (added after the first schema: older rows have 0)."""
    return [Column("journal_id", "bigint", ">i8", "id:journal_id"), Column("run_id", "bigint", ">i8", "id:run_id")]


@dataclass(frozen=True)
class Table:
    stream: str
    name: str
    dtype: np.dtype
    columns: list


TABLES = (Table("market", "market_events", records.MARKET_EVENT, _market_columns() + _id_columns()),
          Table("intent", "order_intents", records.ORDER_INTENT, _intent_columns() + _id_columns()),
          Table("exec", "exec_reports", records.EXEC_REPORT, _exec_columns() + _id_columns()),
          Table("quarantine", "quarantined_events", records.MARKET_EVENT,
                _market_columns() + [Column("reason", "smallint", ">i2", "reason")] + _id_columns()))
ST_RECONNECTS = registry.BY_NAME["recorder"].counter("reconnects")
assert tuple(t.stream for t in TABLES) == streams.RECORDED


def row_dtype(table: Table) -> np.dtype:
    """One binary COPY tuple of ``table``: field count, then length and value per (fixed-size) column."""
    fields = [("n", ">i2")]
    for c in table.columns:
        fields += [(f"l_{c.name}", ">i4"), (c.name, c.np_type)]
    return np.dtype(fields)


def encode_rows(table: Table, batch: np.ndarray, journal_id_: int = 0, run_id: int = 0) -> np.ndarray:
    """The binary COPY tuples of ``batch``, built column-wise by numpy (no per-row Python)."""
    rows = np.empty(len(batch), row_dtype(table))
    rows["n"] = len(table.columns)
    ids = {"journal_id": journal_id_, "run_id": run_id}
    for c in table.columns:
        rows[f"l_{c.name}"] = np.dtype(c.np_type).itemsize
        if c.source.startswith("ts:"):
            rows[c.name] = batch[c.source[3:]] // 1000 - PG_EPOCH_US
        elif c.source.startswith("id:"):
            rows[c.name] = ids[c.source[3:]]
        elif c.source.endswith("[0]"):
            rows[c.name] = batch[c.source[:-3]][:, 0]
        else:
            rows[c.name] = batch[c.source]
    return rows


COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = b"\xff\xff"


def encode_copy(table: Table, batch: np.ndarray, journal_id_: int = 0, run_id: int = 0) -> bytes:
    """PostgreSQL binary COPY of ``batch``."""
    return COPY_HEADER + encode_rows(table, batch, journal_id_, run_id).tobytes() + COPY_TRAILER


def read_from(directory: str, stream: str, dtype: np.dtype, position: int,
              limit: int) -> tuple[np.ndarray, SegmentHeader | None]:
    """Up to ``limit`` journal records from ``position`` (0-based over the whole stream), all from one
    segment, and that segment's header."""
    reader = JournalReader(directory, stream, dtype)
    skipped = 0
    for s in reader.segments:
        if position < skipped + s.record_count:
            start = position - skipped
            count = min(limit, s.record_count - start)
            view = np.memmap(s.path, dtype=dtype, mode="r", offset=s.header.header_bytes + start * dtype.itemsize,
                             shape=(count,))
            return np.array(view), s.header
        skipped += s.record_count
    return np.zeros(0, dtype), None


class RecorderFailure(Exception):
    """A permanent error: retrying cannot help. The text is one masked line naming the cause and the fix;
    ``code`` is the standalone exit code."""

    def __init__(self, text: str, code: int = EXIT_PERMANENT):
        super().__init__(text)
        self.code = code


# What run() survives or gives up on; anything else is a bug and propagates.
_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError, JournalError)


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying cannot help: the server refused us for good, the DSN is wrong, or the journal is."""
    if isinstance(exc, JournalError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "")[:2] not in TRANSIENT_SQLSTATE_CLASSES
    if isinstance(exc, asyncpg.ClientConfigurationError):  # also a ValueError and an InterfaceError
        return True
    if isinstance(exc, PermissionError):  # a journal file or a server socket we may not open: not a blip
        return True
    if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError)):
        return False
    return isinstance(exc, ValueError)  # the DSN did not parse


def _fix(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", "") or ""
    if state.startswith("28"):
        return ("check the user name in the DSN and its password in PGPASSFILE (a 0600 file), ~/.pgpass or "
                "PGPASSWORD")
    if state == "3D000":
        return "create the database (createdb) or correct its name in the DSN"
    if state == "42501":
        return "grant the role CREATE on the database and its schema, or record as the tables' owner"
    if isinstance(exc, JournalError):
        return "the journal directory is damaged or mixed: see the message"
    if isinstance(exc, ValueError):
        return "write the DSN as postgresql://USER@HOST:PORT/DBNAME"
    return "see the PostgreSQL server log"


@dataclass
class RecorderStats:
    rows: dict = field(default_factory=lambda: {t.stream: 0 for t in TABLES})
    reconnects: int = 0
    last_error: str = ""  # masked


@dataclass
class RunOutcome:
    caught_up: bool       # the database holds everything the journal held when the run ended
    reason: str = ""      # why not, masked


async def _until(stop: asyncio.Event, awaitable) -> bool:
    """Await ``awaitable`` unless ``stop`` is set first (then cancel it); True if it finished."""
    task = asyncio.ensure_future(awaitable)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()  # also when we are cancelled ourselves
    if task.cancelled() or not task.done():
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
        return False
    task.result()  # raises what it raised
    return True


class Recorder:
    """Copies one journal directory into one database. One coroutine at a time (not thread-safe)."""

    def __init__(self, dsn: str, journal_dir: str, min_backoff_s: float = 0.05, max_backoff_s: float = 2.0,
                 connect_timeout_s: float = 5.0):
        self.dsn = dsn
        self.journal_dir = journal_dir
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.connect_timeout_s = connect_timeout_s
        self.conn: asyncpg.Connection | None = None
        self.timescale = False
        self.journal_id = 0
        self.positions: dict[str, int] | None = None  # as the database holds them; None: not read yet
        self.partitions: set[str] = set()
        self.runs_noted: set[int] = set()
        self.stats = RecorderStats()
        self.phase = "starting"
        self.started = time.monotonic()
        self.outage_attempts = 0  # failed attempts since the database was last usable
        self.connected_once = False
        self.refused_since = 0.0  # monotonic time of the first refusal since the last good connection

    def _say(self, text: str) -> None:
        print(f"recorder: {text}", file=sys.stderr, flush=True)

    def _transient(self) -> None:
        """Count a transient failure; the first of an outage is said (masked), once."""
        self.stats.reconnects += 1
        self.outage_attempts += 1
        if self.outage_attempts == 1:
            self._say(f"database unreachable, retrying with backoff up to {self.max_backoff_s:g} s: "
                      f"{self.stats.last_error}")

    async def connect(self) -> None:
        self.phase = "connecting"
        # command_timeout: no statement may hold the recorder (and a stop that waits for it) forever, e.g. on a
        # connection whose server went away without closing it; a timeout is transient, so it reconnects.
        self.conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout_s,
                                          command_timeout=COMMAND_TIMEOUT_S)
        self.phase = "creating the schema"
        await self.ensure_schema()
        self.positions = None
        self.partitions = set()
        self.runs_noted = set()
        self.connected_once, self.refused_since = True, 0.0

    async def ensure_schema(self) -> None:
        c = self.conn
        async with c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
            available = await c.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
            if available:
                await c.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                self.timescale = True
            await c.execute("CREATE TABLE IF NOT EXISTS bot4_journal_progress (journal_id bigint NOT NULL, "
                            "stream text NOT NULL, records bigint NOT NULL, updated timestamptz NOT NULL DEFAULT "
                            "now(), PRIMARY KEY (journal_id, stream))")
            await c.execute("CREATE TABLE IF NOT EXISTS bot4_runs (journal_id bigint NOT NULL, run_id bigint NOT "
                            "NULL, source text NOT NULL, venues text[] NOT NULL, symbols text[] NOT NULL, "
                            "first_recorded timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (journal_id, run_id))")
            await c.execute("CREATE TABLE IF NOT EXISTS bot4_instruments (run_id bigint NOT NULL, venue smallint "
                            "NOT NULL, symbol smallint NOT NULL, venue_name text NOT NULL, symbol_name text NOT "
                            "NULL, PRIMARY KEY (run_id, venue, symbol))")
            for t in TABLES:
                cols = ", ".join(f"{col.name} {col.pg_type} NOT NULL" for col in t.columns)
                if self.timescale:
                    await c.execute(f"CREATE TABLE IF NOT EXISTS {t.name} ({cols})")
                    await c.execute(f"SELECT create_hypertable('{t.name}', 'ts', if_not_exists => TRUE)")
                    await c.execute(f"ALTER TABLE {t.name} SET (timescaledb.compress)")
                    await c.execute(f"SELECT add_compression_policy('{t.name}', INTERVAL '7 days', "
                                    "if_not_exists => TRUE)")
                else:
                    await c.execute(f"CREATE TABLE IF NOT EXISTS {t.name} ({cols}) PARTITION BY RANGE (ts)")
            # Tables of older recorders gain the newer columns, their rows 0. Only what is missing: ALTER
            # locks the table.
            present = {(r["table_name"], r["column_name"]) for r in await c.fetch(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = ANY($1::text[])", [t.name for t in TABLES])}
            for t in TABLES:
                for col in t.columns:
                    if (t.name, col.name) not in present:
                        await c.execute(f"ALTER TABLE {t.name} ADD COLUMN IF NOT EXISTS {col.name} {col.pg_type} "
                                        "NOT NULL DEFAULT 0")
            # The journal keeps market events as they arrived; what validation passed is the rest.
            await c.execute("CREATE OR REPLACE VIEW validated_market_events AS SELECT m.* FROM market_events m "
                            "WHERE NOT EXISTS (SELECT 1 FROM quarantined_events q WHERE q.origin_seq = m.origin_seq "
                            "AND q.origin_ts = m.origin_ts AND q.journal_id = m.journal_id AND q.run_id = m.run_id)")
            for t in TABLES:
                definition = (f"SELECT t.*, i.venue_name, i.symbol_name FROM {t.name} t LEFT JOIN bot4_instruments "
                              "i ON i.run_id = t.run_id AND i.venue = t.venue AND i.symbol = t.symbol")
                try:
                    async with c.transaction():
                        await c.execute(f"CREATE OR REPLACE VIEW {t.name}_named AS {definition}")
                except asyncpg.InvalidTableDefinitionError:  # the table gained columns: t.* changed shape
                    await c.execute(f"DROP VIEW {t.name}_named")
                    await c.execute(f"CREATE VIEW {t.name}_named AS {definition}")

    async def _ensure_partitions(self, table: Table, batch: np.ndarray, ts_field: str, created: set) -> None:
        if self.timescale:
            return
        days = np.unique(batch[ts_field] // 86_400_000_000_000)
        for day in days:
            start = datetime.datetime.fromtimestamp(int(day) * 86400, datetime.timezone.utc)
            name = f"{table.name}_{start:%Y%m%d}"
            if name in self.partitions:
                continue
            end = start + datetime.timedelta(days=1)
            await self.conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
            await self.conn.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table.name} "
                                    f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
            created.add(name)

    async def _note_run(self, header: SegmentHeader) -> bool:
        """The run's names, once per run and connection (in the caller's transaction); True if written."""
        if header.run_id in self.runs_noted:
            return False
        venues, symbols = header.universe["venues"], header.universe["symbols"]
        await self.conn.execute("INSERT INTO bot4_runs (journal_id, run_id, source, venues, symbols) VALUES "
                                "($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING", self.journal_id, header.run_id,
                                header.source, venues, symbols)
        if header.run_id and venues and symbols:
            await self.conn.executemany(
                "INSERT INTO bot4_instruments (run_id, venue, symbol, venue_name, symbol_name) VALUES "
                "($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                [(header.run_id, v, s, venue, symbol) for v, venue in enumerate(venues)
                 for s, symbol in enumerate(symbols)])
        return True

    async def _load_positions(self) -> None:
        # A row per stream from the start, so that two recorders of one journal serialise on it (FOR UPDATE).
        await self.conn.executemany("INSERT INTO bot4_journal_progress (journal_id, stream, records) VALUES "
                                    "($1, $2, 0) ON CONFLICT DO NOTHING", [(self.journal_id, t.stream) for t in TABLES])
        rows = await self.conn.fetch("SELECT stream, records FROM bot4_journal_progress WHERE journal_id = $1",
                                     self.journal_id)
        self.positions = {t.stream: 0 for t in TABLES} | {r["stream"]: r["records"] for r in rows}

    async def step(self) -> int:
        """Copy at most one batch per stream; returns rows written."""
        self.phase = "copying"
        if not self.journal_id:
            self.journal_id = journal_id(self.journal_dir)  # the journal process may not have written yet
            if not self.journal_id:
                return 0
            self.positions = None
        if self.positions is None:
            await self._load_positions()
        written = 0
        for t in TABLES:
            if not segment_paths(self.journal_dir, t.stream):
                continue
            position = self.positions.get(t.stream, 0)
            batch, header = read_from(self.journal_dir, t.stream, t.dtype, position, BATCH_RECORDS)
            if not len(batch):
                continue
            if header.journal_id and header.journal_id != self.journal_id:
                raise JournalError(f"a segment of stream={t.stream!r} in directory={self.journal_dir!r} has "
                                   f"journal_id={header.journal_id:#x}, the directory's is {self.journal_id:#x}; "
                                   "segments were copied between journals")
            ts_field = next(c.source[3:] for c in t.columns if c.source.startswith("ts:"))
            created: set[str] = set()
            noted = moved = False
            async with self.conn.transaction():
                stored = await self.conn.fetchval("SELECT records FROM bot4_journal_progress WHERE journal_id = $1 "
                                                  "AND stream = $2 FOR UPDATE", self.journal_id, t.stream)
                if stored != position:  # another recorder of this journal moved it: take its word
                    moved = True
                else:
                    noted = await self._note_run(header)
                    await self._ensure_partitions(t, batch, ts_field, created)
                    await self.conn.copy_to_table(
                        t.name, source=io.BytesIO(encode_copy(t, batch, self.journal_id, header.run_id)),
                        columns=[c.name for c in t.columns], format="binary")
                    await self.conn.execute("UPDATE bot4_journal_progress SET records = $3, updated = now() "
                                            "WHERE journal_id = $1 AND stream = $2", self.journal_id, t.stream,
                                            position + len(batch))
            if moved:
                self.positions[t.stream] = stored
                continue
            self.partitions |= created  # only once committed: a rolled-back partition does not exist
            if noted:
                self.runs_noted.add(header.run_id)
            self.positions[t.stream] = position + len(batch)
            self.stats.rows[t.stream] += len(batch)
            written += len(batch)
        return written

    def describe(self, exc: BaseException) -> str:
        """One masked line: what failed, in which phase."""
        state = getattr(exc, "sqlstate", None)
        name = type(exc).__name__ + (f", SQLSTATE {state}" if state else "")
        where = f"connecting to {self.dsn}" if self.phase == "connecting" else self.phase
        return mask(f"{str(exc) or repr(exc)} ({name}; while {where})")

    def _drop_connection(self) -> None:
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None

    def _give_up(self, exc: BaseException) -> RecorderFailure:
        journal = isinstance(exc, JournalError)
        kind = "journal error" if journal else "permanent database error"
        return RecorderFailure(f"{kind}, not retrying: {self.stats.last_error}; fix: {_fix(exc)}",
                               EXIT_JOURNAL if journal else EXIT_PERMANENT)

    async def run(self, follow: bool, stop: asyncio.Event) -> RunOutcome:
        """Copy until caught up (or, with ``follow``, until ``stop`` and caught up), surviving restarts of the
        database. ``stop`` while the database is unreachable (backing off, connecting) ends it at once, and
        without ``follow`` after the current batch. RecorderFailure on a permanent error."""
        backoff = self.min_backoff_s
        while True:
            if stop.is_set() and not follow:
                return RunOutcome(self.behind() == 0, "stopped before the journal was copied")
            connecting = self.conn is None or self.conn.is_closed()
            try:
                if connecting:
                    if not await _until(stop, self.connect()):
                        self._drop_connection()
                        return RunOutcome(False, f"stopped while connecting to {mask(self.dsn)}")
                    backoff = self.min_backoff_s
                    connecting = False
                    if self.outage_attempts:
                        self._say(f"database reachable again after {self.outage_attempts} failed attempts")
                        self.outage_attempts = 0
                written = await self.step()
                if written:
                    continue
                if not follow or stop.is_set():
                    return RunOutcome(True)
                self.phase = "following"
                await _until(stop, asyncio.sleep(0.02))
            except _ERRORS as exc:
                self.stats.last_error = self.describe(exc)
                self._drop_connection()
                if is_permanent(exc) and not (connecting and self._refused_while_restarting(exc)):
                    raise self._give_up(exc) from exc
                self._transient()
                self.phase = "backing off"
                if stop.is_set() or not await _until(stop, asyncio.sleep(backoff)):
                    return RunOutcome(False, "stopped while the database was unreachable")
                backoff = min(backoff * 2, self.max_backoff_s)

    def _refused_while_restarting(self, exc: BaseException) -> bool:
        """A refusal at connect after this DSN has worked is retried for a while: while a restarting server's
        Unix socket is gone, a DSN without a host falls back to TCP on localhost, whose rules may refuse it
        (password authentication), and a database being recreated is briefly missing."""
        if not self.connected_once or not isinstance(exc, asyncpg.PostgresError):
            return False
        now = time.monotonic()
        self.refused_since = self.refused_since or now
        return now - self.refused_since < REFUSED_AFTER_CONNECTED_RETRY_S

    async def first_attempt(self) -> None:
        """Connect once: RecorderFailure if the database can never be used; a transient error is noted (run()
        retries)."""
        try:
            await self.connect()
        except _ERRORS as exc:
            self.stats.last_error = self.describe(exc)
            self._drop_connection()
            if is_permanent(exc):
                raise self._give_up(exc) from exc
            self._transient()

    def behind(self) -> int | None:
        """Journal records not in the database as far as this recorder knows; None if it never read its
        position."""
        if self.positions is None:
            return None
        total = 0
        for t in TABLES:
            if segment_paths(self.journal_dir, t.stream):
                try:
                    total += max(0, len(JournalReader(self.journal_dir, t.stream, t.dtype))
                                 - self.positions.get(t.stream, 0))
                except JournalError:
                    return None
        return total

    def summary(self) -> str:
        rows = self.stats.rows
        seconds = time.monotonic() - self.started
        return (f"recorded {sum(rows.values()):,} rows in {seconds:.1f} s "
                f"({', '.join(f'{k} {v:,}' for k, v in rows.items())}); reconnects {self.stats.reconnects}"
                + (f" (last error: {self.stats.last_error})" if self.stats.last_error else ""))

    def stopped_text(self, outcome: RunOutcome) -> str:
        behind = self.behind()
        left = (f"{behind:,} journal records not copied" if behind is not None
                else "its position in the database was never read")
        return (f"{outcome.reason}; {left}; they stay in the journal and the next recorder of "
                f"{self.journal_dir} continues from the position")

    async def close(self) -> None:
        if self.conn is not None:
            try:
                await self.conn.close(timeout=2)
            except _ERRORS:
                pass
            finally:
                self._drop_connection()


async def record_journal(dsn: str, journal_dir: str) -> RecorderStats:
    """Copy everything the journal holds now, then close (backfill, tests, ``bot4 record``). RecorderFailure
    on a permanent error."""
    recorder = Recorder(dsn, journal_dir)
    try:
        await recorder.run(follow=False, stop=asyncio.Event())
    finally:
        await recorder.close()
    return recorder.stats


def _journal_rows(table: Table, directory: str, journal_id_: int) -> np.ndarray:
    reader = JournalReader(directory, table.stream, table.dtype)
    out = np.empty(reader.record_count, row_dtype(table))  # not np.concatenate: it goes native-endian
    at = 0
    for s in reader.segments:
        if s.record_count:
            view = np.memmap(s.path, dtype=table.dtype, mode="r", offset=s.header.header_bytes,
                             shape=(s.record_count,))
            out[at:at + s.record_count] = encode_rows(table, view, journal_id_, s.header.run_id)
            at += s.record_count
    return out


async def _database_rows(conn, table: Table, journal_id_: int) -> np.ndarray:
    out = io.BytesIO()
    columns = ", ".join(c.name for c in table.columns)
    await conn.copy_from_query(f"SELECT {columns} FROM {table.name} WHERE journal_id = $1", journal_id_,
                               output=out, format="binary")
    raw = out.getvalue()
    if not raw.startswith(COPY_HEADER) or not raw.endswith(COPY_TRAILER):
        raise ValueError(f"{table.name}: unexpected binary COPY framing")
    return np.frombuffer(raw[len(COPY_HEADER):-len(COPY_TRAILER)], row_dtype(table))


def _row_keys(rows: np.ndarray, limit: int = 3) -> str:
    shown = ", ".join(f"origin_seq={int(r['origin_seq'])} origin_ts={int(r['origin_ts'])}" for r in rows[:limit])
    return shown + (", ..." if len(rows) > limit else "")


def _differences(table: Table, expected: np.ndarray, found: np.ndarray) -> list[str]:
    void = np.dtype((np.void, expected.dtype.itemsize))
    want, have = np.sort(expected.view(void)), np.sort(found.view(void))
    if len(want) == len(have) and (want == have).all():
        return []
    wanted = dict(zip(*(lambda u, n: ([bytes(v) for v in u], n))(*np.unique(want, return_counts=True))))
    held = dict(zip(*(lambda u, n: ([bytes(v) for v in u], n))(*np.unique(have, return_counts=True))))
    missing = [k for k, n in wanted.items() for _ in range(n - held.get(k, 0))]
    extra = [k for k, n in held.items() for _ in range(n - wanted.get(k, 0))]
    out = []
    if missing:
        rows = np.frombuffer(b"".join(missing), expected.dtype)
        out.append(f"{table.stream} ({table.name}): {len(missing):,} journal rows missing from the database "
                   f"({_row_keys(rows)})")
    if extra:
        rows = np.frombuffer(b"".join(extra), expected.dtype)
        duplicates = sum(1 for k in extra if k in wanted)
        out.append(f"{table.stream} ({table.name}): {len(extra):,} rows in the database not in the journal "
                   f"({duplicates:,} of them duplicates of journal rows; {_row_keys(rows)})")
    return out


async def compare_with_journal_async(dsn: str, journal_dir: str) -> list[str]:
    jid = journal_id(journal_dir)
    if not jid:
        return [f"journal directory={journal_dir!r} has no journal (no id file, no segment)"]
    conn = await asyncpg.connect(dsn)
    problems = []
    try:
        for t in TABLES:
            expected = (_journal_rows(t, journal_dir, jid) if segment_paths(journal_dir, t.stream)
                        else np.zeros(0, row_dtype(t)))
            try:
                found = await _database_rows(conn, t, jid)
            except asyncpg.UndefinedTableError:
                found = np.zeros(0, row_dtype(t))
            problems += _differences(t, expected, found)
    finally:
        await conn.close()
    return problems


def compare_with_journal(dsn: str, journal_dir: str) -> list[str]:
    """What differs between the journal and the database rows of its journal id, row for row and column for
    column (run ids included); an empty list: the database holds exactly the journal's rows."""
    return asyncio.run(compare_with_journal_async(dsn, journal_dir))


def refuse_password(dsn: str, what: str) -> str | None:
    """The error line for a DSN that carries its password (visible in ps), naming the fix; None if none."""
    if not has_password(dsn):
        return None
    return (f"recorder: {what}={mask(dsn)} carries a password, which every user of this machine can read in ps; "
            "give the DSN without it and put the password in PGPASSFILE (a 0600 file of "
            "host:port:db:user:password lines), ~/.pgpass or PGPASSWORD")


async def _main(args) -> int:
    recorder = Recorder(args.dsn, args.journal)
    stop = asyncio.Event()
    signals: list[str] = []
    task = asyncio.ensure_future(recorder.run(args.follow, stop))

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig.name)
        if stop.is_set():
            task.cancel()  # a second signal: stop now, mid-batch (the batch's transaction rolls back)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    failure: RecorderFailure | None = None
    try:
        outcome = await task
    except asyncio.CancelledError:
        outcome = RunOutcome(False, "stopped during a batch (rolled back)")
    except RecorderFailure as exc:
        failure, outcome = exc, RunOutcome(False)
    finally:
        await recorder.close()
    print(recorder.summary(), flush=True)
    if failure is not None:
        print(f"recorder: {failure}", file=sys.stderr, flush=True)
        return failure.code
    if not outcome.caught_up:
        by = f"by {signals[0]} " if signals else ""
        print(f"recorder: {by}{recorder.stopped_text(outcome)}", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    return EXIT_OK


STEP_S = 0.01  # the process's event loop runs this long per do_work: the cadence of its heartbeat and counters


class RecorderAgent(Agent):
    """The recorder process: follows the journal until the supervisor stops it, then catches up. A database that
    is down is not fatal (the journal keeps everything; it catches up when it is back); one it can never use
    is: the slot goes FAILED and the process exits with the failure's code, so the supervisor disables trading.

    Its event loop lives here, run one bounded step (STEP_S) per do_work: the copy keeps its own backoff and
    follow logic (Recorder.run, shared with the standalone recorder) and the runner keeps the lifecycle.
    """

    role_name = "recorder"

    def __init__(self, slot, recorder: Recorder):
        self.slot = slot
        self.stats = slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
        self.recorder = recorder
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.copying: asyncio.Task | None = None
        self.abandoned = False
        self.shown = ""

    def publish(self) -> None:
        stats, rows = self.stats, self.recorder.stats.rows
        for i, t in enumerate(TABLES):
            stats[i] = rows[t.stream]
        stats[ST_RECONNECTS] = self.recorder.stats.reconnects
        self.slot[cb.S_IN] = sum(rows.values())
        if self.recorder.stats.last_error != self.shown:
            self.shown = self.recorder.stats.last_error
            cb.write_text(self.slot, *registry.RECORDER_ERROR_WORDS, self.shown)

    def _step(self, task: asyncio.Task) -> None:
        self.loop.run_until_complete(asyncio.wait((task,), timeout=STEP_S))
        self.publish()

    def on_start(self) -> None:
        """Connect once before READY: a database it can never use fails the start. A stop meanwhile ends it."""
        attempt = self.loop.create_task(self.recorder.first_attempt())
        while not attempt.done():
            self.slot[cb.S_HEARTBEAT_NS] = time.time_ns()
            if self.slot[cb.S_STOP]:
                attempt.cancel()
                self.loop.run_until_complete(asyncio.wait((attempt,)))
                raise AgentTerminated
            self._step(attempt)
        attempt.result()  # RecorderFailure: the runner reports it (on_failure)

    def do_work(self) -> int:
        if self.copying is None:
            self.copying = self.loop.create_task(self.recorder.run(True, self.stop))
        if self.abandoned:
            self.copying.cancel()  # until it ends: the supervisor gave up on the catch-up
        before = self.slot[cb.S_IN]
        self._step(self.copying)
        if self.copying.done():
            if not self.copying.cancelled():
                self.copying.result()  # RecorderFailure: the runner reports it
            raise AgentTerminated
        return int(self.slot[cb.S_IN] - before)

    def on_stop(self, level: int) -> None:
        self.stop.set()  # follow no more: catch up, then the copy ends
        self.abandoned = level >= 2

    def on_close(self) -> None:
        try:
            copying = self.copying
            if copying is not None:
                if not copying.done():
                    copying.cancel()
                    self.loop.run_until_complete(asyncio.wait((copying,)))
                self.publish()
                if copying.cancelled():
                    outcome = RunOutcome(False, "abandoned by the supervisor during a batch (rolled back)")
                else:
                    outcome = copying.result() if copying.exception() is None else None
                if outcome is not None and not outcome.caught_up:
                    recorder = self.recorder
                    print(f"recorder: {recorder.stopped_text(outcome)}"
                          + (f"; last error: {recorder.stats.last_error}" if recorder.stats.last_error else ""),
                          file=sys.stderr, flush=True)
            self.loop.run_until_complete(self.recorder.close())
        finally:
            self.loop.close()

    def on_failure(self, exc: Exception) -> int | None:
        if not isinstance(exc, RecorderFailure):
            return None
        self.publish()
        print(f"recorder: {exc}", file=sys.stderr, flush=True)
        return exc.code


def process_main() -> int:
    child = start("recorder")
    config = child.config
    try:
        agent = RecorderAgent(child.slot, Recorder(config.recorder.dsn, config.journal.dir))
        return AgentRunner(agent, child, no_wait()).run()
    finally:
        child.block.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # started by the supervisor with a launch spec on stdin
        return process_main()
    parser = argparse.ArgumentParser(prog="python -m pipeline.store.recorder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="postgresql://USER@HOST:PORT/DBNAME, without a password")
    parser.add_argument("--journal", required=True, help="journal directory")
    parser.add_argument("--follow", action="store_true", help="keep tailing until SIGTERM, then catch up and exit")
    args = parser.parse_args(argv)
    refused = refuse_password(args.dsn, "--dsn")
    if refused:
        print(refused, file=sys.stderr)
        return EXIT_USAGE
    if not args.follow and not os.path.isdir(args.journal):  # with --follow it may be created later
        print(f"recorder: --journal={args.journal!r} is not a directory; give a journal directory "
              "(bot4 run --journal DIR writes one)", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
