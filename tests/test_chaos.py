"""Chaos: SIGKILL each process of a run that journals into a database, one per run, under one run name.

After each kill: trading is off with the reason latched and every open order cancelled (unless execute itself
died), the operator is told what died, no process and no
shared memory of the run is left, the next start under the same name comes up clean (it is the next victim's
run), and the database holds the journal row for row (a recorder that died with its run is caught up by the
next run's; the last victim is a stage, so the last check covers every run).
The journal directory and the database are shared by every run, as an operator's would be.
"""
import os
import signal
import subprocess
import sys
import time
import uuid

import psutil

from pipeline import kill_reasons, names
from pipeline.registry import NAMES as PROCESSES
from pipeline.registry import STAGE_NAMES
from pipeline.safety import postmortem
from pipeline.store.recorder import compare_with_journal
from shm import control as cb
from shm import segment
from stages import execute
from tests.conftest import ROOT, SIGNAL_ARGS
from tests.pipeline.store.test_recorder import pg_dsn, pg_server  # noqa: F401  (fixtures)

VICTIMS = ("supervisor", "watchdog", "journal", "recorder") + STAGE_NAMES


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.05)


def _status(name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.cli", "status", "--name", name], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_sigkill_of_each_process_in_turn_leaves_trading_off_nothing_lost_and_nothing_behind(live, pg_dsn, tmp_path):
    name = f"chaos{uuid.uuid4().hex[:6]}"
    journal = str(tmp_path / "journal")
    args = (*SIGNAL_ARGS, "--quiet", "--journal", journal, "--dsn", pg_dsn)
    for previous, victim in zip((None,) + VICTIMS, VICTIMS):
        run = live(*args, name=name)
        line = run.wait_for(r"bot4: (running|start-up failed)")
        if previous == "supervisor":  # a start after a crash comes up disarmed: an operator arms it
            assert "trading disabled until: bot4 killswitch arm (the last run under this name crashed: the " \
                   "supervisor (pid " in line, f"the start after the crash:\n{''.join(run.output)}"
            armed = subprocess.run([sys.executable, "-m", "tools.cli", "killswitch", "arm", "--name", name], cwd=ROOT,
                                   capture_output=True, text=True, timeout=60)
            assert armed.returncode == 0 and "armed: trading enabled" in armed.stdout, armed.stdout + armed.stderr
        else:
            assert "trading enabled" in line, f"the start after the previous kill is not clean:\n{''.join(run.output)}"
        block = cb.ControlBlock.attach(names.control(name))
        try:
            pids = {n: int(block.stages[i][cb.S_PID]) for i, n in enumerate(PROCESSES) if block.stages[i][cb.S_PID]}
            assert set(pids) == set(PROCESSES) - {"gateway"}  # with live venues only: test_live_faults kills it
            orders_slot = block.stages[STAGE_NAMES.index("execute")]
            _wait(lambda: orders_slot[cb.S_OUT] > 0, 30, "execution reports")
            os.kill(run.proc.pid if victim == "supervisor" else pids[victim], signal.SIGKILL)
            g = block.globals
            if victim == "supervisor":
                run.proc.wait(30)
                # The watchdog outlives it: trading off first, then the run's memory goes, then the account.
                _wait(lambda: postmortem.read(name) is not None, 30, "the watchdog's post-mortem")
                assert g[cb.G_TRADING_ENABLED] == 0 and g[cb.G_KILL_REASON] == kill_reasons.KILL_SUPERVISOR_DIED
                shown = _status(name)
                assert shown.returncode == 1 and "supervisor" in shown.stdout, shown.stdout + shown.stderr
                output = "".join(run.output)
            else:
                # Trading off within moments (the trip latched last), then every open order cancelled, and no
                # order accepted after the kill time.
                _wait(lambda: g[cb.G_TRADING_ENABLED] == 0 and g[cb.G_TRIPS] >= 1, 2, f"the trip for {victim}")
                assert g[cb.G_KILL_REASON] == kill_reasons.KILL_STAGE_DIED and int(g[cb.G_KILL_STAGE]) == PROCESSES.index(victim)
                if victim != "execute":  # with execute gone the paper venue is gone too
                    _wait(lambda: orders_slot[cb.S_CUSTOM + execute.ST_OPEN] == 0, 1, "every open order cancelled")
                    assert orders_slot[cb.S_CUSTOM + execute.ST_LAST_ORDER_NS] <= g[cb.G_KILL_TIME_NS]
                code, output = run.finish(timeout=120)
                assert code == 3, output  # ExitCode.STAGE_DIED
                what = "the watchdog" if victim == "watchdog" else f"stage {victim}"
                assert f"{what} (pid {pids[victim]}) died (signal SIGKILL)" in output, output
        finally:
            block.close()
        _wait(lambda: not any(_alive(pid) for pid in pids.values()), 30, f"every process of the run ({victim} killed)")
        _wait(lambda: not segment.list_segments(names.run_prefix(name)), 30, "the run's shared memory gone")
        if victim == "watchdog":
            assert postmortem.read(name) is None  # this start removed the supervisor's account
        if victim not in ("supervisor", "recorder"):
            # The recorder stops after the journal and holds every row its files hold; one that died with its
            # run was caught up by the next run's (same journal id), without a row twice.
            assert compare_with_journal(pg_dsn, journal) == [], f"{victim} killed:\n{output}"
