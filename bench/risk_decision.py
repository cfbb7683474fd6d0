"""Risk stage cost: ns per decision (``stages.risk.step``) on synthetic feature vectors, with peers.

Feature vectors come from the real feed, validate and feature kernels (``pipeline.hosting.fused.collect_features``,
2 venues x 3 symbols at 10,000 events/s of synthetic time). Each case runs the risk kernel over all of them
in batches of 256 (one njit call per batch, as a stage process does), from a fresh state; the figure is
the median over rounds of (total ns / decisions), with the per-batch p50 / p99 in ns per decision. Cases:

- ``feature``: the feature kernel on the same market events, for scale (a peer stage, same invocation);
- ``risk flat``: no positions (heat and liquidation work on zero vectors);
- ``risk 6 pos``: a position on each of the 6 instruments (heat's quadratic form, the guard's room);
- ``risk 32 pos``: the vectors spread over all 32 instrument keys, each with a position (worst case);
- ``risk 1ms bars``: 6 positions and bars of 1 ms, so a bar closes every ~10 events (GARCH + covariance).

Rounds interleave the cases (A B C D E, B C D E A, ...); the process is pinned to one CPU; every kernel is
compiled before timing. Run from the repository root: ``python -m bench.risk_decision``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from pipeline import graph
from pipeline.config import Config
from pipeline.hosting.fused import collect_features
from stages import feature, records, risk
from stages.records import BUY, ORD_FILLED, SELL
from stages.universe import MAX_KEYS, instrument_key, key_symbol, key_venue

BATCH = 256
GARCH = np.array([0.023, 0.0121, 0.9717])  # about the shipped default fit


def _fills(keys: list[int], mids: np.ndarray) -> np.ndarray:
    r = np.zeros(len(keys), records.EXEC_REPORT)
    for i, k in enumerate(keys):
        side = BUY if i % 2 == 0 else SELL
        qty = 20_000.0 / mids[k]
        r[i]["venue"], r[i]["symbol"] = key_venue(k), key_symbol(k)
        r[i]["state"], r[i]["liquidity"], r[i]["side"] = ORD_FILLED, -1, side
        r[i]["qty"], r[i]["price"], r[i]["position"] = qty, mids[k], side * qty
    return r


def _risk_case(vectors: np.ndarray, fills: np.ndarray, bar_s: float) -> tuple[int, list[float]]:
    config = Config().with_overrides(risk={"max_position_usd": 50_000.0, "max_order_usd": 5_000.0, "vol_ref_bps": 2.0,
                                           "bar_s": bar_s, "max_gross_usd": 1e9, "max_leverage": 100.0})
    params = graph.kernel_params("risk", config, live=False)
    state = risk.make_state(np.tile(GARCH, (MAX_KEYS, 1)))
    stats = np.zeros(32, np.int64)
    out = np.zeros(BATCH, records.RISK_DECISION)
    empty = np.zeros(0, records.EXEC_REPORT)
    risk.step(vectors[:1], 1, fills, len(fills), state, params, None, stats, out, 0)
    per_batch = []
    total = 0
    for i in range(1, len(vectors), BATCH):
        chunk = vectors[i:i + BATCH]
        t0 = time.perf_counter_ns()
        risk.step(chunk, len(chunk), empty, 0, state, params, None, stats, out, 0)
        dt = time.perf_counter_ns() - t0
        total += dt
        per_batch.append(dt / len(chunk))
    return total, per_batch


def _feature_case(events: np.ndarray) -> tuple[int, list[float]]:
    state, params = feature.make_state(), feature.make_params()
    stats = np.zeros(32, np.int64)
    out = np.zeros(BATCH, records.FEATURE_VECTOR)
    per_batch = []
    total = 0
    for i in range(0, len(events), BATCH):
        chunk = events[i:i + BATCH]
        t0 = time.perf_counter_ns()
        feature.step(chunk, len(chunk), chunk[:0], 0, state, params, None, stats, out, 0)
        dt = time.perf_counter_ns() - t0
        total += dt
        per_batch.append(dt / len(chunk))
    return total, per_batch


def _valid_events(n: int) -> np.ndarray:
    config = Config().with_overrides(feed={"max_events": n})
    from pipeline import graph
    from pipeline.plan import resolve
    plan = resolve(config)
    kernels = {name: graph.kernel(name, plan, live=False) for name in ("feed", "validate")}
    market = np.zeros(BATCH, records.MARKET_EVENT)
    valid = np.zeros(BATCH, records.MARKET_EVENT)
    stats = np.zeros(32, np.int64)
    chunks = []
    while True:
        step, params, state = kernels["feed"]
        k = step(market, 0, market, 0, state, params, None, stats, market, 0)
        if k == 0:
            break
        step, params, state = kernels["validate"]
        k = step(market, k, market, 0, state, params, None, stats, valid, 0)
        chunks.append(valid[:k].copy())
    return np.concatenate(chunks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    vectors = collect_features(7, args.events)
    events = _valid_events(args.events)
    keys6 = sorted({instrument_key(v, s) for v, s in zip(vectors["venue"], vectors["symbol"])})
    mids = np.zeros(MAX_KEYS)
    for k in keys6:
        mine = vectors[(vectors["venue"] == key_venue(k)) & (vectors["symbol"] == key_symbol(k))]
        mids[k] = 0.5 * (mine["bid"][0] + mine["ask"][0])
    spread = vectors.copy()  # the same vectors over all 32 keys: key = position in the stream mod 32
    key32 = np.arange(len(spread)) % MAX_KEYS
    spread["venue"] = np.array([key_venue(k) for k in range(MAX_KEYS)])[key32]
    spread["symbol"] = np.array([key_symbol(k) for k in range(MAX_KEYS)])[key32]
    mids32 = np.full(MAX_KEYS, float(np.median(0.5 * (vectors["bid"] + vectors["ask"]))))
    cases = {
        "feature": lambda: _feature_case(events),
        "risk flat": lambda: _risk_case(vectors, _fills([], mids), 1.0),
        "risk 6 pos": lambda: _risk_case(vectors, _fills(keys6, mids), 1.0),
        "risk 32 pos": lambda: _risk_case(spread, _fills(list(range(MAX_KEYS)), mids32), 1.0),
        "risk 1ms bars": lambda: _risk_case(vectors, _fills(keys6, mids), 0.001),
    }
    counts = {"feature": len(events), "risk 32 pos": len(spread) - 1}
    for fn in cases.values():  # compile (or load the cache) before timing
        fn()
    names = list(cases)
    results = {name: [] for name in names}
    batches = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            total, per_batch = cases[name]()
            results[name].append(total / counts.get(name, len(vectors) - 1))
            batches[name].extend(per_batch)

    span_s = (vectors["origin_ts"][-1] - vectors["origin_ts"][0]) / 1e9
    print(f"{len(vectors):,} feature vectors ({span_s:.1f} s of synthetic time), batches of {BATCH}, "
          f"{args.rounds} rounds, pinned to CPU {min(os.sched_getaffinity(0))}")
    base = statistics.median(results["risk flat"])
    print(f"{'case':<15} {'ns/decision':>12} {'(min-max)':>13} {'batch p50':>10} {'batch p99':>10} {'vs flat':>8}")
    for name in names:
        v = results[name]
        b = np.array(batches[name])
        print(f"{name:<15} {statistics.median(v):>12.1f} {min(v):>6.0f}-{max(v):<6.0f} "
              f"{np.percentile(b, 50):>10.1f} {np.percentile(b, 99):>10.1f} {statistics.median(v) / base:>8.2f}")


if __name__ == "__main__":
    main()
