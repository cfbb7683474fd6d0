"""Realised volatility of the synthetic market per window of its clock, per regime: fused (the synthetic clock
at the default 10,000 events/s) beside a live feed at max rate (stamped with wall time, events ``--wall-gap-ns``
apart, a batch of ``--batch`` per step sharing the step's time, as a feed stage at max rate stamps them).

    python -m bench.synthetic_volatility [--seeds 1 2 3] [--events N] [--live-events N] [--wall-gap-ns 1000]
                                         [--window-ms 1000] [--json]

Per symbol, the fundamental mid (before the venues' offsets) is sampled at the last event of each window of the
events' own clock (origin_ts); a window whose events all share one true regime gives one log return, and each
regime's figure is the root mean square of its returns in bps (no mean removed: a trend's drift counts), averaged
over symbols; ``all`` takes every window. At max rate a regime lasts ~1/100 of its synthetic 30 s in wall
time, so 100 ms windows (``--window-ms 100``) keep enough of them pure. Printed, never asserted.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from numba import njit

from pipeline import graph
from pipeline.config import Config
from stages import feed, records
from stages.feed import I_EMITTED, Y_MID, Y_REGIME

REGIMES = ("trending", "range-bound", "volatile")


@njit(cache=True)
def _trace(state, params, n_events, batch, wall_gap_ns, ts, symbol, mid, regime):
    """The feed's events one by one, as ``feed.step`` emits them unpaced; ``wall_gap_ns`` > 0 stamps them with
    a wall clock that moves ``batch * wall_gap_ns`` per step."""
    ints, sym = state[0], state[2]
    out = np.zeros(1, records.MARKET_EVENT)
    stats = np.zeros(16, np.int64)
    now = 1_000_000_000
    for i in range(n_events):
        if wall_gap_ns > 0 and i % batch == 0:
            now += batch * wall_gap_ns
        ints[I_EMITTED] += 1
        feed._emit_one(state, params, out[0], ints[I_EMITTED], now, stats)
        s = out[0]["symbol"]
        ts[i], symbol[i], mid[i], regime[i] = out[0]["origin_ts"], s, sym[s, Y_MID], sym[s, Y_REGIME]


def per_window(seed: int, n_events: int, wall_gap_ns: int, batch: int, window_ns: int) -> dict:
    config = Config().with_overrides(feed={"seed": seed})
    live = wall_gap_ns > 0
    arguments = graph.kernel_arguments("feed", config, live=live)
    if live:
        arguments["rate_eps"] = 0.0  # max rate: unpaced, stamped with the (emulated) wall clock
    params = feed.make_params(**arguments)
    state = feed.make_state(seed, graph._synthetic_symbols(config))
    ts = np.zeros(n_events, np.int64)
    symbol = np.zeros(n_events, np.int64)
    mid = np.zeros(n_events)
    regime = np.zeros(n_events)
    _trace(state, params, n_events, batch, wall_gap_ns, ts, symbol, mid, regime)
    returns = {name: [] for name in REGIMES + ("all",)}
    seconds = 0.0
    for s in range(len(config.feed.symbols)):
        mine = symbol == s
        t, m, g = ts[mine], mid[mine], regime[mine]
        window = (t - t[0]) // window_ns
        last = np.r_[np.nonzero(np.diff(window))[0], len(t) - 1]  # last event of each window
        ret = np.diff(np.log(m[last])) * 1e4
        first = np.r_[0, last[:-1] + 1]  # the windows' events span first..last
        pure = np.array([g[a:b + 1].min() == g[a:b + 1].max() for a, b in zip(first[1:], last[1:])], bool)
        seconds = max(seconds, (t[-1] - t[0]) / 1e9)
        returns["all"].append(ret)
        for code, name in enumerate(REGIMES):
            returns[name].append(ret[pure & (g[last[1:]] == code)])
    figures = {name: float(np.sqrt(np.mean(np.concatenate(r) ** 2))) if sum(map(len, r)) else float("nan")
               for name, r in returns.items()}
    figures["seconds"] = seconds
    figures["n"] = {name: int(sum(map(len, r))) for name, r in returns.items()}
    return figures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--events", type=int, default=6_000_000, help="fused (600 s of market at 10,000 events/s)")
    ap.add_argument("--live-events", type=int, default=10_000_000, help="max-rate live (10 s at 1 M/s)")
    ap.add_argument("--window-ms", type=float, default=1000.0)
    ap.add_argument("--wall-gap-ns", type=int, default=1000, help="max-rate live: wall ns per event (1000 = 1 M/s)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = {}
    window_ns = int(args.window_ms * 1e6)
    for mode, gap, n in (("fused", 0, args.events), ("live_max_rate", args.wall_gap_ns, args.live_events)):
        result[mode] = {seed: per_window(seed, n, gap, args.batch, window_ns) for seed in args.seeds}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for mode, by_seed in result.items():
        print(f"{mode}: bps per {args.window_ms:g} ms of its clock (rms), seeds {args.seeds}")
        for seed, f in by_seed.items():
            print(f"  seed {seed} ({f['seconds']:.1f} s): " + ", ".join(f"{k} {f[k]:.1f}" for k in REGIMES + ("all",)))
        print("  mean: " + ", ".join(f"{k} {np.mean([f[k] for f in by_seed.values()]):.1f}" for k in REGIMES + ("all",)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
