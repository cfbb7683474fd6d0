"""The regime detector (stages.strategies.regime) against the synthetic feed's true regime.

``python -m tools.regime_eval --seeds 101-110 --events 6000000 [--json]``

Each seed's market runs feed -> validate -> feature in one process (pipeline.hosting.chain, unpaced: the
synthetic clock at the configured ``feed.rate_eps``, 10,000 events/s by default, so 6,000,000 events are
10 minutes of market). Every feature vector goes to the detector of its instrument key; the truth is the
regime in its market event's flags (records.F_SIM_REGIME_*), joined by ``origin_seq``. Risk is not run:
the detector does not use GARCH (see its docstring), so ``garch_sigma_bps`` is passed as NaN.

Printed: the confusion matrix (rows true, columns detected; counts of feature vectors and row-normalised),
balanced accuracy (the mean of the row-normalised diagonal), and detection delay: per true switch seen on a
key's stream, the event time until the detector first agrees; median and p90, how many switches were never
detected before the next one, and how many were still undetected when the run ended. Warm-up vectors
count (the detector answers range-bound then, the feed's starting regime).

Tuning discipline: the detector's defaults were tuned on seeds 1-5 ONLY; seeds 101-110 (the default here)
are held out and were used for nothing but this evaluation.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
from numba import njit

from pipeline.config import Config
from pipeline.hosting.chain import Chain
from pipeline.plan import resolve
from stages.records import F_SIM_REGIME_MASK, F_SIM_REGIME_SHIFT, REGIME_NAMES
from stages.strategies import regime
from stages.universe import MAX_KEYS, instrument_key

TUNING_SEEDS = "1-5"
HELD_OUT_SEEDS = "101-110"
DEFAULT_EVENTS = 6_000_000
BATCH = 4096  # records per chain step: fewer Python round trips; the features do not depend on it

# counters: true switches, never detected before the next switch, delays written, detector's changes of regime
N_SWITCHES, N_MISSED, N_DELAYS, N_FLIPS = range(4)


@njit(cache=True)
def _score(state, params, vectors, n, events, n_events, confusion, last_truth, last_detected, switch_ts, pending,
           delays, counts):
    """Detector over vectors[:n]; truth from events[:n_events] (the same batch of the feed) by origin_seq."""
    first_seq = events[0]["origin_seq"]
    nan = math.nan
    for i in range(n):
        v = vectors[i]
        j = v["origin_seq"] - first_seq
        if j < 0 or j >= n_events or events[j]["origin_seq"] != v["origin_seq"]:
            raise ValueError("a feature vector's origin_seq is not in its batch of market events")
        truth = ((events[j]["flags"] & F_SIM_REGIME_MASK) >> F_SIM_REGIME_SHIFT) - 1
        key = instrument_key(v["venue"], v["symbol"])
        mid = 0.5 * (v["bid"] + v["ask"])
        ts = v["origin_ts"]
        detected = regime.update(state, params, key, ts, mid, v["values"], nan)
        if detected != last_detected[key]:
            counts[N_FLIPS] += last_detected[key] >= 0
            last_detected[key] = detected
        if truth < 0:
            continue
        confusion[truth, detected] += 1
        if truth != last_truth[key]:
            if last_truth[key] >= 0:
                counts[N_SWITCHES] += 1
                if pending[key]:
                    counts[N_MISSED] += 1
                pending[key] = 1
                switch_ts[key] = ts
            last_truth[key] = truth
        if pending[key] and detected == truth:
            delays[counts[N_DELAYS]] = ts - switch_ts[key]
            counts[N_DELAYS] += 1
            pending[key] = 0


def evaluate_seed(seed: int, n_events: int, params: np.ndarray | None = None) -> dict:
    """One seed's confusion counts (3x3, rows true), switch delays (ns) and switch counts."""
    if n_events <= 0:
        raise ValueError(f"--events={n_events} must be > 0")
    config = Config().with_overrides(feed={"seed": seed, "max_events": n_events},
                                     rings={"batch": BATCH, "capacity": BATCH})
    params = regime.make_params() if params is None else params
    chain = Chain(resolve(config), ("feed", "validate", "feature"))
    state = regime.make_state()
    confusion = np.zeros((3, 3), np.int64)
    last_truth = np.full(MAX_KEYS, -1, np.int64)
    last_detected = np.full(MAX_KEYS, -1, np.int64)
    switch_ts = np.zeros(MAX_KEYS, np.int64)
    pending = np.zeros(MAX_KEYS, np.int64)
    delays = np.zeros(max(1024, n_events // 1000), np.int64)
    counts = np.zeros(4, np.int64)
    while chain.run(None, 0, 0) or chain.n["feed"]:
        if counts[N_DELAYS] + BATCH > len(delays):  # at most one delay per vector of a batch
            delays = np.concatenate([delays, np.zeros_like(delays)])
        _score(state, params, chain.out["feature"], chain.n["feature"], chain.out["feed"], chain.n["feed"],
               confusion, last_truth, last_detected, switch_ts, pending, delays, counts)
    return {"seed": seed, "events": n_events, "confusion": confusion, "delays_ns": delays[:counts[N_DELAYS]],
            "switches": int(counts[N_SWITCHES]), "missed": int(counts[N_MISSED]),
            "censored": int(pending.sum()), "detector_changes": int(counts[N_FLIPS])}


def balanced_accuracy(confusion: np.ndarray) -> float:
    """Mean recall over the true regimes that occur."""
    rows = confusion.sum(axis=1)
    present = rows > 0
    return float(np.mean(np.diag(confusion)[present] / rows[present]))


def summarise(results: list[dict], params: dict) -> dict:
    confusion = sum(r["confusion"] for r in results)
    rows = confusion.sum(axis=1, keepdims=True)
    delays_s = np.concatenate([r["delays_ns"] for r in results]) * 1e-9
    return {
        "seeds": [r["seed"] for r in results], "events_per_seed": results[0]["events"],
        "tuned_on_seeds": TUNING_SEEDS, "detector_params": params, "regimes": list(REGIME_NAMES),
        "confusion_counts": confusion.tolist(),
        "confusion_row_normalised": np.round(confusion / np.maximum(rows, 1), 4).tolist(),
        "balanced_accuracy": round(balanced_accuracy(confusion), 4),
        "balanced_accuracy_per_seed": {str(r["seed"]): round(balanced_accuracy(r["confusion"]), 4) for r in results},
        "delay_s": {"median": round(float(np.median(delays_s)), 3) if len(delays_s) else None,
                    "p90": round(float(np.percentile(delays_s, 90)), 3) if len(delays_s) else None,
                    "detected": int(len(delays_s)), "switches": sum(r["switches"] for r in results),
                    "never_detected_before_next": sum(r["missed"] for r in results),
                    "undetected_at_end": sum(r["censored"] for r in results)},
        "detector_changes": sum(r["detector_changes"] for r in results),
    }


def parse_seeds(text: str) -> list[int]:
    """``101-110``, ``1,3,5`` or a mix (``1-3,7``)."""
    seeds = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            seeds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise SystemExit(f"--seeds={text!r}: use a list like 101-110 or 1,2,5") from None
    if not seeds:
        raise SystemExit(f"--seeds={text!r} names no seed: use a list like 101-110")
    return seeds


def parse_params(items: list[str]) -> dict:
    """``--param name=value`` overrides of regime.make_params (for tuning on seeds 1-5)."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in regime.make_params.__kwdefaults__:
            raise SystemExit(f"--param {item!r}: no detector parameter {name!r}; "
                             f"use one of {sorted(regime.make_params.__kwdefaults__)}")
        try:
            out[name] = type(regime.make_params.__kwdefaults__[name])(float(value))
        except ValueError:
            raise SystemExit(f"--param {item!r}: {value!r} is not a number") from None
    return out


def render(summary: dict) -> str:
    names = summary["regimes"]
    width = max(len(n) for n in names) + 2
    lines = [f"regime detector, seeds {summary['seeds'][0]}..{summary['seeds'][-1]} ({len(summary['seeds'])}), "
             f"{summary['events_per_seed']:,} events each; tuned on seeds {summary['tuned_on_seeds']} only",
             "confusion (rows true, columns detected): counts | row-normalised",
             " " * width + "".join(f"{n:>14}" for n in names) + " |" + "".join(f"{n:>13}" for n in names)]
    for name, counts, norm in zip(names, summary["confusion_counts"], summary["confusion_row_normalised"]):
        lines.append(f"{name:<{width}}" + "".join(f"{c:>14,}" for c in counts) + " |"
                     + "".join(f"{x:>13.3f}" for x in norm))
    per_seed = ", ".join(f"{s}: {b:.3f}" for s, b in summary["balanced_accuracy_per_seed"].items())
    d = summary["delay_s"]
    lines += [f"balanced accuracy {summary['balanced_accuracy']:.3f} (chance 0.333); per seed {per_seed}",
              f"detection delay over {d['switches']} true switches (per key): median {d['median']} s, p90 {d['p90']} s;"
              f" detected {d['detected']}, never detected before the next switch {d['never_detected_before_next']},"
              f" undetected when the run ended {d['undetected_at_end']}; the detector changed regime"
              f" {summary['detector_changes']} times"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.regime_eval", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=HELD_OUT_SEEDS, help=f"held out: {HELD_OUT_SEEDS} (tuning used {TUNING_SEEDS})")
    ap.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="market events per seed (10,000 = 1 s)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a detector parameter")
    ap.add_argument("--json", action="store_true", help="machine-readable")
    args = ap.parse_args(argv)
    if args.events <= 0:
        raise SystemExit(f"--events={args.events} must be > 0")
    overrides = parse_params(args.param)
    try:
        params = regime.make_params(**overrides)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    results = [evaluate_seed(seed, args.events, params) for seed in parse_seeds(args.seeds)]
    summary = summarise(results, {**regime.make_params.__kwdefaults__, **overrides})
    print(json.dumps(summary, sort_keys=True) if args.json else render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
