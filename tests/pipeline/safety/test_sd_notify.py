"""``bot4 run`` under systemd's notify protocol, against a real notify socket: READY=1 only once armed, STATUS
with the trading state, WATCHDOG=1 while every process heartbeats and not while one hangs, STOPPING=1."""
import os
import signal
import uuid

from pipeline import names
from pipeline.graph import BY_NAME
from pipeline.safety.sd_notify import watchdog_interval_ns
from shm import control as cb
from tests.pipeline.safety.notify_socket import pings

COMPILE_S = 900  # the first live run after a source edit compiles the kernels; under load it takes minutes


def test_the_watchdog_interval_is_half_of_watchdog_usec_and_only_for_the_process_it_names():
    assert watchdog_interval_ns({"WATCHDOG_USEC": "10000000"}, 42) == 5_000_000_000
    assert watchdog_interval_ns({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}, 42) == 5_000_000_000
    assert watchdog_interval_ns({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "41"}, 42) == 0
    for usec in ("", "0", "-5", "10s", "ten"):
        assert watchdog_interval_ns({"WATCHDOG_USEC": usec}, 42) == 0


def test_ready_comes_once_armed_then_status_and_pings_and_stopping_on_sigterm(live, notify, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 200 ms
    run = live("--quiet", "--duration", "120", name=f"ops{uuid.uuid4().hex[:8]}")
    ready = notify.wait_for("READY", "1", timeout_s=COMPILE_S)
    block = cb.ControlBlock.attach(names.control(run.name))
    try:
        # Start-up was over when READY=1 was sent: the run armed, and its STATUS said so first.
        assert block.globals[cb.G_RUN_STATE] == cb.RUN_RUNNING and block.globals[cb.G_TRADING_ENABLED] == 1
    finally:
        block.close()
    assert all("WATCHDOG" not in d.fields for d in notify.seen[:-1])  # no ping before ready
    status = [d.fields["STATUS"] for d in notify.seen if "STATUS" in d.fields]
    assert status and status[-1].startswith("trading enabled | orders 0 fills 0 open 0 | PnL $0.00"), status
    healthy = notify.collect(2.0)
    assert pings(healthy) >= 3, [d.fields for d in healthy]
    run.proc.send_signal(signal.SIGTERM)
    stopping = notify.wait_for("STOPPING", "1")
    assert notify.seen[-2].fields["STATUS"].startswith("stopping (SIGTERM)")
    code, output = run.finish(timeout=60)
    assert code == 0, output
    after = notify.collect(0.2)
    assert not any("WATCHDOG" in d.fields for d in after)
    # NotifyAccess=main: every datagram came from the supervisor, none from a stage.
    assert {d.pid for d in notify.seen} == {run.proc.pid}
    assert ready.at < stopping.at


def test_a_hung_stage_stops_the_pings_until_it_runs_again(live, notify, monkeypatch, tmp_path):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 100 ms
    config = tmp_path / "hb.toml"
    config.write_text("[watchdog]\nheartbeat_stale_ms = 200\n")
    run = live("--quiet", "--duration", "120", "--config", str(config), name=f"ops{uuid.uuid4().hex[:8]}")
    notify.wait_for("READY", "1", timeout_s=COMPILE_S)
    assert pings(notify.collect(1.0)) >= 3
    block = cb.ControlBlock.attach(names.control(run.name))
    try:
        risk = int(block.stages[BY_NAME["risk"].index][cb.S_PID])
    finally:
        block.close()
    os.kill(risk, signal.SIGSTOP)
    try:
        said = notify.wait_for("STATUS", timeout_s=5.0)  # the first state after the stop: stale, not pinging
        while "not pinging" not in said.fields["STATUS"]:
            said = notify.wait_for("STATUS", timeout_s=5.0)
        assert "not pinging the service watchdog: stage risk heartbeat" in said.fields["STATUS"]
        hung = notify.collect(1.0)
        assert pings(hung) == 0, [d.fields for d in hung]
    finally:
        os.kill(risk, signal.SIGCONT)
    notify.wait_for("WATCHDOG", "1", timeout_s=5.0)  # every process heartbeats again (trading stays off)
    run.proc.send_signal(signal.SIGTERM)
    notify.wait_for("STOPPING", "1")
    code, output = run.finish(timeout=60)
    assert code == 5, output  # trading tripped during the run (heartbeat stale: risk)
    assert "trading was disabled during the run: heartbeat stale: risk" in output
