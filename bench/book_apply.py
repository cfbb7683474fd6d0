"""Order-book apply cost: ns per applied delta on the real Binance captures, median of 3 rounds.

Each capture is parsed once (``pipeline.sources``); its EV_BOOK_DELTA records (snapshot runs included) go
through ``stages.book.apply_batch`` into fresh books (1,024 levels per side), one njit call per round,
so the figure is the kernel's own cost per delta with no Python dispatch. A second figure replays the
whole stream (bookTicker checks, trades ignored) per record. Rounds interleave the captures
(A B C D, A B C D, ...); the process is pinned to one CPU and every kernel is compiled before timing.
Run from the repository root: ``python -m bench.book_apply``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from pipeline.sources import SymbolTable, parse_binance_ws
from stages import book
from stages.records import EV_BOOK_DELTA

WS = Path(__file__).resolve().parents[1] / "tests" / "data" / "binance-ws-capture"
TABLE = SymbolTable(venues=["binance", ("binance-usdm", "binance-futures"), "binance-coinm"],
                    symbols=["BTC-USDT", "ETH-USDT", "BTCUSD_PERP"])
CAPTURES = (("spot_ethusdt_20240808.gz", "binance"), ("spot_btcusdt_20240808.gz", "binance"),
            ("usdm_btcusdt_20240808.gz", "binance-usdm"), ("cm_btcusd_perp_20240808.gz", "binance-coinm"))


def _run_ns(records: np.ndarray, max_levels: int) -> tuple[int, np.ndarray, book.Books]:
    books = book.make_books(max_levels=max_levels)
    counts = np.zeros(book.N_STATUS, np.int64)
    t0 = time.perf_counter_ns()
    book.apply_batch(books, records, len(records), counts)
    return time.perf_counter_ns() - t0, counts, books


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--levels", type=int, default=book.MAX_LEVELS, help="ladder capacity per side")
    args = ap.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    streams = {}
    for name, venue in CAPTURES:
        records = parse_binance_ws(WS / name, TABLE, venue).records
        streams[name] = (records[records["kind"] == EV_BOOK_DELTA].copy(), records)
    _run_ns(streams[CAPTURES[0][0]][0][:1000], args.levels)  # compile (or load the cache) before timing

    per_delta = {name: [] for name in streams}
    per_record = {name: [] for name in streams}
    for _ in range(args.rounds):
        for name, (deltas, records) in streams.items():
            ns, counts, _ = _run_ns(deltas, args.levels)
            per_delta[name].append(ns / (len(deltas) - counts[book.IGNORED]))
            ns, _, _ = _run_ns(records, args.levels)
            per_record[name].append(ns / len(records))

    print(f"levels per side: {args.levels}; rounds: {args.rounds}; pinned to CPU {min(os.sched_getaffinity(0))}")
    print(f"{'capture':<28} {'deltas':>9} {'ns/delta':>9} {'(min-max)':>12} {'records':>9} {'ns/record':>10} "
          f"{'overflow':>9} {'crossed':>8} {'bbo ok':>7}")
    for name, (deltas, records) in streams.items():
        _, _, books = _run_ns(records, args.levels)
        key = book.key_of(records["venue"][0], records["symbol"][0], books.state.shape[0])
        c = book.counters(books, key)
        d = per_delta[name]
        print(f"{name:<28} {len(deltas):>9,} {statistics.median(d):>9.1f} {min(d):>5.0f}-{max(d):<6.0f} "
              f"{len(records):>9,} {statistics.median(per_record[name]):>10.1f} {c['overflow']:>9,} "
              f"{c['crossed']:>8,} {c['bbo_matched']:>7,}")


if __name__ == "__main__":
    main()
