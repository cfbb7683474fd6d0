"""Recorder rows/s into PostgreSQL: a fused run's journal (market events, intents, reports) copied into a
fresh database by binary COPY, median of 3. Needs a local cluster and a role for the current user (as the
tests set up). Run: ``python -m bench.recorder_throughput [--events 200000] [--dsn postgresql:///bot4_bench]``."""
from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time

import asyncpg

from pipeline.config import Config
from pipeline.store.journal import JournalReader
from pipeline.store.journal_replay import record
from pipeline.store.recorder import TABLES, record_journal


async def _reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for t in TABLES:
            await conn.execute(f"DROP TABLE IF EXISTS {t.name} CASCADE")
        for table in ("bot4_journal_progress", "bot4_runs", "bot4_instruments"):
            await conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--dsn", default="postgresql:///bot4_bench")
    args = parser.parse_args()
    if args.dsn == "postgresql:///bot4_bench":
        subprocess.run(["runuser", "-u", "postgres", "--", "createdb", "-O", "root", "bot4_bench"],
                       capture_output=True)
    with tempfile.TemporaryDirectory() as journal:
        record(Config().with_overrides(strategy={"kind": "signal"}), args.events, journal)  # intents and reports too
        rows = sum(len(JournalReader(journal, t.stream)) for t in TABLES)
        rates = []
        for _ in range(3):
            asyncio.run(_reset(args.dsn))
            started = time.perf_counter()
            stats = asyncio.run(record_journal(args.dsn, journal))
            seconds = time.perf_counter() - started
            assert sum(stats.rows.values()) == rows
            rates.append(rows / seconds)
    print(f"recorder: {rows:,} rows ({args.events:,} market events + intents + reports) per run; "
          f"median {statistics.median(rates):,.0f} rows/s (runs: {', '.join(f'{r:,.0f}' for r in rates)}); "
          "binary COPY in 65,536-row batches, one transaction each with the stream position")


if __name__ == "__main__":
    main()
