"""Shared threading: several njit stages in one process, chained without a ring between them."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from pipeline import graph, kill_reasons, names, registry
from pipeline.config import Config, ConfigError
from pipeline.hosting import chained_cycle, group_host, topology
from pipeline.plan import resolve
from pipeline.status_view import StatusView
from shm import control as cb
from shm import idle as idle_strategies
from shm import ring
from shm.syscalls import new_timespec
from stages import execute
from tests.conftest import ROOT, SIGNAL_ARGS, assert_flat_after_stop, kill_and_wait_for_trip, signal_config

GROUP = ("feed", "validate", "feature", "risk")  # the default first group: the live run compiles the same code
EVENTS = 3000
SAMPLE = "nautilus-samples/tardis_trades.csv"  # any recording: only the config is built
CAPACITY = 4096  # every ring holds the whole run: nothing back-pressures


def _drain(r) -> np.ndarray:
    producer, consumer, records = r
    out = np.zeros(records.shape[0], records.dtype)
    n = ring.read(producer, consumer, records, out, len(out))
    return out[:n]


def _sequential(config: Config):
    """What the members give called one after the other, batch by batch (the reference)."""
    batch = config.rings.batch
    block = cb.ControlBlock.local()
    kernels = {name: graph.kernel(name, resolve(config), live=False) for name in GROUP}
    outputs = {name: [] for name in GROUP}
    quarantined = []
    empty = {name: np.zeros(0, graph.BY_NAME[name].out_dtype) for name in GROUP}
    no_reports = np.zeros(0, graph.rings(config)["execute.risk"].dtype)
    scratch = np.zeros(batch, graph.BY_NAME["feed"].out_dtype)
    n_in = {name: 0 for name in GROUP}
    while True:
        batch_in, n = empty["feed"], 0
        for name in GROUP:
            step, params, state = kernels[name]
            out = np.zeros(graph.out_capacity(name, batch), graph.BY_NAME[name].out_dtype)
            stats = block.stages[graph.BY_NAME[name].index][cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
            in_b = no_reports if name == "risk" else empty["feed"]
            n_in[name] += n
            n = step(batch_in, n, in_b, 0, state, params, block.globals, stats, out, 0)
            outputs[name].append(out[:n].copy())
            if name == "validate":
                taken, _ = graph.MODULES["validate"].take_quarantined(state, scratch)
                quarantined.append(scratch[:taken].copy())
            batch_in = out
        if len(outputs["feed"][-1]) == 0:
            break
    stats = {name: block.stages[graph.BY_NAME[name].index][cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS].copy()
             for name in GROUP}
    return ({name: np.concatenate(parts) for name, parts in outputs.items()}, np.concatenate(quarantined), stats,
            n_in)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Byte for byte (malformed events carry NaN, which == never matches)."""
    return a.dtype == b.dtype and len(a) == len(b) and a.tobytes() == b.tobytes()


def _without_stage_ts(records: np.ndarray) -> np.ndarray:
    """Feature and risk stamp their own clock: everything else must be equal."""
    records = records.copy()
    records["stage_ts"] = 0
    return records


def test_the_chained_cycle_gives_what_the_members_give_one_after_the_other():
    """Invoker mode: the test drives the group's work loop itself, with process-local rings."""
    config = signal_config(feed={"max_events": EVENTS, "seed": 11})
    batch = config.rings.batch
    specs = group_host.member_specs(config, GROUP)
    assert [s.in_a for s in specs] == [None, None, None, None]  # only the feed's input and it has none
    assert [s.outs for s in specs] == [(), ("validate.execute",), (), ("risk.inference",)]
    endpoints = [group_host.local_endpoints(config, s, CAPACITY, tap=True) for s in specs]
    block = cb.ControlBlock.local()
    block.globals[cb.G_TRADING_ENABLED] = 1
    kernels = [group_host.member_kernel(s, resolve(config), live=False, with_stores=False)[:2] for s in specs]
    slots = [block.stages[s.index] for s in specs]
    cycle = group_host.GroupCycle.build(specs, endpoints, kernels, slots, batch)
    idle_params = idle_strategies.make_params(idle_strategies.BUSY_SPIN)
    idle_state, timespec = idle_strategies.make_state(), new_timespec()
    cycles = EVENTS // batch + 5  # the feed makes a batch a cycle
    code = cycle.run(chained_cycle.run, block.globals, idle_params, idle_state, batch, cycles, timespec)
    assert code == chained_cycle.EXIT_BUDGET
    assert all(slot[cb.S_STATE] == 0 for slot in slots)  # no stop asked: nobody stopped
    for slot in slots:  # the supervisor's order: each member once the one before it says STOPPED
        slot[cb.S_STOP] = 1
        code = cycle.run(chained_cycle.run, block.globals, idle_params, idle_state, batch, 10, timespec)
        assert slot[cb.S_STATE] == cb.STOPPED
    assert code == chained_cycle.EXIT_STOPPED

    outputs, quarantined, stats, n_in = _sequential(config)
    assert len(outputs["feed"]) == EVENTS and len(quarantined) > 0 and len(outputs["risk"]) > 1000
    feed_tap, validate_tap = (_drain(e.tap) for e in endpoints[:2])
    assert _same(feed_tap, outputs["feed"])
    assert _same(validate_tap, quarantined)
    assert _same(_drain(endpoints[1].outs[0]), outputs["validate"])  # validate -> execute's copy
    assert _same(_without_stage_ts(_drain(endpoints[3].outs[0])), _without_stage_ts(outputs["risk"]))
    for spec, slot in zip(specs, slots):
        assert slot[cb.S_IN] == n_in[spec.name], spec.name
        assert slot[cb.S_OUT] == len(outputs[spec.name]), spec.name
        assert np.array_equal(slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS], stats[spec.name]), spec.name
        assert slot[cb.S_BATCHES] > 0 and slot[cb.S_SERVICE_HIST:cb.S_SERVICE_HIST + cb.HIST_BUCKETS].sum() > 0
    assert slots[1][cb.S_TAP_WRITTEN] == len(quarantined) and slots[0][cb.S_TAP_WRITTEN] == EVENTS



PAIR = ("strategy", "execute")  # the default second group


def _predictions(config: Config, decisions: np.ndarray) -> np.ndarray:
    from pipeline.hosting import models
    from stages import inference, records
    model = models.Models(models.load(config.inference.model or inference.DEFAULT_MODEL), len(decisions))
    x = np.zeros((len(decisions), records.N_FEATURES), np.float32)
    inference.prepare(decisions, len(decisions), x)
    predictions = np.zeros(len(decisions), records.PREDICTION)
    inference.finish(decisions, len(decisions), *model.predict(decisions, x, len(decisions)), predictions, 0)
    return predictions


def _fill(r, batch: np.ndarray) -> None:
    assert ring.try_write(*r, batch, len(batch)) == len(batch)


def test_a_member_steps_once_per_batch_limit_of_a_long_chained_input_and_feeds_back_through_its_rings():
    """Invoker mode, strategy -> execute with a batch limit of 4: strategy's intents of one step (up to
    several per prediction) reach execute 4 at a time, each step with up to 4 market events from its own ring;
    execute's reports come back to strategy through a ring (read the next cycle). The reference is the same
    schedule written out in Python with the kernels called directly."""
    config = signal_config(feed={"max_events": EVENTS, "seed": 11},
                                     execute={"max_orders_per_s": 1e9, "order_burst": 10 ** 9,
                                              "duplicate_window_ms": 0})  # no gate reads the clock
    outputs, _, _, _ = _sequential(config)
    market, predictions = outputs["validate"], _predictions(config, outputs["risk"])
    limit, cycles, batch = 4, len(predictions) // 4 + 50, config.rings.batch

    specs = group_host.member_specs(config, PAIR)
    assert [(s.in_a, s.in_b, s.outs) for s in specs] == [
        ("inference.strategy", "execute.strategy", ()), (None, "validate.execute", ("execute.risk", "execute.strategy"))]
    endpoints = [group_host.local_endpoints(config, s, 1 << 17, tap=True) for s in specs]
    endpoints[0].in_b = endpoints[1].outs[1]  # execute -> strategy feedback: one ring
    _fill(endpoints[0].in_a, predictions)
    _fill(endpoints[1].in_b, market)
    block = cb.ControlBlock.local()
    block.globals[cb.G_TRADING_ENABLED] = 1
    kernels = [group_host.member_kernel(s, resolve(config), live=False, with_stores=False)[:2] for s in specs]
    slots = [block.stages[s.index] for s in specs]
    cycle = group_host.GroupCycle.build(specs, endpoints, kernels, slots, batch)
    code = cycle.run(chained_cycle.run, block.globals, idle_strategies.make_params(idle_strategies.BUSY_SPIN),
                     idle_strategies.make_state(), limit, cycles, new_timespec())
    assert code == chained_cycle.EXIT_BUDGET

    ref = cb.ControlBlock.local()
    ref.globals[cb.G_TRADING_ENABLED] = 1
    (s_step, s_params, s_state), (e_step, e_params, e_state) = (graph.kernel(n, resolve(config), live=False) for n in PAIR)
    s_stats, e_stats = (ref.stages[graph.BY_NAME[n].index][cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS] for n in PAIR)
    intent_out = np.zeros(graph.out_capacity("strategy", batch), graph.BY_NAME["strategy"].out_dtype)
    report_out = np.zeros(graph.out_capacity("execute", batch), graph.BY_NAME["execute"].out_dtype)
    feedback, intents, reports = [], [], []
    taken = {"predictions": 0, "market": 0, "feedback": 0}

    def take(what, source):
        start = taken[what]
        taken[what] = min(start + limit, len(source))
        return source[start:taken[what]]

    longest = 0
    for _ in range(cycles):
        a = take("predictions", predictions)
        b = take("feedback", np.concatenate(feedback) if feedback else report_out[:0])
        n = s_step(a, len(a), b, len(b), s_state, s_params, ref.globals, s_stats, intent_out, 0) if len(a) + len(b) \
            else 0
        made = intent_out[:n].copy()
        intents.append(made)
        longest = max(longest, n)
        start = 0
        while True:
            chunk, events = made[start:start + limit], take("market", market)
            k = e_step(chunk, len(chunk), events, len(events), e_state, e_params, ref.globals, e_stats, report_out, 0)
            reports.append(report_out[:k].copy())
            feedback.append(report_out[:k].copy())
            start += len(chunk)
            if start >= len(made):
                break
    intents, reports = np.concatenate(intents), np.concatenate(reports)
    assert longest > limit and len(reports) > 1000  # the long-input path ran, and orders traded

    assert _same(_without_stage_ts(_drain(endpoints[0].tap)), _without_stage_ts(intents))
    assert _same(_without_stage_ts(_drain(endpoints[1].outs[0])), _without_stage_ts(reports))
    assert np.array_equal(slots[0][cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS], s_stats)
    got = slots[1][cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS].copy()
    for clock_stamp in (execute.ST_LAST_ORDER_NS, execute.ST_LAST_CANCEL_ALL_NS):  # its own clock, not counts
        got[clock_stamp] = e_stats[clock_stamp] = 0
    assert np.array_equal(got, e_stats)
    assert slots[1][cb.S_IN] == len(intents) and slots[1][cb.S_IN_B] == len(market)
    assert slots[0][cb.S_OUT] == len(intents) and slots[1][cb.S_OUT] == len(reports)

def _shared_config(tmp_path) -> str:
    path = tmp_path / "shared.toml"
    path.write_text('[topology]\nthreading = "shared"\n')
    return str(path)


def _wait_for_orders(block: cb.ControlBlock, timeout_s: float = 20) -> int:
    deadline = time.monotonic() + timeout_s
    while (orders := StatusView(block).execute_stats()["orders"]) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return orders


def test_a_shared_run_hosts_each_group_in_one_process_that_fills_every_member_slot(live, tmp_path):
    run = live(*SIGNAL_ARGS, "--quiet", "--config", _shared_config(tmp_path))
    started = run.wait_for(r"bot4: kernels compiled")
    assert "threading=shared" in started and "feed+validate+feature+risk in one process" in started
    assert "strategy+execute in one process" in started
    assert "(4 processes)" in run.wait_for(r"bot4: running")  # two groups, inference, the watchdog
    block = cb.ControlBlock.attach(names.control(run.name))
    try:
        slots = {name: block.stages[registry.slot(name)] for name in registry.STAGE_NAMES}
        assert all(slot[cb.S_STATE] == cb.RUNNING for slot in slots.values())
        pids = {name: int(slot[cb.S_PID]) for name, slot in slots.items()}
        first, second = {pids[n] for n in GROUP}, {pids["strategy"], pids["execute"]}
        assert len(first) == 1 and len(second) == 1 and len(first | second | {pids["inference"]}) == 3
        assert {int(slots[n][cb.S_CORE]) for n in GROUP} == {int(slots["feed"][cb.S_CORE])}
        assert _wait_for_orders(block) > 0  # market in, orders out, across both groups and inference
        assert all(slot[cb.S_HEARTBEAT_NS] > 0 and slot[cb.S_OUT] > 0 for slot in slots.values())
    finally:
        block.close()
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish(timeout=60)
    assert code == 0, output
    assert "stopped (SIGTERM)" in output, output
    assert_flat_after_stop(output)
    assert not any(p.is_running() for p in run.descendants())


def test_a_killed_group_process_disables_trading_as_every_members_death(live, tmp_path):
    run = live(*SIGNAL_ARGS, "--quiet", "--config", _shared_config(tmp_path))
    run.wait_for(r"bot4: running")
    block = cb.ControlBlock.attach(names.control(run.name))
    try:
        assert _wait_for_orders(block) > 0
        pid = int(block.stages[registry.slot("strategy")][cb.S_PID])
        assert pid == int(block.stages[registry.slot("execute")][cb.S_PID])
        kill_and_wait_for_trip(block, pid)
        assert block.globals[cb.G_TRADING_ENABLED] == 0
        assert block.globals[cb.G_KILL_REASON] == kill_reasons.KILL_STAGE_DIED
        assert block.globals[cb.G_KILL_STAGE] == registry.slot("strategy")  # the group's first member
    finally:
        block.close()
    code, output = run.finish(timeout=60)
    assert code == 3, output
    assert f"stage strategy (pid {pid}) died (signal SIGKILL); trading disabled" in output


@pytest.mark.parametrize("topology,message", [
    ({"threading": "pooled"}, "topology.threading='pooled' is invalid: use one of ('auto', 'dedicated', 'shared')"),
    ({"groups": ["feed,feature"]}, "topology.groups='feed,feature' is invalid: give two or more neighbouring stages"),
    ({"groups": ["risk,inference"]}, "leave inference out (not an njit kernel"),
    ({"groups": ["feed,validate", "validate,feature"]}, "put each stage in one group at most"),
    ({"threading": "shared", "idle": "blocking"}, "topology.idle='blocking' is invalid: use yielding or sleeping"),
])
def test_a_bad_threading_value_names_the_key_and_the_fix(topology, message):
    with pytest.raises(ConfigError) as err:
        Config().with_overrides(topology=topology)
    assert message in str(err.value)


def test_the_cli_refuses_a_bad_threading_mode_with_exit_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[topology]\nthreading = "pooled"\n')
    done = subprocess.run([sys.executable, "-m", "tools.cli", "run", "--config", str(path), "--name",
                           f"t{uuid.uuid4().hex[:8]}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "topology.threading='pooled' is invalid" in done.stdout + done.stderr


def test_auto_threading_is_dedicated_and_says_why():
    mode, why = topology.threading(Config())
    assert mode == "dedicated" and "bench/pipeline_latency" in why
    assert topology.groups(Config()) == ()
    assert len({id(p) for p in topology.place(Config(), cores=[0, 1]).values()}) == len(registry.NAMES)


def test_shared_groups_are_cut_to_the_njit_stages_the_run_hosts_and_share_one_placement():
    shared = Config().with_overrides(topology={"threading": "shared"})
    assert topology.groups(shared) == (GROUP, PAIR)
    placements = topology.place(shared, cores=[0, 1])
    assert all(placements[n] is placements["feed"] for n in GROUP)
    assert placements["execute"] is placements["strategy"]
    # The market's group has a core to itself; every other process shares the rest.
    assert {placements[n].core for n in registry.NAMES if n not in GROUP} == {1} and placements["feed"].core == 0
    replay = shared.with_overrides(feed={"source": "replay", "venues": ["binance"], "symbols": ["ETH-USDT"],
                                         "files": [f"binance={ROOT}/tests/data/{SAMPLE}"]})
    assert topology.groups(replay) == (("validate", "feature", "risk"), PAIR)  # a Python feed host keeps its own
    record = shared.with_overrides(run={"mode": "record"}, journal={"dir": "/tmp/unused"})
    assert topology.groups(record) == (("feed", "validate"),)
    assert topology.groups(shared.with_overrides(topology={"groups": ["validate,feature"]})) == (("validate", "feature"),)
