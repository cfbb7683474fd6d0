"""The recorder against a real PostgreSQL (Debian's cluster; started here if it is down)."""
import asyncio
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import asyncpg
import numpy as np
import pytest

from pipeline.store.journal import JournalReader, JournalWriter, list_streams
from pipeline.store.journal_replay import record
from pipeline.store.recorder import record_journal
from stages import records
from tests.conftest import ROOT, SIGNAL_ARGS, signal_config


def _as_postgres(*args):
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def pg_server():
    if shutil.which("pg_ctlcluster") is None:
        pytest.fail("PostgreSQL is required (Debian: apt-get install postgresql); .ci/run installs and starts it")
    clusters = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout.split()
    if "down" in clusters:
        subprocess.run(["pg_ctlcluster", clusters[0], clusters[1], "start"], check=True, timeout=60)
    role = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    exists = _as_postgres("psql", "-tAc", f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'")
    if exists.stdout.strip() != "1":
        _as_postgres("psql", "-c", f'CREATE ROLE "{role}" SUPERUSER LOGIN')
    return clusters[0], clusters[1]


@pytest.fixture
def pg_dsn(pg_server):
    name = f"bot4_t{uuid.uuid4().hex[:10]}"
    made = _as_postgres("createdb", "-O", subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip(),
                        name)
    assert made.returncode == 0, made.stderr
    yield f"postgresql:///{name}"
    _as_postgres("dropdb", "--force", name)


def count(dsn, sql):
    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()
    return asyncio.run(go())


def test_every_journal_record_becomes_a_row(pg_dsn, tmp_path):
    result = record(signal_config(), 20_000, str(tmp_path))
    stats = asyncio.run(record_journal(pg_dsn, str(tmp_path)))
    assert stats.rows == {"market": 20_000, "intent": len(result.intents), "exec": len(result.reports),
                          "quarantine": result.counters["validate"]["quarantined"]}
    assert count(pg_dsn, "SELECT count(*) FROM validated_market_events") == \
        20_000 - result.counters["validate"]["quarantined"]
    assert count(pg_dsn, "SELECT count(*) FROM market_events") == 20_000
    assert count(pg_dsn, "SELECT count(*) FROM exec_reports") == len(result.reports)
    assert count(pg_dsn, "SELECT count(*) FROM order_intents") == len(result.intents)
    market = JournalReader(str(tmp_path), "market").read_all()
    assert count(pg_dsn, "SELECT sum(origin_seq) FROM market_events") == int(market["origin_seq"].sum())
    first = market[0]
    assert count(pg_dsn, "SELECT bid_px FROM market_events WHERE origin_seq = 1") == pytest.approx(first["bid_px"][0])
    fees = float(result.reports["fee"].sum())
    assert count(pg_dsn, "SELECT sum(fee) FROM exec_reports") == pytest.approx(fees)
    # Daily partitions (no TimescaleDB here) hold the rows.
    assert count(pg_dsn, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'market_events'::regclass") >= 1
    # Running again writes nothing twice.
    assert asyncio.run(record_journal(pg_dsn, str(tmp_path))).rows["market"] == 0
    assert count(pg_dsn, "SELECT count(*) FROM market_events") == 20_000


def _rows_or_zero(dsn) -> int:
    try:
        return count(dsn, "SELECT count(*) FROM market_events")
    except (OSError, asyncpg.PostgresError):  # the recorder has not made its tables yet
        return 0


def test_a_postgres_restart_mid_run_loses_nothing(pg_dsn, pg_server, tmp_path):
    source = tmp_path / "source"
    record(signal_config(), 40_000, str(source))
    market = JournalReader(str(source), "market").read_all()
    journal = tmp_path / "live"
    writer = JournalWriter(str(journal), "market", records.MARKET_EVENT)
    writer.append(market[:5000])
    writer.flush()
    recorder = subprocess.Popen([sys.executable, "-m", "pipeline.store.recorder", "--dsn", pg_dsn, "--journal",
                                 str(journal), "--follow"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        # The restart must come after the recorder is in: its first rows in the database.
        deadline = time.monotonic() + 60
        while _rows_or_zero(pg_dsn) < 5000:
            assert time.monotonic() < deadline and recorder.poll() is None, "the recorder never copied its first rows"
            time.sleep(0.05)
        for i, chunk in enumerate(np.array_split(market[5000:], 20)):
            writer.append(chunk)
            writer.flush()
            time.sleep(0.05)
            if i == 6:
                subprocess.run(["pg_ctlcluster", pg_server[0], pg_server[1], "restart"], check=True, timeout=120)
        writer.close()
        time.sleep(0.5)
        recorder.send_signal(signal.SIGTERM)
        output, _ = recorder.communicate(timeout=120)
    finally:
        if recorder.poll() is None:
            recorder.kill()
    assert recorder.returncode == 0, output
    assert "reconnects 0" not in output  # it did see the restart
    assert count(pg_dsn, "SELECT count(*) FROM market_events") == 40_000
    assert count(pg_dsn, "SELECT count(DISTINCT origin_seq) FROM market_events") == 40_000


def test_a_live_run_with_a_dsn_ends_with_every_journal_record_in_the_database(pg_dsn, tmp_path, live):
    journal = tmp_path / "journal"
    run = live(*SIGNAL_ARGS, "--quiet", "--events", "20000", "--rate", "20000", "--journal", str(journal), "--dsn", pg_dsn)
    code, output = run.finish(timeout=240)
    assert code == 0, output
    assert "recorder: " in output and "rows into PostgreSQL" in output
    for stream, table in (("market", "market_events"), ("intent", "order_intents"), ("exec", "exec_reports"),
                          ("quarantine", "quarantined_events")):
        assert count(pg_dsn, f"SELECT count(*) FROM {table}") == len(JournalReader(str(journal), stream)), table
    assert count(pg_dsn, "SELECT count(*) FROM market_events") == 20_000
    # live quarantine: every refused event reached the journal and the database, with its reason
    quarantined = int(re.search(r"quarantined ([\d,]+)", output).group(1).replace(",", ""))
    assert quarantined > 0
    assert count(pg_dsn, "SELECT count(*) FROM quarantined_events WHERE reason > 0") == quarantined


def test_bot4_record_journals_and_copies_the_market_and_its_quarantine_without_trading(pg_dsn, tmp_path):
    journal = tmp_path / "journal"
    done = subprocess.run([sys.executable, "-m", "tools.cli", "record", "--quiet", "--events", "30000", "--rate",
                           "0", "--journal", str(journal), "--dsn", pg_dsn, "--name", f"r{uuid.uuid4().hex[:8]}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "record mode: nothing traded" in done.stdout and "running (4 processes)" in done.stdout
    quarantined = int(re.search(r"quarantined ([\d,]+)", done.stdout).group(1).replace(",", ""))
    assert quarantined > 0
    assert len(JournalReader(str(journal), "market")) == 30_000
    assert set(list_streams(str(journal))) == {"market", "quarantine"}  # no intents, no reports: nothing traded
    assert count(pg_dsn, "SELECT count(*) FROM market_events") == 30_000
    assert count(pg_dsn, "SELECT count(*) FROM quarantined_events") == quarantined
    assert count(pg_dsn, "SELECT count(*) FROM validated_market_events") == 30_000 - quarantined
