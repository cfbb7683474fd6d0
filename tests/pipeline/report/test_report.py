"""The performance report: figures on hand-built runs whose answers are worked out here, determinism, an
offline page, degenerate runs, and ``bot4 report`` on a journal ``bot4 fused --journal`` wrote."""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pipeline.config import Config

from pipeline.report import build, metrics
from pipeline.report.inputs import RunRecord
from stages import records

S = 1_000_000_000
T0 = 10 * S  # event time of the first event


def bbo(t, bid, ask, venue=0, symbol=0, seq=0):
    ev = np.zeros(1, records.MARKET_EVENT)
    ev["origin_ts"], ev["origin_seq"], ev["kind"], ev["venue"], ev["symbol"] = t, seq, records.EV_BBO, venue, symbol
    ev["bid_px"][:, 0], ev["ask_px"][:, 0], ev["bid_sz"][:, 0], ev["ask_sz"][:, 0] = bid, ask, 1.0, 1.0
    return ev


def event(t, kind, price=0.0, venue=0, symbol=0, seq=0, **fields):
    ev = np.zeros(1, records.MARKET_EVENT)
    ev["origin_ts"], ev["origin_seq"], ev["kind"], ev["venue"], ev["symbol"], ev["price"] = \
        t, seq, kind, venue, symbol, price
    for name, value in fields.items():
        ev[name] = value
    return ev


def market(*events):
    out = np.concatenate(events)
    out["origin_seq"] = np.arange(1, len(out) + 1)
    return out


def report(t, state, order_id=1, side=records.BUY, price=0.0, qty=0.0, fee=0.0, liquidity=0,
           strategy=records.STRAT_QUOTER, venue=0, symbol=0, **fields):
    r = np.zeros(1, records.EXEC_REPORT)
    r["origin_ts"], r["stage_ts"], r["state"], r["order_id"], r["side"], r["price"], r["qty"] = \
        t, t, state, order_id, side, price, qty
    r["fee"], r["liquidity"], r["strategy"], r["venue"], r["symbol"] = fee, liquidity, strategy, venue, symbol
    for name, value in fields.items():
        r[name] = value
    return r


def run_of(mkt, reps=(), equity=1000.0, **kwargs):
    reps = np.concatenate(reps) if len(reps) else np.zeros(0, records.EXEC_REPORT)
    return RunRecord(mkt, reps, np.zeros(0, records.ORDER_INTENT), equity, {"source": "test"}, **kwargs)


def analyse(run, **settings):
    doc, analysis = build.report_dict(run, metrics.Settings(**settings))
    return doc, analysis


def round_trip():
    """Buy 1 at 100 as taker (fee 0.1), funding 2.0 paid, sell 1 at 110 as maker (rebate 0.05)."""
    mkt = market(bbo(T0, 99, 101), bbo(T0 + S, 99, 101), bbo(T0 + 2 * S, 109, 111), bbo(T0 + 3 * S, 109, 111))
    reps = [report(T0 + S // 2, records.ORD_ACKED, 1, records.BUY, 100.0, 1.0, strategy=records.STRAT_DIRECTIONAL),
            report(T0 + S // 2, records.ORD_FILLED, 1, records.BUY, 100.0, 1.0, fee=0.1, liquidity=-1,
                   strategy=records.STRAT_DIRECTIONAL),
            report(T0 + 3 * S // 2, records.REP_FUNDING, 0, records.BUY, 0.0001, 1.0, fee=2.0),
            report(T0 + 5 * S // 2, records.ORD_ACKED, 2, records.SELL, 110.0, 1.0),
            report(T0 + 5 * S // 2, records.ORD_FILLED, 2, records.SELL, 110.0, 1.0, fee=-0.05, liquidity=1)]
    return run_of(mkt, reps)


def test_a_round_trip_with_known_fees_and_funding():
    doc, analysis = analyse(round_trip())
    pnl = doc["pnl"]
    assert pnl["gross"] == 10.0
    assert pnl["fees_paid"] == 0.1 and pnl["rebates"] == 0.05 and pnl["fees_net"] == 0.05
    assert pnl["funding_paid"] == 2.0 and pnl["funding_payments"] == 1
    assert pnl["net"] == pytest.approx(10.0 - 0.05 - 2.0)
    assert pnl["final_equity"] == pytest.approx(1000 + 7.95)
    assert analysis.curve_equity[-1] == pytest.approx(1007.95)
    trading = doc["trading"]
    assert trading["fills"] == 2 and trading["maker_fills"] == 1 and trading["taker_fills"] == 1
    assert trading["traded_notional"] == 210.0 and trading["turnover"] == 0.21
    assert trading["orders_sent"] == 2 and trading["order_to_fill_ratio"] == 1.0
    by_strategy = {r["name"]: r for r in doc["attribution"]["by_strategy"]}
    assert by_strategy["directional"]["gross"] == 10.0  # bought at 100, marked at the end mid 110
    assert by_strategy["quoter"]["gross"] == 0.0        # sold at 110, marked at 110
    assert by_strategy["funding (not attributed to a strategy)"]["net"] == -2.0
    assert sum(r["net"] for r in by_strategy.values()) == pytest.approx(pnl["net"])
    (instrument,) = doc["attribution"]["by_instrument"]
    assert instrument["net"] == pytest.approx(7.95) and instrument["position"] == 0.0
    assert {s["name"]: s["fill_ratio"] for s in doc["strategies"]} == {"directional": 1.0, "quoter": 1.0}
    # Flat from T0 to T0 + 0.5 s and from T0 + 2.5 s to T0 + 3 s: a third of the span; long 1 the rest.
    (inventory,) = doc["inventory"]
    assert inventory["flat_fraction"] == pytest.approx(1 / 3) and inventory["q50"] == 1.0 and inventory["q0"] == 0.0


def drawdown_run():
    """Long 1 from 100 at T0; mids 100, 120 (peak 1020), 102 (trough 1002), 120 (recovered), 125."""
    mids = (100, 120, 102, 120, 125)
    mkt = market(*(bbo(T0 + i * S, m - 1, m + 1) for i, m in enumerate(mids)))
    return run_of(mkt, [report(T0, records.ORD_FILLED, 1, records.BUY, 100.0, 1.0, liquidity=-1)])


def test_a_drawdown_of_known_depth_and_duration_and_the_ratios():
    doc, analysis = analyse(drawdown_run())
    dd = doc["drawdown"]
    assert dd["max_amount"] == 18.0 and dd["max_fraction"] == pytest.approx(18 / 1020)
    assert (dd["peak_ts"], dd["trough_ts"], dd["recovery_ts"]) == (T0 + S, T0 + 2 * S, T0 + 3 * S)
    assert dd["duration_s"] == 2.0 and dd["recovered"] is True
    equity = np.array([1000, 1020, 1002, 1020, 1025.0])
    assert analysis.curve_equity.tolist() == equity.tolist()
    r = equity[1:] / equity[:-1] - 1
    periods = 365 * 86400  # one-second samples
    risk = doc["risk_adjusted"]
    assert risk["returns"] == 4
    assert risk["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(periods), rel=1e-9)
    assert risk["sortino"] == pytest.approx(r.mean() / math.sqrt((np.minimum(r, 0) ** 2).mean()) * math.sqrt(periods),
                                            rel=1e-9)
    assert risk["calmar"] == pytest.approx(r.mean() * periods / (18 / 1020), rel=1e-9)
    assert doc["conventions"]["periods_per_year"] == periods


def test_drawdown_not_recovered_runs_to_the_end():
    mkt = market(*(bbo(T0 + i * S, m - 1, m + 1) for i, m in enumerate((100, 110, 90, 95))))
    doc, _ = analyse(run_of(mkt, [report(T0, records.ORD_FILLED, 1, records.BUY, 100.0, 1.0)]))
    dd = doc["drawdown"]
    assert dd["recovered"] is False and dd["recovery_ts"] is None
    assert dd["max_amount"] == 20.0 and dd["duration_s"] == 2.0  # peak at T0 + 1 s, the data ends at T0 + 3 s


def test_markouts_against_a_known_future_mid():
    mkt = market(bbo(T0, 99, 101), bbo(T0 + S // 10, 100, 102), bbo(T0 + S, 97, 99), bbo(T0 + 2 * S, 97, 99))
    reps = [report(T0, records.ORD_FILLED, 1, records.BUY, 100.0, 1.0, liquidity=-1,
                   strategy=records.STRAT_DIRECTIONAL),
            report(T0, records.ORD_FILLED, 2, records.SELL, 100.0, 1.0, liquidity=1)]
    doc, _ = analyse(run_of(mkt, reps))
    mo = doc["markouts"]
    # +100 ms: mid 101: the buy +100 bps, the sell -100 bps; +1 s: mid 98: buy -200, sell +200; +10 s: past the data.
    assert mo["by_liquidity"]["taker"]["100ms"] == {"count": 1, "mean": 100.0, "median": 100.0}
    assert mo["by_liquidity"]["maker"]["100ms"]["mean"] == -100.0
    assert mo["by_strategy"]["directional"]["1000ms"]["mean"] == -200.0
    assert mo["by_strategy"]["quoter"]["1000ms"]["mean"] == 200.0
    assert mo["by_strategy_liquidity"]["quoter/maker"]["1000ms"]["count"] == 1
    assert mo["all"]["1000ms"] == {"count": 2, "mean": 0.0, "median": 0.0}
    assert mo["all"]["10000ms"] is None


def test_a_gap_is_listed_with_its_threshold():
    mkt = market(bbo(T0, 99, 101), bbo(T0 + S, 99, 101), bbo(T0 + 5 * S, 99, 101), bbo(T0 + 6 * S, 99, 101),
                 bbo(T0, 9, 11, symbol=1), bbo(T0 + 6 * S, 9, 11, symbol=1))
    mkt.sort(order="origin_ts", kind="stable")
    doc, _ = analyse(run_of(mkt), gap_threshold_ns=2 * S)
    gaps = {g["instrument"]: g for g in doc["gaps"]["by_instrument"]}
    assert doc["gaps"]["threshold_s"] == 2.0
    assert gaps["venue0/symbol0"]["gaps"] == [{"from_ts": T0 + S, "to_ts": T0 + 5 * S, "duration_s": 4.0}]
    assert gaps["venue0/symbol1"]["count"] == 1 and gaps["venue0/symbol1"]["longest_s"] == 6.0
    assert any("data gaps: 2 silences" in n for n in doc["notes"])


def test_marks_skip_refused_events_and_prefer_the_mark_price():
    """EV_MARK beats the mid; a mark validation refused (a reason, or listed in quarantine) is not used."""
    bogus = event(T0 + 2 * S, records.EV_MARK, 1e6)
    reasoned = event(T0 + 3 * S, records.EV_MARK, 5e5, reason=3)
    mkt = market(bbo(T0, 99, 101), event(T0 + S, records.EV_MARK, 104.0), bogus, reasoned, bbo(T0 + 4 * S, 0, 101))
    fill = [report(T0, records.ORD_FILLED, 1, records.BUY, 100.0, 1.0)]
    doc, _ = analyse(run_of(mkt, fill, quarantine=mkt[2:3].copy()))
    (row,) = doc["attribution"]["by_instrument"]
    assert row["mark_source"] == "mark" and row["final_mark"] == 104.0 and row["gross"] == 4.0
    assert doc["span"]["refused_events"] == 2


def test_a_delta_only_book_is_built_for_its_mid():
    snap = dict(flags=records.F_SNAPSHOT, first_seq=10, venue_seq=10)
    mkt = market(event(T0, records.EV_BOOK_DELTA, 99.0, side=records.BUY, size=1.0, **snap),
                 event(T0, records.EV_BOOK_DELTA, 101.0, side=records.SELL, size=1.0,
                       **{**snap, "flags": records.F_SNAPSHOT | records.F_LAST}),
                 event(T0 + S, records.EV_BOOK_DELTA, 103.0, side=records.SELL, size=1.0, flags=records.F_LAST,
                       first_seq=11, venue_seq=11),
                 event(T0 + S, records.EV_BOOK_DELTA, 101.0, side=records.SELL, size=0.0, flags=records.F_LAST,
                       first_seq=12, venue_seq=12))
    doc, _ = analyse(run_of(mkt, [report(T0, records.ORD_FILLED, 1, records.BUY, 90.0, 1.0)]))
    (row,) = doc["attribution"]["by_instrument"]
    assert row["mark_source"] == "book_delta" and row["final_mark"] == 101.0 and row["gross"] == 11.0


def test_the_same_run_gives_the_same_bytes_and_an_offline_page(tmp_path):
    run = round_trip()
    a = build.write(run, str(tmp_path / "a"))
    build.write(round_trip(), str(tmp_path / "b"))
    for name in ("report.json", "report.html", *a.figures):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert a.figures == ["equity.png", "inventory.png", "markouts.png"]
    page = (tmp_path / "a" / "report.html").read_text()
    assert "Plotly" in page and "fig0" in page
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", page, re.I)
    assert tags and not [t for t in tags if re.search(r"\b(?:src|href)\s*=", t, re.I)]
    assert not re.search(r"@import|url\(\s*['\"]?https?:", page.split("<script", 1)[0], re.I)
    text = (tmp_path / "a" / "report.json").read_text()
    assert json.loads(text)["meta"] == {"source": "test"} and text == json.dumps(json.loads(text), sort_keys=True,
                                                                                   indent=1) + "\n"


def _no_nan(text):
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in report.json"))


@pytest.mark.parametrize("case", ["empty", "one_event", "all_rejected", "flat", "zero_equity"])
def test_degenerate_runs_report_nulls_and_notes(case, tmp_path):
    one = market(bbo(T0, 99, 101))
    flat = market(*(bbo(T0 + i * S, 99, 101) for i in range(5)))
    runs = {
        "empty": run_of(np.zeros(0, records.MARKET_EVENT)),
        "one_event": run_of(one),
        "all_rejected": run_of(flat, [report(T0 + i, records.ORD_REJECTED, 0, reject_reason=records.REJ_RATE_LIMIT,
                                             price=100.0, qty=1.0) for i in range(3)]),
        "flat": run_of(flat),
        "zero_equity": run_of(flat, [report(T0, records.ORD_FILLED, 1, records.BUY, 100.0, 1.0)], equity=0.0),
    }
    written = build.write(runs[case], str(tmp_path))
    _no_nan((tmp_path / "report.json").read_text())
    doc = written.summary
    assert doc["risk_adjusted"]["sharpe"] is None and doc["notes"]
    assert doc["latency"]["order_entry"] is None and doc["latency"]["round_trip"] is None
    if case != "zero_equity":
        assert doc["markouts"] is None and doc["trading"]["order_to_fill_ratio"] is None
    if case == "all_rejected":
        assert doc["trading"]["rejects_by_reason"] == {"rate limit": 3}
        assert doc["strategies"][0]["fill_ratio"] == 0.0 and doc["strategies"][0]["orders_sent"] == 3
        assert "every execution report is a rejection" in doc["notes"]
    if case == "flat":
        assert any("zero variance" in n for n in doc["notes"]) and doc["drawdown"]["max_amount"] == 0.0
    if case == "zero_equity":
        assert doc["pnl"]["return"] is None and doc["trading"]["turnover"] is None


def test_latency_from_send_and_venue_times():
    mkt = market(bbo(T0, 99, 101), bbo(T0 + S, 99, 101))
    reps = [report(T0 + 500_000 + k * 1000, records.ORD_ACKED, k + 1, send_ts=T0 + k * 1000,
                   exch_ts=T0 + 200_000 + k * 1000) for k in range(3)]
    for r in reps:
        r["stage_ts"] = r["origin_ts"]
    doc, _ = analyse(run_of(mkt, reps))
    lat = doc["latency"]
    assert lat["order_entry"]["p50"] == 200.0 and lat["order_entry"]["count"] == 3  # microseconds
    assert lat["round_trip"]["p100"] == 500.0


def test_slippage_against_the_arrival_mid_per_parent_child_and_plain_order():
    """A TWAP parent (intent 5, buy 2 on venue 0, arriving at mid 100) fills 1 at 100.5 and, once the mid is 102, 1 at
    102.5; a plain directional sell fills 1 at 101.5 against a mid of 102. Positive = cost."""
    mkt = market(bbo(T0, 99, 101), bbo(T0, 100, 100.4, venue=1), bbo(T0 + S, 101, 103))
    it = np.zeros(1, records.ORDER_INTENT)
    it["intent_id"], it["origin_ts"], it["side"], it["qty"], it["strategy"] = 5, T0 + S // 2, records.BUY, 2.0, 1
    twap = dict(strategy=records.STRAT_DIRECTIONAL, parent_id=5, algo=records.ALGO_TWAP)
    reps = [report(T0 + S // 2, records.ORD_NEW, 1, records.BUY, 101.0, 1.0, **twap),
            report(T0 + S // 2, records.ORD_FILLED, 1, records.BUY, 100.5, 1.0, liquidity=-1, **twap),
            report(T0 + 3 * S // 2, records.ORD_NEW, 2, records.BUY, 103.0, 1.0, **twap),
            report(T0 + 3 * S // 2, records.ORD_FILLED, 2, records.BUY, 102.5, 1.0, liquidity=-1, **twap),
            report(T0 + 2 * S, records.ORD_NEW, 3, records.SELL, 101.0, 1.0, strategy=records.STRAT_DIRECTIONAL),
            report(T0 + 2 * S, records.ORD_FILLED, 3, records.SELL, 101.5, 1.0, liquidity=-1,
                   strategy=records.STRAT_DIRECTIONAL)]
    run = RunRecord(mkt, np.concatenate(reps), it, 1000.0, {"source": "test"})
    doc, analysis = analyse(run)
    rows = {(r["strategy"], r["algo"]): r for r in doc["slippage"]}
    twap_row, plain = rows[("directional", "twap")], rows[("directional", "none")]
    assert twap_row["parents"] == 1 and twap_row["children"] == 2 and twap_row["filled_qty"] == 2.0
    assert twap_row["arrival_cost_bps"] == pytest.approx(150.0)  # (101.5 - 100) / 100
    child = (100.5 * 50.0 + 102.5 * (0.5 / 102 * 1e4)) / 203.0  # each against the mid when it was sent
    assert twap_row["child_cost_bps"] == pytest.approx(child)
    assert plain["arrival_cost_bps"] == pytest.approx(0.5 / 102 * 1e4) == pytest.approx(plain["child_cost_bps"])
    assert "slippage" in doc["conventions"]


def test_bot4_report_on_a_fused_journal(tmp_path):
    journal, out = tmp_path / "journal", tmp_path / "out"
    cli = [sys.executable, "-m", "tools.cli"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    subprocess.run(cli + ["fused", "--set", "strategy.kind=signal", "--events", "20000", "--journal", str(journal)], cwd=root, check=True,
                   capture_output=True, timeout=240)
    done = subprocess.run(cli + ["report", str(journal), "--out", str(out), "--sample-ms", "100"], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"report written to {out}" in done.stdout and "net PnL" in done.stdout and "Sharpe" in done.stdout
    doc = json.loads((out / "report.json").read_text())
    assert doc["span"]["market_events"] == 20000 and doc["span"]["refused_events"] > 0
    assert doc["trading"]["fills"] > 0 and doc["meta"]["source"].startswith("bot4 fused")
    assert doc["meta"]["initial_equity_source"].startswith("risk.capital_usd default")
    assert doc["pnl"]["net"] == pytest.approx(doc["pnl"]["final_equity"] - doc["pnl"]["initial_equity"], abs=1e-6)
    venue = Config().venue  # the default venue model: constant latencies, so every ack took exactly their sum
    assert doc["latency"]["round_trip"]["p50"] == doc["latency"]["round_trip"]["p100"] == pytest.approx(
        (venue.entry_latency_ms + venue.response_latency_ms) * 1e3)
    assert doc["latency"]["order_entry"]["p50"] == pytest.approx(venue.entry_latency_ms * 1e3)
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.html", "equity.png"}
    bad = subprocess.run(cli + ["report", str(tmp_path / "nothing-here")], cwd=root, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "not a directory" in bad.stderr


def test_a_run_name_finds_its_run_in_the_configs_journal_dir(tmp_path, capsys):
    """bot4 run writes into journal.dir as is, every segment naming the run ("bot4 run <name>"); a directory
    two runs wrote into reports one of them, the newest unless --run-id says."""
    from pipeline.store.journal import JournalWriter
    from tools import cli
    journal = tmp_path / "journal"
    for run_id, name, price in ((11, "older", 100.0), (12, "newer", 200.0)):
        with JournalWriter(str(journal), "market", records.MARKET_EVENT, f"bot4 run {name}", run_id=run_id) as w:
            w.append(market(bbo(T0, price - 1, price + 1), bbo(T0 + S, price - 1, price + 1)))
        with JournalWriter(str(journal), "exec", records.EXEC_REPORT, f"bot4 run {name}", run_id=run_id) as w:
            w.append(report(T0, records.ORD_FILLED, 1, records.BUY, price - 10, 1.0))
    config = tmp_path / "run.toml"
    config.write_text(f'[journal]\ndir = "{journal}"\n[risk]\ncapital_usd = 5000.0\n')
    assert cli.main(["report", "older", "--config", str(config), "--out", str(tmp_path / "a")]) == 0
    doc = json.loads((tmp_path / "a" / "report.json").read_text())
    assert doc["meta"]["source"] == "bot4 run older" and doc["meta"]["runs_in_directory"] == 2
    assert doc["pnl"]["initial_equity"] == 5000.0 and doc["pnl"]["gross"] == 10.0
    assert cli.main(["report", str(journal), "--out", str(tmp_path / "b"), "--equity", "7000"]) == 0
    doc = json.loads((tmp_path / "b" / "report.json").read_text())
    assert doc["meta"]["run_id"] == f"{12:#018x}" and doc["pnl"]["initial_equity"] == 7000.0
    assert cli.main(["report", str(journal), "--run-id", "11", "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "report.json").read_text())["meta"]["source"] == "bot4 run older"
    capsys.readouterr()
    assert cli.main(["report", "nobody", "--config", str(config)]) == 2
    assert "no run named 'nobody'" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "exec-00000001.b4j").write_bytes(b"\0garbage" * 1000)
    assert cli.main(["report", str(tmp_path / "junk")]) == 2
    assert "cannot be read" in capsys.readouterr().err
