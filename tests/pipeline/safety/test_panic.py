"""Panic conditions and the arm protocol, in-process against a control block and a scripted clock."""
import os
import time

from pipeline import kill_reasons
from pipeline.config import Config, WatchdogConfig
from pipeline.registry import STAGE_NAMES
from pipeline.safety.panic import PanicMonitor, read_clocks
from pipeline.safety.watchdog import Watchdog
from shm import control as cb
from shm import segment
from stages import risk, validate

NOW = 1_800_000_000_000_000_000
MONO = 5_000_000_000


def running_block(block=None):
    block = block or cb.ControlBlock.local()
    g = block.globals
    g[cb.G_RUN_STATE] = cb.RUN_RUNNING
    g[cb.G_SUPERVISOR_PID] = os.getpid()
    for i in range(len(STAGE_NAMES)):
        s = block.stages[i]
        s[cb.S_STATE], s[cb.S_PID], s[cb.S_HEARTBEAT_NS] = cb.RUNNING, os.getpid(), NOW
    return block


def reasons(conditions):
    return [(c.reason, c.stage) for c in conditions]


def test_a_healthy_pipeline_holds_no_condition():
    assert PanicMonitor(WatchdogConfig()).evaluate(running_block(), NOW, MONO) == []


def test_stale_heartbeat_dead_and_failed_stages_are_named():
    block = running_block()
    block.stages[2][cb.S_HEARTBEAT_NS] = NOW - 600_000_000
    block.stages[4][cb.S_PID] = 2 ** 22 + 12345  # no such process
    block.stages[5][cb.S_STATE] = cb.FAILED
    got = PanicMonitor(WatchdogConfig(heartbeat_stale_ms=500)).evaluate(block, NOW, MONO)
    assert reasons(got) == [(kill_reasons.KILL_HEARTBEAT_STALE, 2), (kill_reasons.KILL_STAGE_DIED, 4), (kill_reasons.KILL_STAGE_FAILED, 5)]
    assert "stage feature heartbeat 600 ms old (limit 500)" == got[0].detail


def test_a_ring_blocked_too_long_trips():
    block = running_block()
    block.stages[1][cb.S_BLOCKED_SINCE_NS] = NOW - 1_500_000_000
    assert reasons(PanicMonitor(WatchdogConfig(ring_blocked_ms=1000)).evaluate(block, NOW, MONO)) == \
        [(kill_reasons.KILL_RING_BLOCKED, 1)]


def test_feed_stale_when_no_valid_event_arrives():
    block = running_block()
    monitor = PanicMonitor(WatchdogConfig(feed_stale_ms=100))
    forwarded = block.stages[1][cb.S_CUSTOM + validate.ST_FORWARDED:]
    forwarded[0] = 10
    block.stages[0][cb.S_HEARTBEAT_NS] = NOW + 150_000_000  # the feed is alive, just silent
    for i in range(len(STAGE_NAMES)):
        block.stages[i][cb.S_HEARTBEAT_NS] = NOW + 150_000_000
    assert monitor.evaluate(block, NOW, MONO) == []
    assert monitor.evaluate(block, NOW + 90_000_000, MONO + 90_000_000) == []
    stale = monitor.evaluate(block, NOW + 150_000_000, MONO + 150_000_000)
    assert reasons(stale) == [(kill_reasons.KILL_FEED_STALE, 0)] and "no valid market event for 150 ms" in stale[0].detail
    forwarded[0] = 11
    assert monitor.evaluate(block, NOW + 160_000_000, MONO + 160_000_000) == []


def test_error_rate_over_the_threshold_trips():
    block = running_block()
    monitor = PanicMonitor(WatchdogConfig(max_error_fraction=0.05, feed_stale_ms=0, error_window_s=1.0))
    slot = block.stages[1]
    for i in range(len(STAGE_NAMES)):
        block.stages[i][cb.S_HEARTBEAT_NS] = NOW + 2_000_000_000
    monitor.evaluate(block, NOW, MONO)
    slot[cb.S_IN] += 10_000
    slot[cb.S_CUSTOM + validate.ST_QUARANTINED] += 400  # 4%
    assert monitor.evaluate(block, NOW + 1_000_000_000, MONO + 1_000_000_000) == []
    slot[cb.S_IN] += 10_000
    slot[cb.S_CUSTOM + validate.ST_QUARANTINED] += 900  # 9%
    got = monitor.evaluate(block, NOW + 2_000_000_000, MONO + 2_000_000_000)
    assert reasons(got) == [(kill_reasons.KILL_ERROR_RATE, 1)] and "9.0%" in got[0].detail


def test_hard_drawdown_from_the_risk_stage_trips():
    block = running_block()
    block.stages[3][cb.S_CUSTOM + risk.ST_DRAWDOWN_BPS] = 1999
    assert PanicMonitor(WatchdogConfig()).evaluate(block, NOW, MONO) == []
    block.stages[3][cb.S_CUSTOM + risk.ST_DRAWDOWN_BPS] = 2000
    assert reasons(PanicMonitor(WatchdogConfig()).evaluate(block, NOW, MONO)) == [(kill_reasons.KILL_HARD_DRAWDOWN, 3)]


def test_the_wall_clock_stepping_back_trips():
    block = running_block()
    monitor = PanicMonitor(WatchdogConfig(clock_backwards_ms=1.0))
    assert monitor.evaluate(block, NOW, MONO) == []
    assert monitor.evaluate(block, NOW + 1_000_000, MONO + 1_000_000) == []  # both advanced: fine
    got = monitor.evaluate(block, NOW - 5_000_000, MONO + 2_000_000)  # wall went back 5 ms (7 ms vs mono)
    assert reasons(got) == [(kill_reasons.KILL_CLOCK_BACKWARDS, -1)]


def test_a_preemption_between_clock_reads_is_not_a_clock_step(monkeypatch):
    """The first bracket is stretched 3 ms (as if preempted between the reads): it is read again."""
    wall_reads = iter([NOW, NOW + 3_100_000])
    mono_reads = iter([MONO, MONO + 3_000_000, MONO + 3_050_000, MONO + 3_060_000])
    monkeypatch.setattr(time, "time_ns", lambda: next(wall_reads))
    monkeypatch.setattr(time, "monotonic_ns", lambda: next(mono_reads))
    wall, mono = read_clocks()
    assert (wall, mono) == (NOW + 3_100_000, MONO + 3_055_000)
    monitor = PanicMonitor(WatchdogConfig(clock_backwards_ms=1.0))
    block = running_block()
    assert monitor.evaluate(block, NOW, MONO + 50) == []
    assert monitor.evaluate(block, wall, mono) == []  # the offset moved 45 us, not 3 ms


def test_a_corrupted_control_block_trips(shm_prefix):
    block = running_block(cb.ControlBlock.create(f"{shm_prefix}.control"))
    try:
        monitor = PanicMonitor(WatchdogConfig())
        assert monitor.evaluate(block, NOW, MONO) == []
        block.globals[cb.G_TRADING_ENABLED] = 7
        assert reasons(monitor.evaluate(block, NOW, MONO)) == [(kill_reasons.KILL_CONTROL_CORRUPT, -1)]
        block.globals[cb.G_TRADING_ENABLED] = 0
        header = block.segment.header
        header[segment.H_MAGIC] ^= 0xFF
        del header
        got = monitor.evaluate(block, NOW, MONO)
        assert reasons(got) == [(kill_reasons.KILL_CONTROL_CORRUPT, -1)] and "magic" in got[0].detail
    finally:
        seg = block.segment
        block.close()
        seg.unlink()


class ScriptedSwitch:
    def __init__(self, state):
        from pipeline.safety.switch import SwitchReading
        self.state = state
        self.make = lambda s: SwitchReading(s, s.name == "ARMED", 0, 1, 0, 0, 0, 0, 0, 0, 0, "scripted")

    def poll(self, now_ns):
        return self.make(self.state)

    def report(self, tripped, now_ns):
        pass


def arm(dog):
    g = dog.block.globals
    g[cb.G_ARM_REQUEST] += 1
    dog.poll()
    assert g[cb.G_ARM_RESULT_ID] == g[cb.G_ARM_REQUEST]
    return bool(g[cb.G_TRADING_ENABLED]), cb.conditions_text(g)


def watchdog_with(switch_state=None, **watchdog):
    from pipeline.safety.switch import SwitchState
    block = running_block()
    config = Config().with_overrides(watchdog={"feed_stale_ms": 0, **watchdog},
                                     killswitch={"mode": "heartbeat", "port": "loop://"})
    switch = ScriptedSwitch(switch_state if switch_state is not None else SwitchState.ARMED)
    cb.disable_trading(block.globals, kill_reasons.KILL_NOT_ARMED, -1, 1)
    return Watchdog(config, block, switch, None), switch


def test_arm_is_refused_with_each_blocking_condition_named_and_accepted_once_clear():
    from pipeline.safety.switch import SwitchState
    dog, switch = watchdog_with(SwitchState.SILENT)
    armed, why = arm(dog)
    assert not armed and why.startswith("kill switch silent")
    switch.state = SwitchState.KILL_PRESSED
    assert arm(dog) == (False, "kill switch kill pressed: scripted")
    switch.state = SwitchState.ARMED
    dog.block.stages[3][cb.S_HEARTBEAT_NS] = time.time_ns() - 10 ** 10
    armed, why = arm(dog)
    assert not armed and why.startswith("stage risk heartbeat")
    dog.block.stages[3][cb.S_HEARTBEAT_NS] = time.time_ns()
    dog.block.stages[3][cb.S_CUSTOM + risk.ST_DRAWDOWN_BPS] = 2500
    armed, why = arm(dog)
    assert not armed and why == "drawdown 25.00% from peak equity (limit 20%)"
    dog.block.stages[3][cb.S_CUSTOM + risk.ST_DRAWDOWN_BPS] = 0
    for i in range(len(STAGE_NAMES)):
        dog.block.stages[i][cb.S_HEARTBEAT_NS] = time.time_ns()
    assert arm(dog) == (True, "")
    assert dog.block.globals[cb.G_KILL_REASON] == kill_reasons.KILL_NONE


def test_a_trip_is_latched_with_the_first_reason_and_never_re_armed_by_itself():
    from pipeline.safety.switch import SwitchState
    dog, switch = watchdog_with()
    for i in range(len(STAGE_NAMES)):
        dog.block.stages[i][cb.S_HEARTBEAT_NS] = time.time_ns()
    assert arm(dog)[0]
    switch.state = SwitchState.KILL_PRESSED
    dog.poll()
    g = dog.block.globals
    assert g[cb.G_TRADING_ENABLED] == 0 and g[cb.G_KILL_REASON] == kill_reasons.KILL_SWITCH_PRESSED
    assert g[cb.G_KILL_MONO_NS] > 0 and cb.kill_text(g).startswith("kill switch kill pressed")
    switch.state = SwitchState.SILENT
    dog.poll()
    assert g[cb.G_KILL_REASON] == kill_reasons.KILL_SWITCH_PRESSED  # the first reason stays
    switch.state = SwitchState.ARMED
    for _ in range(5):
        dog.poll()
    assert g[cb.G_TRADING_ENABLED] == 0  # all clear is not enough: arming is explicit
    assert g[cb.G_TRIPS] == 1


class RecordingAlerter:
    def __init__(self):
        self.sent = []

    def send(self, event, **fields):
        if event == "trip":
            self.sent.append((event, fields))


def test_an_alert_waits_for_another_process_to_finish_latching_its_trip(monkeypatch):
    # cb.trip drops the flag first and writes the text and the trip count after: a watchdog polling in
    # between must not alert an empty reason (this raced in the live operator-trip test).
    dog, _ = watchdog_with()
    dog.alerter = RecordingAlerter()
    for i in range(len(STAGE_NAMES)):
        dog.block.stages[i][cb.S_HEARTBEAT_NS] = time.time_ns()
    assert arm(dog)[0]
    g = dog.block.globals
    cb.disable_trading(g, kill_reasons.KILL_OPERATOR, -1, time.time_ns())  # the operator's half of cb.trip so far
    dog.poll()
    assert dog.alerter.sent == []
    cb.set_kill_text(g, "maintenance window")
    g[cb.G_TRIPS] += 1
    dog.poll()
    assert [(e, f["reason"], f["detail"]) for e, f in dog.alerter.sent] == [("trip", "operator", "maintenance window")]
    dog.poll()
    assert len(dog.alerter.sent) == 1


def test_a_tripper_that_died_half_way_is_still_alerted(monkeypatch):
    import pipeline.safety.watchdog as watchdog_module
    monkeypatch.setattr(watchdog_module, "TRIP_LATCH_WAIT_NS", 0)
    dog, _ = watchdog_with()
    dog.alerter = RecordingAlerter()
    for i in range(len(STAGE_NAMES)):
        dog.block.stages[i][cb.S_HEARTBEAT_NS] = time.time_ns()
    assert arm(dog)[0]
    cb.disable_trading(dog.block.globals, kill_reasons.KILL_OPERATOR, -1, time.time_ns())
    dog.poll()
    dog.poll()
    assert [(e, f["reason"]) for e, f in dog.alerter.sent] == [("trip", "operator")]


def feed_validate(block, monitor, seconds, rate, bad_every, wall=NOW, mono=MONO, step_ns=4_000_000):
    """``rate`` events a second into validate, one in ``bad_every`` quarantined, polled every ``step_ns`` on a
    scripted clock; the conditions of the first poll that held any, else []."""
    slot = block.stages[1]
    per_step = rate * step_ns / 1e9
    owed, seen = 0.0, 0
    for k in range(int(seconds * 1e9 / step_ns)):
        owed += per_step
        while owed >= 1:
            owed -= 1
            seen += 1
            slot[cb.S_IN] += 1
            if seen % bad_every == 0:
                slot[cb.S_CUSTOM + validate.ST_QUARANTINED] += 1
        t = k * step_ns
        for i in range(len(STAGE_NAMES)):
            block.stages[i][cb.S_HEARTBEAT_NS] = wall + t
        got = monitor.evaluate(block, wall + t, mono + t)
        if got:
            return got
    return []


def test_the_error_rate_guard_trips_at_a_real_stream_rate():
    """250 events/s (a real Binance stream), 9% quarantined: the old one-second window wanted 1,000 events."""
    got = feed_validate(running_block(), PanicMonitor(WatchdogConfig(feed_stale_ms=0)), 20, 250, 11)
    assert reasons(got) == [(kill_reasons.KILL_ERROR_RATE, 1)]
    assert got[0].detail.startswith("9.0% of market events quarantined over the last 2.0 s (45 of 500")


def test_the_error_rate_guard_holds_at_one_percent_and_below_the_minimum_count():
    assert feed_validate(running_block(), PanicMonitor(WatchdogConfig(feed_stale_ms=0)), 20, 250, 100) == []
    # 5 events/s, half of them bad: never the minimum count inside the window, so no verdict on noise.
    assert feed_validate(running_block(), PanicMonitor(WatchdogConfig(feed_stale_ms=0)), 20, 5, 2) == []


def test_trading_enabled_written_without_an_arm_the_watchdog_granted_is_a_trip():
    dog, _ = watchdog_with()
    dog.alerter = RecordingAlerter()
    g = dog.block.globals
    for i in range(len(STAGE_NAMES)):
        dog.block.stages[i][cb.S_HEARTBEAT_NS] = time.time_ns()
    g[cb.G_TRADING_ENABLED] = 1  # before the watchdog ever armed
    dog.poll()
    assert g[cb.G_TRADING_ENABLED] == 0 and g[cb.G_KILL_REASON] == kill_reasons.KILL_UNGRANTED_ARM
    assert "without an arm the watchdog granted" in cb.kill_text(g)
    assert arm(dog)[0]
    dog.poll()
    assert g[cb.G_TRADING_ENABLED] == 1  # its own arm stands
    assert cb.trip(g, kill_reasons.KILL_OPERATOR, -1, "maintenance", time.time_ns(), time.monotonic_ns())
    dog.poll()
    g[cb.G_TRADING_ENABLED] = 1  # a same-user write after a trip
    dog.poll()
    assert g[cb.G_TRADING_ENABLED] == 0 and g[cb.G_KILL_REASON] == kill_reasons.KILL_UNGRANTED_ARM and g[cb.G_TRIPS] == 3
    assert [(e, f["reason"]) for e, f in dog.alerter.sent] == \
        [("trip", "arm not granted"), ("trip", "operator"), ("trip", "arm not granted")]


def test_a_trip_for_a_dead_journal_or_recorder_names_it_in_the_alert():
    from pipeline.registry import NAMES as PROCESSES
    dog, _ = watchdog_with()
    dog.alerter = RecordingAlerter()
    for i in range(len(STAGE_NAMES)):
        dog.block.stages[i][cb.S_HEARTBEAT_NS] = time.time_ns()
    assert arm(dog)[0]
    cb.trip(dog.block.globals, kill_reasons.KILL_STAGE_DIED, PROCESSES.index("journal"), "stage journal died", time.time_ns(),
            time.monotonic_ns())
    dog.poll()
    assert [(f["reason"], f["stage"]) for _, f in dog.alerter.sent] == [("stage died", "journal")]
