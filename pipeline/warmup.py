"""Compile every njit entry point once, in the supervisor, before any stage process starts.

Numba caches machine code on disk (``cache=True``); children then load it instead of compiling in
parallel on shared cores (PITFALLS 4). The calls use local arrays of exactly the types the stages use.
"""
from __future__ import annotations

import numpy as np

from pipeline import duty_cycle, graph
from pipeline.config import Config
from shm import control as cb
from shm import idle as idle_strategies
from shm import ring
from shm.syscalls import new_timespec


def compile_all(config: Config) -> None:
    specs = graph.rings(config)
    block = cb.ControlBlock.local()
    timespec = new_timespec()
    idle_params = idle_strategies.make_params(idle_strategies.YIELDING)
    for spec in graph.STAGES:
        def local(name):
            return ring.local_ring(specs[name].dtype, 2) if name else ring.local_ring(spec.out_dtype, 2)
        in_a, in_b = local(spec.in_a), local(spec.in_b)
        outs = tuple(local(name) for name in spec.outs)
        sems = np.zeros(len(outs), np.int64)
        slot = block.stages[spec.index]
        if spec.name == "inference":
            from stages import inference
            duty_cycle.wait_for_input(in_a, slot, idle_params, idle_strategies.make_state(), 0, timespec)
            ring.read(in_a[0], in_a[1], in_a[2], np.zeros(1, in_a[2].dtype), 0)
            ring.readable(in_a[0], in_a[1])
            out = np.zeros(1, spec.out_dtype)
            duty_cycle.account(slot, 0, 0, out, 0, timespec)
            duty_cycle.publish(outs, sems, out, 0, slot, idle_params, timespec)
            inference.prepare(in_a[2], 0, np.zeros((1, 8), np.float32))
            inference.finish(in_a[2], 0, np.zeros(1, np.float32), out, 0)
            continue
        _, params, state = graph.kernel(spec.name, config, live=True)
        duty_cycle.run(spec.index, in_a, in_b, outs, sems, ring.local_ring(spec.out_dtype, 2), False, np.zeros(1, in_a[2].dtype), np.zeros(1, in_b[2].dtype),
                       np.zeros(1, spec.out_dtype), state, params, block.globals, slot, idle_params,
                       idle_strategies.make_state(), 1, False, False, False, 1, timespec)
    cb.disable_trading(block.globals, 0, 0, 0)
