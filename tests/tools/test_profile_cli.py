"""``bot4 profile`` and ``bot4 latency`` against a real run: the report's files, phase times that add up, a
waterfall that agrees with the histograms it came from, py-spy on the Python hosts, and an operator's mistakes."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from pipeline import names, registry
from pipeline.profiling import analysis, pyspy
from pipeline.profiling.sampler import tick_to_order
from shm import control as cb
from tests.conftest import ROOT, SIGNAL_ARGS
from tools import stage_profile

FIGURES = ("phases.png", "batches.png", "depths.png", "waterfall.png")


def bot4(*args, timeout=600):  # a loaded 2-core box: the profile's few CPU seconds can take minutes
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def wait_for_orders(run_name: str, timeout_s: float = 60) -> None:
    block = cb.ControlBlock.attach(names.control(run_name))
    try:
        execute = block.stages[registry.slot("execute")]
        deadline = time.monotonic() + timeout_s
        while execute[cb.S_ORIGIN_HIST:cb.S_ORIGIN_HIST + cb.HIST_BUCKETS].sum() < 50:
            assert time.monotonic() < deadline, "no orders from the run"
            time.sleep(0.1)
        del execute
    finally:
        block.close()


def check_png(path) -> None:
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
        image.verify()


def test_a_profile_of_a_live_run_reports_every_stage_with_phases_that_add_up_and_a_consistent_waterfall(
        live, tmp_path):
    run = live(*SIGNAL_ARGS, "--quiet", "--journal", str(tmp_path / "journal"), name=f"profile{time.time_ns() % 10**8}")
    run.wait_for(r"bot4: running")
    wait_for_orders(run.name)
    out = tmp_path / "report"
    done = bot4("profile", "--name", run.name, "--seconds", "2", "--out", str(out), "--py-spy")
    assert done.returncode == 0, done.stdout + done.stderr
    after, _ = tick_to_order(run.name)
    assert "tick to order p50, hop by hop: feed +" in done.stdout

    for name in ("profile.html", "profile.json", *FIGURES):
        assert (out / name).exists(), name
    for name in FIGURES:
        check_png(out / name)
    page = (out / "profile.html").read_text()
    for stage in (*registry.STAGE_NAMES, "watchdog", "journal"):
        assert f"<td>{stage}</td>" in page, stage
    assert "<script" not in page and "http://" not in page and "https://" not in page  # nothing to fetch

    profile = json.loads((out / "profile.json").read_text())
    assert 1.9 < profile["seconds"] < 2.5 and profile["samples"] > 50 and not profile["ended_early"]
    assert 0 < profile["sampler_cpu_ns"] < 2.5e9 and profile["pyspy"]["cpu_ns"] > 0  # what the profile itself cost
    by_name = {p["name"]: p for p in profile["processes"]}
    assert set(registry.STAGE_NAMES) | {"watchdog", "journal"} <= set(by_name)
    for p in profile["processes"]:
        spent = sum(p["phases_ns"].values())
        assert spent <= p["wall_ns"] * 1.05, (p["name"], p["phases_ns"], p["wall_ns"])
        if p["state"] == "running":
            assert spent > 0, p["name"]
        # each snapshot copies the slot word by word while the stage counts a batch in two of them: at most one
        # batch in flight at each end of the window
        assert abs(sum(p["batch_hist"]) - p["batches"]) <= 2, p["name"]
    for name in registry.STAGE_NAMES:
        p = by_name[name]
        assert p["host"] in (analysis.KERNEL, analysis.MODEL) and p["state"] == "running", p
        # A stage that hosts itself accounts all of its time (up to a batch in flight at either end).
        assert sum(p["phases_ns"].values()) >= 0.9 * p["wall_ns"], (name, p["phases_ns"], p["wall_ns"])
        assert p["phases_ns"]["kernel"] > 0 and p["batches"] > 0 and p["records_out"] > 0, name
    assert by_name["validate"]["phases_ns"]["reading"] > 0 and by_name["feed"]["phases_ns"]["reading"] == 0
    for name in ("watchdog", "journal"):
        assert by_name[name]["host"] == analysis.AGENT and by_name[name]["phases_ns"]["kernel"] > 0, name

    rings = {r["name"]: r for r in profile["rings"]}
    assert {"feed.validate", "validate.feature", "feature.risk", "risk.inference", "inference.strategy",
            "strategy.execute", "feed.journal"} <= set(rings)
    assert all(len(r["depth"]) == profile["samples"] and 0 <= r["max_depth"] <= r["capacity"] for r in rings.values())

    waterfall = profile["waterfall"]
    assert [s["name"] for s in waterfall["stages"]] == list(registry.STAGE_NAMES)
    assert not waterfall["without_outputs"]
    for key in ("p50", "p99"):
        total = 0.0
        for s in waterfall["stages"]:
            hist = np.array(s["hist"])
            assert hist.sum() == s["count"] > 0
            q = 0.5 if key == "p50" else 0.99
            upper = cb.percentile_ns(hist, q)  # the upper edge of the bucket holding the quantile
            lower = max((cb.bucket_upper_ns(b) for b in range(cb.HIST_BUCKETS) if cb.bucket_upper_ns(b) < upper),
                        default=0.0)
            assert lower <= s[key] <= upper, (s["name"], key, lower, s[key], upper)
            total += s[f"hop_{key}"]
            assert total == pytest.approx(s[key]), (s["name"], key)  # the hops add up to each stage's value
    window = np.array(waterfall["stages"][-1]["hist"])
    assert np.all(window <= after)  # the window's orders are among those the run has counted since its start

    spy = {h["name"]: h for h in profile["pyspy"]["hosts"]}
    assert {"watchdog", "journal", "inference"} <= set(spy), profile["pyspy"]
    for name in ("watchdog", "journal"):
        assert "error" not in spy[name], spy[name]
        assert spy[name]["samples"] > 0 and spy[name]["top"], spy[name]
        assert (out / spy[name]["raw"]).stat().st_size > 0
    assert "<h3>watchdog" in page

    png = tmp_path / "tick.png"
    latency = bot4("latency", "--name", run.name, "--out", str(png))
    assert latency.returncode == 0, latency.stdout + latency.stderr
    assert "tick to order over" in latency.stdout and "p50" in latency.stdout
    check_png(png)

    # The run stops while a profile samples it: the profile says so and still writes what it saw.
    late = tmp_path / "late"
    profiler = subprocess.Popen([sys.executable, "-m", "tools.cli", "profile", "--name", run.name, "--seconds", "60",
                                 "--out", str(late)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    try:
        deadline = time.monotonic() + 300
        while not late.exists():  # made once the profile has attached to the run
            assert time.monotonic() < deadline and profiler.poll() is None, "the profile did not attach"
            time.sleep(0.1)
        time.sleep(1)
        run.proc.send_signal(signal.SIGTERM)
        said, _ = profiler.communicate(timeout=600)
    finally:
        if profiler.poll() is None:
            profiler.kill()
            profiler.wait()
    code, output = run.finish(timeout=60)
    assert code in (0, 5) and "stopped (SIGTERM)" in output, output  # 5: the synthetic market tripped a drawdown
    assert profiler.returncode == 0 and "the run stopped after" in said, said
    assert json.loads((late / "profile.json").read_text())["ended_early"]


def test_without_py_spy_the_profile_says_how_to_get_it_and_still_reports(live, tmp_path, monkeypatch, capsys):
    run = live("--quiet", name=f"profile{time.time_ns() % 10**8}")
    run.wait_for(r"bot4: running")
    monkeypatch.setattr(pyspy, "executable", lambda: None)  # a machine without py-spy
    assert stage_profile.profile(run.name, 1.0, str(tmp_path / "p"), 20.0, True) == 0
    said = capsys.readouterr()
    assert "py-spy is not installed: pip install 'bot4[profile]'" in said.err
    profile = json.loads((tmp_path / "p" / "profile.json").read_text())
    assert profile["pyspy"]["error"].startswith("py-spy is not installed") and profile["pyspy"]["hosts"] == []
    assert "py-spy is not installed" in (tmp_path / "p" / "profile.html").read_text()
    # The default allocation sends no orders: the waterfall stops where the records stop, and says so.
    assert "execute" in profile["waterfall"]["without_outputs"]
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish(timeout=60)
    assert code == 0 and "stopped (SIGTERM)" in output, output


@pytest.mark.parametrize("args,code,text", [
    (("--seconds", "0"), 2, "--seconds=0 is out of range"),
    (("--seconds", "1", "--interval-ms", "0.1"), 2, "--interval-ms=0.1 is out of range"),
    (("--seconds", "1"), 1, "no running pipeline named"),
])
def test_profile_refuses_bad_arguments_and_a_run_that_is_not_there(args, code, text, tmp_path):
    done = bot4("profile", "--name", "profile-none", *args, "--out", str(tmp_path / "x"))
    assert done.returncode == code and text in done.stderr, done.stdout + done.stderr
    assert not (tmp_path / "x").exists()


def test_latency_of_a_run_that_is_not_there_is_exit_1():
    done = bot4("latency", "--name", "profile-none")
    assert done.returncode == 1 and "no running pipeline named 'profile-none'" in done.stderr, done.stderr
