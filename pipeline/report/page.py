"""report.html: one self-contained offline page, plotly's JS inlined once (nothing is fetched)."""
from __future__ import annotations

import html

import plotly.graph_objects as go
import plotly.io as pio

from pipeline.report.metrics import NS, Analysis
from pipeline.report.text import figure, headline


def _figures(analysis: Analysis) -> list[go.Figure]:
    figs = []
    t0 = int(analysis.curve_ts[0]) if len(analysis.curve_ts) else 0
    x = ((analysis.curve_ts - t0) / NS).tolist()
    eq = go.Figure(go.Scatter(x=x, y=analysis.curve_equity.tolist(), mode="lines", name="equity"))
    eq.update_layout(title="Equity (quote)", xaxis_title="event time (s from the first event)")
    dd = go.Figure(go.Scatter(x=x, y=(-100 * analysis.curve_drawdown).tolist(), mode="lines", fill="tozeroy",
                              line_shape="hv", name="drawdown"))
    dd.update_layout(title="Drawdown (%)", xaxis_title="event time (s from the first event)")
    figs += [eq, dd]
    if analysis.inventory:
        inv = go.Figure([go.Scatter(x=((ts - t0) / NS).tolist(), y=pos.tolist(), mode="lines", line_shape="hv",
                                    name=name) for name, (ts, pos) in sorted(analysis.inventory.items())])
        inv.update_layout(title="Position by instrument (base units)", xaxis_title="event time (s)")
        figs.append(inv)
    if any(len(v) for v in analysis.markout_samples.values()):
        mo = go.Figure([go.Box(y=v.tolist(), name=k, boxpoints=False) for k, v in analysis.markout_samples.items()])
        mo.update_layout(title="Fill mark-outs (bps, + = favourable)")
        figs.append(mo)
    by_strategy = analysis.summary["attribution"]["by_strategy"]
    by_instrument = analysis.summary["attribution"]["by_instrument"]
    if by_strategy or by_instrument:
        at = go.Figure([go.Bar(x=[r["name"] for r in by_strategy], y=[r["net"] for r in by_strategy],
                               name="by strategy (net)"),
                        go.Bar(x=[r["instrument"] for r in by_instrument], y=[r["net"] for r in by_instrument],
                               name="by instrument (net)")])
        at.update_layout(title="PnL attribution (quote)")
        figs.append(at)
    slip = [r for r in analysis.summary["slippage"] if r["arrival_cost_bps"] is not None]
    if slip:
        sl = go.Figure(go.Bar(x=[f'{r["strategy"]}/{r["algo"]}' for r in slip], y=[r["arrival_cost_bps"] for r in slip],
                              name="arrival cost"))
        sl.update_layout(title="Slippage against the arrival mid by strategy/algo (bps, + = cost)")
        figs.append(sl)
    lat = {k: v for k, v in analysis.latency_samples.items() if len(v)}
    if lat:
        la = go.Figure([go.Histogram(x=v.tolist(), name=k, opacity=0.6) for k, v in sorted(lat.items())])
        la.update_layout(title="Latency (us)", barmode="overlay")
        figs.append(la)
    return figs


def render(analysis: Analysis, report_json: str, title: str) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(figure(v))}</td></tr>"
                   for k, v in headline(analysis.summary))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in analysis.summary["notes"]) or "<li>none</li>"
    plots = []
    for i, fig in enumerate(_figures(analysis)):
        fig.update_layout(template="plotly_white", height=380)
        # Fixed div ids: the page is the same bytes for the same run; the JS is inlined with the first plot.
        plots.append(pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False, div_id=f"fig{i}",
                                 config={"displaylogo": False}))
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
            "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
            "th,td{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}pre{font-size:11px}</style>"
            f"</head><body>\n<h1>{html.escape(title)}</h1>\n<table>{rows}</table>\n<h2>Notes</h2><ul>{notes}</ul>\n"
            + "\n".join(plots) +
            f"\n<h2>report.json</h2><pre>{html.escape(report_json)}</pre>\n</body></html>\n")
