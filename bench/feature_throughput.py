"""Feature stage cost: ns per market event at max replay rate, median of interleaved rounds.

Streams, each validated once before timing (the feature stage only ever sees validated events):
``replay`` = the spot and USD-M BTCUSDT Binance captures merged by receive time (L2 deltas, bookTicker,
trades: the deltas build the books), ``bbo+trades`` = the same without the deltas, ``synthetic`` = the
embedded synthetic feed (five-level books and trades, 2 venues x 3 symbols). Each round runs the
feature kernel over the whole stream from a fresh state in batches of 256 (the ring batch), called from
an njit loop as the live duty cycle does, so the figure includes the online-store writes at the end of
each batch but no Python dispatch. Peers in the same rounds, on the same streams: the validate kernel
(the stage before it) and, for the L2 streams, ``stages.book.apply_batch`` alone (the book-building
floor the feature stage pays inside). Rounds interleave every (stream, kernel); the process is pinned
to one CPU; everything is compiled before timing. Run from the repository root:
``python -m bench.feature_throughput [--rounds 5]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from numba import njit

from pipeline import graph
from pipeline.config import Config
from pipeline.plan import resolve
from pipeline.sources import SymbolTable, merge, parse_file
from shm import control as cb
from stages import book, feature, records, validate
from stages.universe import MAX_KEYS

WS = Path(__file__).resolve().parents[1] / "tests" / "data" / "binance-ws-capture"
BATCH = 256


@njit(cache=True)
def _feature_over(events, state, params, stats, out):
    n = len(events)
    for start in range(0, n, BATCH):
        m = min(BATCH, n - start)
        feature.step(events[start:start + m], m, events[:0], 0, state, params, None, stats, out, 0)


@njit(cache=True)
def _validate_over(events, state, params, stats, out):
    n = len(events)
    for start in range(0, n, BATCH):
        m = min(BATCH, n - start)
        validate.step(events[start:start + m], m, events[:0], 0, state, params, None, stats, out, 0)


def _validated(events: np.ndarray, config: Config) -> tuple[np.ndarray, tuple]:
    params = graph.kernel_params("validate", config, live=False)
    out = np.zeros(len(events), records.MARKET_EVENT)
    n = validate.step(events, len(events), events[:0], 0, validate.make_state(), params, None,
                      np.zeros(cb.CUSTOM_WORDS, np.int64), out, 0)
    return out[:n].copy(), params


def _synthetic(n_events: int) -> tuple[np.ndarray, Config]:
    config = Config().with_overrides(feed={"max_events": n_events})
    step, params, state = graph.kernel("feed", resolve(config), live=False)
    out = np.zeros(config.rings.batch, records.MARKET_EVENT)
    chunks = []
    while True:
        n = step(out, 0, out, 0, state, params, None, np.zeros(cb.CUSTOM_WORDS, np.int64), out, 0)
        if n == 0:
            break
        chunks.append(out[:n].copy())
    return np.concatenate(chunks), config


def _replay() -> tuple[np.ndarray, Config]:
    config = Config().with_overrides(feed={"source": "replay", "venues": ["spot", "usdm"], "symbols": ["BTC-USDT"],
                                           "files": [f"spot={WS / 'spot_btcusdt_20240808.gz'}",
                                                     f"usdm={WS / 'usdm_btcusdt_20240808.gz'}"]})
    table = SymbolTable(venues=["spot", "usdm"], symbols=["BTC-USDT"])
    parsed = [parse_file(str(WS / f"{v}_btcusdt_20240808.gz"), table, venue=v) for v in ("spot", "usdm")]
    return merge(parsed), config


def _time_feature(events: np.ndarray) -> tuple[float, int]:
    state, params = feature.make_state(), feature.make_params()
    stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
    out = np.zeros(BATCH, records.FEATURE_VECTOR)
    t0 = time.perf_counter_ns()
    _feature_over(events, state, params, stats, out)
    return (time.perf_counter_ns() - t0) / len(events), int(stats[feature.ST_STORE_WRITES])


def _time_validate(events: np.ndarray, params: np.ndarray) -> float:
    state, stats = validate.make_state(), np.zeros(cb.CUSTOM_WORDS, np.int64)
    out = np.zeros(BATCH, records.MARKET_EVENT)
    t0 = time.perf_counter_ns()
    _validate_over(events, state, params, stats, out)
    return (time.perf_counter_ns() - t0) / len(events)


def _time_books(events: np.ndarray) -> float:
    books, counts = book.make_books(), np.zeros(book.N_STATUS, np.int64)
    t0 = time.perf_counter_ns()
    book.apply_batch(books, events, len(events), counts)
    return (time.perf_counter_ns() - t0) / len(events)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--synthetic-events", type=int, default=400_000)
    args = ap.parse_args()
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})

    raw_replay, replay_config = _replay()
    replay, replay_params = _validated(raw_replay, replay_config)
    raw_synth, synth_config = _synthetic(args.synthetic_events)
    synthetic, synth_params = _validated(raw_synth, synth_config)
    bbo_trades = replay[replay["kind"] != records.EV_BOOK_DELTA].copy()
    streams = {"replay": (replay, replay_params), "bbo+trades": (bbo_trades, replay_params),
               "synthetic": (synthetic, synth_params)}
    for events, params in streams.values():  # compile (or load the cache) before timing
        _time_feature(events[:1000])
        _time_validate(events[:1000], params)
        _time_books(events[:1000])

    figures = {(name, kernel): [] for name in streams for kernel in ("feature", "validate", "book")}
    writes = {}
    for _ in range(args.rounds):
        for name, (events, params) in streams.items():
            ns, writes[name] = _time_feature(events)
            figures[name, "feature"].append(ns)
            figures[name, "validate"].append(_time_validate(events, params))
            if name == "replay":
                figures[name, "book"].append(_time_books(events))

    print(f"rounds: {args.rounds}; batch {BATCH}; pinned to CPU {cpu}; {records.N_FEATURES} features; "
          f"max keys {MAX_KEYS}")
    print(f"{'stream':<11} {'events':>9} {'feature ns/ev':>14} {'(min-max)':>13} {'M ev/s':>7} "
          f"{'validate ns/ev':>15} {'feature/validate':>17} {'books ns/ev':>12} {'store writes':>13}")
    for name, (events, _) in streams.items():
        f = figures[name, "feature"]
        v = figures[name, "validate"]
        b = figures[name, "book"]
        med = statistics.median(f)
        books = f"{statistics.median(b):>12.1f}" if b else f"{'-':>12}"
        print(f"{name:<11} {len(events):>9,} {med:>14.1f} {min(f):>6.0f}-{max(f):<6.0f} {1e3 / med:>7.2f} "
              f"{statistics.median(v):>15.1f} {med / statistics.median(v):>16.1f}x {books} {writes[name]:>13,}")


if __name__ == "__main__":
    main()
