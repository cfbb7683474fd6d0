"""bot4 backtest from the command line: a small synthetic backtest writes its journal and a deterministic report,
a sweep runs one process per point, and bad input is exit 2 naming the key."""
import json
import subprocess
import sys

import pytest

from tests.conftest import SIGNAL_ARGS

CAPTURE = "tests/data/binance-ws-capture/usdm_btcusdt_20240808.gz"


def bot4(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


def test_a_synthetic_backtest_writes_its_journal_and_the_same_report_twice(tmp_path):
    runs = []
    for name in ("a", "b"):
        done = bot4("backtest", "--out", str(tmp_path / name), "--events", "20000", "--quiet", *SIGNAL_ARGS)
        assert done.returncode == 0, done.stderr
        assert "events/s" in done.stdout and (tmp_path / name / "report.html").is_file()
        assert any((tmp_path / name / "journal").glob("exec-*.b4j"))
        runs.append((tmp_path / name / "report.json").read_bytes())
    assert runs[0] == runs[1]  # deterministic, byte for byte
    doc = json.loads(runs[0])
    assert doc["trading"]["fills"] > 0 and doc["meta"]["venue_model"]["queue_model"] == "risk_averse"


def test_the_default_allocates_no_strategy_and_the_backtest_says_so(tmp_path):
    done = bot4("backtest", "--out", str(tmp_path), "--events", "5000", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "note: no strategy is allocated in any regime" in done.stdout, done.stdout
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["trading"]["orders_sent"] == 0 and doc["meta"]["strategy"] == "regime"
    assert any(n.startswith("no strategy is allocated") for n in doc["meta"]["notes"])


def test_a_sweep_runs_each_point_in_its_own_process(tmp_path):
    done = bot4("backtest", "--out", str(tmp_path), "--events", "10000", *SIGNAL_ARGS,
                "--sweep", "venue.queue_model=risk_averse,front")
    assert done.returncode == 0, done.stderr
    table = json.loads((tmp_path / "sweep.json").read_text())
    assert [p["settings"] for p in table] == [["venue.queue_model=risk_averse"], ["venue.queue_model=front"]]
    assert all(p["returncode"] == 0 and p["fills"] > 0 for p in table)


@pytest.mark.parametrize("args, says", [
    (["--set", "venue.entry_latency_ms=-1"], "venue.entry_latency_ms"),
    (["--set", "venue.queue_model=fifo"], "venue.queue_model"),
    (["--set", "venue.latency_file=tests/data/SOURCES.md", "--events", "10"], "venue.latency_file"),
    (["--set", 'feed.source="replay"', "--set", 'feed.venues=["binance"]', "--set", 'feed.symbols=["BTCUSDT"]',
      "--set", 'feed.files=["binance=/no/such.gz"]'], "feed.files"),
    (["--set", 'feed.source="replay"', "--set", 'feed.venues=["binance"]', "--set", 'feed.symbols=["BTCUSDT"]',
      "--set", f'feed.files=["binance={CAPTURE}"]', "--set", "backtest.start=2030-01-01T00:00:00Z"], "backtest.start"),
    (["--sweep", "venue.queue_model"], "--sweep"),
    (["--set", "inference.sizer=models/gbt/v1", "--events", "1000", *SIGNAL_ARGS], "a sizer is a 'qvalue' member"),
    (["--set", "inference.sizer=/no/such/qnet", "--events", "1000"], "inference.sizer"),
])
def test_bad_input_is_exit_2_naming_the_key(tmp_path, args, says):
    done = bot4("backtest", "--out", str(tmp_path / "out"), *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr


def test_a_recording_of_two_venues_backtests_in_regime_mode_with_its_long_source_cut_for_the_journal(tmp_path):
    spot, usdm = (f"tests/data/binance-ws-capture/{name}_btcusdt_20240808.gz" for name in ("spot", "usdm"))
    done = bot4("backtest", "--out", str(tmp_path / "out"), "--quiet", "--set", 'feed.source="replay"',
                "--set", 'feed.venues=["spot", "usdm"]', "--set", 'feed.symbols=["BTCUSDT"]',
                "--set", f'feed.files=["spot={spot}", "usdm={usdm}"]', "--set", 'strategy.kind="regime"',
                "--set", 'strategy.fixed_tick_by_symbol=["BTCUSDT=0.1"]',
                *(x for regime in ("trending", "range_bound", "volatile")
                  for x in ("--set", f'allocator.{regime}=["market_making=1", "arbitrage=1", "momentum=1"]')))
    assert done.returncode == 0, done.stderr
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {s["name"] for s in doc["attribution"]["by_strategy"]} <= {"momentum", "mean_reversion", "market_making", "arbitrage"}
    assert doc["trading"]["orders_sent"] > 0
