"""bot4 train-q: a sizing policy (qvalue member) by fitted Q-iteration, the backtester's fused mode its environment.

    bot4 train-q --seeds 1-8 --events 4000 --validation-seeds 9,10 [--holdout-seeds 11,12,13,14,15] --registry models/

Trains on --seeds only (pipeline/training/qlearning.py says how), exports models/qnet/vN (model.onnx + model.json,
with the command, seeds, settings and figures), then backtests each validation seed with the sizer and with the rule
(size_scale 1). It "earns its place" when its mean net PnL gain on validation is >= 0; model.json says whether it
did. Held-out seeds, if given, are backtested for the record only: no choice reads them. Seeded and reproducible.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from pipeline.config import ConfigError, load, settings_overrides
from pipeline.training import qlearning

QNET = "qnet"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"bot4 train-q: {message}\n")


def _seeds(text: str) -> tuple[int, ...]:
    """"1-8" or "1,2,3" (or both: "1-4,9")."""
    out = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, _, hi = part.partition("-")
            out += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give seeds as 1-8 or 1,2,3") from None
    if not out or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct seeds, e.g. 1-8")
    return tuple(out)


def _actions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated size scales, e.g. 0,0.5,1") from None
    return values


def parser() -> argparse.ArgumentParser:
    d = qlearning.Settings()
    p = _Parser(prog="bot4 train-q", description=__doc__.split("\n")[0])
    p.add_argument("--config", help="TOML config of the runs (strategy.kind is forced to signal)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one config key (repeat)")
    p.add_argument("--seeds", type=_seeds, default=d.seeds, help="training seeds (default 1-8)")
    p.add_argument("--events", type=int, default=d.events, help="market events per seed and pass")
    p.add_argument("--validation-seeds", type=_seeds, default=(9, 10), help="the ship/no-ship backtests (9,10)")
    p.add_argument("--holdout-seeds", type=_seeds, help="backtested for the record only, e.g. 11-15")
    p.add_argument("--judge-events", type=int, help="events per validation/held-out backtest (default --events)")
    p.add_argument("--actions", type=_actions, default=d.actions, help="the action table: size scales (0,0.5,1)")
    p.add_argument("--gamma", type=float, default=d.gamma)
    p.add_argument("--iterations", type=int, default=d.iterations, help="Q-iterations after Q_0")
    p.add_argument("--passes", type=int, default=d.passes, help="data passes (the first random, then epsilon-greedy)")
    p.add_argument("--epsilon", type=float, default=d.epsilon)
    p.add_argument("--rounds", type=int, default=d.rounds, help="LightGBM rounds per regressor")
    p.add_argument("--num-leaves", type=int, default=d.num_leaves)
    p.add_argument("--seed", type=int, default=d.seed, help="behaviour policy and LightGBM seed")
    p.add_argument("--registry", type=Path, default=Path("models"), help="registry root (qnet/vN goes there)")
    p.add_argument("--backtests", type=Path, help="keep the judging backtests' reports here (default: a temp dir)")
    return p


def _check(p: argparse.ArgumentParser, args) -> None:
    rules = [("--events", args.events >= 500, "give at least 500 market events per seed"),
             ("--judge-events", args.judge_events is None or args.judge_events >= 500, "give at least 500 events"),
             ("--actions", len(args.actions) >= 2 and all(0 <= a <= 4 for a in args.actions),
              "give 2 or more size scales in [0, 4], e.g. 0,0.5,1"),
             ("--gamma", 0 <= args.gamma < 1, "give a discount in [0, 1)"),
             ("--iterations", 0 <= args.iterations <= 50, "give 0 to 50"),
             ("--passes", 1 <= args.passes <= 10, "give 1 to 10"),
             ("--epsilon", 0 <= args.epsilon <= 1, "give a probability in [0, 1]"),
             ("--rounds", 1 <= args.rounds <= 5000, "give 1 to 5000"),
             ("--num-leaves", 2 <= args.num_leaves <= 1024, "give 2 to 1024")]
    for flag, ok, fix in rules:
        if not ok:
            p.error(f"{flag}: {fix}")
    for flag, other in (("--validation-seeds", args.validation_seeds), ("--holdout-seeds", args.holdout_seeds)):
        if other and set(other) & set(args.seeds):
            p.error(f"{flag}: {sorted(set(other) & set(args.seeds))} are also training seeds; they must be others")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    _check(p, args)
    command = "bot4 train-q " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        overrides = settings_overrides(args.set or [])
        overrides.setdefault("strategy", {})["kind"] = "signal"
        if overrides.get("inference", {}).get("sizer"):
            p.error("--set inference.sizer: the sizer is what this trains; leave it out")
        config = load(args.config, overrides)
    except ConfigError as exc:
        print(f"bot4: config error: {exc}", file=sys.stderr)
        return 2
    settings = qlearning.Settings(seeds=args.seeds, events=args.events, actions=args.actions, gamma=args.gamma,
                                  iterations=args.iterations, passes=args.passes, epsilon=args.epsilon,
                                  seed=args.seed, num_leaves=args.num_leaves, rounds=args.rounds)
    try:
        trained = qlearning.train(config, settings)
    except ValueError as exc:
        print(f"bot4 train-q: {exc}", file=sys.stderr)
        return 2
    from pipeline.training import registry
    from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, RECORDS_VERSION

    meta = {"name": QNET, "member_kind": "qvalue", "size_scales": list(settings.actions),
            "input": "features", "output": "q", "kind": "lightgbm fitted Q-iteration, one regressor per action",
            "feature_names": list(FEATURE_NAMES), "feature_schema_hash": FEATURE_SCHEMA_HASH,
            "records_version": RECORDS_VERSION,
            "training": {"seeds": list(settings.seeds), "events_per_seed": settings.events,
                         "environment": "fused mode (pipeline.hosting.fused), strategy.kind=signal, the config's "
                                        "prob_up model; reward: the instrument's marked-to-market net PnL change "
                                        "until its next decision, USD",
                         "gamma": settings.gamma, "iterations": settings.iterations, "passes": trained.passes,
                         "epsilon": settings.epsilon, "seed": settings.seed, "rows": trained.rows,
                         "lightgbm": {"num_leaves": settings.num_leaves, "rounds": settings.rounds,
                                      "learning_rate": settings.learning_rate},
                         "config_overrides": overrides, "export_max_abs_error": trained.export_error},
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command}
    print(f"trained on {trained.rows:,} transitions; judging by backtest")
    with tempfile.TemporaryDirectory(prefix="bot4-train-q-") as tmp:
        # The judging backtests load the sizer through inference.sizer from its files, as a run would.
        candidate = Path(tmp) / QNET / "candidate"
        candidate.mkdir(parents=True)
        registry.write_member(candidate, trained.onnx_bytes, dict(meta, version=0))
        out = str(args.backtests or Path(tmp) / "backtests")
        judge_events = args.judge_events or args.events
        validation = qlearning.judge(config, args.validation_seeds, judge_events, str(candidate), f"{out}/validation")
        _print("validation", validation)
        holdout = (qlearning.judge(config, args.holdout_seeds, judge_events, str(candidate), f"{out}/holdout")
                   if args.holdout_seeds else None)
        if holdout:
            _print("held-out", holdout)
    earns = validation["net_pnl_gain_mean"] >= 0
    metrics = {"validation": validation, **({"holdout": holdout} if holdout else {}),
               "earns_its_place": earns,
               "rule": "ships when its mean net PnL gain over the rule (size_scale 1) on the validation seeds is >= 0"}
    version, directory = registry.claim(args.registry, QNET)
    registry.write_member(directory, trained.onnx_bytes, dict(meta, version=version, metrics=metrics))
    print(f"wrote {directory}: {'earns its place' if earns else 'does NOT earn its place'} on validation "
          f"(mean net PnL gain {validation['net_pnl_gain_mean']:+,.2f} USD per seed)")
    return 0


def _print(label: str, figures: dict) -> None:
    for row in figures["per_seed"]:
        r, q = row["rule"], row["qnet"]
        print(f"{label} seed {row['seed']}: rule net {r['net_pnl']:+,.2f} sharpe {r['sharpe']} fills {r['fills']} | "
              f"qnet net {q['net_pnl']:+,.2f} sharpe {q['sharpe']} fills {q['fills']} | "
              f"gain {row['net_pnl_gain']:+,.2f}")
    print(f"{label}: mean gain {figures['net_pnl_gain_mean']:+,.2f} +- {figures['net_pnl_gain_se']:.2f} (s.e. across "
          f"{len(figures['seeds'])} seeds), won {figures['seeds_won']}, lost {figures['seeds_lost']}")


if __name__ == "__main__":
    sys.exit(main())
