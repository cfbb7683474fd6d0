"""Compile every njit entry point once, in the supervisor, before any stage process starts.

Numba caches machine code on disk (``cache=True``); children then load it instead of compiling in
parallel on shared cores (PITFALLS 4). The calls use local arrays of exactly the types the stages use.
"""
from __future__ import annotations

import numpy as np

from pipeline import duty_cycle, graph
from pipeline.config import Config, to_dict
from shm import control as cb
from shm import idle as idle_strategies
from shm import ring
from shm.syscalls import new_timespec
from stages import records


def compile_all(config: Config) -> None:
    """Compile (or load) everything; a cache that fails to load is removed and rebuilt in a clean process.

    numba's cache index is not safe against two processes compiling the same function at once (both
    append entry N+1): a corrupt entry then fails to unbox at call time. Warming here, alone, before any
    child starts avoids that in the pipeline; other tools sharing the cache can still collide.
    """
    try:
        _compile_all(config)
    except Exception as exc:  # a corrupt entry surfaces as a TypeError or a numba typing error
        import shutil
        import subprocess
        import sys

        import numba
        print(f"bot4: kernel cache at {numba.config.CACHE_DIR} failed to load ({type(exc).__name__}); rebuilding",
              file=sys.stderr)
        shutil.rmtree(numba.config.CACHE_DIR, ignore_errors=True)
        code = ("from pipeline.config import from_dict; from pipeline.warmup import _compile_all; "
                f"_compile_all(from_dict({to_dict(config)!r}))")
        subprocess.run([sys.executable, "-c", code], check=True)


def _compile_all(config: Config) -> None:
    specs = graph.rings(config)
    block = cb.ControlBlock.local()
    timespec = new_timespec()
    idle_params = idle_strategies.make_params(idle_strategies.YIELDING)
    for spec in graph.stages(config):
        def local(name):
            return ring.local_ring(specs[name].dtype, 2) if name else ring.local_ring(spec.out_dtype, 2)
        in_a, in_b = local(spec.in_a), local(spec.in_b)
        outs = tuple(local(name) for name in spec.outs)
        sems = np.zeros(len(outs), np.int64)
        slot = block.stages[spec.index]
        if spec.name == "feed":  # the replay host publishes from Python
            out = np.zeros(1, spec.out_dtype)
            duty_cycle.publish(outs, sems, out, 0, slot, idle_params, timespec)
            duty_cycle.tap_records(ring.local_ring(spec.out_dtype, 2), out, 0, slot)
            duty_cycle.account(slot, 0, 0, out, 0, timespec)
        if spec.name == "inference":
            from stages import inference
            duty_cycle.wait_for_input(in_a, slot, idle_params, idle_strategies.make_state(), 0, timespec)
            ring.read(in_a[0], in_a[1], in_a[2], np.zeros(1, in_a[2].dtype), 0)
            ring.readable(in_a[0], in_a[1])
            out = np.zeros(1, spec.out_dtype)
            duty_cycle.account(slot, 0, 0, out, 0, timespec)
            duty_cycle.publish(outs, sems, out, 0, slot, idle_params, timespec)
            inference.prepare(in_a[2], 0, np.zeros((1, records.N_FEATURES), np.float32))
            inference.finish(in_a[2], 0, np.zeros(1, np.float32), out, 0)
            continue
        _, params, state = graph.kernel(spec.name, config, live=True)
        duty_cycle.run(spec.index, in_a, in_b, outs, sems, ring.local_ring(spec.out_dtype, 2), False, np.zeros(1, in_a[2].dtype), np.zeros(1, in_b[2].dtype),
                       np.zeros(1, spec.out_dtype), state, params, block.globals, slot, idle_params,
                       idle_strategies.make_state(), 1, False, False, False, 1, timespec)
    cb.disable_trading(block.globals, 0, 0, 0)
