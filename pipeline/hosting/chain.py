"""A run of consecutive stages stepped in one process, batch by batch: the in-process host of fused mode, the
offline features build and training collection (and of tests that step stages themselves).

The wiring comes from the one chain description, ``pipeline.graph.STAGES``: a stage's primary input is the
output of the stage before it on the path, exactly the ring that connects them in a live run. Each stage
counts into its own slot of a process-private control block, as it would live.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline import graph, registry
from pipeline.plan import RunPlan
from shm import control as cb
from stages import records
from stages.feed import I_SIM_NS


class Chain:
    """``path``: stage names in pipeline order, each fed by the one before it (graph.STAGES says so or the
    chain is refused). ``also``: stages stepped by the caller with :meth:`step` outside the path (fused
    mode's execute). ``predict``: the inference stage's models (pipeline.hosting.models.Models.predict)."""

    def __init__(self, plan: RunPlan, path: tuple[str, ...], also: tuple[str, ...] = (),
                 predict: Callable[[np.ndarray, np.ndarray, int], tuple] | None = None):
        for before, after in zip(path, path[1:]):
            if graph.BY_NAME[after].in_a != f"{before}.{after}":
                raise ValueError(f"{after} is not fed by {before} in pipeline.graph.STAGES: no chain {path}")
        if "inference" in path and predict is None:
            raise ValueError("a chain through inference needs its model's predict")
        self.path, self.predict = path, predict
        self.batch = batch = plan.config.rings.batch
        self.block = cb.ControlBlock.local()
        self.block.globals[cb.G_TRADING_ENABLED] = 1
        names = path + also
        self.kernels = {n: graph.kernel(n, plan, live=False) for n in names if n != "inference"}
        self.out = {n: np.zeros(graph.out_capacity(n, batch), graph.BY_NAME[n].out_dtype) for n in names}
        self.n = dict.fromkeys(names, 0)            # records each stage put out in the last batch
        self.counts = {n: [0, 0] for n in names}     # in, out
        self._x = np.zeros((batch, records.N_FEATURES), np.float32)
        rings = graph.rings(plan.config)
        # An input a stage is not given is an empty batch of its ring's type (market events where it has none:
        # the type every in-process host has always passed, so the cached machine code serves them all).
        self._no_market = np.zeros(0, records.MARKET_EVENT)  # the feed's (absent) input
        self._empty_b = {n: np.zeros(0, rings[graph.BY_NAME[n].in_b].dtype if graph.BY_NAME[n].in_b in rings
                                     else records.MARKET_EVENT) for n in names}

    def stats(self, name: str) -> np.ndarray:
        return self.block.stages[registry.slot(name)][cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]

    def state(self, name: str):
        return self.kernels[name][2]

    def sim_ns(self) -> int:
        """The synthetic feed's clock (event time of its latest event)."""
        return int(self.kernels["feed"][2][0][I_SIM_NS])

    def step(self, name: str, in_a: np.ndarray, n_a: int, in_b: np.ndarray | None, n_b: int, now: int,
             out: np.ndarray | None = None) -> int:
        """One stage over one batch; its output goes to ``out`` (default: the stage's own buffer)."""
        out = self.out[name] if out is None else out
        if name == "inference":
            from stages import inference
            inference.prepare(in_a, n_a, self._x)
            n = inference.finish(in_a, n_a, *self.predict(in_a, self._x, n_a), out, now)
        else:
            step, params, state = self.kernels[name]
            if in_b is None:
                in_b = self._empty_b[name]
            n = step(in_a, n_a, in_b, n_b, state, params, self.block.globals, self.stats(name), out, now)
        self.counts[name][0] += n_a
        self.counts[name][1] += n
        self.n[name] = n
        return n

    def run(self, first: np.ndarray | None, n: int, now: int, feedback: dict | None = None,
            out: np.ndarray | None = None, sim_clock: bool = False) -> int:
        """One batch through the path: ``first[:n]`` is the first stage's input (None for the feed, which
        makes its own); ``feedback`` gives stages their secondary input (execution reports); the last stage
        writes into ``out`` when given. ``sim_clock``: stages after the feed see the feed's clock as now (fused
        mode) instead of ``now``. Returns the last stage's count; 0 from the feed ends the market."""
        feedback = feedback or {}
        in_a = first if first is not None else self._no_market
        for i, name in enumerate(self.path):
            in_b = feedback.get(name)
            last = i == len(self.path) - 1
            n = self.step(name, in_a, n, in_b, 0 if in_b is None else len(in_b), now, out if last else None)
            if name == "feed":
                if n == 0:
                    return 0
                if sim_clock:
                    now = self.sim_ns()
            in_a = self.out[name]
        return n

    def counters(self) -> dict[str, dict[str, int]]:
        """Per stage: in, out and the stage's own counters by label (pipeline.registry)."""
        return {name: {"in": c[0], "out": c[1],
                       **{label: int(v) for label, v in zip(registry.counters(name), self.stats(name))}}
                for name, c in self.counts.items()}
