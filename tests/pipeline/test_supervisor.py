"""The live pipeline with real processes: start, ready, stop, a killed stage, conservation."""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from pipeline import kill_reasons, names
from shm import control as cb
from shm import segment
from tests.conftest import ROOT, SIGNAL_ARGS, kill_and_wait_for_trip


def test_sigterm_stops_every_stage_cleanly_and_leaves_nothing_behind(live):
    run = live(*SIGNAL_ARGS, "--quiet")
    run.wait_for(r"bot4: running")
    block = cb.ControlBlock.attach(names.control(run.name))
    try:
        assert all(block.stages[i][cb.S_STATE] in (cb.READY, cb.RUNNING) for i in range(8))
        assert block.globals[cb.G_TRADING_ENABLED] == 1
        pids = [int(block.stages[i][cb.S_PID]) for i in range(8)]
        cores = {int(block.stages[i][cb.S_CORE]) for i in range(8)}
    finally:
        block.close()
    for pid in pids:
        assert psutil.Process(pid).cpu_affinity() == [int(c) for c in [psutil.Process(pid).cpu_affinity()[0]]]
    assert cores <= set(os.sched_getaffinity(0))
    time.sleep(1.0)
    status = subprocess.run([sys.executable, "-m", "tools.cli", "status", "--name", run.name], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.splitlines()
    feed_line = next(line for line in lines if line.startswith("feed "))
    assert "running" in feed_line and int(feed_line.split()[5]) > 1000  # out/s at a 10 k/s feed
    assert any(line.startswith("trading ENABLED | orders") for line in lines)
    started = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish()
    assert code == 0, output
    assert time.monotonic() - started < 10
    assert "stopped (SIGTERM)" in output
    assert not segment.list_segments(names.run_prefix(run.name))
    assert not any(entry.startswith(f"bot4.{run.name}.") for entry in os.listdir(tempfile.gettempdir()))
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("victim", ["feature", "execute"])
def test_a_killed_stage_disables_trading_and_the_supervisor_names_it(live, victim):
    from pipeline.graph import BY_NAME
    run = live(*SIGNAL_ARGS, "--quiet")
    run.wait_for(r"bot4: running")
    block = cb.ControlBlock.attach(names.control(run.name))
    try:
        index = BY_NAME[victim].index
        pid = int(block.stages[index][cb.S_PID])
        time.sleep(0.5)
        kill_and_wait_for_trip(block, pid)
        assert block.globals[cb.G_TRADING_ENABLED] == 0
        assert block.globals[cb.G_KILL_REASON] == kill_reasons.KILL_STAGE_DIED
        assert block.globals[cb.G_KILL_STAGE] == index
    finally:
        block.close()
    code, output = run.finish()
    assert code == 3, output
    assert f"stage {victim} (pid {pid}) died (signal SIGKILL); trading disabled" in output
    assert not segment.list_segments(names.run_prefix(run.name))


def test_every_event_is_accounted_for_at_every_stage_of_a_live_run(live):
    from pipeline.supervisor import Supervisor  # noqa: F401  (imports the same code the child runs)
    run = live(*SIGNAL_ARGS, "--quiet", "--events", "30000", "--rate", "20000")
    code, output = run.finish(timeout=240)
    assert code == 0, output
    assert "stopped (feed finished)" in output
    m = re.search(r"records per stage \(in -> out\): (.*)", output)
    counts = {name: (int(a.replace(",", "")), int(b.replace(",", ""))) for name, a, b in
              re.findall(r"(\w+) ([\d,]+)->([\d,]+)", m.group(1))}
    quarantined = int(re.search(r"quarantined ([\d,]+)", output).group(1).replace(",", ""))
    assert counts["feed"][1] == 30000
    assert counts["validate"][0] == 30000
    assert counts["validate"][1] + quarantined == 30000
    assert counts["feature"] == (counts["validate"][1], counts["validate"][1])
    assert counts["risk"][1] == counts["feature"][1]
    assert counts["inference"] == (counts["risk"][1], counts["risk"][1])
    assert re.search(r"orders [1-9]", output)


def test_a_bad_config_names_the_key_and_starts_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[feed]\nrate_eps = -5\n")
    out = subprocess.run([sys.executable, "-m", "tools.cli", "run", "--config", str(bad)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "feed.rate_eps=-5.0 is invalid" in out.stderr


def test_a_garch_fit_the_run_cannot_use_is_exit_2_when_the_run_is_planned_and_nothing_is_created(tmp_path):
    bad = tmp_path / "garch.toml"
    bad.write_text(f'[risk]\ngarch_params = "{tmp_path}/missing.json"\n')  # a config check reads no file: planning does
    name = f"g{os.getpid()}"
    out = subprocess.run([sys.executable, "-m", "tools.cli", "run", "--config", str(bad), "--name", name], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "risk.garch_params=" in out.stdout + out.stderr and "does not exist" in out.stdout + out.stderr
    assert not segment.list_segments(names.run_prefix(name))


def test_a_hung_stage_trips_the_watchdog_on_its_stale_heartbeat(live, tmp_path):
    config = tmp_path / "hb.toml"
    config.write_text("[watchdog]\nheartbeat_stale_ms = 200\n")
    run = live(*SIGNAL_ARGS, "--quiet", "--config", str(config))
    run.wait_for(r"bot4: running")
    block = cb.ControlBlock.attach(names.control(run.name))
    try:
        index = 3  # risk
        pid = int(block.stages[index][cb.S_PID])
        time.sleep(0.3)
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        while block.globals[cb.G_TRADING_ENABLED] and time.monotonic() - stopped_at < 5:
            time.sleep(0.005)
        tripped_after = time.monotonic() - stopped_at
        assert block.globals[cb.G_TRADING_ENABLED] == 0
        assert block.globals[cb.G_KILL_REASON] == kill_reasons.KILL_HEARTBEAT_STALE
        assert block.globals[cb.G_KILL_STAGE] == index
        assert 0.15 < tripped_after < 2.0
        os.kill(pid, signal.SIGCONT)
    finally:
        block.close()
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish()
    assert code == 5, output
    assert "trading was disabled during the run: heartbeat stale: risk" in output


def test_blocking_idle_strategy_moves_every_event_and_the_default_says_it_allocates_no_strategy(live):
    run = live("--quiet", "--idle", "blocking", "--events", "5000", "--rate", "5000")
    code, output = run.finish(timeout=240)
    assert code == 0, output
    assert "bot4: no strategy is allocated in any regime" in output and re.search(r"\borders 0, fills 0\b", output)
    m = re.search(r"records per stage \(in -> out\): (.*)", output)
    counts = dict((n, int(b.replace(",", ""))) for n, a, b in re.findall(r"(\w+) ([\d,]+)->([\d,]+)", m.group(1)))
    quarantined = int(re.search(r"quarantined ([\d,]+)", output).group(1).replace(",", ""))
    assert counts["feed"] == 5000
    assert counts["inference"] == 5000 - quarantined


def _cli(*args, name):
    return subprocess.run([sys.executable, "-m", "tools.cli", *args, "--name", name], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_a_killed_supervisor_leaves_trading_off_and_nothing_behind_and_the_name_starts_again(live):
    """SIGKILL of the supervisor used to leave "trading ENABLED" in shared memory, every stage "running",
    12 segments and the alert socket: its children died with it, the watchdog too."""
    from pipeline.safety.alerts import endpoint_for
    run = live(*SIGNAL_ARGS, "--quiet")
    run.wait_for(r"bot4: running")
    block = cb.ControlBlock.attach(names.control(run.name))
    try:
        g = block.globals
        deadline = time.monotonic() + 10
        while int(block.stages[6][cb.S_CUSTOM]) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)  # some orders first
        assert g[cb.G_TRADING_ENABLED] == 1
        children = run.descendants()
        assert len(children) == 8
        run.proc.kill()
        run.proc.wait()
        gone, alive = psutil.wait_procs(children, timeout=15)  # the watchdog too, once it has cleaned up
        assert not alive
        # Our mapping outlives the unlinked control block: what the watchdog left in it.
        assert g[cb.G_TRADING_ENABLED] == 0 and g[cb.G_KILL_REASON] == kill_reasons.KILL_SUPERVISOR_DIED
        assert f"the supervisor (pid {run.proc.pid}) died" in cb.kill_text(g)
    finally:
        block.close()
    assert not segment.list_segments(names.run_prefix(run.name))
    assert not os.path.exists(endpoint_for(run.name, "auto")[len("ipc://"):])
    from pipeline.safety import postmortem
    account = postmortem.read(run.name)
    assert account["kill_reason"] == "supervisor died" and account["trading_was"] == "enabled"
    assert account["counters"]["orders"] >= 10 and "no process left" in account["cleanup"]
    assert os.stat(postmortem.path(run.name)).st_mode & 0o077 == 0
    for args in (("status",), ("killswitch", "status")):
        said = _cli(*args, name=run.name)
        assert said.returncode == 1 and f"the supervisor (pid {run.proc.pid}) died" in said.stdout, said.stdout
        assert "trading: DISABLED, reason: supervisor died" in said.stdout
    again = subprocess.run([sys.executable, "-m", "tools.cli", "run", "--name", run.name, "--quiet",
                            "--events", "2000", "--rate", "0"], cwd=ROOT, capture_output=True, text=True,
                           timeout=240)
    # A start after a crash stays disarmed for an operator to look first (a service manager's restart, say);
    # never armed, it stops with trading off: exit 5.
    assert again.returncode == 5, again.stdout + again.stderr
    assert (f"bot4: running (8 processes); trading disabled until: bot4 killswitch arm (the last run under this "
            f"name crashed: the supervisor (pid {run.proc.pid}) died at ") in again.stdout
    assert not segment.list_segments(names.run_prefix(run.name)) and postmortem.read(run.name) is None


def test_a_stopped_supervisor_is_alive_and_when_everything_is_killed_status_says_dead(live):
    run = live(*SIGNAL_ARGS, "--quiet")
    run.wait_for(r"bot4: running")
    block = cb.ControlBlock.attach(names.control(run.name))
    try:
        g = block.globals
        children = run.descendants()
        watchdog = next(c for c in children if "pipeline.safety.watchdog" in " ".join(c.cmdline()))
        run.proc.send_signal(signal.SIGSTOP)
        time.sleep(1.0)
        assert g[cb.G_TRADING_ENABLED] == 1 and watchdog.is_running()  # stopped is not dead: no trip by itself
        watchdog.kill()  # everything killed at once: the watchdog cannot clean up (a zombie till its parent dies)
        run.proc.kill()
        run.proc.wait()
        psutil.wait_procs(children, timeout=15)
        assert g[cb.G_TRADING_ENABLED] == 1  # left behind, but nothing trades any more
    finally:
        block.close()
    status = _cli("status", name=run.name)
    assert status.returncode == 1, status.stdout
    assert f"NOT RUNNING: the supervisor (pid {run.proc.pid}) is dead, and every stage (the flag reads 1, but " \
        "nothing is trading)" in status.stdout
    assert all(line.split()[1] == "dead" for line in status.stdout.splitlines()[1:9]), status.stdout
    ks = _cli("killswitch", "status", name=run.name)
    assert ks.returncode == 1 and "run: DEAD: the supervisor" in ks.stdout and "nothing is trading" in ks.stdout


def _model_with_wrong_feature_hash(tmp_path):
    import json
    import shutil

    from stages import inference
    onnx = tmp_path / "model.onnx"
    shutil.copy(inference.DEFAULT_MODEL, onnx)
    meta = json.loads(inference.metadata_path_for(inference.DEFAULT_MODEL).read_text())
    meta["feature_schema_hash"] = (meta["feature_schema_hash"] + 1) & 0xFFFF_FFFF
    inference.metadata_path_for(onnx).write_text(json.dumps(meta))
    return f'[inference]\nmodel = "{onnx}"\n', "inference.model: model="


def _empty_replay_file(tmp_path):
    (tmp_path / "x.csv").write_bytes(b"")
    return (f'[feed]\nsource = "replay"\nvenues = ["spot"]\nsymbols = ["ETH-USDT"]\nfiles = ["spot={tmp_path}/x.csv"]\n',
            f"feed.files: {tmp_path}/x.csv: 0 events from 0 lines (empty file)")


def _journal_dir_that_is_a_file(tmp_path):
    (tmp_path / "journal").write_text("not a directory")
    return f'[journal]\ndir = "{tmp_path}/journal"\n', f"journal.dir: {tmp_path}/journal: exists and is not a directory"


def _sizer_that_is_a_voter(tmp_path):
    from pathlib import Path
    voter = Path(__file__).resolve().parents[2] / "models" / "gbt" / "v1"
    return (f'[inference]\nsizer = "{voter}"\n',
            f"inference.sizer: sizer={voter}: member_kind='vector'; a sizer is a 'qvalue' member")


@pytest.mark.parametrize("make", [_model_with_wrong_feature_hash, _empty_replay_file, _journal_dir_that_is_a_file,
                                  _sizer_that_is_a_voter])
def test_a_resource_that_fails_its_preflight_is_exit_4_before_anything_is_spawned(live, tmp_path, make):
    text, said = make(tmp_path)
    conf = tmp_path / "bot4.toml"
    conf.write_text(text)
    code, output = live(*SIGNAL_ARGS, "--quiet", "--config", str(conf)).finish(timeout=120)
    assert code == 4, output
    assert f"bot4: start-up failed: {said}" in output
    assert "kernels compiled" not in output and "trading enabled" not in output  # nothing was spawned


def test_a_stage_that_fails_during_start_up_is_exit_4_with_its_own_cause(live, tmp_path):
    """A Tardis file whose every row is refused: the feed fails before ready. It used to count as ready
    (FAILED >= READY) and the run finished with exit 0 and "trading enabled"."""
    bad = tmp_path / "trades.csv"
    bad.write_text("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
                   "binance,ETHUSDT,soon,later,3,buy,1,1\nbinance,ETHUSDT,x,y,4,sell,1,1\n")
    conf = tmp_path / "bot4.toml"
    conf.write_text(f'[feed]\nsource = "replay"\nvenues = ["binance"]\nsymbols = ["ETH-USDT"]\n'
                    f'files = ["binance={bad}"]\n')
    code, output = live(*SIGNAL_ARGS, "--quiet", "--config", str(conf)).finish(timeout=300)
    assert code == 4, output
    assert f"bot4: start-up failed: feed failed: feed.files: {bad}: 0 events from 2 lines (refused: " in output
    assert "trading enabled" not in output and "Traceback" not in output
