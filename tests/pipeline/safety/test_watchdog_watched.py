"""The watchdog is watched: the supervisor disables trading when the watchdog process dies or stops polling
(SIGKILL, SIGSTOP of a live run's watchdog), says so, and stops the pings to systemd's watchdog."""
import os
import signal
import time
import uuid

from pipeline import kill_reasons, names
from pipeline.registry import slot
from shm import control as cb
from shm import segment
from tests.conftest import kill_and_wait_for_trip
from tests.pipeline.safety.notify_socket import pings

COMPILE_S = 900
WATCHDOG = slot("watchdog")


def _armed(live, *args):
    run = live("--quiet", "--duration", "120", *args, name=f"ops{uuid.uuid4().hex[:8]}")
    run.wait_for(r"bot4: running", timeout=COMPILE_S)
    block = cb.ControlBlock.attach(names.control(run.name))
    assert block.globals[cb.G_TRADING_ENABLED] == 1
    return run, block


def test_a_killed_watchdog_disables_trading_and_stops_the_run(live):
    run, block = _armed(live)
    try:
        pid = int(block.stages[WATCHDOG][cb.S_PID])
        kill_and_wait_for_trip(block, pid)
        g = block.globals
        assert g[cb.G_TRADING_ENABLED] == 0
        assert g[cb.G_KILL_REASON] == kill_reasons.KILL_STAGE_DIED and g[cb.G_KILL_STAGE] == WATCHDOG
        assert cb.kill_text(g) == (f"the watchdog (pid {pid}) died (signal SIGKILL): nothing watches the kill "
                                   "switch or the stages")
    finally:
        block.close()
    code, output = run.finish(timeout=60)
    assert code == 3, output  # run.restart = never: a dead process stops the run
    assert (f"bot4: the watchdog (pid {pid}) died (signal SIGKILL): nothing watches the kill switch or the stages; "
            "trading disabled") in output
    assert "trading was disabled during the run: stage died: watchdog" in output
    assert not segment.list_segments(names.run_prefix(run.name))


def test_a_stopped_watchdog_disables_trading_within_its_heartbeat_limit_and_stops_the_pings(live, notify,
                                                                                             monkeypatch, tmp_path):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 100 ms
    config = tmp_path / "hb.toml"
    config.write_text("[watchdog]\nheartbeat_stale_ms = 200\n")
    run, block = _armed(live, "--config", str(config))
    try:
        notify.wait_for("READY", "1")
        assert pings(notify.collect(0.5)) >= 2
        g = block.globals
        pid = int(block.stages[WATCHDOG][cb.S_PID])
        trips = g[cb.G_TRIPS]
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:  # the trip is whole once counted: cb.trip drops the flag first and counts the trip last
            while (g[cb.G_TRADING_ENABLED] or g[cb.G_TRIPS] == trips) and time.monotonic() - stopped_at < 10:
                time.sleep(0.005)
            tripped_after = time.monotonic() - stopped_at
            assert g[cb.G_TRADING_ENABLED] == 0
            assert g[cb.G_KILL_REASON] == kill_reasons.KILL_HEARTBEAT_STALE and g[cb.G_KILL_STAGE] == WATCHDOG
            assert cb.kill_text(g).startswith(f"the watchdog (pid {pid}) heartbeat ")
            assert cb.kill_text(g).endswith("ms old (limit 200): nothing watches the kill switch or the stages")
            # Not before its heartbeat limit; within it plus the supervisor's 20 ms watch loop, on a loaded
            # machine give or take a scheduling delay.
            assert 0.15 < tripped_after < 3.0, tripped_after
            notify.collect(0.3)  # a ping judged before the heartbeat went stale may still be on its way
            assert pings(notify.collect(1.0)) == 0
            assert any("not pinging the service watchdog: watchdog heartbeat" in d.fields.get("STATUS", "")
                       for d in notify.seen)
        finally:
            os.kill(pid, signal.SIGCONT)
        notify.wait_for("WATCHDOG", "1", timeout_s=5.0)
        assert g[cb.G_TRADING_ENABLED] == 0  # latched: back is not re-armed
        run.wait_for(rf"bot4: the watchdog \(pid {pid}\) polls again; trading stays disabled until: "
                     r"bot4 killswitch arm", timeout=10)
    finally:
        block.close()
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish(timeout=60)
    assert code == 5, output  # stopped on request, trading having tripped
    assert f"bot4: the watchdog (pid {pid}) heartbeat " in output and "; trading disabled" in output
    assert "trading was disabled during the run: heartbeat stale: watchdog" in output
    assert "watchdog: trading disabled: reason=heartbeat stale stage=watchdog" in output  # its own alert, once back
    assert not segment.list_segments(names.run_prefix(run.name))
