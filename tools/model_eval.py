"""Model choices judged by backtest: the same strategy with each candidate model, on seeds no choice has seen.

``python -m tools.model_eval --out DIR [--events 1000000] [--tune-seeds 9,10] [--eval-seeds 11-15]
[--candidate NAME=SETTING,...]... [--gates 0,0.1,0.2,0.3] [--set SECTION.KEY=VALUE]... [--jobs 1] [--json]``

Every run is a ``bot4 backtest`` point (pipeline.backtest.sweep: one process each) of the synthetic market, the
default strategy ``strategy.kind = signal`` (the model's taker and quoter). A candidate is a name and its settings,
e.g. ``ensemble=inference.ensemble=models/ensemble/v1``; the defaults are the shipped logistic model
(``inference.model`` unset) and the shipped ensemble. An ensemble candidate's gate (``inference.min_confidence``)
is chosen among ``--gates`` by the best mean net PnL on ``--tune-seeds`` only; then each candidate runs on
``--eval-seeds`` with its gate. The evaluation seeds choose nothing.

Printed per candidate: its gate, net PnL after fees per evaluation seed, mean, standard deviation, min and max, the
mean Sharpe (the report's: per-second equity returns, annualised) with its standard deviation, fills, and, against
the first candidate (the baseline), the paired difference in net PnL per seed (mean, sd, seeds won).

Tuning discipline of the shipped models: the logistic model was trained on seed 7, the ensemble's members on seeds
1-3 (their model.json says so); the defaults here tune gates on seeds 9-10 and evaluate on 11-15.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass, field

from pipeline.backtest import sweep
from pipeline.config import ConfigError, load, settings_overrides
from tools.regime_eval import parse_seeds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CANDIDATES = ("logistic=", f"ensemble=inference.ensemble={os.path.join(ROOT, 'models', 'ensemble', 'v1')}")
DEFAULT_GATES = "0,0.1,0.2,0.3"
GATE_KEY = "inference.min_confidence"


@dataclass
class Candidate:
    name: str
    settings: tuple[str, ...]
    gate: float | None = None                       # chosen on the tuning seeds (ensembles only)
    tuning: dict = field(default_factory=dict)      # gate -> mean net PnL on the tuning seeds
    runs: list[dict] = field(default_factory=list)  # per evaluation seed

    @property
    def gated(self) -> bool:
        return any(s.startswith("inference.ensemble=") and s.partition("=")[2] for s in self.settings)

    def chosen(self) -> tuple[str, ...]:
        return self.settings + ((f"{GATE_KEY}={self.gate}",) if self.gate is not None else ())


def parse_candidate(text: str) -> Candidate:
    name, sep, rest = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"--candidate {text!r}: use NAME=SECTION.KEY=VALUE,... (NAME= alone: the defaults)")
    return Candidate(name.strip(), tuple(s.strip() for s in rest.split(",") if s.strip()))


def _figures(point: sweep.Point) -> dict:
    if point.returncode != 0:
        raise SystemExit(f"backtest {' '.join(point.settings)} failed (exit {point.returncode}): "
                         f"{point.summary.get('error')}; its output is in {point.out}")
    s = point.summary
    return {"seed": int(dict(x.split("=", 1) for x in point.settings)["feed.seed"]), "net_pnl": s["pnl"]["net"],
            "fees": s["pnl"]["fees_paid"], "sharpe": s["risk_adjusted"]["sharpe"], "fills": s["trading"]["fills"],
            "orders": s["trading"]["orders_sent"], "out": point.out}


def _run(points: list[tuple[str, ...]], out: str, base: list[str], jobs: int) -> list[dict]:
    return [_figures(p) for p in sweep.run(points, out, base, jobs)]


def _spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "sd": None, "min": None, "max": None}
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def evaluate(candidates: list[Candidate], tune_seeds: list[int], eval_seeds: list[int], gates: list[float],
             out: str, base: list[str], jobs: int = 1) -> dict:
    for c in candidates:
        if c.gated and len(gates) > 1:
            points = [(f"feed.seed={s}", *c.settings, f"{GATE_KEY}={g}") for g in gates for s in tune_seeds]
            runs = _run(points, os.path.join(out, c.name, "tune"), base, jobs)
            for i, g in enumerate(gates):
                c.tuning[g] = statistics.fmean(r["net_pnl"] for r in runs[i * len(tune_seeds):(i + 1) * len(tune_seeds)])
            c.gate = max(gates, key=lambda g: (c.tuning[g], -g))  # ties: the lower gate (trades more, learns more)
        elif c.gated:
            c.gate = gates[0]
        c.runs = _run([(f"feed.seed={s}", *c.chosen()) for s in eval_seeds], os.path.join(out, c.name, "eval"),
                      base, jobs)
    baseline = {r["seed"]: r["net_pnl"] for r in candidates[0].runs}
    table = []
    for c in candidates:
        diffs = [r["net_pnl"] - baseline[r["seed"]] for r in c.runs]
        table.append({"candidate": c.name, "settings": list(c.chosen()), "gate": c.gate, "tuning": c.tuning,
                      "runs": c.runs, "net_pnl": _spread([r["net_pnl"] for r in c.runs]),
                      "sharpe": _spread([r["sharpe"] for r in c.runs]),
                      "fills": _spread([r["fills"] for r in c.runs]),
                      "vs_baseline": {**_spread(diffs), "seeds_won": sum(d > 0 for d in diffs), "seeds": len(diffs)}})
    return {"tune_seeds": tune_seeds, "eval_seeds": eval_seeds, "base_args": base, "candidates": table}


def _money(v) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def _ratio(v) -> str:
    return "n/a" if v is None else f"{v:,.1f}"


def print_table(result: dict) -> None:
    print(f"evaluation seeds {result['eval_seeds']} (gates chosen on seeds {result['tune_seeds']}); "
          f"backtest {' '.join(result['base_args'])}")
    base_name = result["candidates"][0]["candidate"]
    for row in result["candidates"]:
        pnl, sharpe, vs = row["net_pnl"], row["sharpe"], row["vs_baseline"]
        gate = "" if row["gate"] is None else f" gate {row['gate']:g}" + (
            " (tuning mean net PnL: " + ", ".join(f"{g:g}: {_money(v)}" for g, v in row["tuning"].items()) + ")"
            if row["tuning"] else "")
        print(f"{row['candidate']}{gate}")
        print("  net PnL per seed: " + ", ".join(f"{r['seed']}: {_money(r['net_pnl'])}" for r in row["runs"]))
        print(f"  net PnL mean {_money(pnl['mean'])} sd {_money(pnl['sd'])} [{_money(pnl['min'])}, "
              f"{_money(pnl['max'])}]; Sharpe mean {_ratio(sharpe['mean'])} sd {_ratio(sharpe['sd'])}; "
              f"fills mean {_money(row['fills']['mean'])}")
        if row["candidate"] != base_name:
            print(f"  vs {base_name}: net PnL difference mean {_money(vs['mean'])} sd {_money(vs['sd'])}; "
                  f"better on {vs['seeds_won']} of {vs['seeds']} seeds")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.model_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for every backtest and eval.json")
    p.add_argument("--events", type=int, default=1_000_000, help="market events per backtest (default 1,000,000)")
    p.add_argument("--tune-seeds", default="9,10", help="seeds that choose the gates (default 9,10)")
    p.add_argument("--eval-seeds", default="11-15", help="seeds that only report (default 11-15)")
    p.add_argument("--candidate", action="append", metavar="NAME=SECTION.KEY=VALUE,...",
                   help="a model choice (repeat); the first is the baseline (default: logistic, ensemble v1)")
    p.add_argument("--gates", default=DEFAULT_GATES, help=f"min_confidence values tried (default {DEFAULT_GATES})")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a setting of every run (default strategy.kind=signal)")
    p.add_argument("--jobs", type=int, default=1, help="backtests at once (default 1)")
    p.add_argument("--json", action="store_true", help="print eval.json instead of the table")
    args = p.parse_args(argv)
    tune, evals = parse_seeds(args.tune_seeds), parse_seeds(args.eval_seeds)
    if set(tune) & set(evals):
        p.error(f"--tune-seeds and --eval-seeds share {sorted(set(tune) & set(evals))}: evaluation seeds choose "
                "nothing")
    try:
        gates = [float(g) for g in args.gates.split(",") if g.strip()]
    except ValueError:
        p.error(f"--gates={args.gates!r}: use numbers in [0, 1], e.g. {DEFAULT_GATES}")
    if not gates or not all(0 <= g <= 1 for g in gates):
        p.error(f"--gates={args.gates!r}: use numbers in [0, 1], e.g. {DEFAULT_GATES}")
    if args.events < 1 or args.jobs < 1:
        p.error("--events and --jobs must be at least 1")
    settings = args.set or ["strategy.kind=signal"]
    try:
        candidates = [parse_candidate(t) for t in (args.candidate or DEFAULT_CANDIDATES)]
        if len({c.name for c in candidates}) != len(candidates):
            raise ConfigError("--candidate: two candidates share a name")
        for c in candidates:  # every candidate's config loads before anything runs
            load(None, settings_overrides([*settings, *c.settings, f"{GATE_KEY}={gates[0]}", "feed.seed=1"]))
    except ConfigError as exc:
        print(f"model_eval: config error: {exc}", file=sys.stderr)
        return 2
    base = ["--events", str(args.events)] + [a for s in settings for a in ("--set", s)]
    os.makedirs(args.out, exist_ok=True)
    result = evaluate(candidates, tune, evals, gates, args.out, base, args.jobs)
    with open(os.path.join(args.out, "eval.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
