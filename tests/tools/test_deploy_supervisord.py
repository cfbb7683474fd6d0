"""The shipped supervisord section, run by a real supervisord: it starts ``bot4 run``, reports it running, stops
it cleanly, and restarts it after a SIGKILL of the bot4 supervisor and after one of its whole process group,
each time disarmed."""
import configparser
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
import xmlrpc.client

import psutil
import pytest
from supervisor.xmlrpc import SupervisorTransport

from pipeline import kill_reasons, names
from pipeline.config import Config
from pipeline.safety import postmortem
from pipeline.safety.alerts import endpoint_for, remove_ipc_file
from pipeline.supervisor import ExitCode, stop_budget_s
from shm import control as cb
from shm import segment
from tests.conftest import ROOT

SHIPPED = os.path.join(ROOT, "tools", "deploy", "supervisord.conf")
COMPILE_S = 900  # the first live run after a source edit compiles the kernels; under load it takes minutes


def shipped_program() -> dict[str, str]:
    parser = configparser.RawConfigParser()
    parser.read(SHIPPED)
    assert parser.sections() == ["program:bot4"]
    return dict(parser["program:bot4"])


def test_the_shipped_section_stops_with_sigterm_within_the_drain_and_restarts_only_the_unexpected():
    program = shipped_program()
    assert program["stopsignal"] == "TERM"
    assert float(program["stopwaitsecs"]) > stop_budget_s(Config())
    assert {int(c) for c in program["exitcodes"].split(",")} == {ExitCode.CLEAN, ExitCode.STAGE_DIED,
                                                                   ExitCode.TRIPPED}
    assert program["autorestart"] == "unexpected"
    assert (program["stopasgroup"], program["killasgroup"]) == ("false", "true")  # TERM to bot4, KILL to all
    assert program["command"] == "/usr/local/bin/bot4 run --config /etc/bot4/bot4.toml"


class Supervisord:
    """supervisord in the foreground with everything under ``tmp``: its socket, its logs, the program's log."""

    def __init__(self, tmp, run: str):
        self.tmp = tmp
        self.run = run
        self.log = tmp / "bot4.log"
        self.conf = tmp / "supervisord.conf"
        program = shipped_program()
        del program["user"]  # the test's own user
        # A loaded machine may take minutes to start the stage processes: more than the default ready timeout.
        program.update(command=f"{sys.executable} -m tools.cli run --name {run} --quiet --duration 900 "
                               "--set run.ready_timeout_s=600",
                       directory=ROOT, stdout_logfile=str(self.log),
                       environment='PYTHONUNBUFFERED="1"')  # and the test's numba cache
        self.conf.write_text("\n".join([
            "[unix_http_server]", f"file={tmp}/supervisor.sock", "chmod=0700",
            "[supervisord]", f"logfile={tmp}/supervisord.log", f"pidfile={tmp}/supervisord.pid",
            f"childlogdir={tmp}", "nodaemon=true",
            "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]", f"serverurl=unix://{tmp}/supervisor.sock",
            "[program:bot4]", *(f"{k}={v}" for k, v in program.items()), ""]))
        self.proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)],
                                     cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.seen_pids: set[int] = set()  # every process of every run, for the clean-up

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
                              capture_output=True, text=True, timeout=180)

    def info(self) -> dict:
        """supervisord's XML-RPC, on a connection of its own (a refused one is not reusable)."""
        transport = SupervisorTransport(None, None, f"unix://{self.tmp}/supervisor.sock")
        return xmlrpc.client.ServerProxy("http://localhost", transport=transport).supervisor.getProcessInfo("bot4")

    def wait_running(self, other_than: int = 0, timeout_s: float = 120) -> int:
        """The program's pid once supervisord says RUNNING (a pid other than ``other_than``: a restart)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, xmlrpc.client.Fault):
                info = self.info()
                if info["statename"] == "RUNNING" and info["pid"] != other_than:
                    return info["pid"]
            time.sleep(0.2)
        raise AssertionError(f"bot4 not RUNNING after {timeout_s:g}s:\n{self.log_text()}")

    def wait_started(self, pid: int, starts: int) -> cb.ControlBlock:
        """The run's control block once bot4 (pid ``pid``, the program's start number ``starts``) said it runs:
        start-up over, armed or deliberately not."""
        deadline = time.monotonic() + COMPILE_S
        while self.log_text().count("bot4: running (") < starts:
            assert time.monotonic() < deadline and psutil.pid_exists(pid), self.log_text()
            time.sleep(0.2)
        block = cb.ControlBlock.attach(names.control(self.run))
        assert int(block.globals[cb.G_SUPERVISOR_PID]) == pid
        self.seen_pids.update(p.pid for p in psutil.Process(pid).children(recursive=True))
        return block

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def close(self) -> None:
        """supervisord and everything under it, and whatever a killed run left, whatever state the test left."""
        tree = []
        with contextlib.suppress(psutil.NoSuchProcess):
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        for pid in self.seen_pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                tree.append(psutil.Process(pid))
        for process in tree + [psutil.Process(self.proc.pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(tree, timeout=10)
        self.proc.wait(timeout=10)
        for entry in segment.list_segments(names.run_prefix(self.run)):
            segment.reclaim_if_stale(entry)
        remove_ipc_file(endpoint_for(self.run, "auto"))
        postmortem.remove(self.run)


@pytest.fixture
def supervisord(tmp_path):
    daemon = Supervisord(tmp_path, f"ops{uuid.uuid4().hex[:8]}")
    yield daemon
    daemon.close()
    assert not segment.list_segments(names.run_prefix(daemon.run))


def _all_gone(pids, timeout_s: float = 20) -> bool:
    processes = [psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)]
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def _disarmed_because(block: cb.ControlBlock) -> str:
    g = block.globals
    assert g[cb.G_TRADING_ENABLED] == 0 and g[cb.G_KILL_REASON] == kill_reasons.KILL_NOT_ARMED
    return cb.kill_text(g)


@pytest.mark.timeout(COMPILE_S + 600)  # four starts of the run on a loaded machine
def test_supervisord_runs_stops_and_restarts_bot4_disarmed_after_a_sigkill(supervisord):
    run = supervisord.run
    pid = supervisord.wait_running()
    block = supervisord.wait_started(pid, 1)
    try:
        assert block.globals[cb.G_TRADING_ENABLED] == 1  # a first start arms
    finally:
        block.close()
    status = supervisord.ctl("status", "bot4")
    assert status.returncode == 0 and status.stdout.split()[:4] == ["bot4", "RUNNING", "pid", f"{pid},"], status
    processes = set(supervisord.seen_pids)
    assert len(processes) == 8

    stopped = supervisord.ctl("stop", "bot4")
    assert stopped.stdout.strip() == "bot4: stopped", stopped
    info = supervisord.info()
    assert info["statename"] == "STOPPED" and info["exitstatus"] == ExitCode.CLEAN, (info, supervisord.log_text())
    assert not segment.list_segments(names.run_prefix(run))
    assert _all_gone(processes | {pid})

    # The bot4 supervisor SIGKILLed: its stages die with it, its watchdog disarms and removes the run, and
    # supervisord starts it again (an unexpected exit), disarmed for an operator to look first.
    assert supervisord.ctl("start", "bot4").stdout.strip() == "bot4: started"
    pid = supervisord.wait_running()
    block = supervisord.wait_started(pid, 2)
    try:
        assert block.globals[cb.G_TRADING_ENABLED] == 1
        processes = {p.pid for p in psutil.Process(pid).children(recursive=True)}
        os.kill(pid, signal.SIGKILL)
        assert _all_gone(processes), "a process of the killed run lingers"
        assert block.globals[cb.G_KILL_REASON] == kill_reasons.KILL_SUPERVISOR_DIED  # our mapping outlives it
    finally:
        block.close()
    killed, pid = pid, supervisord.wait_running(other_than=pid)
    block = supervisord.wait_started(pid, 3)
    try:
        assert _disarmed_because(block) == (f"waiting for: bot4 killswitch arm (the last run under this name "
                                            f"crashed: the supervisor (pid {killed}) died at "
                                            ) + _disarmed_because(block).split(" died at ")[1]
    finally:
        block.close()
    assert postmortem.read(run) is None  # the new run superseded the account
    # The restart waited for the killed run's watchdog, which removed every segment, the control block last.
    assert "stale shared-memory entries" not in supervisord.log_text()

    # Its whole process group SIGKILLed (the watchdog too): nothing cleans up, so the next start reclaims the
    # segments, and says why it stays disarmed.
    assert os.getpgid(pid) == pid  # supervisord made bot4 a group leader; its processes are in its group
    processes = {p.pid for p in psutil.Process(pid).children(recursive=True)}
    os.killpg(pid, signal.SIGKILL)
    assert _all_gone(processes | {pid})
    assert segment.list_segments(names.run_prefix(run))  # left behind
    pid = supervisord.wait_running(other_than=pid)
    block = supervisord.wait_started(pid, 4)
    try:
        reason = _disarmed_because(block)
        assert reason.startswith("waiting for: bot4 killswitch arm (the last run under this name crashed: it "
                                 "left ") and reason.endswith(" shared-memory entries)"), reason
        processes = {p.pid for p in psutil.Process(pid).children(recursive=True)}
    finally:
        block.close()
    log = supervisord.log_text()
    assert "bot4: reclaimed " in log and " stale shared-memory entries of a crashed run" in log

    stopped = supervisord.ctl("stop", "bot4")
    assert stopped.stdout.strip() == "bot4: stopped", stopped
    info = supervisord.info()
    # Never armed: the summary says so, and the code is the one of a stop with trading off (in exitcodes).
    assert info["statename"] == "STOPPED" and info["exitstatus"] == ExitCode.TRIPPED, info
    assert not segment.list_segments(names.run_prefix(run))
    assert _all_gone(processes | {pid})
    assert supervisord.log_text().count("bot4: stopped (SIGTERM)") == 2
