"""Strategy stage cost: ns per decision (``stages.strategy.step``) on real predictions, the signal strategy (the
figure before issue 12) beside the regime mode (detector, allocator, momentum, mean reversion, Avellaneda-Stoikov
market making and arbitrage) in the same invocation: as the default allocates it (nothing: the detector, the
allocator's bookkeeping and the maker's and arbitrage's withdraw/close checks still run), with momentum and mean
reversion, and with every strategy in every regime.

Predictions come from the real feed, validate, feature, risk and inference stages (``pipeline.hosting.chain``,
2 venues x 3 symbols, the shipped model). Each case runs the strategy kernel over all of them in batches of 256
(one call per batch, as a stage process does, without the execution reports a live run would feed back), from a
fresh state; the figure is the median over rounds of total ns / predictions. Rounds interleave the cases; the
process is pinned to one CPU; every kernel is compiled before timing.

    python -m bench.strategy_decision [--events 300000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from pipeline import graph
from pipeline.config import Config
from pipeline.hosting import models
from pipeline.hosting.chain import Chain
from pipeline.plan import resolve
from shm import control as cb
from stages import records, strategy

BATCH = 256


def predictions(events: int) -> np.ndarray:
    plan = resolve(Config().with_overrides(feed={"max_events": events}))
    model = models.Models(models.load(plan.model_path), BATCH)
    chain = Chain(plan, ("feed", "validate", "feature", "risk", "inference"), predict=model.predict)
    parts = []
    while chain.run(None, 0, chain.sim_ns(), sim_clock=True) or chain.n["feed"]:
        parts.append(chain.out["inference"][:chain.n["inference"]].copy())
    return np.concatenate(parts)


def run_case(preds: np.ndarray, params: np.ndarray) -> tuple[float, int]:
    state = strategy.make_state()
    stats = np.zeros(32, np.int64)
    block = cb.ControlBlock.local()
    block.globals[cb.G_TRADING_ENABLED] = 1
    ctl = block.globals
    out = np.zeros(strategy.out_capacity(BATCH), records.ORDER_INTENT)
    feedback = np.zeros(0, records.EXEC_REPORT)
    intents = 0
    t = time.perf_counter_ns()
    for i in range(0, len(preds), BATCH):
        b = preds[i:i + BATCH]
        intents += strategy.step(b, len(b), feedback, 0, state, params, ctl, stats, out, int(b["origin_ts"][-1]))
    return (time.perf_counter_ns() - t) / len(preds), intents


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    preds = predictions(args.events)
    every = ("momentum=1", "mean_reversion=1", "market_making=1", "arbitrage=1")
    configs = {"signal": Config().with_overrides(strategy={"kind": "signal"}),
               "regime, none allocated (the default)": Config().with_overrides(strategy={"kind": "regime"}),
               "regime, momentum + mean reversion": Config().with_overrides(
                   strategy={"kind": "regime"},
                   allocator={"trending": ("momentum=1",), "range_bound": ("mean_reversion=1",)}),
               "regime, every strategy everywhere": Config().with_overrides(
                   strategy={"kind": "regime"}, allocator={"trending": every, "range_bound": every, "volatile": every})}
    cases = {kind: graph.kernel_params("strategy", config, live=False) for kind, config in configs.items()}
    for params in cases.values():
        run_case(preds[:BATCH * 4], params)  # compile and warm
    times: dict[str, list[float]] = {kind: [] for kind in cases}
    intents: dict[str, int] = {}
    for r in range(args.rounds):
        order = list(cases) if r % 2 == 0 else list(cases)[::-1]
        for kind in order:
            ns, intents[kind] = run_case(preds, cases[kind])
            times[kind].append(ns)
    base = statistics.median(times["signal"])
    print(f"{len(preds):,} predictions, batches of {BATCH}, medians of {args.rounds} interleaved rounds, one CPU")
    for kind, ns in times.items():
        med = statistics.median(ns)
        print(f"{kind:<38} {med:8.1f} ns/decision  ({med / base:.2f}x signal)  intents {intents[kind]:,}"
              f"  rounds {' '.join(f'{x:.0f}' for x in ns)}")


if __name__ == "__main__":
    main()
