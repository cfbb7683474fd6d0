"""bot4 fused and bot4 backtest print the same summary (one formatter), and its PnL, fees, fills, orders, rejects
and final positions are those of the orders and fills the run journalled, recomputed here from the records."""
import re
import subprocess
import sys

import numpy as np
import pytest

from pipeline.store.journal import JournalReader
from stages import records
from tests.conftest import SIGNAL_ARGS

# A rate limit tight enough that the gate rejects some orders: the rejects line must count them.
ARGS = (*SIGNAL_ARGS, "--events", "5000", "--set", "execute.max_orders_per_s=200", "--set", "execute.order_burst=5")
NUMBER = r"(-?[\d,]+(?:\.\d+)?(?:e[-+]\d+)?|n/a)"


def bot4(*args):
    done = subprocess.run([sys.executable, "-m", "tools.cli", *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def number(text: str) -> float:
    return float(text.replace(",", ""))


def printed(stdout: str) -> tuple[dict, dict, dict]:
    """(figures by label, rejects by reason, {instrument: (position, mark)}) as the summary prints them."""
    figures = {m[1]: m[2] for m in re.finditer(rf"^([A-Za-z][A-Za-z -]*?(?: \(s\))?) +{NUMBER}$", stdout, re.M)}
    reasons_line = re.search(r"^rejects by reason +(.*)$", stdout, re.M)
    reasons = {m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"([a-z][a-z ]*?) ([\d,]+)(?:, |$)",
                                                                         reasons_line[1])} if reasons_line else {}
    positions = {m[1]: (number(m[2]), number(m[3])) for m in
                 re.finditer(rf"^(?:final position)? +(\S+/\S+) +{NUMBER} at {NUMBER} \(net PnL", stdout, re.M)}
    return figures, reasons, positions


def recomputed(journal: str) -> dict:
    """The summary's figures from the journalled reports and market alone."""
    reports = JournalReader(journal, "exec").read_all()
    market = JournalReader(journal, "market").read_all()
    quarantine = JournalReader(journal, "quarantine").read_all()
    state = reports["state"]
    fills = reports[((state == records.ORD_PARTIAL) | (state == records.ORD_FILLED)) & (reports["qty"] > 0)]
    funding = reports[state == records.REP_FUNDING]
    rejected = reports[state == records.ORD_REJECTED]
    placed = reports[(reports["order_id"] > 0) & (state != records.REP_FUNDING)]
    accepted = (market["reason"] == 0) & ~np.isin(market["origin_seq"], quarantine["origin_seq"])
    net, positions = 0.0, {}
    for venue, symbol in sorted({(int(v), int(s)) for v, s in zip(fills["venue"], fills["symbol"])}):
        mine = fills[(fills["venue"] == venue) & (fills["symbol"] == symbol)]
        own = reports[(reports["venue"] == venue) & (reports["symbol"] == symbol) & (state != records.REP_FUNDING)]
        rows = market[accepted & (market["venue"] == venue) & (market["symbol"] == symbol)]
        marks = rows[rows["kind"] == records.EV_MARK]
        books = rows[(rows["kind"] == records.EV_BOOK) | (rows["kind"] == records.EV_BBO)]
        mark = marks["price"][-1] if len(marks) else (books["bid_px"][-1, 0] + books["ask_px"][-1, 0]) / 2
        position = float(own["position"][-1])  # execute's own bookkeeping, not a sum the report makes
        signed = mine["side"] * mine["qty"]
        net += float(-(signed * mine["price"]).sum() - mine["fee"].sum()) + position * mark
        positions[f"venue_{'ab'[venue]}/{('BTC-USDT', 'ETH-USDT', 'SOL-USDT')[symbol]}"] = (position, float(mark))
    net -= float(funding["fee"].sum())
    fees = fills["fee"]
    rejects = {}
    for code in rejected["reject_reason"].tolist():
        rejects[records.REJ_NAMES[code]] = rejects.get(records.REJ_NAMES[code], 0) + 1
    return {"net PnL": net, "fees paid": float(fees[fees > 0].sum()), "rebates": float(-fees[fees < 0].sum()),
            "funding paid": float(funding["fee"].sum()),
            "gross PnL": net + float(fees.sum()) + float(funding["fee"].sum()),
            "fills": len(fills), "orders rejected": len(rejected),
            "orders sent": len(np.unique(placed["order_id"])) + int(np.sum(rejected["order_id"] == 0)),
            "rejects": rejects, "positions": positions}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("summary")
    fused = bot4("fused", *ARGS, "--journal", str(root / "fused"))
    backtest = bot4("backtest", *ARGS, "--out", str(root / "backtest"))
    return {"fused": (fused, str(root / "fused")), "backtest": (backtest, str(root / "backtest" / "journal"))}


@pytest.mark.parametrize("command", ["fused", "backtest"])
def test_the_summary_is_the_journalled_orders_and_fills(runs, command):
    stdout, journal = runs[command]
    figures, reasons, positions = printed(stdout)
    truth = recomputed(journal)
    assert truth["fills"] > 50 and truth["orders rejected"] > 0 and truth["positions"]  # a run worth checking
    for label in ("net PnL", "gross PnL", "fees paid", "rebates", "funding paid", "fills", "orders sent",
                  "orders rejected"):
        assert number(figures[label]) == pytest.approx(truth[label], rel=1e-5, abs=1e-9), (label, stdout)
    assert reasons == truth["rejects"], stdout
    assert positions.keys() == truth["positions"].keys(), stdout
    for name, (position, mark) in truth["positions"].items():
        assert positions[name] == pytest.approx((position, mark), rel=1e-5, abs=1e-9), (name, stdout)


def test_fused_and_backtest_print_the_same_summary_lines(runs):
    def labels(stdout):
        return [m[1] for m in re.finditer(rf"^([A-Za-z][A-Za-z -]*?(?: \(s\))?) +{NUMBER}$", stdout, re.M)]
    fused, backtest = labels(runs["fused"][0]), labels(runs["backtest"][0])
    assert fused == backtest and {"net PnL", "fees paid", "fills", "orders rejected"} <= set(fused)
