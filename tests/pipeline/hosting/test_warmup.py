"""The warm-up: a corrupt cache entry is rebuilt without touching anything else in NUMBA_CACHE_DIR, and a
signal during the first (long) compile stops the run at once."""
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


def compile_small(plan) -> None:
    """A cheap stand-in for the whole warm-up: one small njit function of ours."""
    from shm import control as cb
    cb.bucket_of(1000)


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
