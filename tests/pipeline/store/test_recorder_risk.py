"""Order intents reach PostgreSQL with the risk inputs that sized them; an older table gains the columns."""
import asyncio

import asyncpg
import numpy as np
import pytest

from tests.conftest import signal_config
from pipeline.store.journal_replay import record
from pipeline.store.recorder import record_journal
from stages import records
from tests.pipeline.store.test_recorder import count, pg_dsn, pg_server  # noqa: F401  (fixtures)


def test_intents_in_the_database_carry_reasons_kelly_budget_sigma_heat_and_drawdown(pg_dsn, tmp_path):
    async def old_schema():  # the table as the first recorder created it, with a row in it
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(
                "CREATE TABLE order_intents (ts timestamptz NOT NULL, origin_ts bigint NOT NULL, origin_seq bigint "
                "NOT NULL, stage_ts bigint NOT NULL, intent_id bigint NOT NULL, venue smallint NOT NULL, symbol "
                "smallint NOT NULL, kind smallint NOT NULL, side smallint NOT NULL, strategy smallint NOT NULL, "
                "price double precision NOT NULL, qty double precision NOT NULL) PARTITION BY RANGE (ts)")
            await conn.execute("CREATE TABLE order_intents_old PARTITION OF order_intents "
                               "FOR VALUES FROM ('1999-01-01') TO ('2000-01-01')")
            await conn.execute("INSERT INTO order_intents VALUES ('1999-06-01', 1, 1, 1, 1, 0, 0, 1, 1, 1, 1.0, 1.0)")
        finally:
            await conn.close()

    asyncio.run(old_schema())
    result = record(signal_config(), 12_000, str(tmp_path))
    asyncio.run(record_journal(pg_dsn, str(tmp_path)))
    intents = result.intents
    assert len(intents) > 100
    assert count(pg_dsn, "SELECT count(*) FROM order_intents") == len(intents) + 1
    assert count(pg_dsn, "SELECT risk_reasons FROM order_intents WHERE ts = '1999-06-01'") == 0  # defaulted
    assert count(pg_dsn, "SELECT sum(risk_reasons::bigint) FROM order_intents") == int(
        intents["risk_reasons"].astype(np.int64).sum())
    for column in ("kelly_f", "budget", "horizon_sigma_bps", "heat", "drawdown"):
        assert count(pg_dsn, f"SELECT sum({column}) FROM order_intents") == pytest.approx(
            float(intents[column].sum()), rel=1e-9, abs=1e-12), column
    kelly_sized = int(np.count_nonzero(intents["risk_reasons"] & records.RISK_KELLY))
    assert count(pg_dsn, f"SELECT count(*) FROM order_intents WHERE risk_reasons & {records.RISK_KELLY} <> 0") \
        == kelly_sized
