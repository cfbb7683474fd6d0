"""bot4 train: walk-forward training of the ensemble's members into the model registry.

    bot4 train --seeds 1,2,3 --events 2000000 --members logistic,gbt --folds 4 --out-registry models/
    bot4 train --parquet features.parquet [--parquet more.parquet] ...
    bot4 train --journal ./journal ...
    ... --holdout-seeds 11,12 --holdout-events 1000000    # scored by the final models only, never for a choice

Seeded and reproducible: the same arguments give byte-identical model.onnx files (one thread everywhere; LightGBM's
deterministic mode). See pipeline/training/trainer.py for what is fitted, chosen and scored where.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from pipeline.training import bootstrap, voting
from pipeline.training.members import MEMBER_NAMES

DEFAULT_EVENTS = 2_000_000
DEFAULT_HORIZON = 20
DEFAULT_FOLDS = 4


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # exit 2 with the usage, as argparse does, naming the flag
        self.print_usage(sys.stderr)
        self.exit(2, f"bot4 train: {message}\n")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers, e.g. 1,2,3") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one integer, e.g. 1,2,3")
    return values


def _members(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in MEMBER_NAMES]
    if unknown or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct members among {','.join(MEMBER_NAMES)}")
    return names


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bot4 train", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--seeds", type=_int_list, help="synthetic market seeds, e.g. 1,2,3 (default 1,2,3)")
    src.add_argument("--parquet", type=Path, action="append", help="feature file(s) from bot4 features build")
    src.add_argument("--journal", type=Path, help="a journal directory (its market stream)")
    p.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="market events per synthetic seed")
    p.add_argument("--horizon", type=int, default=DEFAULT_HORIZON, help="label horizon, records of the same stream")
    p.add_argument("--members", type=_members, default=MEMBER_NAMES, help="members, e.g. logistic,gbt")
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="walk-forward folds (>= 1)")
    p.add_argument("--embargo", type=int, help="records dropped after each boundary (default: one label span)")
    p.add_argument("--seed", type=int, default=1, help="the trainers' seed (LightGBM's bagging, the bootstrap)")
    p.add_argument("--fit-stride", type=int, default=10, help="fit on every K-th training row")
    p.add_argument("--bootstrap-reps", type=int, default=bootstrap.DEFAULT_REPS, help="block-bootstrap resamples")
    p.add_argument("--min-coverage", type=float, default=voting.DEFAULT_MIN_COVERAGE,
                   help="the ensemble threshold must leave a view on at least this share of validation rows")
    p.add_argument("--holdout-seeds", type=_int_list, help="synthetic seeds scored by the final models only")
    p.add_argument("--holdout-events", type=int, help="events per held-out seed (default --events)")
    p.add_argument("--out-registry", "--registry", dest="registry", type=Path, default=Path("models"),
                   help="registry root: members go to NAME/vN, the ensemble to ensemble/vN (default models/)")
    return p


def _check(p: argparse.ArgumentParser, args) -> None:
    rules = [("--events", args.events >= 1000, "give at least 1000 market events per seed"),
             ("--horizon", args.horizon >= 1, "give a horizon >= 1 record"),
             ("--folds", 1 <= args.folds <= 50, "give 1 to 50 folds"),
             ("--embargo", args.embargo is None or args.embargo >= 0, "give an embargo >= 0 records"),
             ("--fit-stride", args.fit_stride >= 1, "give a stride >= 1"),
             ("--bootstrap-reps", args.bootstrap_reps >= 2, "give at least 2 resamples"),
             ("--min-coverage", 0.0 < args.min_coverage <= 1.0, "give a share in (0, 1]"),
             ("--holdout-events", args.holdout_events is None or args.holdout_events >= 1000,
              "give at least 1000 events"),
             ("--members", "logistic" in args.members, "include logistic: it is the baseline the others must beat")]
    for flag, ok, fix in rules:
        if not ok:
            p.error(f"{flag}: {fix}")
    for path in args.parquet or []:
        if not path.is_file():
            p.error(f"--parquet {path}: no such file; write one with bot4 features build")
    if args.journal is not None and not args.journal.is_dir():
        p.error(f"--journal {args.journal}: no such directory")
    if args.holdout_seeds and args.seeds and set(args.holdout_seeds) & set(args.seeds):
        p.error(f"--holdout-seeds: {sorted(set(args.holdout_seeds) & set(args.seeds))} are also training seeds; "
                "held-out seeds must be others")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.seeds is None and args.parquet is None and args.journal is None:
        args.seeds = [1, 2, 3]
    _check(p, args)
    from pipeline.training import datasets, trainer
    command = "bot4 train " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        if args.parquet:
            ds = datasets.from_parquet(args.parquet, args.horizon)
        elif args.journal:
            ds = datasets.from_journal(args.journal, args.horizon)
        else:
            ds = datasets.from_seeds(args.seeds, args.events, args.horizon)
        holdout = (datasets.from_seeds(args.holdout_seeds, args.holdout_events or args.events, args.horizon)
                   if args.holdout_seeds else None)
        print(f"dataset: {len(ds):,} labelled rows from {ds.source.get('feature_records', 0):,} feature records")
        settings = trainer.Settings(members=args.members, n_folds=args.folds, embargo=args.embargo, seed=args.seed,
                                    bootstrap_reps=args.bootstrap_reps, min_coverage=args.min_coverage,
                                    fit_stride=args.fit_stride)
        result = trainer.train(ds, settings, holdout)
    except ValueError as exc:
        print(f"bot4 train: {exc}", file=sys.stderr)
        return 2
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    written = trainer.write_registry(result, ds, args.registry, command, created)
    for name, rel in written.items():
        print(f"wrote {args.registry / rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
