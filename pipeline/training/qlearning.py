"""``bot4 train-q``'s work: a sizing policy (a qvalue member, pipeline.hosting.models.Sizer) learned by fitted
Q-iteration with the backtester's fused mode as its environment.

Transitions: fused mode runs a synthetic seed with the signal strategy and a behaviour policy in the sizer's place
(``Behaviour``: per decision a seeded random action with probability epsilon, else the greedy action of the current
Q, or always random without one). Every decision (one per feature vector: risk emits one per vector, in order) is a
state (its 28 features), the action taken (an index into the action table ``size_scales``) and a reward: the change
of the instrument's marked-to-market net PnL (fills at their price, fees paid, the position marked at the decision's
mid) from this decision to the instrument's next one; its next state is that decision's features (the last decision
of an instrument is terminal, marked at the market's end). Summed over an instrument's decisions the rewards are its
whole net PnL, the figure the policy is judged by.

Fit: Q_0(s, a) = r; Q_{k+1}(s, a) = r + gamma * max_a' Q_k(s', a'), one LightGBM regressor per action (rows where
that action was taken), deterministic and single-threaded. The price levels (mid, microprice) are zeroed as the
gbt member does (a raw price names the instrument, not its prospects; a constant column is never split on, so the
graph needs no zeroing). Export: the per-action tree ensembles (onnxmltools) side by side in one graph, their
[N, 1] outputs concatenated into ``q`` [N, A]; checked against LightGBM's own numbers.

Judgement is by backtest, through the normal run path (``inference.sizer``): net PnL after fees and Sharpe with the
sizer against the same seed with size_scale 1 (the rule it replaces).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from pipeline.training.members.gbt import ML_OPSET, OPSET, _inputs, float32_thresholds
from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH, N_FEATURES, ORD_FILLED, ORD_PARTIAL
from stages.universe import MAX_SYMBOLS

DEFAULT_ACTIONS = (0.0, 0.5, 1.0)
EXPORT_TOLERANCE = 1e-5  # relative to the largest |q|: float32 thresholds and sums against LightGBM's float64


@dataclass(frozen=True)
class Settings:
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    events: int = 4000                   # synthetic market events per seed and pass
    actions: tuple[float, ...] = DEFAULT_ACTIONS
    gamma: float = 0.5
    iterations: int = 3                  # Q-iterations after Q_0
    passes: int = 2                      # data passes: the first random, each next epsilon-greedy around the last Q
    epsilon: float = 0.3
    seed: int = 1
    num_leaves: int = 7
    rounds: int = 60
    learning_rate: float = 0.05
    min_leaf_fraction: float = 0.02      # of the action's rows
    overrides: dict = field(default_factory=dict)  # config overrides of every run (the strategy's kind: signal)


@dataclass
class Transitions:
    x: np.ndarray          # float32 [n, N_FEATURES]
    action: np.ndarray     # int64 [n]
    reward: np.ndarray     # float64 [n], USD
    next_row: np.ndarray   # int64 [n]: the row of the instrument's next decision, -1 when terminal
    net_pnl: float         # the run's net PnL (the rewards' sum)

    def __len__(self) -> int:
        return len(self.reward)

    @staticmethod
    def joined(parts: list[Transitions]) -> Transitions:
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        return Transitions(np.concatenate([p.x for p in parts]), np.concatenate([p.action for p in parts]),
                           np.concatenate([p.reward for p in parts]),
                           np.concatenate([np.where(p.next_row >= 0, p.next_row + o, -1)
                                           for p, o in zip(parts, offsets)]),
                           float(sum(p.net_pnl for p in parts)))


class Behaviour:
    """Training's sizer in fused mode (pipeline.hosting.models.Models.sizer): each decision's action is a seeded
    random one with probability ``epsilon`` (always without ``greedy``), else ``greedy``'s argmax; it keeps what it
    saw and chose, in order. Deterministic for a seed: fused mode calls it with the same batches every time."""

    def __init__(self, scales: np.ndarray, seed: int, epsilon: float = 1.0, greedy=None):
        from pipeline.hosting.models import MemberStats
        self.scales, self.epsilon, self.greedy = np.asarray(scales, np.float64), epsilon, greedy
        self.rng = np.random.default_rng(seed)
        self.stats = MemberStats()
        self.keys, self.ts, self.mids, self.xs, self.actions = [], [], [], [], []

    def choose(self, decisions: np.ndarray, x: np.ndarray, n: int, out: np.ndarray) -> None:
        action = self.rng.integers(0, len(self.scales), n)
        if self.greedy is not None:
            explore = self.rng.random(n) < self.epsilon
            action = np.where(explore, action, np.argmax(self.greedy.q(x[:n]), axis=1))
        self.scales.take(action, out=out[:n])
        d = decisions[:n]
        self.keys.append(d["venue"].astype(np.int64) * MAX_SYMBOLS + d["symbol"])
        self.ts.append(d["origin_ts"].copy())
        bid, ask = d["bid"], d["ask"]
        self.mids.append(np.where((bid > 0) & (ask > bid), 0.5 * (bid + ask), np.nan))
        self.xs.append(x[:n].copy())
        self.actions.append(action.astype(np.int64))


def transitions(behaviour: Behaviour, reports: np.ndarray) -> Transitions:
    """The behaviour's decisions as transitions, rewarded by the fills in ``reports`` (module docstring)."""
    keys, ts = np.concatenate(behaviour.keys), np.concatenate(behaviour.ts)
    mids, x, action = np.concatenate(behaviour.mids), np.concatenate(behaviour.xs), np.concatenate(behaviour.actions)
    filled = (reports["state"] == ORD_FILLED) | (reports["state"] == ORD_PARTIAL)
    fills = reports[filled & (reports["liquidity"] != 0)]
    fill_keys = fills["venue"].astype(np.int64) * MAX_SYMBOLS + fills["symbol"]
    reward = np.zeros(len(keys))
    next_row = np.full(len(keys), -1, np.int64)
    keep = np.zeros(len(keys), bool)
    net = 0.0
    for k in np.unique(keys):
        rows = np.flatnonzero(keys == k)  # in decision order, which is event-time order
        mid = _forward_filled(mids[rows])
        valid = np.isfinite(mid)
        rows, mid = rows[valid], mid[valid]
        if rows.size == 0:
            continue
        f = fills[fill_keys == k]
        order = np.argsort(f["stage_ts"], kind="stable")
        f = f[order]
        signed = f["side"].astype(np.float64) * f["qty"]
        position = np.concatenate([[0.0], np.cumsum(signed)])
        cash = np.concatenate([[0.0], np.cumsum(-signed * f["price"] - f["fee"])])
        at = np.searchsorted(f["stage_ts"], ts[rows], side="right")  # fills up to each decision
        marked = cash[at] + position[at] * mid
        end = cash[-1] + position[-1] * mid[-1]
        reward[rows[:-1]] = np.diff(marked)
        reward[rows[-1]] = end - marked[-1]
        net += end
        next_row[rows[:-1]] = rows[1:]
        keep[rows] = True
    # Rows without a market yet are dropped; the kept rows' next rows are renumbered.
    renumber = np.cumsum(keep) - 1
    nxt = next_row[keep]
    return Transitions(x[keep], action[keep], reward[keep], np.where(nxt >= 0, renumber[np.maximum(nxt, 0)], -1),
                       float(net))


def _forward_filled(values: np.ndarray) -> np.ndarray:
    idx = np.where(np.isfinite(values), np.arange(len(values)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = values[idx]
    return out


def collect(config, seed: int, settings: Settings, behaviour: Behaviour) -> Transitions:
    """One fused run of synthetic ``seed`` with ``behaviour`` sizing the orders."""
    from pipeline.hosting.fused import run_fused

    seeded = config.with_overrides(feed={"seed": seed})
    result = run_fused(seeded, settings.events, sizer=behaviour)
    if behaviour.stats.failures:  # the host sized those batches by the rule: the log would not match the orders
        raise RuntimeError(f"behaviour policy failed in seed {seed}: {behaviour.stats.last_error}")
    return transitions(behaviour, result.reports)


@dataclass
class QFit:
    boosters: list            # one LightGBM booster per action
    table: list[dict]         # per iteration: targets' mean, rows per action

    def q(self, x: np.ndarray) -> np.ndarray:
        xi = _inputs(x)
        return np.stack([b.predict(xi) for b in self.boosters], axis=1)


def fit_q(data: Transitions, settings: Settings) -> QFit:
    """Fitted Q-iteration (module docstring) over ``data``."""
    import lightgbm as lgb

    n_actions = len(settings.actions)
    xi = _inputs(data.x)
    terminal = data.next_row < 0
    target = data.reward.copy()
    boosters, table = [], []
    for k in range(settings.iterations + 1):
        boosters = []
        for a in range(n_actions):
            rows = np.flatnonzero(data.action == a)
            if rows.size < 20:
                raise ValueError(f"action {a} (size_scale {settings.actions[a]}) was taken {rows.size} times; "
                                 "give more events or seeds")
            params = {"objective": "regression", "learning_rate": settings.learning_rate,
                      "num_leaves": settings.num_leaves,
                      "min_data_in_leaf": max(20, int(settings.min_leaf_fraction * rows.size)),
                      "feature_fraction": 0.8, "feature_fraction_seed": settings.seed, "bagging_fraction": 0.8,
                      "bagging_freq": 1, "bagging_seed": settings.seed, "seed": settings.seed, "num_threads": 1,
                      "deterministic": True, "force_row_wise": True, "verbose": -1}
            booster = lgb.train(params, lgb.Dataset(xi[rows], target[rows]), settings.rounds)
            boosters.append(lgb.Booster(model_str=float32_thresholds(booster.model_to_string())))
        fitted = QFit(boosters, table)
        table.append({"iteration": k, "target_mean": float(target.mean()), "target_std": float(target.std()),
                      "rows_per_action": [int((data.action == a).sum()) for a in range(n_actions)]})
        if k == settings.iterations:
            break
        following = fitted.q(data.x[np.maximum(data.next_row, 0)]).max(axis=1)
        target = data.reward + settings.gamma * np.where(terminal, 0.0, following)
    return QFit(boosters, table)


def to_onnx(fit: QFit, name: str, props: dict[str, str]) -> bytes:
    """``features`` float32 [N, 28] -> ``q`` float32 [N, A]: each action's tree ensemble, outputs concatenated."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    nodes, inits, outs, opsets = [], [], [], {}
    for a, booster in enumerate(fit.boosters):
        part = onnxmltools.convert_lightgbm(booster, name=f"{name}_a{a}", initial_types=[(
            "features", FloatTensorType([None, N_FEATURES]))], target_opset=OPSET)
        for imp in part.opset_import:
            opsets[imp.domain] = max(opsets.get(imp.domain, 0), imp.version)
        renamed = {o: f"a{a}_{o}" for node in part.graph.node for o in node.output}
        for node in part.graph.node:
            node.name = f"a{a}_{node.name}"
            node.input[:] = [renamed.get(i, i if i == "features" else f"a{a}_{i}") for i in node.input]
            node.output[:] = [renamed[o] for o in node.output]
            nodes.append(node)
        for init in part.graph.initializer:
            init.name = f"a{a}_{init.name}"
            inits.append(init)
        outs.append(renamed[part.graph.output[0].name])
    nodes.append(helper.make_node("Concat", outs, ["q"], axis=1, name="q_columns"))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                                          ["N", N_FEATURES])],
                              [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["N", len(fit.boosters)])],
                              inits)
    opsets.setdefault("ai.onnx.ml", ML_OPSET)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())])
    model.ir_version = 8
    model.doc_string = "Q(state, action) of each size_scale action, USD of net PnL; inputs in FEATURE_NAMES order"
    model.producer_name, model.producer_version = "bot4.pipeline.training.qlearning", "1"
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(deterministic=True)


def check_export(onnx_bytes: bytes, fit: QFit, x: np.ndarray) -> float:
    """The graph's q on ``x`` against LightGBM's; refused beyond EXPORT_TOLERANCE of the largest |q|. Returns the
    largest difference."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    got = session.run(["q"], {"features": np.ascontiguousarray(x, np.float32)})[0].astype(np.float64)
    want = fit.q(x)
    err = float(np.max(np.abs(got - want))) if x.size else 0.0
    if not err <= EXPORT_TOLERANCE * max(1.0, float(np.max(np.abs(want))) if x.size else 1.0):
        raise RuntimeError(f"qnet: the ONNX graph differs from LightGBM by max_abs={err:.3g}")
    if x.size and not np.array_equal(np.argmax(got, axis=1), np.argmax(want, axis=1)):
        raise RuntimeError("qnet: the ONNX graph's argmax differs from LightGBM's on some rows")
    return err


class Greedy:
    """A QFit as ``Behaviour``'s greedy policy (LightGBM's numbers, before export)."""

    def __init__(self, fit: QFit):
        self.fit = fit

    def q(self, x: np.ndarray) -> np.ndarray:
        return self.fit.q(x)


@dataclass
class Trained:
    fit: QFit
    onnx_bytes: bytes
    export_error: float
    passes: list[dict]
    rows: int


def train(config, settings: Settings, log=print) -> Trained:
    """Passes over the training seeds (the first with random actions, each next epsilon-greedy around the last
    fit), every pass's transitions kept; the last fit exported and checked."""
    scales = np.asarray(settings.actions, np.float64)
    parts, passes, fit = [], [], None
    for p in range(settings.passes):
        got = []
        for seed in settings.seeds:
            behaviour = Behaviour(scales, settings.seed * 1_000_003 + p * 1_009 + seed,
                                  1.0 if fit is None else settings.epsilon, None if fit is None else Greedy(fit))
            got.append(collect(config, seed, settings, behaviour))
        parts += got
        data = Transitions.joined(parts)
        fit = fit_q(data, settings)
        passes.append({"pass": p, "epsilon": 1.0 if p == 0 else settings.epsilon, "rows": len(data),
                       "behaviour_net_pnl": [round(t.net_pnl, 2) for t in got], "iterations": fit.table})
        log(f"pass {p}: {len(data):,} transitions, behaviour net PnL per seed "
            f"{', '.join(f'{t.net_pnl:,.2f}' for t in got)}")
    props = {"feature_schema_hash": str(FEATURE_SCHEMA_HASH), "feature_names": ",".join(FEATURE_NAMES),
             "size_scales": ",".join(repr(float(s)) for s in settings.actions)}
    onnx_bytes = to_onnx(fit, "qnet", props)
    data = Transitions.joined(parts)
    check_rows = np.random.default_rng(settings.seed).choice(len(data), min(len(data), 20_000), replace=False)
    err = check_export(onnx_bytes, fit, data.x[np.sort(check_rows)])
    return Trained(fit, onnx_bytes, err, passes, len(data))


def backtest_figures(config, seed: int, events: int, sizer: str, out: str) -> dict:
    """``bot4 backtest``'s run of ``seed`` with ``sizer`` ("" = none: size_scale 1) into ``out``: net PnL, Sharpe,
    fills, fees."""
    from pipeline.backtest.run import run

    seeded = config.with_overrides(feed={"seed": seed}, inference={"sizer": sizer})
    summary = run(seeded, out, events).report.summary
    return {"seed": seed, "net_pnl": float(summary["pnl"]["net"]), "sharpe": summary["risk_adjusted"]["sharpe"],
            "fills": int(summary["trading"]["fills"]), "fees": float(summary["pnl"]["fees_paid"])}


def judge(config, seeds, events: int, sizer: str, out_dir: str) -> dict:
    """Each seed backtested with the sizer and with the rule (size_scale 1); per seed figures and the spread of
    the difference in net PnL across seeds."""
    import os

    rows = []
    for seed in seeds:
        rule = backtest_figures(config, seed, events, "", os.path.join(out_dir, f"seed{seed}-rule"))
        sized = backtest_figures(config, seed, events, sizer, os.path.join(out_dir, f"seed{seed}-qnet"))
        rows.append({"seed": seed, "rule": rule, "qnet": sized, "net_pnl_gain": sized["net_pnl"] - rule["net_pnl"]})
    gains = np.array([r["net_pnl_gain"] for r in rows])
    return {"seeds": list(seeds), "events": events, "per_seed": rows,
            "net_pnl_gain_mean": float(gains.mean()),
            "net_pnl_gain_se": float(gains.std(ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else float("nan"),
            "seeds_won": int((gains > 0).sum()), "seeds_lost": int((gains < 0).sum())}
