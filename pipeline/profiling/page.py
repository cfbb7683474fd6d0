"""profile.html: one self-contained page (its PNGs inlined as data: URIs; no script, nothing fetched)."""
from __future__ import annotations

import base64
import html
import os

from pipeline.profiling.analysis import AGENT, GROUP_MEMBER, PHASES, fmt_ns

_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1150px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}p.note{color:#555;font-size:13px}img{max-width:100%}"""


def _e(value) -> str:
    return html.escape(str(value))


def _img(directory: str, name: str, alt: str) -> str:
    with open(os.path.join(directory, name), "rb") as fh:
        data = base64.b64encode(fh.read()).decode()
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def render(profile: dict, directory: str, figures: dict[str, str]) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>bot4 profile {_e(profile['run'])}</title>"
           f"<style>{_STYLE}</style></head><body>",
           f"<h1>Profile of run {_e(profile['run'])}</h1>",
           f"<p>{profile['seconds']:.2f} s from {_e(profile['taken_at'])}, {profile['samples']:,} samples every "
           f"{profile['interval_ms']:g} ms, read from shared memory (the control block and the rings' cursors); "
           f"sampling took {profile['sampler_cpu_ns'] / 1e6:,.0f} ms of CPU"
           + (f", py-spy {profile['pyspy']['cpu_ns'] / 1e6:,.0f} ms" if profile["pyspy"].get("cpu_ns") else "")
           + ".</p>"]
    if profile["ended_early"]:
        out.append(f"<p class=note>Sampling ended early: {_e(profile['ended_early'])}.</p>")
    for note in profile["notes"]:
        out.append(f"<p class=note>{_e(note)}</p>")
    out += ["<h2>Where the time goes</h2>", _phase_table(profile), _img(directory, figures["phases"], "phases"),
            "<p class=note>Reading: taking a batch from the input rings. Kernel: the stage's step (a Python agent: "
            "its <code>do_work</code>, which for the recorder includes waiting in its event loop). Publishing: "
            "copying the output to every output ring and the journal tap, and the counters. Blocked: waiting for "
            "room in a full output ring (or a lossless tap). Idle: polls that found nothing, yields, parks and "
            "sleeps. Other: time the process did not account in the window (a stage group's member: the other "
            "members' turns; a stage's batch in flight at the window's ends). CPU is the process's user + system "
            "time over the window from /proc (a group's process once, on its first member).</p>",
            "<h2>Tick-to-order waterfall</h2>", _waterfall_table(profile),
            _img(directory, figures["waterfall"], "waterfall"),
            f"<p class=note>{_e(profile['waterfall']['how'])}</p>",
            "<h2>Batch sizes</h2>", _img(directory, figures["batches"], "batch sizes"),
            "<h2>Ring depth over time</h2>", _ring_table(profile), _img(directory, figures["depths"], "ring depths")]
    if profile["pyspy"]:
        out.append(_pyspy(profile["pyspy"]))
    out.append("</body></html>")
    return "\n".join(out)


def _phase_table(profile: dict) -> str:
    rows = ["<table><tr><th>process</th><th>host</th><th>state</th>"
            + "".join(f"<th>{p}</th>" for p in PHASES)
            + "<th>other</th><th>CPU</th><th>records in/out</th><th>batches (mean)</th><th>service p50 / p99</th>"
              "<th>tick to output p50 / p99</th></tr>"]
    seen_pids = set()
    for p in profile["processes"]:
        wall = p["wall_ns"]
        cells = "".join(f"<td>{_pct(p['phases_ns'][ph], wall)}</td>" for ph in PHASES)
        cpu = p["cpu_ns"] if p["pid"] not in seen_pids else None
        seen_pids.add(p["pid"])
        host = p["host"] + (f" ({', '.join(p['group'])})" if p["host"] == GROUP_MEMBER else "")
        mean = f" ({p['mean_batch']:.1f})" if p["mean_batch"] else ""
        tick = p["tick_to_output"]
        rows.append(f"<tr><td>{_e(p['name'])}</td><td>{_e(host)}</td><td>{_e(p['state'])}</td>{cells}"
                    f"<td>{_pct(max(0, p['unaccounted_ns']), wall)}</td><td>{_pct(cpu, wall) if cpu is not None else '-'}"
                    f"</td><td>{p['records_in']:,} / {p['records_out']:,}</td><td>{p['batches']:,}{mean}</td>"
                    f"<td>{fmt_ns(p['service_ns']['p50'])} / {fmt_ns(p['service_ns']['p99'])}</td>"
                    f"<td>{fmt_ns(tick['p50'])} / {fmt_ns(tick['p99'])}</td></tr>"
                    if p["host"] != AGENT or p["stage"] else
                    f"<tr><td>{_e(p['name'])}</td><td>{_e(host)}</td><td>{_e(p['state'])}</td>{cells}"
                    f"<td>{_pct(max(0, p['unaccounted_ns']), wall)}</td><td>{_pct(cpu, wall) if cpu is not None else '-'}"
                    f"</td><td colspan=4>busy (kernel) and idle only</td></tr>")
    return "".join(rows) + "</table>"


def _waterfall_table(profile: dict) -> str:
    w = profile["waterfall"]
    if not profile["tick_measured"]:
        return "<p class=note>Not measured: an unpaced replay gives its events no wall time of their own.</p>"
    rows = ["<table><tr><th>stage</th><th>outputs in the window</th><th>tick to output p50</th><th>hop p50</th>"
            "<th>tick to output p99</th><th>hop p99</th></tr>"]
    for s in w["stages"]:
        rows.append(f"<tr><td>{_e(s['name'])}</td><td>{s['count']:,}</td><td>{fmt_ns(s['p50'])}</td>"
                    f"<td>{fmt_ns(s['hop_p50'])}</td><td>{fmt_ns(s['p99'])}</td><td>{fmt_ns(s['hop_p99'])}</td></tr>")
    text = "".join(rows) + "</table>"
    if w["without_outputs"]:
        text += (f"<p class=note>No outputs in the window from {', '.join(w['without_outputs'])} (the default "
                 "allocation sends no orders: <code>strategy.kind = \"signal\"</code> does); the hop after a silent "
                 "stage spans it too.</p>")
    return text


def _ring_table(profile: dict) -> str:
    rows = ["<table><tr><th>ring</th><th>consumer</th><th>capacity</th><th>max depth</th><th>mean depth</th></tr>"]
    for r in profile["rings"]:
        rows.append(f"<tr><td>{_e(r['name'])}</td><td>{_e(r['consumer'])}</td><td>{r['capacity']:,}</td>"
                    f"<td>{r['max_depth']:,}</td><td>{r['mean_depth']:.1f}</td></tr>")
    return "".join(rows) + "</table>"


def _pyspy(spy: dict) -> str:
    out = ["<h2>Python hosts sampled with py-spy</h2>"]
    if spy.get("error"):
        out.append(f"<p class=note>{_e(spy['error'])}</p>")
    for host in spy.get("hosts", []):
        out.append(f"<h3>{_e(host['name'])} (pid {host['pid']})</h3>")
        if host.get("error"):
            out.append(f"<p class=note>py-spy failed: {_e(host['error'])}</p>")
            continue
        out.append(f"<p class=note>{host['samples']:,} samples (time in njit code shows as the Python function "
                   "that called it); collapsed stacks in "
                   f"<a href='{_e(host['raw'])}'>{_e(host['raw'])}</a> (any flame-graph tool reads them).</p>")
        out.append("<table><tr><th>function</th><th>self</th><th>total</th></tr>")
        for f in host["top"]:
            out.append(f"<tr><td>{_e(f['function'])}</td><td>{f['self']:.1f}%</td><td>{f['total']:.1f}%</td></tr>")
        out.append("</table>")
    return "\n".join(out)
