"""Compile every njit entry point once, in a child of the supervisor, before any stage process starts.

Numba caches machine code on disk (``cache=True``); children then load it instead of compiling in
parallel on shared cores (PITFALLS 4). The calls use local arrays of exactly the types the stages use.
The compile runs in its own process (the run plan on stdin, never argv) so the supervisor can stop it at once
on SIGINT/SIGTERM: a first compile takes minutes.
"""
from __future__ import annotations

import functools
import importlib
import os
import pickle
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline import graph
from pipeline.hosting import duty_cycle, group_host, stage_host, topology
from pipeline.hosting.warmup_progress import CompileProgress
from pipeline.plan import RunPlan
from shm import control as cb
from shm import idle as idle_strategies
from shm import ring
from shm.syscalls import new_timespec
from stages import records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout
OUR_PACKAGES = ("pipeline", "shm", "stages")
RETRY_EXIT = 75          # the child removed a cache entry that failed to load: compile again in a fresh process
CACHE_UNWRITABLE_EXIT = 3  # the child's kernels were cached outside the cache directory
MAX_ATTEMPTS = 4
POLL_S = 0.03            # how often the supervisor's stop request is looked at while the child compiles


class WarmupError(RuntimeError):
    """The kernels could not be compiled or loaded; the message says why."""


class WarmupStopped(WarmupError):
    """A stop was requested while compiling; the child is gone."""


@dataclass(frozen=True)
class Kernel:
    """One piece of the warm-up, compiled (or loaded) by one call: what the operator reads while it runs."""
    name: str
    compile: Callable[[], None]


@dataclass(frozen=True)
class Done:
    name: str
    seconds: float
    compiled: bool  # False: every function it needed came from the cache


@dataclass
class Warmed:
    kernels: list[Done]
    elapsed_s: float

    @property
    def compiled(self) -> list[Done]:
        return [k for k in self.kernels if k.compiled]


def cache_dir() -> str:
    """Where this checkout's kernels are cached (shm.jit_cache chose it from the sources, or NUMBA_CACHE_DIR)."""
    import numba
    return numba.config.CACHE_DIR


def compile_all(plan: RunPlan, should_stop: Callable[[], bool] = lambda: False,
                entry: str = "pipeline.hosting.warmup:kernels", jobs: int = 1,
                progress: CompileProgress | None = None) -> Warmed:
    """Compile (or load) every kernel of ``plan`` in child processes; returns when all are done.

    ``entry`` ("module:function", called with the plan) gives the kernels (a list of Kernel). ``jobs`` child
    processes take them one at a time; numba's cache saves are serialised between them (shm.jit_cache), and a
    function two of them need is compiled by both (each loads it only if the other saved it first).
    ``progress`` (default: one on stderr) shows which kernel, how many of how many, how long.

    ``should_stop`` is polled every POLL_S: when true, the children's process groups are killed and
    WarmupStopped raised. A cache entry that fails to load is removed by the child (only that entry's files: the
    cache directory may hold an operator's files and other checkouts' caches) and the compile runs again.
    """
    names = [k.name for k in _entry(entry)(plan)]
    progress = progress or CompileProgress(len(names))
    started = time.monotonic()
    try:
        for attempt in range(MAX_ATTEMPTS):
            if should_stop():
                raise WarmupStopped("stopped before kernel compilation")
            done = _compile_pass(plan, entry, names, max(1, min(jobs, len(names))), attempt, should_stop, progress)
            if done is not None:
                return Warmed([done[i] for i in range(len(names))], time.monotonic() - started)
            progress.restart()
        raise WarmupError(f"the kernel cache still fails to load after {MAX_ATTEMPTS} rebuilds")
    finally:
        progress.close()


def _compile_pass(plan, entry, names, jobs, attempt, should_stop, progress) -> dict[int, Done] | None:
    """One pass over every kernel with ``jobs`` children; None when a child removed a broken cache entry."""
    read_end, write_end = os.pipe()
    spec = pickle.dumps({"plan": plan, "entry": entry, "supervisor_pid": os.getpid(), "attempt": attempt,
                         "report_fd": write_end})
    children: list[subprocess.Popen] = []
    todo = list(range(len(names)))
    done: dict[int, Done] = {}
    try:
        for _ in range(jobs):
            # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which decides.
            child = subprocess.Popen([sys.executable, "-m", "pipeline.hosting.warmup"], stdin=subprocess.PIPE,
                                     process_group=0, pass_fds=(write_end,))
            children.append(child)
            _send(child, spec)
            _give(child, todo)
        os.close(write_end)
        write_end = -1
        owner: dict[int, subprocess.Popen] = {}
        pending, ended = b"", False
        while not ended:  # the pipe ends when every child has exited (each holds its write end)
            ready, _, _ = select.select([read_end], [], [], POLL_S)
            chunk = os.read(read_end, 65536) if ready else b""
            ended = bool(ready) and not chunk
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                what, index, *rest = line.decode().split(" ")
                i = int(index)
                if what == "start":
                    progress.started(i, names[i])
                    owner[i] = next(c for c in children if c.pid == int(rest[0]))
                else:
                    done[i] = Done(names[i], float(rest[1]), rest[0] == "1")
                    progress.finished(i, names[i], done[i].compiled, done[i].seconds)
                    _give(owner.pop(i), todo)
            progress.tick()
            if should_stop():
                raise WarmupStopped("kernel compilation stopped")
            _check_exits(children)
        for child in children:  # the pipe ended: each has closed it, exiting
            child.wait()
    finally:
        for child in children:
            if child.poll() is None:
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            child.wait()
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    _check_exits(children)
    if any(child.returncode == RETRY_EXIT for child in children):
        return None
    missing = [names[i] for i in range(len(names)) if i not in done]
    if missing:
        raise WarmupError(f"kernel compilation ended without compiling {', '.join(missing)}")
    return done


def _check_exits(children: list[subprocess.Popen]) -> None:
    failed = [child.poll() for child in children if child.poll() not in (None, 0, RETRY_EXIT)]
    if failed:
        raise WarmupError(f"kernel compilation failed (exit code {failed[0]}); its error is printed above")


def _send(child: subprocess.Popen, data: bytes) -> None:
    try:
        child.stdin.write(data)
        child.stdin.flush()
    except BrokenPipeError:
        pass  # it died at start; its exit code says so


def _give(child: subprocess.Popen, todo: list[int]) -> None:
    """The next kernel to ``child``, or the end of its work (its stdin closed) when none is left."""
    if todo:
        _send(child, f"{todo.pop(0)}\n".encode())
    elif not child.stdin.closed:
        try:
            child.stdin.close()
        except BrokenPipeError:
            pass


def _entry(entry: str) -> Callable[[RunPlan], list[Kernel]]:
    module, _, function = entry.partition(":")
    return getattr(importlib.import_module(module), function)


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
    removed = []
    for dispatcher in our_dispatchers():
        cache = dispatcher._cache
        if hasattr(cache, "_cache_file") and _ours(cache):
            removed += _remove_entry(cache)
    return removed


def our_dispatchers() -> list:
    """Every module-level njit function of this checkout loaded in this process."""
    from numba.core.dispatcher import Dispatcher
    found = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in OUR_PACKAGES or module is None:
            continue
        found += [v for v in list(vars(module).values()) if isinstance(v, Dispatcher)]
    return found


def _compiled_here() -> set:
    """(function, signature) of every overload this process compiled rather than loaded from the cache."""
    return {(id(d), sig) for d in our_dispatchers() for sig in list(d.overloads)
            if not d.stats.cache_hits.get(sig)}


def main() -> int:
    from pipeline.hosting.topology import die_with_parent
    spec = pickle.load(sys.stdin.buffer)  # from the supervisor, over a pipe only it holds
    die_with_parent(spec["supervisor_pid"])  # a killed supervisor takes its compile with it
    report = os.fdopen(spec["report_fd"], "wb", buffering=0)
    kernels = _entry(spec["entry"])(spec["plan"])
    for line in sys.stdin.buffer:  # the index of the next kernel; the end of input when none is left
        i = int(line)
        report.write(f"start {i} {os.getpid()}\n".encode())
        before, started = _compiled_here(), time.monotonic()
        try:
            kernels[i].compile()
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
        compiled = bool(_compiled_here() - before)
        report.write(f"done {i} {int(compiled)} {time.monotonic() - started:.3f}\n".encode())
    stray = sorted({d._cache._cache_path for d in our_dispatchers() if hasattr(d._cache, "_cache_path")
                    and not os.path.abspath(d._cache._cache_path).startswith(cache_dir() + os.sep)})
    if stray:  # numba falls back to __pycache__ beside the sources, which no source hash keys: stale after an edit
        print(f"bot4: the kernel cache directory {cache_dir()} cannot be written, so numba cached kernels in "
              f"{', '.join(stray)}; make it writable, or point XDG_CACHE_HOME (or NUMBA_CACHE_DIR) at a writable "
              "directory", file=sys.stderr)
        return CACHE_UNWRITABLE_EXIT
    return 0


def kernels(plan: RunPlan) -> list[Kernel]:
    """The kernels a run of ``plan`` needs: each hosted stage's duty cycle, each stage group's chained cycle."""
    config = plan.config
    found = [Kernel(f"duty cycle: {spec.name}", functools.partial(_compile_stage, plan, spec))
             for spec in graph.stages(config)]
    found += [Kernel(f"group: {'+'.join(group)}", functools.partial(group_host.warm, plan, group))
              for group in topology.groups(config)]  # only the groups this run hosts: each is a compile of its own
    return found


def _compile_stage(plan: RunPlan, spec) -> None:
    """Compile (or load) the duty cycle of one stage with local rings of exactly the types the stages use."""
    config = plan.config
    specs = graph.rings(config)
    block = cb.ControlBlock.local()
    timespec = new_timespec()
    idle_params = idle_strategies.make_params(idle_strategies.YIELDING)

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
        cb.disable_trading(block.globals, 0, 0, 0)
    if spec.name == "inference":
        from stages import inference
        duty_cycle.wait_for_input(in_a, slot, idle_params, idle_strategies.make_state(), 0, timespec)
        ring.read(in_a[0], in_a[1], in_a[2], np.zeros(1, in_a[2].dtype), 0)
        ring.readable(in_a[0], in_a[1])
        out = np.zeros(1, spec.out_dtype)
        duty_cycle.account_served(slot, block.globals, 0, 0, out, 0, 0, 0, 0, timespec)
        duty_cycle.publish(outs, sems, out, 0, slot, idle_params, timespec)
        inference.prepare(in_a[2], 0, np.zeros((1, records.N_FEATURES), np.float32))
        inference.finish(in_a[2], 0, np.zeros(1), np.zeros(1), np.zeros(1, np.uint8), np.ones(1), out, 0)
        return
    _, params, state = graph.kernel(spec.name, plan, live=True)
    tap = stage_host.with_step_tap(spec, ring.local_ring(spec.out_dtype, 2))
    duty_cycle.run(spec.index, in_a, in_b, outs, sems, tap, False, np.zeros(1, in_a[2].dtype),
                   np.zeros(1, in_b[2].dtype), np.zeros(1, spec.out_dtype), state, params, block.globals, slot,
                   idle_params, idle_strategies.make_state(), 1, False, False, False, 1, timespec)


if __name__ == "__main__":
    sys.exit(main())
