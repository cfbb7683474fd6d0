"""The simulation of Avellaneda & Stoikov (2008) with the project's own quoting function, beside the paper's tables.

    python -m tools.as2008 [--paths 1000] [--seed 2008] [--gammas 0.1,0.01,0.5,1] [--json]

The paper's procedure (preprint section 3.3, "Numerical simulations"): s = 100, T = 1, sigma = 2, dt = 0.005
(200 steps), q = 0, A = 140, k = 1.5. At each step the quotes are computed from the state; then with
probability lambda(delta^a) dt = A exp(-k delta^a) dt the agent sells one unit at its ask, with probability
lambda(delta^b) dt it buys one at its bid (both may happen in one step; a probability above 1 is 1), and the
mid moves by +sigma sqrt(dt) or -sigma sqrt(dt) with probability 1/2 each. Profit is cash + q_T * s_T.

- "inventory" strategy: ``stages.strategies.avellaneda_stoikov.finite_horizon_quotes`` with the agent's q
  (the function the market-making kernel calls);
- "symmetric" strategy: the same call with q = 0, i.e. the same total spread centred on the mid.

Both strategies see the same mid path and the same fill draws (common random numbers); each gamma draws its
own from one ``numpy.random.default_rng(seed)`` stream, so a run is deterministic for its seed. Standard
deviations are sample ones (ddof = 1).

The paper's figures (``PAPER``) are its Tables 1-3 (1000 simulations each, gamma = 0.1, 0.01, 0.5), read from a
transcription of the preprint (math.nyu.edu/~avellane/HighFrequencyTrading.pdf) in the search tool's code
corpus; a replication repository there (QuantCodeAutomata/qca-primary-monte-carlo-replication-of-avellaneda-stoi)
confirms the gammas and the printed spreads. The paper has no gamma = 1 case (the issue asked for one: its row
has no paper figures). The tables' "Spread" column is (2/gamma) ln(1 + gamma/k) alone (1.29, 1.33, 1.15), not
the average of the full spread the paper's own formula (3.18) quotes; ``spread`` here is the average quoted
ask - bid, which includes gamma sigma^2 (T - t).

What reproduces (tests/tools/test_as2008.py): at gamma = 0.1 and 0.01 the inventory stds and, within Monte-Carlo
error plus 1.5, the profit means of both strategies; ours run 0.9-2 above the paper's (as the public replications found
in the search corpora does). Judging each step's fills against the mid after its move instead of before (an
O(dt) ordering the text does not pin down) lowers them by 1.2-1.5. At gamma = 0.5 only the inventory
strategy's final-q std (1.97 vs 1.88) and the ordering of the two strategies reproduce: the paper's profits
(33.92 and 66.20) are neither those of formula (3.18) (about 48.5 and 58) nor of a constant 1.15 spread (about 24
and 68; its symmetric row matches that one).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
from numba import njit

from stages.strategies.avellaneda_stoikov import finite_horizon_quotes

S0 = 100.0
T = 1.0
SIGMA = 2.0
DT = 0.005
A = 140.0
K = 1.5
DEFAULT_GAMMAS = (0.1, 0.01, 0.5, 1.0)
DEFAULT_PATHS = 1000
DEFAULT_SEED = 2008
STRATEGIES = ("inventory", "symmetric")
FIELDS = ("spread", "profit_mean", "profit_std", "q_mean", "q_std")

# Tables 1-3: spread (the (2/gamma) ln(1 + gamma/k) term), profit mean, profit std, final q mean, final q std.
PAPER = {
    0.1: {"inventory": (1.29, 62.94, 5.89, 0.10, 2.80), "symmetric": (1.29, 67.21, 13.43, -0.018, 8.66)},
    0.01: {"inventory": (1.33, 66.78, 8.76, -0.02, 4.70), "symmetric": (1.33, 67.36, 13.40, -0.31, 8.65)},
    0.5: {"inventory": (1.15, 33.92, 4.72, -0.02, 1.88), "symmetric": (1.15, 66.20, 14.53, 0.25, 9.06)},
}


@njit(cache=True)
def simulate(gamma, use_inventory, s0, horizon, sigma, dt, a, k, up, u_bid, u_ask, profit, final_q, spread):
    """One strategy over every path: ``up``/``u_bid``/``u_ask`` (paths x steps) are the mid-move and fill draws;
    fills ``profit``, ``final_q`` and ``spread`` (each path's mean quoted ask - bid)."""
    n_paths, n_steps = up.shape
    move = sigma * math.sqrt(dt)
    for p in range(n_paths):
        s = s0
        q = 0.0
        cash = 0.0
        quoted = 0.0
        for i in range(n_steps):
            tau = horizon - i * dt
            bid, ask, ok = finite_horizon_quotes(s, q if use_inventory else 0.0, gamma, sigma, tau, k)
            quoted += ask - bid
            if u_bid[p, i] < min(1.0, a * math.exp(-k * (s - bid)) * dt):
                q += 1.0
                cash -= bid
            if u_ask[p, i] < min(1.0, a * math.exp(-k * (ask - s)) * dt):
                q -= 1.0
                cash += ask
            s += move if up[p, i] else -move
        profit[p] = cash + q * s
        final_q[p] = q
        spread[p] = quoted / n_steps


def run(paths: int = DEFAULT_PATHS, seed: int = DEFAULT_SEED, gammas=DEFAULT_GAMMAS) -> dict:
    """{gamma: {strategy: {field: value}}} for the run, deterministic for (paths, seed, gammas)."""
    if paths < 2:
        raise ValueError(f"--paths={paths}: need at least 2 paths for a standard deviation")
    steps = int(round(T / DT))
    rng = np.random.default_rng(seed)
    out = {}
    for gamma in gammas:
        if not (gamma >= 0.0 and math.isfinite(gamma)):
            raise ValueError(f"--gammas: gamma={gamma} must be a finite number >= 0")
        up = rng.random((paths, steps)) < 0.5
        u_bid = rng.random((paths, steps))
        u_ask = rng.random((paths, steps))
        out[gamma] = {}
        for name in STRATEGIES:
            profit, final_q, spread = np.empty(paths), np.empty(paths), np.empty(paths)
            simulate(gamma, name == "inventory", S0, T, SIGMA, DT, A, K, up, u_bid, u_ask, profit, final_q, spread)
            out[gamma][name] = {"spread": float(spread.mean()), "profit_mean": float(profit.mean()),
                                "profit_std": float(profit.std(ddof=1)), "q_mean": float(final_q.mean()),
                                "q_std": float(final_q.std(ddof=1))}
    return out


def to_json(results: dict, paths: int, seed: int) -> str:
    doc = {"paper": "Avellaneda & Stoikov (2008), Tables 1-3",
           "params": {"s0": S0, "T": T, "sigma": SIGMA, "dt": DT, "A": A, "k": K, "paths": paths, "seed": seed},
           "results": {repr(g): {name: {"ours": row, "paper": (dict(zip(FIELDS, PAPER[g][name])) if g in PAPER
                                                               else None)}
                                 for name, row in by_strategy.items()}
                       for g, by_strategy in results.items()}}
    return json.dumps(doc, indent=2, sort_keys=True)


def table(results: dict, paths: int, seed: int) -> str:
    lines = [f"Avellaneda & Stoikov (2008) section 3.3: s0={S0:g} T={T:g} sigma={SIGMA:g} dt={DT:g} A={A:g} k={K:g}; "
             f"{paths} paths, seed {seed} (paper: 1000 simulations)",
             f"{'gamma':>6} {'strategy':<10} {'':<5} {'spread':>7} {'profit':>8} {'std':>7} {'final q':>8} {'std':>6}"]
    for g, by_strategy in results.items():
        for name, row in by_strategy.items():
            lines.append(f"{g:>6g} {name:<10} {'ours':<5} " + " ".join(
                f"{row[f]:>{w}.{d}f}" for f, w, d in zip(FIELDS, (7, 8, 7, 8, 6), (2, 2, 2, 3, 2))))
            if g in PAPER:
                lines.append(f"{'':>6} {'':<10} {'paper':<5} " + " ".join(
                    f"{v:>{w}.{d}f}" for v, w, d in zip(PAPER[g][name], (7, 8, 7, 8, 6), (2, 2, 2, 3, 2))))
    lines.append("spread: ours = mean quoted ask - bid (with gamma sigma^2 (T - t)); paper = (2/gamma) ln(1 + gamma/k)")
    return "\n".join(lines)


def _gammas(text: str) -> tuple:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gammas={text!r}: a comma-separated list of numbers, e.g. 0.1,0.01,0.5")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.as2008", description=__doc__.split("\n\n")[0])
    ap.add_argument("--paths", type=int, default=DEFAULT_PATHS, help="paths per gamma and strategy (default 1000)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of numpy's default_rng (default 2008)")
    ap.add_argument("--gammas", type=_gammas, default=DEFAULT_GAMMAS, help="comma-separated (default 0.1,0.01,0.5,1)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON keyed by gamma and strategy")
    args = ap.parse_args(argv)
    try:
        results = run(args.paths, args.seed, args.gammas)
    except ValueError as e:
        print(f"as2008: {e}", file=sys.stderr)
        return 2
    print(to_json(results, args.paths, args.seed) if args.json else table(results, args.paths, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
