"""The warm-up: a corrupt cache entry is rebuilt without touching anything else in NUMBA_CACHE_DIR, and a
signal during the first (long) compile stops the run at once."""
import io
import os
import pickle
import signal
import subprocess
import sys
import time

import psutil
import pytest

from pipeline import names
from pipeline.config import Config
from pipeline.hosting import warmup
from pipeline.plan import resolve
from shm import segment
from tests.conftest import ROOT, LiveRun

SMALL = "tests.pipeline.hosting.test_warmup:compile_small"
FEW = "tests.pipeline.hosting.test_warmup:compile_few"


def compile_small(plan) -> list[warmup.Kernel]:
    """A cheap stand-in for the whole warm-up: one small njit function of ours."""
    from shm import control as cb
    return [warmup.Kernel("bucket_of", lambda: cb.bucket_of(1000))]


def compile_few(plan) -> list[warmup.Kernel]:
    """Three small kernels of ours, two sharing a callee (the ring's), for two compile processes."""
    import numpy as np

    from shm import control as cb
    from shm import ring
    from stages import records

    def read():
        r = ring.local_ring(records.MARKET_EVENT, 16)
        ring.read(r[0], r[1], r[2], np.zeros(1, records.MARKET_EVENT), 1)

    def readable():
        r = ring.local_ring(records.EXEC_REPORT, 16)
        ring.readable(r[0], r[1])
    return [warmup.Kernel("bucket_of", lambda: cb.bucket_of(1000)), warmup.Kernel("ring read", read),
            warmup.Kernel("ring readable", readable)]


def _index_path(cache_dir) -> str:
    """Compile the small piece into ``cache_dir`` in a fresh process; the path of its cache index."""
    code = ("from shm import control as cb; cb.bucket_of(1000); "
            "print(cb.bucket_of._cache._cache_file._index_path)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir)), timeout=300)
    return out.stdout.strip()


def test_a_corrupt_cache_entry_is_rebuilt_and_nothing_else_in_the_cache_dir_is_touched(tmp_path, monkeypatch,
                                                                                       capfd):
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    bystander = cache / "operator-notes.txt"
    bystander.write_text("not Bot4's")
    other = cache / "other-checkout" / "module.f-1.py311.nbi"
    other.parent.mkdir()
    other.write_bytes(b"another project's cache")
    index = _index_path(cache)
    assert index.startswith(str(cache)) and os.path.exists(index)
    with open(index, "wb") as fh:
        fh.write(b"corrupt")  # pickle.load fails on it: the cache fails to load
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(cache))
    warmup.compile_all(resolve(Config()), lambda: False, entry=SMALL)
    assert bystander.read_text() == "not Bot4's" and other.read_bytes() == b"another project's cache"
    with open(index, "rb") as fh:
        assert pickle.load(fh)  # rebuilt: a valid index (numba's version string) again
    err = capfd.readouterr().err
    assert "failed to load" in err and os.path.basename(index) in err


def test_two_processes_compile_the_kernels_naming_each_and_a_second_warmup_loads_them_all(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty-cache"))
    first_log, second_log = io.StringIO(), io.StringIO()
    first = warmup.compile_all(resolve(Config()), entry=FEW, jobs=2,
                               progress=warmup.CompileProgress(3, first_log))
    assert [k.name for k in first.kernels] == ["bucket_of", "ring read", "ring readable"]
    assert all(k.compiled for k in first.kernels), first.kernels
    text = first_log.getvalue()
    for name in ("bucket_of", "ring read", "ring readable"):
        assert f"compiled: {name} in " in text, text
    assert "compiled 3 of 3 kernels" in text, text
    second = warmup.compile_all(resolve(Config()), entry=FEW, progress=warmup.CompileProgress(3, second_log))
    assert not second.compiled and "compiled" not in second_log.getvalue(), (second.kernels, second_log.getvalue())


@pytest.mark.timeout(1800)  # a cold compile of two kernels: about a minute on 2 idle cores, far more under load
def test_bot4_warmup_compiles_into_an_empty_cache_then_reports_everything_cached(tmp_path):
    config = tmp_path / "record.toml"  # record mode: two stages (feed, validate), so two kernels to compile
    config.write_text(f'[run]\nmode = "record"\n[journal]\ndir = "{tmp_path / "journal"}"\n')
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")

    def bot4_warmup():
        return subprocess.run([sys.executable, "-m", "tools.cli", "warmup", "--config", str(config)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=900)
    first = bot4_warmup()
    assert first.returncode == 0, first.stdout + first.stderr
    for kernel in ("duty cycle: feed", "duty cycle: validate"):
        assert f"compiled: {kernel} in " in first.stderr, first.stderr
    assert "all 2 kernels cached in " + str(tmp_path / "xdg" / "bot4" / "numba") in first.stdout, first.stdout
    assert "(compiled 2 in" in first.stdout, first.stdout
    second = bot4_warmup()
    assert second.returncode == 0, second.stdout + second.stderr
    assert "all 2 kernels cached" in second.stdout and "(loaded in" in second.stdout, second.stdout
    assert "compiled" not in second.stderr, second.stderr


def test_a_stop_request_kills_the_compiling_child_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty-cache"))  # nothing cached: a long compile
    started = []

    def should_stop():
        kids = psutil.Process().children(recursive=True)
        started.extend(k.pid for k in kids if k.pid not in started)
        return bool(started)  # stop as soon as the child runs
    with pytest.raises(warmup.WarmupStopped):
        warmup.compile_all(resolve(Config()), should_stop)
    assert started and not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                               for pid in started)


@pytest.fixture(scope="module")
def empty_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("numba-cache")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_first_compile_stops_the_run_promptly_and_cleans_up(sig, empty_cache, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(empty_cache))  # the supervisor and its children inherit it
    run = LiveRun("--quiet", "--duration", "60")
    try:
        deadline = time.monotonic() + 240
        compiler = None
        while compiler is None and time.monotonic() < deadline and run.proc.poll() is None:
            compiler = next((p for p in run.descendants() if "pipeline.hosting.warmup" in " ".join(p.cmdline())), None)
            time.sleep(0.05)
        assert compiler is not None, "no warm-up child seen"
        assert compiler.cmdline()[-2:] == ["-m", "pipeline.hosting.warmup"]  # the config goes on stdin, not argv
        time.sleep(1.0)
        assert compiler.is_running()  # still compiling: the stop below lands mid-compile
        run.proc.send_signal(sig)
        code, output = run.finish(timeout=15)
        assert code == 4, output  # START_FAILED: stopped before anything ran
        assert f"{sig.name} during start-up" in output and "Traceback" not in output, output
        assert not segment.list_segments(names.run_prefix(run.name))
        assert not psutil.pid_exists(compiler.pid) or compiler.status() == psutil.STATUS_ZOMBIE
    finally:
        run.cleanup()
