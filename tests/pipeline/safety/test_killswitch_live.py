"""Layer 0 with real processes: the rack switch on a pseudo-terminal, killed and hung stages, a stalled
feed, a crash to the hard drawdown, explicit re-arm, and the restart policy."""
import os
import signal
import subprocess
import sys
import threading
import time
import tty

import pytest

from pipeline import kill_reasons, names
from pipeline.registry import STAGE_NAMES
from pipeline.safety.switch import encode_frame
from shm import control as cb
from stages import execute
from tests.conftest import ROOT, SIGNAL_ARGS


class Rack:
    """The controller on the rack: a pty whose master end sends frames at 20 Hz from a thread."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.mode = "A"
        self.seq = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        os.set_blocking(self.master, False)
        while self.running:
            if self.mode in ("A", "K"):
                try:
                    os.write(self.master, encode_frame(self.mode, self.seq & 0xFF))
                except OSError:
                    pass
                self.seq += 1
            try:
                os.read(self.master, 4096)  # the watchdog's status frames
            except OSError:
                pass
            time.sleep(0.05)

    def unplug(self):
        self.running = False
        self.thread.join()
        os.close(self.master)
        os.close(self.slave)

    def close(self):
        if self.running:
            self.unplug()


def config_file(tmp_path, text):
    path = tmp_path / "bot4.toml"
    path.write_text(text)
    return str(path)


def wait_until(predicate, timeout=5.0, step=0.001):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def wait_tripped(g, trips=1, timeout=2.0, step=0.001):
    """The flag down and trip number ``trips`` latched: cb.trip stamps the kill time and text after the flag
    and counts the trip last, so a reader that only waited for the flag may read a half-written latch."""
    return wait_until(lambda: g[cb.G_TRADING_ENABLED] == 0 and g[cb.G_TRIPS] >= trips, timeout, step)


def cli(*args, name):
    return subprocess.run([sys.executable, "-m", "tools.cli", *args, "--name", name], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def attach(run):
    return cb.ControlBlock.attach(names.control(run.name))


def execute_stat(block, index):
    return int(block.stages[STAGE_NAMES.index("execute")][cb.S_CUSTOM + index])


@pytest.fixture
def rack():
    r = Rack()
    yield r
    r.close()


def test_the_rack_switch_trips_on_kill_and_silence_and_arming_needs_it_armed(live, rack, tmp_path):
    conf = config_file(tmp_path, f'[killswitch]\nmode = "heartbeat"\nport = "{rack.path}"\n'
                                 'heartbeat_timeout_ms = 250\n')
    run = live(*SIGNAL_ARGS, "--quiet", "--config", conf)
    line = run.wait_for(r"bot4: running")
    assert "trading enabled" in line
    block = attach(run)
    try:
        g = block.globals
        assert wait_until(lambda: execute_stat(block, execute.ST_OPEN) > 0)
        rack.mode = "K"
        pressed = time.monotonic()
        assert wait_tripped(g, timeout=2)
        assert time.monotonic() - pressed < 0.3
        assert g[cb.G_KILL_REASON] == kill_reasons.KILL_SWITCH_PRESSED
        assert wait_until(lambda: execute_stat(block, execute.ST_OPEN) == 0, timeout=1)
        assert execute_stat(block, execute.ST_LAST_ORDER_NS) <= g[cb.G_KILL_TIME_NS]
        refused = cli("killswitch", "arm", name=run.name)
        assert refused.returncode == 3 and "arm refused: kill switch kill pressed" in refused.stdout
        status = cli("killswitch", "status", name=run.name)
        assert "reason: kill switch pressed" in status.stdout and "switch: kill_pressed" in status.stdout
        rack.mode = "A"
        assert wait_until(lambda: cli("killswitch", "arm", name=run.name).returncode == 0, timeout=5, step=0.1)
        assert g[cb.G_TRADING_ENABLED] == 1
        rack.mode = "silent"
        silent = time.monotonic()
        assert wait_tripped(g, trips=2, timeout=2)
        assert 0.2 < time.monotonic() - silent < 1.0  # timeout 250 ms; the upper bound allows a loaded CI machine
        assert g[cb.G_KILL_REASON] == kill_reasons.KILL_SWITCH_SILENT
        rack.mode = "A"
        assert wait_until(lambda: cli("killswitch", "arm", name=run.name).returncode == 0, timeout=5, step=0.1)
        rack.unplug()
        assert wait_tripped(g, trips=3, timeout=2)
        assert g[cb.G_KILL_REASON] == kill_reasons.KILL_SWITCH_LOST
        refused = cli("killswitch", "arm", name=run.name)
        assert refused.returncode == 3 and "kill switch disconnected" in refused.stdout
        assert g[cb.G_SWITCH_DISCONNECTS] >= 1
    finally:
        block.close()
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish()
    assert code == 5, output


def test_a_stalled_feed_trips_feed_stale_and_blocks_arming(live, tmp_path):
    conf = config_file(tmp_path, "[feed]\nstall_after_events = 5000\n[watchdog]\nfeed_stale_ms = 300\n")
    run = live(*SIGNAL_ARGS, "--quiet", "--config", conf)
    run.wait_for(r"bot4: running")
    block = attach(run)
    try:
        g = block.globals
        assert wait_tripped(g, timeout=5)
        assert g[cb.G_KILL_REASON] == kill_reasons.KILL_FEED_STALE
        assert block.stages[0][cb.S_STATE] == cb.RUNNING  # alive, heartbeating, silent
        refused = cli("killswitch", "arm", name=run.name)
        assert refused.returncode == 3 and "no valid market event for" in refused.stdout
    finally:
        block.close()
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish()
    assert code == 5 and "trading was disabled during the run: feed stale" in output


def test_a_crash_through_the_hard_drawdown_trips_and_flattens(live, tmp_path):
    conf = config_file(tmp_path, "[feed]\ncrash_after_events = 3000\ncrash_bps_per_event = 3.0\n"
                                 "[risk]\ncapital_usd = 20000.0\n[execute]\nflatten_retry_ms = 10.0\n")
    run = live(*SIGNAL_ARGS, "--quiet", "--config", conf)
    run.wait_for(r"bot4: running")
    block = attach(run)
    try:
        g = block.globals
        assert wait_tripped(g, timeout=30, step=0.01)
        assert g[cb.G_KILL_REASON] == kill_reasons.KILL_HARD_DRAWDOWN, cb.kill_text(g)
        assert "from peak equity (limit 20%)" in cb.kill_text(g)
        # Five levels of synthetic depth per attempt: flattening takes a few attempts per instrument.
        assert wait_until(lambda: execute_stat(block, execute.ST_GROSS_USD) == 0, timeout=15, step=0.01)
        assert execute_stat(block, execute.ST_FLATTEN_ORDERS) > 0
    finally:
        block.close()
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish()
    assert code == 5 and "hard drawdown" in output


def test_operator_trip_is_latched_alerted_and_arm_clears_it(live, tmp_path):
    import msgpack
    import zmq
    endpoint = f"ipc://{tmp_path}/alerts"
    hook_out = tmp_path / "hook.txt"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$BOT4_EVENT $BOT4_REASON $BOT4_DETAIL" >> {hook_out}\n')
    hook.chmod(0o755)
    conf = config_file(tmp_path, f'[watchdog]\nalert_endpoint = "{endpoint}"\nalert_command = "{hook}"\n')
    context = zmq.Context()
    alerts = context.socket(zmq.SUB)
    alerts.setsockopt(zmq.SUBSCRIBE, b"alert")
    alerts.connect(endpoint)
    run = live(*SIGNAL_ARGS, "--quiet", "--config", conf)
    run.wait_for(r"bot4: running")
    time.sleep(0.3)  # the subscription reaches the publisher
    tripped = cli("killswitch", "trip", "--reason", "maintenance window", name=run.name)
    assert tripped.returncode == 0 and "tripped" in tripped.stdout
    again = cli("killswitch", "trip", "--reason", "second", name=run.name)
    assert "already disabled" in again.stdout
    status = cli("killswitch", "status", name=run.name)
    assert "reason: operator" in status.stdout and "detail: maintenance window" in status.stdout
    try:
        messages = []
        while alerts.poll(3000):
            messages.append(msgpack.unpackb(alerts.recv_multipart()[1]))
            if messages[-1]["event"] == "trip":
                break
        # The start-up "armed" may precede it (zmq drops what a subscriber joins too late for).
        assert [m["event"] for m in messages][-1] == "trip"
        assert all(m["event"] == "armed" for m in messages[:-1])
        message = messages[-1]
        assert message["reason"] == "operator"
        assert message["detail"] == "maintenance window" and message["run"] == run.name
    finally:
        alerts.close()
        context.term()
    assert wait_until(lambda: hook_out.exists() and "trip operator maintenance window" in hook_out.read_text(),
                      timeout=5, step=0.05)
    # A same-user write of 1 is no arm: the watchdog owns the flag, drops it again and says so.
    block = attach(run)
    try:
        g = block.globals
        block.globals[cb.G_TRADING_ENABLED] = 1
        assert wait_tripped(g, trips=2)
        assert g[cb.G_KILL_REASON] == kill_reasons.KILL_UNGRANTED_ARM
    finally:
        block.close()
    assert wait_until(lambda: hook_out.exists() and "trip arm not granted" in hook_out.read_text(), timeout=5,
                      step=0.05)
    armed = cli("killswitch", "arm", name=run.name)
    assert armed.returncode == 0 and "armed" in armed.stdout, armed.stdout
    assert "trading: ENABLED" in cli("killswitch", "status", name=run.name).stdout
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish()
    assert code == 5, output
    assert "watchdog: trading disabled: reason=operator: maintenance window" in output
    assert "watchdog: trading disabled: reason=arm not granted: trading_enabled set to 1 without an arm" in output


def test_restart_policy_restarts_a_dead_stage_and_stays_disarmed(live, tmp_path):
    conf = config_file(tmp_path, '[run]\nrestart = "restart"\nmax_restarts = 1\n')
    run = live(*SIGNAL_ARGS, "--quiet", "--config", conf)
    run.wait_for(r"bot4: running")
    block = attach(run)
    try:
        g = block.globals
        slot = block.stages[STAGE_NAMES.index("risk")]
        old = int(slot[cb.S_PID])
        os.kill(old, signal.SIGKILL)
        run.wait_for(r"restarted risk \(restart 1 of 1\)")
        assert wait_until(lambda: slot[cb.S_STATE] == cb.RUNNING and slot[cb.S_PID] != old, timeout=60)
        assert g[cb.G_TRADING_ENABLED] == 0 and g[cb.G_RESTARTS] == 1
        assert wait_until(lambda: cli("killswitch", "arm", name=run.name).returncode == 0, timeout=10, step=0.2)
        os.kill(int(slot[cb.S_PID]), signal.SIGKILL)  # the second death exceeds max_restarts
    finally:
        block.close()
    code, output = run.finish()
    assert code == 3 and "restart limit (1) reached; stopping" in output


def test_the_journal_shows_no_order_accepted_after_a_stage_died(live, tmp_path):
    import numpy as np

    from pipeline.store.journal import JournalReader
    from stages import records
    journal = tmp_path / "journal"
    conf = config_file(tmp_path, f'[journal]\ndir = "{journal}"\n')
    run = live(*SIGNAL_ARGS, "--quiet", "--config", conf)
    run.wait_for(r"bot4: running")
    block = attach(run)
    try:
        g = block.globals
        # Enough market in the journal before the kill: the stop after it ends the feed as soon as execute is flat.
        assert wait_until(lambda: execute_stat(block, execute.ST_ORDERS) > 50 and block.stages[0][cb.S_OUT] > 2000,
                          timeout=10)
        os.kill(int(block.stages[STAGE_NAMES.index("risk")][cb.S_PID]), signal.SIGKILL)
        assert wait_tripped(g, timeout=2)
        kill_ns = int(g[cb.G_KILL_TIME_NS])
        assert wait_until(lambda: execute_stat(block, execute.ST_OPEN) == 0, timeout=1)
        time.sleep(0.3)  # keep the market flowing past the kill
    finally:
        block.close()
    code, output = run.finish()
    assert code == 3, output
    assert "journal market: " in output and "journal exec: " in output
    reports = JournalReader(str(journal), "exec").read_all()
    market = JournalReader(str(journal), "market").read_all()
    assert len(market) > 1000 and np.all(np.diff(market["origin_seq"]) == 1), output  # dense: nothing missed
    sent = reports[(reports["state"] == records.ORD_NEW) & (reports["strategy"] != records.STRAT_FLATTEN)]
    assert len(sent) > 50
    assert sent["stage_ts"].max() <= kill_ns  # no order sent after the flag dropped
    after = reports[reports["stage_ts"] > kill_ns]
    # after it: the venue's answers to what was sent before (an ack or fill comes a latency later), cancels and
    # their answers, rejections, and execute's own flatten orders
    assert np.all(np.isin(after["state"], [records.ORD_CANCELLED, records.ORD_REJECTED, records.ORD_FILLED,
                                           records.ORD_PARTIAL, records.ORD_ACKED, records.ORD_PENDING_CANCEL,
                                           records.ORD_NEW]))
    assert np.all(after[after["state"] == records.ORD_NEW]["strategy"] == records.STRAT_FLATTEN)
    late_acks = after[(after["state"] == records.ORD_ACKED) & (after["strategy"] != records.STRAT_FLATTEN)]
    assert np.all(late_acks["send_ts"] <= kill_ns)  # an ack after the kill answers an order sent before it
