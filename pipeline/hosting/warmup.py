"""Compile every njit entry point once, in a child of the supervisor, before any stage process starts.

Numba caches machine code on disk (``cache=True``); children then load it instead of compiling in
parallel on shared cores (PITFALLS 4). The calls use local arrays of exactly the types the stages use.
The compile runs in its own process (the run plan on stdin, never argv) so the supervisor can stop it at once
on SIGINT/SIGTERM: a first compile takes minutes.
"""
from __future__ import annotations

import importlib
import os
import pickle
import signal
import subprocess
import sys
from typing import Callable

import numpy as np

from pipeline import graph
from pipeline.hosting import duty_cycle, group_host, stage_host, topology
from pipeline.plan import RunPlan
from shm import control as cb
from shm import idle as idle_strategies
from shm import ring
from shm.syscalls import new_timespec
from stages import records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout
OUR_PACKAGES = ("pipeline", "shm", "stages")
RETRY_EXIT = 75          # the child removed a cache entry that failed to load: compile again in a fresh process
MAX_ATTEMPTS = 4
POLL_S = 0.03            # how often the supervisor's stop request is looked at while the child compiles


class WarmupError(RuntimeError):
    """The kernels could not be compiled or loaded; the message says why."""


class WarmupStopped(WarmupError):
    """A stop was requested while compiling; the child is gone."""


def compile_all(plan: RunPlan, should_stop: Callable[[], bool] = lambda: False,
                entry: str = "pipeline.hosting.warmup:_compile_all") -> None:
    """Compile (or load) everything in a child process; returns when it is done.

    ``should_stop`` is polled every POLL_S: when true, the child's process group is killed and WarmupStopped
    raised. A cache entry that fails to load is removed by the child (only that entry's files: the cache
    directory may hold an operator's files and other checkouts' caches) and the compile runs again.
    ``entry`` ("module:function", called with the plan) is what the child compiles.

    numba's cache index is not safe against two processes compiling the same function at once (both
    append entry N+1): a corrupt entry then fails to load. Warming here, alone, before any child starts
    avoids that in the pipeline; other tools sharing the cache can still collide.
    """
    for attempt in range(MAX_ATTEMPTS):
        spec = pickle.dumps({"plan": plan, "entry": entry, "supervisor_pid": os.getpid(), "attempt": attempt})
        if should_stop():
            raise WarmupStopped("stopped before kernel compilation")
        # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which decides.
        child = subprocess.Popen([sys.executable, "-m", "pipeline.hosting.warmup"], stdin=subprocess.PIPE,
                                 process_group=0)
        try:
            try:
                child.stdin.write(spec)
                child.stdin.close()
            except BrokenPipeError:
                pass  # it died at start; its exit code says so
            while True:
                try:
                    code = child.wait(POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    if should_stop():
                        raise WarmupStopped("kernel compilation stopped") from None
        finally:
            if child.poll() is None:
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.wait()
        if code == 0:
            return
        if code != RETRY_EXIT:
            raise WarmupError(f"kernel compilation failed (exit code {code}); its error is printed above")
    raise WarmupError(f"the kernel cache still fails to load after {MAX_ATTEMPTS} rebuilds")


def _function_caches(exc: BaseException) -> list:
    """The numba caches whose loading raised ``exc`` (innermost first); [] if it did not come from a cache."""
    found = []
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if tb.tb_frame.f_code.co_name == "load_overload" and hasattr(owner, "_cache_file") \
                    and hasattr(owner, "_py_func"):
                found.append(owner)
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return found[::-1]


def _ours(cache) -> bool:
    source = getattr(getattr(cache, "_py_func", None), "__code__", None)
    return source is not None and os.path.abspath(source.co_filename).startswith(ROOT + os.sep)


def _remove_entry(cache) -> list[str]:
    """Delete one function's index and data files (names from numba's own cache object); the paths removed."""
    index = cache._cache_file._index_name
    stem = index[:-len(".nbi")] + "."
    directory = cache._cache_path
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    doomed = [n for n in names if n == index or (n.startswith(stem) and n.endswith(".nbc")
                                                   and n[len(stem):-len(".nbc")].isdigit())]
    removed = []
    for name in doomed:
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    return removed


def remove_failed_cache_entries(exc: BaseException) -> list[str]:
    """Remove the cache files of this checkout's functions whose cached code failed to load with ``exc``."""
    removed = []
    for cache in _function_caches(exc):
        if _ours(cache):
            removed += _remove_entry(cache)
    return removed


def remove_all_our_cache_entries() -> list[str]:
    """Remove the cache files of every cached njit function of this checkout that is loaded here."""
    from numba.core.dispatcher import Dispatcher
    removed = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in OUR_PACKAGES or module is None:
            continue
        for value in list(vars(module).values()):
            cache = getattr(value, "_cache", None) if isinstance(value, Dispatcher) else None
            if cache is not None and hasattr(cache, "_cache_file") and _ours(cache):
                removed += _remove_entry(cache)
    return removed


def main() -> int:
    from pipeline.hosting.topology import die_with_parent
    spec = pickle.load(sys.stdin.buffer)  # from the supervisor, over a pipe only it holds
    die_with_parent(spec["supervisor_pid"])  # a killed supervisor takes its compile with it
    plan = spec["plan"]
    module, _, function = spec["entry"].partition(":")
    compile_fn = getattr(importlib.import_module(module), function)
    try:
        compile_fn(plan)
    except Exception as exc:
        removed = remove_failed_cache_entries(exc)
        if not removed and spec["attempt"] == 0 and type(exc) is TypeError:
            # Cached code of another signature fails to unbox in numba's C dispatcher: no frame names
            # the function, so every entry of ours goes (once; a second failure is a real error).
            removed = remove_all_our_cache_entries()
        if not removed:
            raise
        print(f"bot4: kernel cache failed to load ({type(exc).__name__}: {exc}); removed "
              f"{', '.join(removed)}; rebuilding", file=sys.stderr)
        return RETRY_EXIT
    return 0


def _compile_all(plan: RunPlan) -> None:
    config = plan.config
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
            duty_cycle.account(slot, block.globals, 0, 0, out, 0, timespec)
        if spec.name == "inference":
            from stages import inference
            duty_cycle.wait_for_input(in_a, slot, idle_params, idle_strategies.make_state(), 0, timespec)
            ring.read(in_a[0], in_a[1], in_a[2], np.zeros(1, in_a[2].dtype), 0)
            ring.readable(in_a[0], in_a[1])
            out = np.zeros(1, spec.out_dtype)
            duty_cycle.account_served(slot, block.globals, 0, 0, out, 0, 0, 0, 0, timespec)
            duty_cycle.publish(outs, sems, out, 0, slot, idle_params, timespec)
            inference.prepare(in_a[2], 0, np.zeros((1, records.N_FEATURES), np.float32))
            inference.finish(in_a[2], 0, np.zeros(1, np.float32), out, 0)
            continue
        _, params, state = graph.kernel(spec.name, plan, live=True)
        tap = stage_host.with_step_tap(spec, ring.local_ring(spec.out_dtype, 2))
        duty_cycle.run(spec.index, in_a, in_b, outs, sems, tap, False, np.zeros(1, in_a[2].dtype), np.zeros(1, in_b[2].dtype),
                       np.zeros(1, spec.out_dtype), state, params, block.globals, slot, idle_params,
                       idle_strategies.make_state(), 1, False, False, False, 1, timespec)
    for group in topology.groups(config):  # only the groups this run hosts: each is a compile of its own
        group_host.warm(plan, group)
    cb.disable_trading(block.globals, 0, 0, 0)


if __name__ == "__main__":
    sys.exit(main())
