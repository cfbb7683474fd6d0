"""Allocator weights reach a running pipeline: the publisher against the table, and ``bot4 allocator weights``
against a live regime-mode run (the strategy stage takes the table, status shows its version)."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from pipeline import graph, names
from pipeline.config import AllocatorConfig, ConfigError
from pipeline.registry import STAGE_NAMES
from pipeline.store import weights_store
from shm import control as cb
from stages import strategy
from stages.strategies import allocator
from tests.conftest import ROOT


def test_the_publisher_merges_named_regimes_and_refuses_what_the_config_would(shm_prefix):
    run = shm_prefix.removeprefix("/bot4.")
    with pytest.raises(weights_store.PublishError, match="no run named"):
        weights_store.publish(run, {"trending": {}})
    table = weights_store.create(run)
    try:
        with pytest.raises(weights_store.PublishError, match="not published its weights yet"):
            weights_store.publish(run, {"trending": {}})
        configured = graph.allocator_weights(AllocatorConfig(trending=("momentum=1",), range_bound=("mean_reversion=1",)))
        assert weights_store.publish_initial(table, configured) == 1
        version, weights = weights_store.publish(run, weights_store.parse({"volatile": "market_making=0.5, "
                                                                                       "arbitrage=2"}))
        assert version == 2
        assert np.array_equal(weights[:2], configured[:2])  # the regimes not named keep theirs
        assert weights_store.describe(weights)["volatile"] == "market_making=0.5, arbitrage=2"
        version, weights = weights_store.publish(run, weights_store.parse({"trending": "off"}))
        assert version == 3 and not weights[0].any()
        assert weights_store.current(run)[1] == 3
        for bad in ({"trending": "momentum=11"}, {"trending": "momentum=nan"}, {"sideways": "momentum=1"},
                    {"range_bound": "alpha=1"}):
            with pytest.raises(ConfigError):
                weights_store.parse(bad)
        with pytest.raises(weights_store.PublishError, match="finite values in"):
            weights_store.record(np.full((allocator.N_REGIMES, allocator.N_STRATEGIES), np.inf))
        with pytest.raises(weights_store.PublishError, match="not strategies"):  # a programmatic publisher's typo
            weights_store.publish(run, {"trending": {"momentun": 1.0}})
        assert weights_store.current(run)[1] == 3  # nothing refused reached the table
    finally:
        table.close()
        table.segment.unlink()
    control = cb.ControlBlock.create(names.control(run))  # a run whose strategy is not in regime mode
    try:
        with pytest.raises(weights_store.PublishError, match="has no allocator"):
            weights_store.publish(run, {"trending": {}})
    finally:
        control.close()
        control.segment.unlink()


def _create_and_exit(run):
    table = weights_store.create(run)
    weights_store.publish_initial(table, np.zeros((allocator.N_REGIMES, allocator.N_STRATEGIES)))
    table.close()  # not unlinked: a killed supervisor's table


def test_a_dead_runs_table_is_not_published_to(shm_prefix):
    import multiprocessing
    run = shm_prefix.removeprefix("/bot4.")
    child = multiprocessing.get_context("fork").Process(target=_create_and_exit, args=(run,))
    child.start()
    child.join(30)
    try:
        with pytest.raises(weights_store.PublishError, match="is not running: its supervisor"):
            weights_store.publish(run, {"trending": {"momentum": 1.0}})
    finally:
        from shm import segment
        assert segment.reclaim_if_stale(names.allocator_weights(run))  # its creator is dead: stale


def test_allocator_weights_publish_reaches_the_strategy_stage_of_a_live_run(live, tmp_path):
    from tests.pipeline.safety.test_killswitch_live import attach, wait_until
    config = tmp_path / "regime.toml"
    config.write_text('[strategy]\nkind = "regime"\n[allocator]\ntrending = ["momentum=1"]\n')
    run = live("--quiet", "--config", str(config))
    run.wait_for(r"bot4: running")
    block = attach(run)
    slot = block.stages[STAGE_NAMES.index("strategy")]
    version = lambda: int(slot[cb.S_CUSTOM + strategy.ST_WEIGHTS_VERSION])  # noqa: E731

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
    try:
        assert wait_until(lambda: version() == 1, timeout=20)  # the supervisor's table, taken at the first batch
        shown = cli("allocator", "weights", "--name", run.name)
        assert shown.returncode == 0, shown.stderr
        assert "version 1" in shown.stdout and "trending     momentum=1" in shown.stdout, shown.stdout
        refused = cli("allocator", "weights", "--name", run.name, "--trending", "momentum=11")
        assert refused.returncode == 2 and "in [0, 10]" in refused.stderr, refused.stderr
        published = cli("allocator", "weights", "--name", run.name, "--trending", "off", "--range-bound",
                        "mean_reversion=0.5")
        assert published.returncode == 0, published.stderr
        assert f"published to run {run.name!r} as version 2" in published.stdout, published.stdout
        assert wait_until(lambda: version() == 2, timeout=10)
        status = cli("status", "--name", run.name)
        assert "allocator weights version 2 (1 publication)" in status.stdout, status.stdout
    finally:
        block.close()
    run.proc.send_signal(signal.SIGTERM)
    run.finish()
    assert not any(name.startswith(names.allocator_weights(run.name).lstrip("/")) for name in os.listdir("/dev/shm"))
