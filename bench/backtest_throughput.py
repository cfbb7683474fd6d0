"""Backtest throughput: events/s of fused mode (the backtest's loop: seven kernels, the ONNX model once per batch,
the venue model) on the synthetic feed and on a Binance capture, next to hftbacktest 2.4.4 replaying the same
capture with the same fixed quoting strategy, in the same invocation.

    python -m bench.backtest_throughput [--rounds 3] [--events 1000000]

Each figure is the median of ``--rounds`` timed runs after one untimed warm run in the same process (numba's
compiled code loaded or compiled, ONNX session built, the capture parsed once outside the timing). The first
call's cost is printed separately: for ours a fresh process loading the cached kernels (``bot4 fused --events 1``
in a subprocess), for hftbacktest the first run in this process (its strategy loop cannot use numba's cache).
Events/s counts market events (ours: parsed records; hftbacktest: converted rows, which split each depth message
into one row per level, as ours does). No timing is asserted anywhere.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np

CAPTURE = "tests/data/binance-ws-capture/usdm_btcusdt_20240808.gz"


def _ours_config(strategy: str):
    from pipeline.config import Config
    strat = {"kind": strategy}
    if strategy == "fixed_quote":
        strat.update(fixed_interval_ms=100.0, fixed_distance_ticks=1.0, fixed_tick_by_symbol=["BTCUSDT=0.1"])
    return Config().with_overrides(
        feed={"source": "replay", "venues": ["binance"], "symbols": ["BTCUSDT"], "files": [f"binance={CAPTURE}"]},
        strategy=strat, venue={"entry_latency_ms": 5.0, "response_latency_ms": 5.0, "partial_fills": False})


def _timed(fn, rounds: int) -> tuple[float, list[float]]:
    fn()  # warm: compiled code loaded, sessions built
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=1_000_000, help="synthetic events per run")
    args = parser.parse_args(argv)
    from pipeline.backtest.data import load
    from pipeline.config import Config
    from pipeline.hosting.fused import run_fused

    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tools.cli", "fused", "--events", "1"], check=True, capture_output=True)
    first_ours = time.perf_counter() - t

    rows = []
    synthetic = Config().with_overrides(strategy={"kind": "signal"})  # the default allocates no strategy
    med, times = _timed(lambda: run_fused(synthetic, args.events, span_ns=5_000_000), args.rounds)
    rows.append(("ours, synthetic, signal strategy + ONNX", args.events, med, times))
    for strategy in ("signal", "fixed_quote"):
        config = _ours_config(strategy)
        m = load(config)
        events = m.events

        def ours(config=config, m=m, events=events):
            run_fused(config, market_source=iter([events]), offsets_ns=m.offsets_ns, horizon_ns=m.horizon_ns,
                      span_ns=5_000_000)
        med, times = _timed(ours, args.rounds)
        rows.append((f"ours, USD-M capture, {strategy}", len(events), med, times))

    from bench import hftbacktest_peer as peer
    converted = peer.convert_capture(CAPTURE)
    kwargs = dict(distance_ticks=1, queue="risk_averse", fill_mode="no_partial", entry_latency_ms=5.0,
                  response_latency_ms=5.0, clock_offset_ns=converted.local_offset_ns)
    t = time.perf_counter()
    peer.run_peer(converted, **kwargs)
    first_peer = time.perf_counter() - t
    runs = [peer.run_peer(converted, **kwargs).elapsed_s for _ in range(args.rounds)]
    rows.append(("hftbacktest 2.4.4, USD-M capture, fixed quoter", len(converted.data), statistics.median(runs), runs))

    print(f"{'run':<48} {'events':>10} {'median s':>9} {'events/s':>12}   rounds (s)")
    for name, n, med, times in rows:
        print(f"{name:<48} {n:>10,} {med:>9.3f} {n / med:>12,.0f}   {' '.join(f'{x:.3f}' for x in times)}")
    ours_fixed = next(r for r in rows if r[0].endswith("fixed_quote"))
    hbt = rows[-1]
    print(f"ratio ours / hftbacktest (fixed quoter, events/s): "
          f"{(ours_fixed[1] / ours_fixed[2]) / (hbt[1] / hbt[2]):.3f}")
    print(f"first call: ours {first_ours:.1f} s (a fresh process: load cached kernels, one event); "
          f"hftbacktest {first_peer:.1f} s (its first run in this process, compiling its strategy loop)")
    print(f"numpy {np.__version__}; medians of {args.rounds} rounds after a warm run")


if __name__ == "__main__":
    main()
