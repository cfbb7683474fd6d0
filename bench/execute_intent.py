"""Execute stage cost: ns per intent (``stages.execute.step``) with smart order routing and execution algorithms
beside today's path, same invocation.

The market comes from the real feed and validate kernels (``pipeline.hosting.chain``, 2 venues x 3 symbols), the
intents from a fused run of the signal strategy on the same market (``strategy.kind = "signal"``: takers of
``strategy.take_usd`` and quotes). Each case runs the execute kernel alone over all of it from a fresh state, in
batches of 256 market events with the intents that fall between them (by feed sequence, as the fused loop hands
them), the venue model fed the market a second ahead (the backtest's lookahead); the intents are the same in every
case (no feedback reaches the strategy here). Figures: the median over rounds of (case's ns - the market alone's
ns) / intents, i.e. what the intents cost with their venue answers and, for algos, the parent orders worked at
every market event after them; and each case over today's. Cases:

- ``today``: the default config (no routing block active);
- ``armed, nothing fires``: an algo for takers above $1e12 (every intent through the routing dispatch, none routed);
- ``route every taker``: ``routing.route_takers`` (gather both venues' levels, rank, split);
- ``takers > $500 as TWAP``: 4 slices over 60 ms, each routed;
- ``takers > $500 as POV``: 20% of the volume, children of at most $800, 200 ms deadline;
- ``takers > $500 as iceberg``: $700 shown at a time, 200 ms deadline.

Rounds interleave the cases (in order, then reversed); the process is pinned to one CPU; every case is run once
before timing (compiled, warm).

    python -m bench.execute_intent [--events 100000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from pipeline import graph
from pipeline.config import Config
from pipeline.hosting.chain import Chain
from pipeline.hosting.fused import run_fused
from pipeline.plan import resolve
from shm import control as cb
from stages import execute, records
from stages.venue import exchange

BATCH = 256
AHEAD_NS = 1_000_000_000  # the venue's market runs this far ahead of the kernel's, as in a backtest
SIGNAL = {"strategy": {"kind": "signal"}}
CASES = {
    "today": {},
    "armed, nothing fires": {"algo": "twap", "algo_above_usd": 1e12},
    "route every taker": {"route_takers": True},
    "takers > $500 as TWAP, routed": {"algo": "twap", "algo_above_usd": 500.0, "twap_slices": 4,
                                      "twap_horizon_ms": 60.0, "route_takers": True},
    "takers > $500 as POV": {"algo": "pov", "algo_above_usd": 500.0, "pov_share": 0.2, "pov_max_child_usd": 800.0,
                             "pov_horizon_ms": 200.0},
    "takers > $500 as iceberg": {"algo": "iceberg", "algo_above_usd": 500.0, "iceberg_display_usd": 700.0,
                                 "iceberg_horizon_ms": 200.0},
}


def inputs(events: int) -> tuple[np.ndarray, np.ndarray]:
    """(validated market events, the signal strategy's intents on them), both in feed-sequence order."""
    config = Config().with_overrides(feed={"max_events": events}, **SIGNAL)
    chain = Chain(resolve(config), ("feed", "validate"))
    parts = []
    while chain.run(None, 0, chain.sim_ns(), sim_clock=True) or chain.n["feed"]:
        parts.append(chain.out["validate"][:chain.n["validate"]].copy())
    intents = run_fused(config, events).intents
    return np.concatenate(parts), intents[np.argsort(intents["origin_seq"], kind="stable")]


def run_case(market: np.ndarray, intents: np.ndarray, params: np.ndarray) -> tuple[float, int]:
    """(ns of the whole run, reports) of the execute kernel over ``market`` and ``intents``."""
    vparams = params[execute.P_VENUE:]
    venue_state = exchange.make_state(1 << 17)
    state = execute.make_state(venue_state)
    ctl = np.zeros(cb.GLOBAL_WORDS, np.int64)
    ctl[cb.G_TRADING_ENABLED] = 1
    stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
    out = np.zeros(execute.out_capacity(4 * BATCH), records.EXEC_REPORT)
    ends = np.searchsorted(intents["origin_seq"], market["origin_seq"][BATCH - 1::BATCH], side="right")
    ts = market["origin_ts"]
    pushed = reports = 0
    i = 0
    t = time.perf_counter_ns()
    for b, lo in enumerate(range(0, len(market), BATCH)):
        hi = min(lo + BATCH, len(market))
        horizon = ts[hi - 1] + AHEAD_NS
        while pushed < len(market) and ts[pushed] <= horizon:
            k = min(BATCH, len(market) - pushed)
            pushed += exchange.push_batch(venue_state, vparams, market[pushed:pushed + k], k)
        j = ends[b] if b < len(ends) else len(intents)
        reports += execute.step(intents[i:j], j - i, market[lo:hi], hi - lo, state, params, ctl, stats, out,
                                int(ts[hi - 1]))
        i = j
    return float(time.perf_counter_ns() - t), reports


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    market, intents = inputs(args.events)
    none = intents[:0]
    params = {name: graph.kernel_params("execute", Config().with_overrides(routing=keys, **SIGNAL), live=False)
              for name, keys in CASES.items()}
    run_case(market, none, params["today"])  # compile and warm
    for p in params.values():
        run_case(market, intents, p)
    alone: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in CASES}
    reports: dict[str, int] = {}
    for r in range(args.rounds):
        alone.append(run_case(market, none, params["today"])[0])
        for name in (list(CASES) if r % 2 == 0 else list(CASES)[::-1]):
            ns, reports[name] = run_case(market, intents, params[name])
            times[name].append(ns)
    base_market = statistics.median(alone)
    per_intent = {name: [(ns - base_market) / len(intents) for ns in values] for name, values in times.items()}
    today = statistics.median(per_intent["today"])
    print(f"{len(market):,} market events, {len(intents):,} intents ({np.sum(intents['kind'] == records.INTENT_IOC):,}"
          f" takers), batches of {BATCH} events, medians of {args.rounds} interleaved rounds, one CPU")
    print(f"{'market alone':<32} {base_market / len(market):8.1f} ns/event")
    for name, values in per_intent.items():
        med = statistics.median(values)
        print(f"{name:<32} {med:8.1f} ns/intent  ({med / today:.2f}x today)  reports {reports[name]:,}"
              f"  rounds {' '.join(f'{x:.0f}' for x in values)}")


if __name__ == "__main__":
    main()
