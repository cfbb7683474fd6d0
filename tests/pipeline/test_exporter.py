"""The Prometheus endpoint: a real run scraped over HTTP and parsed with prometheus_client's own parser; ``bot4
metrics`` for a run started without it; the shipped Grafana dashboard asks only for metrics the exporter serves."""
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline import exporter, names, registry
from pipeline.config import Config
from pipeline.store import feature_store
from pipeline.tables import POSITION, PositionsTable
from shm import control as cb
from shm import segment
from stages import validate
from stages.records import REJ_NAMES
from tests.conftest import ROOT, SIGNAL_ARGS

DASHBOARD = os.path.join(ROOT, "tools", "deploy", "grafana", "bot4.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(families: dict, name: str, **labels) -> list:
    family = families[re.sub(r"_(total|bucket|count|sum)$", "", name)]
    return [s for s in family.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def value(families: dict, name: str, **labels) -> float:
    found = samples(families, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return found[0].value


def histogram_checks(families: dict, family: str, stage: str) -> float:
    """The buckets of ``stage``'s histogram are cumulative, end at +Inf and add up to its _count; returns it."""
    buckets = samples(families, family + "_bucket", stage=stage)
    bounds = [float(s.labels["le"]) for s in buckets]
    counts = [s.value for s in buckets]
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds) and bounds[-1] == math.inf
    assert all(a <= b for a, b in zip(counts, counts[1:])), f"{family} {stage} not cumulative: {counts}"
    assert counts[-1] == value(families, family + "_count", stage=stage)
    return counts[-1]


def bot4(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def until(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def test_a_run_with_metrics_port_serves_its_control_block_over_http(live):
    port = free_port()
    run = live(*SIGNAL_ARGS, "--quiet", "--metrics-port", str(port), name=f"metrics-{uuid.uuid4().hex[:8]}")
    url = f"http://127.0.0.1:{port}/metrics"
    assert url in run.wait_for(r"Prometheus metrics at")
    run.wait_for(r"bot4: running", timeout=280)  # (the first run after an edit compiles the kernels)
    first = scrape(url)
    time.sleep(1.5)
    second = scrape(url)
    assert value(second, "bot4_up") == 1
    assert value(second, "bot4_run_state", bot4_run_state="running") == 1
    feed_out = [value(f, "bot4_stage_records_out_total", stage="feed") for f in (first, second)]
    assert 0 < feed_out[0] < feed_out[1], feed_out
    assert value(second, "bot4_stage_state", stage="execute", bot4_stage_state="running") == 1
    stages = {s.labels["stage"] for s in samples(second, "bot4_stage_records_out_total")}
    assert set(registry.STAGE_NAMES) | {"watchdog"} <= stages
    block = cb.ControlBlock.attach(names.control(run.name))
    try:
        for stage in registry.STAGE_NAMES:
            for family, offset in (("bot4_stage_service_seconds", cb.S_SERVICE_HIST),
                                   ("bot4_stage_origin_latency_seconds", cb.S_ORIGIN_HIST)):
                scraped = histogram_checks(second, family, stage)
                # read after the scrape: the control block has at least as many now
                assert scraped <= block.stages[registry.slot(stage)][offset:offset + cb.HIST_BUCKETS].sum()
        assert histogram_checks(second, "bot4_stage_origin_latency_seconds", "execute") > 0  # tick-to-order
        assert histogram_checks(second, "bot4_stage_service_seconds", "feed") > 0
    finally:
        block.close()
    # what bot4 status says, the scrape says
    status = bot4("status", "--name", run.name)
    assert "\ntrading ENABLED |" in status.stdout and value(scrape(url), "bot4_trading_enabled") == 1
    assert value(second, "bot4_kill_reason", bot4_kill_reason="none") == 1
    assert {s.labels["reason"] for s in samples(second, "bot4_quarantined_events_total")} == \
        {label for label, _ in validate.REASONS.values()}
    assert {s.labels["reason"] for s in samples(second, "bot4_gate_rejects_total")} == \
        {name.replace(" ", "_") for name in REJ_NAMES.values()}
    assert value(second, "bot4_garch_params_version") == 1
    meta = json.load(open(os.path.join(ROOT, "models", "directional_v1.json")))
    assert value(second, "bot4_model_version", model=meta["name"],
                 sha256_head=meta["onnx_sha256"][:registry.SHA256_HEAD_HEX]) == meta["version"]
    config = Config()
    assert {(s.labels["venue"], s.labels["symbol"]) for s in samples(second, "bot4_position")} == \
        {(v, s) for v in config.feed.venues for s in config.feed.symbols}
    # The signal strategy trades: a position shows while execute holds one.
    held = until(lambda: (lambda f: f if value(f, "bot4_gross_position_usd") > 0 and
                          any(s.value for s in samples(f, "bot4_position")) else None)(scrape(url)), 60,
                 "a position in the scrape")
    assert value(held, "bot4_fills_total") > 0 and value(held, "bot4_orders_total") > 0

    assert bot4("killswitch", "trip", "--name", run.name, "--reason", "metrics test").returncode == 0
    tripped = scrape(url)
    assert value(tripped, "bot4_trading_enabled") == 0
    assert value(tripped, "bot4_kill_reason", bot4_kill_reason="operator") == 1
    assert value(tripped, "bot4_kill_reason", bot4_kill_reason="none") == 0
    assert value(tripped, "bot4_trips_total") == 1
    assert "\ntrading DISABLED (operator) |" in bot4("status", "--name", run.name).stdout
    flat = until(lambda: (lambda f: f if value(f, "bot4_gross_position_usd") == 0 and
                          value(f, "bot4_open_orders") == 0 else None)(scrape(url)), 30, "flat after the trip")
    # flat: what is left is dust, worth less than execute.flatten_min_usd at the instrument's last mid (not flattened)
    reader = feature_store.FeatureStoreReader(run.name)
    try:
        venues, symbols = list(config.feed.venues), list(config.feed.symbols)
        for s in samples(flat, "bot4_position"):
            vector, _ = reader.latest(venues.index(s.labels["venue"]), symbols.index(s.labels["symbol"]))
            mid = (vector["bid"] + vector["ask"]) / 2
            assert abs(s.value) * mid < config.execute.flatten_min_usd, (s.labels, s.value, mid)
    finally:
        reader.close()

    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish()
    assert code == 5, output  # tripped during the run
    with pytest.raises(urllib.error.URLError):
        scrape(url)  # the endpoint went with the run


def test_a_restarted_execute_starts_flat_in_the_positions_table(live):
    """Execute keeps its positions in the run's table: its restart zeroes them, as its fresh state always was.
    (cancel_only: a flattening execute would trade the old positions away and hide the difference.)"""
    port = free_port()
    run = live(*SIGNAL_ARGS, "--quiet", "--metrics-port", str(port), "--set", "run.restart=restart", "--set",
               "execute.on_kill=cancel_only", name=f"metrics-{uuid.uuid4().hex[:8]}")
    url = f"http://127.0.0.1:{port}/metrics"
    run.wait_for(r"bot4: running", timeout=280)
    held = until(lambda: (lambda f: f if any(s.value for s in samples(f, "bot4_position")) else None)(scrape(url)),
                 60, "a position in the scrape")
    pid = int(samples(held, "bot4_stage_info", stage="execute")[0].labels["pid"])
    os.kill(pid, signal.SIGKILL)
    run.wait_for(r"bot4: restarted execute \(restart 1 of 3\)", timeout=60)
    after = until(lambda: (lambda f: f if value(f, "bot4_stage_state", stage="execute", bot4_stage_state="running")
                           else None)(scrape(url)), 60, "the restarted execute running")
    assert int(samples(after, "bot4_stage_info", stage="execute")[0].labels["pid"]) != pid
    assert value(after, "bot4_stage_restarts_total") == 1 and value(after, "bot4_trading_enabled") == 0
    assert value(after, "bot4_kill_reason", bot4_kill_reason="stage died") == 1
    assert value(after, "bot4_kill_stage_info", stage="execute") == 1
    assert all(s.value == 0 for s in samples(after, "bot4_position"))
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish()
    assert code == 5, output


def test_bot4_metrics_serves_a_run_started_without_the_flag_and_outlives_it(live):
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    served = subprocess.Popen([sys.executable, "-m", "tools.cli", "metrics", "--name", name, "--port", "0"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = served.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/metrics", line).group(0)
        assert f"no run named {name!r}" in line
        before = scrape(url)
        assert value(before, "bot4_up") == 0 and set(before) == {"bot4_up"}
        run = live(*SIGNAL_ARGS, "--table", name=name)
        run.wait_for(r"bot4: running", timeout=280)
        run.wait_for(r"^stage\s+state\s+core\s+idle\s+in/s")  # --table: the whole table each interval
        during = until(lambda: (lambda f: f if value(f, "bot4_stage_records_out_total", stage="feed") > 0 else None)(
            scrape(url)), 30, "feed records in the scrape")
        assert value(during, "bot4_up") == 1 and value(during, "bot4_trading_enabled") == 1
        histogram_checks(during, "bot4_stage_origin_latency_seconds", "execute")
        run.proc.send_signal(signal.SIGTERM)
        code, output = run.finish()
        assert code == 0, output
        assert value(scrape(url), "bot4_up") == 0
        served.send_signal(signal.SIGTERM)
        rest, _ = served.communicate(timeout=30)
        assert served.returncode == 0 and "bot4 metrics: stopped" in rest
    finally:
        if served.poll() is None:
            served.kill()
            served.wait()


def test_a_metrics_port_in_use_stops_the_start_before_anything_exists():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        name = f"metrics-{uuid.uuid4().hex[:8]}"
        out = bot4("run", "--name", name, "--duration", "1", "--metrics-port", str(port))
    assert out.returncode == 4, out.stdout + out.stderr  # ExitCode.START_FAILED
    assert f"metrics.port={port}" in out.stderr and "in use" in out.stderr and "Traceback" not in out.stderr
    assert not segment.list_segments(names.run_prefix(name))
    bad = bot4("run", "--name", name, "--metrics-port", "70000")
    assert bad.returncode == 2 and "metrics.port=70000 is invalid" in bad.stderr


@pytest.fixture
def stand_in_run():
    """A control block and positions table this process creates (so its supervisor lives), every slot started,
    a model named: the exporter's every family appears."""
    run = f"metrics-{uuid.uuid4().hex[:8]}"
    block = cb.ControlBlock.create(names.control(run))
    positions = PositionsTable.create(run, ("venue_a", "venue_b"), ("BTCUSDT", "ETHUSDT"))
    try:
        for index in range(len(registry.PROCESSES)):
            slot = block.stages[index]
            slot[cb.S_PID], slot[cb.S_PID_START_NS] = os.getpid(), segment.process_start_ns(os.getpid())
            slot[cb.S_STATE] = cb.RUNNING
        inference = block.stages[registry.slot("inference")]
        inference[cb.S_CUSTOM + registry.BY_NAME["inference"].counter("model_sha256_head")] = 0xABC
        cb.write_text(inference, *registry.MODEL_NAME_WORDS, "stand-in")
        block.globals[cb.G_KILL_REASON], block.globals[cb.G_KILL_STAGE] = 3, registry.slot("risk")  # heartbeat stale
        yield run, block, positions
    finally:
        for table in (block, positions):
            seg = table.segment
            table.close()
            seg.unlink()


def collect(run: str) -> str:
    registry_ = CollectorRegistry()
    registry_.register(exporter.RunCollector(run))
    return generate_latest(registry_).decode()


def test_histogram_bounds_are_exact_for_whole_nanoseconds_and_positions_are_read_live(stand_in_run):
    run, block, positions = stand_in_run
    slot = block.stages[registry.slot("risk")]
    for ns in (1, 1279, 1280, 10 ** 12):  # 1,279 is the last whole ns of the [1024, 1280) bucket
        cb.record_latency(slot, cb.S_ORIGIN_HIST, ns)
    positions.values[POSITION, 9] = -0.25  # venue_b ETHUSDT
    families = {f.name: f for f in text_string_to_metric_families(collect(run))}
    cumulative = {s.labels["le"]: s.value for s in samples(families, "bot4_stage_origin_latency_seconds_bucket",
                                                           stage="risk")}
    assert (cumulative["1e-09"], cumulative["1.279e-06"], cumulative["1.535e-06"], cumulative["+Inf"]) == (1, 2, 3, 4)
    assert value(families, "bot4_position", venue="venue_b", symbol="ETHUSDT") == -0.25
    assert value(families, "bot4_position", venue="venue_a", symbol="BTCUSDT") == 0
    assert value(families, "bot4_kill_stage_info", stage="risk") == 1
    assert value(families, "bot4_kill_reason", bot4_kill_reason="heartbeat stale") == 1


def test_a_scraper_asking_for_openmetrics_gets_the_text_format_whose_histograms_need_no_sum(stand_in_run):
    run, block, _ = stand_in_run
    cb.record_latency(block.stages[registry.slot("feed")], cb.S_SERVICE_HIST, 5_000)
    endpoint = exporter.Endpoint(run, "127.0.0.1", 0)
    try:
        asked = urllib.request.Request(endpoint.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(asked, timeout=30) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = response.read().decode()
    finally:
        endpoint.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert histogram_checks(families, "bot4_stage_service_seconds", "feed") == 1
    assert not samples(families, "bot4_stage_service_seconds_sum")


def test_every_grafana_query_asks_for_a_metric_the_exporter_serves(stand_in_run):
    run, _, _ = stand_in_run
    served = {s.name for f in text_string_to_metric_families(collect(run)) for s in f.samples}
    dashboard = json.load(open(DASHBOARD))
    queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(queries) >= 20
    asked = set()
    for title, expr in queries:
        names_ = set(re.findall(r"\bbot4_[a-z0-9_]+", expr))
        assert names_, f"panel {title!r}: {expr} asks for no bot4 metric"
        asked |= names_
    assert asked <= served, f"the dashboard asks for metrics nobody serves: {sorted(asked - served)}"
    for variable in dashboard["templating"]["list"]:
        assert set(re.findall(r"\bbot4_[a-z0-9_]+", variable["definition"])) <= served
