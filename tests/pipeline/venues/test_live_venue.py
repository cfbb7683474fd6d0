"""A live run whose venue is the loopback Binance: the market comes in through ccxt.pro, execute's orders go out
through the gateway process and the real ccxt client, the venue's answers come back into execute, and the journal's
fills equal the venue's trades, order for order. Real processes, real sockets, no mocks."""
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.store.journal import JournalReader
from pipeline.venues import client_ids
from stages import records
from tests.conftest import SIGNAL_ARGS
from tools.binance_loopback import LoopbackServer

CAPTURE = Path(__file__).resolve().parents[2] / "data" / "binance-ws-capture" / "spot_btcusdt_20240808.gz"
KEY, SECRET = "liveRunKey4e1d7a90", "liveRunSecret8c2f5b13"


def live_config(tmp_path, server, extra="") -> Path:
    conf = tmp_path / "live.toml"
    conf.write_text(
        '[feed]\nsource = "ccxt"\nvenues = ["spot"]\nsymbols = ["BTC-USDT"]\nccxt_exchanges = ["spot=binance"]\n'
        f'ccxt_rest_urls = ["spot={server.rest_url}"]\nccxt_ws_urls = ["spot={server.ws_url}"]\nccxt_trades = true\n'
        '[gateway]\nlive_venues = ["spot"]\nrequest_timeout_ms = 3000\n'
        # takes often, small: the point is order flow, not profit
        '[strategy]\nthreshold = 0.02\ntake_usd = 200.0\nquote_usd = 200.0\ncooldown_ms = 200.0\n' + extra)
    return conf


@pytest.fixture
def venue_env(monkeypatch):
    monkeypatch.setenv("BOT4_SPOT_API_KEY", KEY)
    monkeypatch.setenv("BOT4_SPOT_API_SECRET", SECRET)


def fills_of(journal: Path) -> np.ndarray:
    reports = JournalReader(str(journal), "exec", records.EXEC_REPORT).read_all()
    state = reports["state"]
    return reports[((state == records.ORD_PARTIAL) | (state == records.ORD_FILLED)) & (reports["qty"] > 0)]


def test_without_live_a_run_with_live_venues_refuses_to_start(live, tmp_path, venue_env):
    server = LoopbackServer([CAPTURE], "spot", speed=0, wait_streams=99,
                            orders=dict(api_key=KEY, secret=SECRET, balances={"USDT": 1.0}))
    run = live("--config", str(live_config(tmp_path, server)), *SIGNAL_ARGS, "--duration", "1")
    code, output = run.finish(timeout=60)
    assert code == 2 and "add --live" in output, output


def test_a_live_run_trades_at_the_venue_and_its_journal_equals_the_venues_trades(live, tmp_path, venue_env):
    journal = tmp_path / "journal"
    with LoopbackServer([CAPTURE], "spot", speed=2, wait_streams=2,
                        orders=dict(api_key=KEY, secret=SECRET,
                                    balances={"USDT": 1_000_000.0, "BTC": 10.0})) as server:
        run = live("--live", "--config", str(live_config(tmp_path, server)), *SIGNAL_ARGS, "--duration", "12",
                   "--journal", str(journal))
        code, output = run.finish(timeout=300)
        venue = server.account_snapshot()
    assert code == 0, output
    assert KEY not in output and SECRET not in output
    prefix = client_ids.prefix(run.name)
    ours = [t for t in venue["trades"] if t["clientOrderId"].startswith(prefix)]
    assert len(ours) > 0, output
    fills = fills_of(journal)
    want = sorted((client_ids.order_id(prefix, t["clientOrderId"]), round(float(t["price"]), 8),
                   round(float(t["qty"]), 8)) for t in ours)
    got = sorted((int(f["order_id"]), round(float(f["price"]), 8), round(float(f["qty"]), 8)) for f in fills)
    assert got == want, output
    assert not [o for o in venue["open_orders"] if o["clientOrderId"].startswith(prefix)]  # a clean stop cancels all
    commands, answers = re.findall(r"gateway \(live venues\): commands ([\d,]+) answers ([\d,]+)", output)[-1]
    assert int(commands.replace(",", "")) >= len(set(got)) and int(answers.replace(",", "")) >= len(got), output


@pytest.mark.parametrize("problem", ["missing", "wrong"])
def test_missing_or_refused_credentials_fail_the_start_without_showing_them(live, tmp_path, monkeypatch, problem):
    if problem == "missing":
        monkeypatch.delenv("BOT4_SPOT_API_KEY", raising=False)
        monkeypatch.delenv("BOT4_SPOT_API_SECRET", raising=False)
    else:
        monkeypatch.setenv("BOT4_SPOT_API_KEY", KEY)
        monkeypatch.setenv("BOT4_SPOT_API_SECRET", "notTheSecret93b1")
    with LoopbackServer([CAPTURE], "spot", speed=0, wait_streams=99,
                        orders=dict(api_key=KEY, secret=SECRET, balances={"USDT": 1_000.0})) as server:
        run = live("--live", "--config", str(live_config(tmp_path, server)), *SIGNAL_ARGS, "--duration", "5")
        code, output = run.finish(timeout=240)
        venue = server.account_snapshot()
    assert code != 0 and "start-up failed" in output, output
    assert "notTheSecret93b1" not in output and SECRET not in output
    assert ("BOT4_SPOT_API_KEY" in output) if problem == "missing" else ("ignature" in output or "uthentic" in output), \
        output
    assert venue["orders"] == [] and "trading enabled" not in output
