import os
import re
import subprocess
import sys
import tempfile
import time
import uuid

import psutil
import pytest

from pipeline import names
from shm import segment
from shm.control import G_TRADING_ENABLED, G_TRIPS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_sessionstart(session):
    """Compile the kernels of a default run and of a signal-strategy run before the first test: on a cold kernel
    cache (a fresh machine) that takes minutes, which must not fall inside one live test's timeout. Warm: seconds."""
    if session.config.option.collectonly:
        return
    with tempfile.TemporaryDirectory(prefix="bot4-warmup-") as directory:
        signal_toml = os.path.join(directory, "signal.toml")
        with open(signal_toml, "w") as fh:
            fh.write('[strategy]\nkind = "signal"\n')
        for args in ((), ("--config", signal_toml)):
            try:
                done = subprocess.run([sys.executable, "-m", "tools.cli", "warmup", "--jobs", "2", *args], cwd=ROOT,
                                      capture_output=True, text=True, timeout=1500)
            except subprocess.TimeoutExpired:  # the compile children die with it (pipeline.hosting.warmup)
                print(f"bot4 warmup {' '.join(args)} took over 1500 s; the tests compile what they need")
                continue
            if done.returncode != 0:  # the tests that need the kernels will say what is wrong
                print(f"bot4 warmup {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


# The model's taker and quoter (strategy.kind = "signal") trade on every seed; the default allocates no strategy
# and sends no orders. Tests of what lies downstream of the strategy (the gate, the venue, journals, flattening,
# the kill switch) need orders, so they run this one: SIGNAL_ARGS on a command line, signal_config() in process.
SIGNAL_ARGS = ("--set", "strategy.kind=signal")


def signal_config(**sections):
    """The default config with the signal strategy; ``sections`` as ``Config.with_overrides`` takes them."""
    from pipeline.config import Config
    strategy = {"kind": "signal", **sections.pop("strategy", {})}
    return Config().with_overrides(strategy=strategy, **sections)


@pytest.fixture
def shm_prefix():
    """A unique segment-name prefix; asserts the test left no segment or semaphore behind, and cleans up."""
    prefix = f"{segment.NAME_PREFIX}t{uuid.uuid4().hex[:10]}"
    yield prefix
    left = segment.list_segments(prefix)
    for name in left:
        segment.reclaim_if_stale(name)
        try:
            import posix_ipc
            posix_ipc.unlink_shared_memory(name)
        except Exception:
            pass
        try:
            import posix_ipc
            posix_ipc.unlink_semaphore(name)
        except Exception:
            pass
    assert not left, f"test left shared memory behind: {left}"


@pytest.fixture(autouse=True)
def no_child_left():
    yield
    me = psutil.Process(os.getpid())
    children = me.children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=5)


class LiveRun:
    def __init__(self, *args, name=None):
        self.name = name or f"t{uuid.uuid4().hex[:8]}"
        self.proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "run", "--name", self.name, *args],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output = []

    def wait_for(self, pattern, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(self.output)}")

    def finish(self, timeout=30):
        rest, _ = self.proc.communicate(timeout=timeout)
        self.output.append(rest)
        return self.proc.returncode, "".join(self.output)

    def descendants(self):
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def cleanup(self):
        for child in self.descendants():
            child.kill()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        segment.reclaim_stale(segment.list_segments(names.run_prefix(self.name)))  # semaphores too
        from pipeline.safety.alerts import endpoint_for, remove_ipc_file
        remove_ipc_file(endpoint_for(self.name, "auto"))


@pytest.fixture
def live():
    runs = []

    def start(*args, name=None):
        run = LiveRun(*args, name=name)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.cleanup()
        left = segment.list_segments(names.run_prefix(run.name))
        assert not left, f"shared memory left behind: {left}"


def assert_flat_after_stop(output: str) -> None:
    """The run's summary says execute left no open order and no position worth execute.flatten_min_usd or more
    (dust below it is left on purpose, and said)."""
    flat = re.search(r"positions after the stop: (flat, no open orders$|no open orders, \$[\d,]+ gross position left "
                     r"\(\d+ dust position\(s\) below execute\.flatten_min_usd, not flattened\)$)", output, re.M)
    assert flat, output


def kernel_params(stage: str, **arguments):
    """A stage's params as a run of the default config has them (pipeline.graph.kernel_arguments), with
    ``arguments`` (``make_params`` keywords) in place of some: a test names only what it is about."""
    from pipeline import graph
    from pipeline.config import Config
    return graph.MODULES[stage].make_params(**{**graph.kernel_arguments(stage, Config(), live=False), **arguments})


def kill_and_wait_for_trip(block, pid: int, timeout_s: float = 5.0) -> None:
    """SIGKILL ``pid`` (a process of the run ``block`` controls) and wait until its trip is whole: trading off,
    then the reason and text, and the trip count last (``shm.control.trip``: the flag drops first)."""
    import signal
    trips = block.globals[G_TRIPS]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while (block.globals[G_TRADING_ENABLED] or block.globals[G_TRIPS] == trips) and time.monotonic() < deadline:
        time.sleep(0.001)


def instant_venue(**venue):
    """The venue model's params with no latency (and ``venue`` overrides of the [venue] keys): a kernel test's
    orders are answered within the step that sent them."""
    from pipeline import graph
    from pipeline.config import Config
    config = Config().with_overrides(venue={"entry_latency_ms": 0.0, "response_latency_ms": 0.0, "hold_ms": 0.0,
                                            **venue})
    return graph.venue_params(config, live=True, lookahead=False)
