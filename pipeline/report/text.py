"""The figures ``bot4 fused``, ``bot4 backtest`` and ``bot4 report`` print, and the report page's table: one
formatter over a report summary (pipeline.report.metrics.analyse), so every command says the same figures the
same way."""
from __future__ import annotations

LABEL_WIDTH = 28


def headline(summary: dict) -> list[tuple[str, object]]:
    """The figures a reader looks at first (the page's table and the first lines printed)."""
    pnl, risk, dd, tr = summary["pnl"], summary["risk_adjusted"], summary["drawdown"] or {}, summary["trading"]
    return [("net PnL", pnl["net"]), ("gross PnL", pnl["gross"]), ("fees paid", pnl["fees_paid"]),
            ("rebates", pnl["rebates"]), ("funding paid", pnl["funding_paid"]),
            ("final equity", pnl["final_equity"]), ("return", pnl["return"]),
            ("Sharpe", risk["sharpe"]), ("Sortino", risk["sortino"]), ("Calmar", risk["calmar"]),
            ("max drawdown", dd.get("max_fraction")), ("max drawdown duration (s)", dd.get("duration_s")),
            ("fills", tr["fills"]), ("orders sent", tr["orders_sent"]), ("orders rejected", tr["orders_rejected"]),
            ("order-to-fill ratio", tr["order_to_fill_ratio"]), ("turnover", tr["turnover"])]


def figure(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value + 0.0:,.6g}"  # + 0.0: no "-0" for a sum of nothing negated
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def lines(summary: dict) -> list[str]:
    """The headline, the rejects by reason, each traded instrument's final position and mark, then the notes."""
    out = [f"{label:<{LABEL_WIDTH}} {figure(value)}" for label, value in headline(summary)]
    reasons = summary["trading"]["rejects_by_reason"]
    if reasons:
        out.append(f"{'rejects by reason':<{LABEL_WIDTH}} "
                   + ", ".join(f"{name} {count:,}" for name, count in sorted(reasons.items(), key=lambda r: -r[1])))
    rows = summary["attribution"]["by_instrument"]
    width = max((len(row["instrument"]) for row in rows), default=0)
    for i, row in enumerate(rows):
        out.append(f"{'final position' if i == 0 else '':<{LABEL_WIDTH}} {row['instrument']:<{width}} "
                   f"{figure(row['position'])} at {figure(row['final_mark'])} (net PnL {figure(row['net'])})")
    if not rows:
        out.append(f"{'final position':<{LABEL_WIDTH}} flat (no fill)")
    out += [f"note: {note}" for note in summary["notes"]]
    return out
