"""Write a report directory: report.json (deterministic), report.html (self-contained) and PNG figures."""
from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.report import figures, jsonout, metrics, page
from pipeline.report.inputs import RunRecord

SCHEMA = "bot4.report/1"


@dataclass(frozen=True)
class Written:
    directory: str
    json_path: str
    html_path: str
    figures: list
    summary: dict      # what report.json holds, as written (rounded)


def report_dict(run: RunRecord, settings: metrics.Settings = metrics.Settings()) -> tuple[dict, metrics.Analysis]:
    analysis = metrics.analyse(run, settings)
    doc = {"schema": SCHEMA, "meta": run.meta, "conventions": metrics.conventions(settings), **analysis.summary}
    return jsonout.clean(doc), analysis


def write(run: RunRecord, directory: str, settings: metrics.Settings = metrics.Settings(),
          title: str = "Bot4 performance report") -> Written:
    """Build the report of ``run`` into ``directory`` (created; files there of the same names are replaced)."""
    doc, analysis = report_dict(run, settings)
    os.makedirs(directory, exist_ok=True)
    text = jsonout.dumps(doc)
    json_path = os.path.join(directory, "report.json")
    with open(json_path, "w", encoding="utf-8") as f:
        f.write(text)
    pngs = figures.write(analysis, directory)
    html_path = os.path.join(directory, "report.html")
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(page.render(analysis, text, title))
    return Written(directory, json_path, html_path, pngs, doc)
