"""The agent runner (pipeline.hosting.agent) in-process over a local control block, and the journal and replay
agents in invoker mode: the test calls on_start, do_work, on_stop and on_close itself."""
import gzip
import time
import uuid

import numpy as np
import pytest

from pipeline import kill_reasons, names, registry
from pipeline.config import Config
from pipeline.hosting.agent import Agent, AgentRunner, AgentTerminated, Idle, no_wait
from pipeline.hosting.child import Child
from pipeline.hosting.stage_host import Endpoints
from pipeline.plan import Placement, resolve
from shm import control as cb
from shm import idle as idle_strategies
from shm import ring
from stages import feed, records

WS = __import__("pathlib").Path(__file__).resolve().parents[2] / "data" / "binance-ws-capture"


def child_of(name: str, run_state: int = cb.RUN_RUNNING) -> Child:
    block = cb.ControlBlock.local()
    block.globals[cb.G_RUN_STATE] = run_state
    slot = block.stages[registry.slot(name)]
    slot[cb.S_STATE] = cb.STARTING
    config = Config()
    return Child(name, resolve(config), config, Placement(0, idle_strategies.BUSY_SPIN, False), {}, block, slot)


class Scripted(Agent):
    """Returns the scripted work counts, then asks its own slot to stop (as the supervisor would)."""

    def __init__(self, slot, work=(), stop_level=1, fail=None):
        self.slot = slot
        self.work = list(work)
        self.stop_level = stop_level
        self.fail = fail
        self.calls: list = []
        self.states: list = []

    def on_start(self):
        self.calls.append("start")
        self.states.append(int(self.slot[cb.S_STATE]))

    def do_work(self):
        self.calls.append("work")
        self.states.append(int(self.slot[cb.S_STATE]))
        if self.fail is not None and len(self.work) == 0:
            raise self.fail
        if not self.work:
            self.slot[cb.S_STOP] = self.stop_level
            return 0
        return self.work.pop(0)

    def on_stop(self, level):
        self.calls.append(f"stop {level}")
        super().on_stop(level)

    def on_close(self):
        self.calls.append("close")


def test_the_runner_says_ready_after_on_start_works_while_running_and_stops_on_the_stop_word():
    child = child_of("feed")
    agent = Scripted(child.slot, work=[3, 2])
    assert AgentRunner(agent, child, no_wait()).run() == 0
    assert agent.calls == ["start", "work", "work", "work", "stop 1", "close"]
    assert agent.states == [cb.STARTING, cb.RUNNING, cb.RUNNING, cb.RUNNING]
    assert child.slot[cb.S_STATE] == cb.STOPPED and child.slot[cb.S_HEARTBEAT_NS] > 0
    assert child.slot[cb.S_ERRORS] == 0


def test_the_runner_hands_each_work_count_to_the_idle_strategy():
    child = child_of("journal")
    idle = Idle(idle_strategies.make_params(idle_strategies.BUSY_SPIN))
    agent = Scripted(child.slot, work=[0, 0, 5, 0, 0, 0])
    AgentRunner(agent, child, idle).run()
    # three empty cycles after the last work, and the one in which the stop was asked for
    assert idle.state[idle_strategies.S_IDLE_CYCLES] == 4


def test_a_blocking_strategy_sleeps_instead_of_parking_a_python_host():
    idle = Idle(idle_strategies.make_params(idle_strategies.BLOCKING, 0, 0, 1, 1))
    for _ in range(3):
        idle.idle(0)  # would return PARK to a kernel; a Python host has no semaphore anyone posts
    assert idle.state[idle_strategies.S_IDLE_CYCLES] == 3


@pytest.mark.parametrize("run_state, stop", [(cb.RUN_STOPPING, 0), (cb.RUN_STARTING, 1)])
def test_a_run_that_stops_before_it_runs_gets_no_work_but_a_close(run_state, stop):
    child = child_of("journal", run_state)
    child.slot[cb.S_STOP] = stop
    agent = Scripted(child.slot, work=[1])
    assert AgentRunner(agent, child, no_wait()).run() == 0
    assert agent.calls == ["start", "close"]
    assert child.slot[cb.S_STATE] == cb.STOPPED


def test_an_agent_that_works_before_running_is_running_only_once_the_run_is():
    child = child_of("watchdog", cb.RUN_STARTING)
    agent = Scripted(child.slot, work=[1, 1])
    agent.works_before_running = True
    AgentRunner(agent, child, no_wait()).run()
    assert agent.states[1:] == [cb.READY, cb.READY, cb.READY]


def test_terminated_during_on_start_never_says_ready():
    child = child_of("recorder")

    class StoppedEarly(Scripted):
        def on_start(self):
            super().on_start()
            raise AgentTerminated

    agent = StoppedEarly(child.slot)
    assert AgentRunner(agent, child, no_wait()).run() == 0
    assert agent.calls == ["start", "close"] and child.slot[cb.S_STATE] == cb.STOPPED


def test_stop_levels_reach_the_agent_in_order_and_a_drain_ends_when_a_step_finds_nothing():
    child = child_of("journal")

    class Draining(Scripted):
        draining = False

        def on_stop(self, level):
            self.calls.append(f"stop {level}")
            self.draining = True

        def do_work(self):
            self.calls.append("work")
            if self.draining and not self.work:
                raise AgentTerminated
            if len(self.work) == 2:
                self.slot[cb.S_STOP] = 1
            if len(self.work) == 1:
                self.slot[cb.S_STOP] = 2
            return self.work.pop(0) if self.work else 0

    agent = Draining(child.slot, work=[4, 4, 4])
    assert AgentRunner(agent, child, no_wait()).run() == 0
    assert agent.calls == ["start", "work", "work", "stop 1", "work", "stop 2", "work", "close"]


def test_a_failure_is_reported_in_one_line_trips_and_counts_an_error(capsys):
    child = child_of("feed")
    agent = Scripted(child.slot, work=[1], fail=ValueError("feed.files: x.csv: no line decoded"))
    assert AgentRunner(agent, child, no_wait()).run() == 1
    g = child.block.globals
    assert agent.calls[-1] == "close"
    assert child.slot[cb.S_STATE] == cb.FAILED and child.slot[cb.S_ERRORS] == 1
    assert g[cb.G_KILL_REASON] == kill_reasons.KILL_STAGE_FAILED and g[cb.G_KILL_STAGE] == registry.slot("feed")
    assert cb.kill_text(g) == "feed failed: feed.files: x.csv: no line decoded"
    err = capsys.readouterr().err
    assert err == "bot4: feed failed: feed.files: x.csv: no line decoded\n"  # expected: no traceback


def test_a_bug_is_reported_with_its_traceback_and_its_type(capsys):
    child = child_of("journal")

    class Broken(Scripted):
        def on_close(self):
            super().on_close()
            raise OSError("close failed too")  # the first failure is the one reported

    agent = Broken(child.slot, fail=RuntimeError("no"))
    assert AgentRunner(agent, child, no_wait()).run() == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("bot4: journal failed: RuntimeError: no\n")


def test_an_agent_may_report_its_own_failure_with_its_own_exit_code(capsys):
    child = child_of("recorder")

    class Own(Scripted):
        def on_failure(self, exc):
            print(f"recorder: {exc}", file=__import__("sys").stderr)
            return 3

    agent = Own(child.slot, fail=ValueError("permanent database error"))
    assert AgentRunner(agent, child, no_wait()).run() == 3
    assert child.slot[cb.S_STATE] == cb.FAILED and child.slot[cb.S_ERRORS] == 1
    assert child.block.globals[cb.G_KILL_COUNT] == 0  # nothing tripped: as the recorder always did
    assert capsys.readouterr().err == "recorder: permanent database error\n"


def market_events(n: int) -> np.ndarray:
    batch = np.zeros(n, records.MARKET_EVENT)
    batch["origin_seq"] = np.arange(1, n + 1)
    batch["origin_ts"] = 1_700_000_000_000_000_000 + np.arange(n)
    batch["kind"] = records.EV_TRADE
    batch["price"] = 100.0 + np.arange(n)
    return batch


def test_the_journal_agent_drains_its_taps_into_segments_and_ends_once_drained(tmp_path):
    from pipeline import graph
    from pipeline.store.journal import JournalReader
    from pipeline.store.journal_process import Journal
    run = f"t{uuid.uuid4().hex[:10]}"
    config = Config().with_overrides(run={"name": run}, journal={"dir": str(tmp_path)})
    specs = graph.rings(config)
    views = [ring.create_ring(names.ring(run, n), specs[n].dtype, specs[n].capacity) for n in graph.TAP_STREAMS
             if n in specs]
    child = child_of("journal")
    agent = Journal(config, child.block, child.slot)
    try:
        agent.on_start()
        tap = next(v for v in views if v.name == names.ring(run, "feed.journal"))
        events = market_events(300)
        assert ring.try_write(tap.producer, tap.consumer, tap.records, events, 300) == 300
        assert agent.do_work() == 300
        assert agent.do_work() == 0  # nothing new: a tick, no end before a stop
        assert ring.try_write(tap.producer, tap.consumer, tap.records, events[:20], 20) == 20
        agent.on_stop(1)
        assert agent.do_work() == 20  # what came before the stop is still written
        with pytest.raises(AgentTerminated):
            agent.do_work()
    finally:
        agent.on_close()
        for view in views:
            view.close()
            view.segment.unlink()
    stats = child.slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
    assert stats[registry.counters("journal").index("market")] == 320 and child.slot[cb.S_IN] == 320
    written = JournalReader(str(tmp_path), "market", records.MARKET_EVENT).read_all()
    assert (written["origin_seq"] == np.concatenate([events, events[:20]])["origin_seq"]).all()


def test_the_replay_agent_publishes_the_recording_as_recorded_then_says_finished(tmp_path):
    from pipeline.sources.replay_feed import ReplayFeed, load_recording
    path = tmp_path / "eth.ws"
    with gzip.open(WS / "spot_ethusdt_20240808.gz") as f:
        path.write_bytes(b"".join(f.readline() for _ in range(200)))
    config = Config().with_overrides(feed={"source": "replay", "venues": ["spot"], "symbols": ["ETH-USDT"],
                                           "files": [f"spot={path}"]})
    out = ring.local_ring(records.MARKET_EVENT, 4096)
    endpoints = Endpoints(ring.local_ring(records.MARKET_EVENT, 2), ring.local_ring(records.MARKET_EVENT, 2), (out,),
                          np.zeros(1, np.int64), ring.local_ring(records.MARKET_EVENT, 2), False, [], None,
                          np.zeros(cb.GLOBAL_WORDS, np.int64))
    child = child_of("feed")
    started = time.time_ns()
    agent = ReplayFeed(config, endpoints, child.slot, child.placement)
    agent.on_start()
    published = 0
    for _ in range(1000):
        published += agent.do_work()
        if child.slot[cb.S_CUSTOM + feed.ST_FINISHED]:
            break
    agent.on_close()
    stats = child.slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
    assert stats[feed.ST_FINISHED] == 1 and published == stats[feed.ST_EMITTED] == child.slot[cb.S_OUT] > 0
    got = np.zeros(4096, records.MARKET_EVENT)
    n = ring.read(out[0], out[1], out[2], got, 4096)
    assert n == published
    assert (np.diff(got["origin_seq"][:n]) > 0).all()
    recorded, _ = load_recording(config)
    assert got[:n].tobytes() == recorded.tobytes()  # as recorded: origin_ts stays the recorded receive time
    # The replay clock latency is aged against: the pacer started now, on the first event, at speed 1.
    g = endpoints.ctl
    assert g[cb.G_REPLAY_CLOCK] == cb.REPLAY_PACED and g[cb.G_REPLAY_SPEED_PPM] == 1_000_000
    assert g[cb.G_REPLAY_EVENT0_NS] == recorded["origin_ts"][0] and g[cb.G_REPLAY_WALL0_NS] >= started


def watchdog_config(tmp_path, endpoint=None):
    return Config().with_overrides(run={"name": f"t{uuid.uuid4().hex[:10]}"},
                                   watchdog={"alert_endpoint": endpoint or f"ipc://{tmp_path}/alerts.sock"})


def test_the_watchdog_agent_polls_once_per_step_from_ready_on(tmp_path):
    import os

    from pipeline.safety.watchdog import ST_CHECKS, WatchdogAgent
    child = child_of("watchdog", cb.RUN_STARTING)
    child.block.globals[cb.G_SUPERVISOR_PID] = os.getpid()
    agent = WatchdogAgent(watchdog_config(tmp_path), child.block)
    assert agent.works_before_running
    agent.on_start()
    try:
        assert agent.do_work() == 0 and agent.do_work() == 0  # a poll is a check; the period passes after each
    finally:
        agent.on_close()
    assert child.slot[cb.S_CUSTOM + ST_CHECKS] == 2
    assert not (tmp_path / "alerts.sock").exists()  # the alerter's socket went with on_close


def test_a_watchdog_that_cannot_bind_its_alert_endpoint_fails_in_one_line(tmp_path, capsys):
    from pipeline.safety.watchdog import PeriodIdle, WatchdogAgent
    planted = tmp_path / "precious"
    config = watchdog_config(tmp_path, f"ipc://{planted}")
    planted.write_text("not a socket")  # after the config check, as a race would
    child = child_of("watchdog", cb.RUN_STARTING)
    agent = WatchdogAgent(config, child.block)
    assert AgentRunner(agent, child, PeriodIdle(agent)).run() == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("bot4: watchdog failed: AlertError: watchdog.alert_endpoint")
    assert planted.read_text() == "not a socket" and child.slot[cb.S_STATE] == cb.FAILED
