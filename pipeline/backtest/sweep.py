"""``bot4 backtest --sweep KEY=V1,V2,...``: one backtest per point of the grid, each its own process (so a point
cannot disturb another, and the batch issue can spread them over machines), then a table of their figures."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass

from pipeline.config import ConfigError, parse_setting

HEADLINE = (("net_pnl", ("pnl", "net")), ("fees_paid", ("pnl", "fees_paid")), ("sharpe", ("risk_adjusted", "sharpe")),
            ("max_drawdown", ("drawdown", "max_fraction")), ("fills", ("trading", "fills")),
            ("orders", ("trading", "orders_sent")))


@dataclass
class Point:
    index: int
    settings: tuple[str, ...]   # SECTION.KEY=VALUE, one per swept key
    out: str
    returncode: int = -1
    summary: dict | None = None


def grid(sweeps: list[str]) -> list[tuple[str, ...]]:
    """Every combination of ``KEY=V1,V2,...`` entries, in the order given (the last key varies fastest)."""
    axes = []
    for text in sweeps:
        name, sep, values = text.partition("=")
        parse_setting(f"{name}=0")  # the key's shape
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not choices:
            raise ConfigError(f"--sweep {text!r}: use SECTION.KEY=V1,V2,... with at least one value")
        axes.append([f"{name.strip()}={v}" for v in choices])
    return list(itertools.product(*axes))


def _get(doc: dict, path: tuple) -> object:
    for key in path:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def run(points_settings: list[tuple[str, ...]], out: str, base_args: list[str], jobs: int = 1) -> list[Point]:
    """Each point as ``bot4 backtest BASE_ARGS --set ... --out OUT/point-NNN``, at most ``jobs`` at a time."""
    points = [Point(i, s, os.path.join(out, f"point-{i:03d}")) for i, s in enumerate(points_settings)]
    pending, running = list(points), []
    while pending or running:
        while pending and len(running) < jobs:
            p = pending.pop(0)
            argv = [sys.executable, "-m", "tools.cli", "backtest", *base_args, "--out", p.out, "--quiet"]
            for setting in p.settings:
                argv += ["--set", setting]
            running.append((p, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
        p, proc = running.pop(0)
        _, err = proc.communicate()
        p.returncode = proc.returncode
        if proc.returncode == 0:
            with open(os.path.join(p.out, "report.json"), encoding="utf-8") as f:
                p.summary = json.load(f)
        else:
            p.summary = {"error": err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"}
    table = [{"point": p.index, "settings": list(p.settings), "out": p.out, "returncode": p.returncode,
              **({k: _get(p.summary, path) for k, path in HEADLINE} if p.returncode == 0 else p.summary)}
             for p in points]
    with open(os.path.join(out, "sweep.json"), "w", encoding="utf-8") as f:
        json.dump(table, f, indent=1, sort_keys=True)
    return points
