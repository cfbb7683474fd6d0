"""Several journals, and several runs, recorded into one database: each lands in full, told apart by its
journal id, run id and names (issue 9, item 1)."""
import asyncio

import asyncpg
import numpy as np

from tests.conftest import signal_config
from pipeline.store.journal import JournalReader
from pipeline.store.journal_replay import record
from pipeline.store.recorder import record_journal
from tests.pipeline.store.test_recorder import count, pg_dsn, pg_server  # noqa: F401  (fixtures)

TABLES = (("market", "market_events"), ("intent", "order_intents"), ("exec", "exec_reports"),
          ("quarantine", "quarantined_events"))


def journal_counts(directory):
    return {stream: len(JournalReader(str(directory), stream)) for stream, _ in TABLES}


def db_counts(dsn):
    return {stream: count(dsn, f"SELECT count(*) FROM {table}") for stream, table in TABLES}


def test_a_second_journal_recorded_into_the_same_database_lands_in_full(pg_dsn, tmp_path):
    record(signal_config(), 6_000, str(tmp_path / "a"))
    record(signal_config(feed={"seed": 11}), 6_000, str(tmp_path / "b"))
    a, b = journal_counts(tmp_path / "a"), journal_counts(tmp_path / "b")
    asyncio.run(record_journal(pg_dsn, str(tmp_path / "a")))
    stats = asyncio.run(record_journal(pg_dsn, str(tmp_path / "b")))
    assert stats.rows == b  # the old recorder copied 0 of b: the position was kept per stream name
    assert db_counts(pg_dsn) == {s: a[s] + b[s] for s in a}


def test_a_second_journal_longer_than_the_first_loses_none_of_its_first_rows(pg_dsn, tmp_path):
    record(signal_config(), 3_000, str(tmp_path / "a"))
    record(signal_config(feed={"seed": 12}), 9_000, str(tmp_path / "b"))
    asyncio.run(record_journal(pg_dsn, str(tmp_path / "a")))
    asyncio.run(record_journal(pg_dsn, str(tmp_path / "b")))
    market_b = JournalReader(str(tmp_path / "b"), "market").read_all()
    assert count(pg_dsn, "SELECT count(*) FROM market_events") == 3_000 + 9_000
    # b's first rows are there (the old recorder started b at a's length and lost them)
    first = market_b[:3_000]
    assert count(pg_dsn, "SELECT count(*) FROM market_events WHERE origin_seq <= 3000") == 2 * len(first)


def test_runs_are_told_apart_by_run_id_and_by_venue_and_symbol_names(pg_dsn, tmp_path):
    other = signal_config(feed={"symbols": ("SOL-USDT", "BTC-USDT"), "venues": ("alpha", "beta", "gamma")})
    record(signal_config(), 5_000, str(tmp_path / "a"))
    record(other, 5_000, str(tmp_path / "b"))
    asyncio.run(record_journal(pg_dsn, str(tmp_path / "a")))
    asyncio.run(record_journal(pg_dsn, str(tmp_path / "b")))
    a = JournalReader(str(tmp_path / "a"), "market")
    b = JournalReader(str(tmp_path / "b"), "market")
    run_a, run_b = a.segments[0].header.run_id, b.segments[0].header.run_id
    assert run_a and run_b and run_a != run_b
    assert count(pg_dsn, f"SELECT count(*) FROM market_events WHERE run_id = {run_a}") == 5_000
    assert count(pg_dsn, f"SELECT count(*) FROM market_events WHERE run_id = {run_b}") == 5_000
    # symbol index 0 is BTC-USDT in a and SOL-USDT in b: the names tell them apart
    ma, mb = a.read_all(), b.read_all()
    sol = int(np.count_nonzero(ma["symbol"] == 2)) + int(np.count_nonzero(mb["symbol"] == 0))
    assert count(pg_dsn, "SELECT count(*) FROM market_events_named WHERE symbol_name = 'SOL-USDT'") == sol
    gamma = int(np.count_nonzero(mb["venue"] == 2))
    assert gamma > 0
    assert count(pg_dsn, "SELECT count(*) FROM market_events_named WHERE venue_name = 'gamma'") == gamma
    assert count(pg_dsn, "SELECT count(*) FROM market_events_named WHERE symbol_name IS NULL") == 0
    for view in ("order_intents_named", "exec_reports_named", "quarantined_events_named"):
        assert count(pg_dsn, f"SELECT count(*) FROM {view} WHERE symbol_name IS NULL") == 0, view


def test_a_journal_directory_reused_by_a_second_run_continues_from_its_position(pg_dsn, tmp_path):
    record(signal_config(), 4_000, str(tmp_path))
    asyncio.run(record_journal(pg_dsn, str(tmp_path)))
    record(signal_config(feed={"seed": 13}), 3_000, str(tmp_path))  # same directory, new segments
    stats = asyncio.run(record_journal(pg_dsn, str(tmp_path)))
    assert stats.rows["market"] == 3_000
    assert db_counts(pg_dsn) == journal_counts(tmp_path)
    runs = JournalReader(str(tmp_path), "market").segments
    assert len({s.header.journal_id for s in runs}) == 1 and len({s.header.run_id for s in runs}) == 2


def test_compare_with_journal_finds_a_missing_and_a_duplicated_row(pg_dsn, tmp_path):
    from pipeline.store.recorder import compare_with_journal
    record(signal_config(), 4_000, str(tmp_path))
    asyncio.run(record_journal(pg_dsn, str(tmp_path)))
    assert compare_with_journal(pg_dsn, str(tmp_path)) == []

    async def execute(sql):
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute("DELETE FROM market_events WHERE origin_seq = 1234"))
    problems = compare_with_journal(pg_dsn, str(tmp_path))
    assert len(problems) == 1 and "market" in problems[0] and "missing" in problems[0] and "1234" in problems[0]
    asyncio.run(execute("INSERT INTO exec_reports SELECT * FROM exec_reports LIMIT 1"))
    problems = compare_with_journal(pg_dsn, str(tmp_path))
    assert len(problems) == 2 and any("exec" in p and "not in the journal" in p for p in problems)
    asyncio.run(execute("UPDATE order_intents SET qty = qty * 2 WHERE intent_id = (SELECT min(intent_id) "
                        "FROM order_intents)"))
    assert len(compare_with_journal(pg_dsn, str(tmp_path))) == 4  # a changed row: one missing, one extra


def test_a_database_of_the_old_recorder_is_migrated_without_losing_or_duplicating(pg_dsn, tmp_path):
    async def old_recorder_schema():  # as the per-stream recorder left it: a position, a row, no ids
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute("CREATE TABLE bot4_recorder_progress (stream text PRIMARY KEY, records bigint NOT "
                               "NULL, updated timestamptz NOT NULL DEFAULT now())")
            await conn.execute("INSERT INTO bot4_recorder_progress (stream, records) VALUES ('market', 5000), "
                               "('exec', 700)")
            await conn.execute(
                "CREATE TABLE market_events (ts timestamptz NOT NULL, origin_ts bigint NOT NULL, origin_seq bigint "
                "NOT NULL, exch_ts bigint NOT NULL, venue_seq bigint NOT NULL, venue smallint NOT NULL, symbol "
                "smallint NOT NULL, kind smallint NOT NULL, side smallint NOT NULL, price double precision NOT NULL, "
                "size double precision NOT NULL, bid_px double precision NOT NULL, bid_sz double precision NOT NULL, "
                "ask_px double precision NOT NULL, ask_sz double precision NOT NULL) PARTITION BY RANGE (ts)")
            await conn.execute("CREATE TABLE market_events_old PARTITION OF market_events "
                               "FOR VALUES FROM ('1999-01-01') TO ('2000-01-01')")
            await conn.execute("INSERT INTO market_events VALUES ('1999-06-01', 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, "
                               "1, 1)")
        finally:
            await conn.close()

    asyncio.run(old_recorder_schema())
    record(signal_config(), 6_000, str(tmp_path))
    asyncio.run(record_journal(pg_dsn, str(tmp_path)))
    assert count(pg_dsn, "SELECT count(*) FROM market_events") == 6_000 + 1  # the old one skipped 5,000
    assert count(pg_dsn, "SELECT run_id FROM market_events WHERE ts = '1999-06-01'") == 0
    assert count(pg_dsn, "SELECT journal_id FROM market_events WHERE ts = '1999-06-01'") == 0
    assert count(pg_dsn, "SELECT sum(records) FROM bot4_recorder_progress") == 5_700  # left as it was
    from pipeline.store.recorder import compare_with_journal
    assert compare_with_journal(pg_dsn, str(tmp_path)) == []
    asyncio.run(record_journal(pg_dsn, str(tmp_path)))  # again: nothing twice
    assert count(pg_dsn, "SELECT count(*) FROM market_events") == 6_000 + 1
