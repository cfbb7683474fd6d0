import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.hosting import fused
from pipeline.hosting.fused import collect_features, run_fused
from stages import records
from tests.conftest import signal_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, os.pardir))


@pytest.fixture(scope="module")
def fused_pair():
    config = signal_config()
    return run_fused(config, 20_000), run_fused(config, 20_000)


def test_same_seed_gives_byte_identical_order_records_twice(fused_pair):
    first, second = fused_pair
    assert len(first.orders()) > 100
    assert first.reports.tobytes() == second.reports.tobytes()
    assert first.intents.tobytes() == second.intents.tobytes()


def test_another_seed_gives_other_orders(fused_pair):
    other = run_fused(signal_config(feed={"seed": 8}), 20_000)
    assert other.reports.tobytes() != fused_pair[0].reports.tobytes()


def test_every_market_event_is_forwarded_or_quarantined_at_every_stage(fused_pair):
    c = fused_pair[0].counters
    assert c["feed"]["out"] == 20_000
    assert c["validate"]["in"] == c["feed"]["out"]
    assert c["validate"]["out"] + c["validate"]["quarantined"] == c["validate"]["in"]
    assert c["validate"]["quarantined"] > 0
    from stages import validate
    reasons = sum(c["validate"][label] for label, _ in validate.REASONS.values())
    assert reasons == c["validate"]["quarantined"]
    for upstream, stage in (("validate", "feature"), ("feature", "risk"), ("risk", "inference"),
                            ("inference", "strategy")):
        assert c[stage]["in"] == c[upstream]["out"], stage
    assert c["execute"]["market_events"] == c["validate"]["out"]
    assert c["execute"]["intents"] == c["strategy"]["out"]


def test_orders_and_fills_are_consistent(fused_pair):
    result = fused_pair[0]
    reports = result.reports
    fills = reports[np.isin(reports["state"], [records.ORD_PARTIAL, records.ORD_FILLED]) & (reports["liquidity"] != 0)]
    assert len(fills) > 0
    assert np.all(fills["qty"] > 0)
    assert np.all(fills["fee"] > 0)
    # Position after each fill equals the running sum of signed fill quantities per instrument.
    for (venue, symbol) in {(int(v), int(s)) for v, s in zip(fills["venue"], fills["symbol"])}:
        mine = fills[(fills["venue"] == venue) & (fills["symbol"] == symbol)]
        np.testing.assert_allclose(np.cumsum(mine["side"] * mine["qty"]), mine["position"], rtol=1e-9, atol=1e-9)
    # Orders are numbered densely from 1 in acknowledgement order.
    acked = result.orders()
    assert list(acked["order_id"]) == list(range(1, len(acked) + 1))


def test_all_kernels_give_the_same_orders_without_jit():
    """Every kernel interpreted (NUMBA_DISABLE_JIT=1) must reproduce the compiled run exactly."""
    code = ("import hashlib, sys; from tests.conftest import signal_config; from pipeline.hosting.fused import run_fused;"
            "r = run_fused(signal_config(rings={'batch': 64}), 1500, span_ns=1_000_000);"
            "print(hashlib.sha256(r.reports.tobytes()).hexdigest(), len(r.orders()))")
    compiled = run_fused(signal_config(rings={"batch": 64}), 1500, span_ns=1_000_000)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    digest, n_orders = out.stdout.split()
    assert int(n_orders) == len(compiled.orders()) > 0
    assert digest == hashlib.sha256(compiled.reports.tobytes()).hexdigest()


@pytest.mark.parametrize("rate_eps", [1_000.0, 50_000.0])
def test_fused_mode_runs_the_synthetic_clock_at_the_configured_rate(rate_eps):
    # The unpaced feed used to keep a fixed 100 us mean gap whatever feed.rate_eps said, so fused mode (and
    # model training) saw another market than a paced live run of the same config.
    n = 20_000
    vectors = collect_features(3, n, signal_config(feed={"rate_eps": rate_eps}))
    span_s = (int(vectors["origin_ts"][-1]) - int(vectors["origin_ts"][0])) / 1e9
    assert span_s == pytest.approx(n / rate_eps, rel=0.15)


def test_orders_do_not_depend_on_how_batches_are_grouped_into_compiled_calls(monkeypatch):
    """The local stages take many batches per compiled call. One batch per call, or output buffers of one batch
    (the call stops when they are nearly full and the next resumes mid-group), give the same intents and reports."""
    from stages import fused_loop
    grouped = run_fused(signal_config(), 20_000, span_ns=2_000_000)
    monkeypatch.setattr(fused, "GROUP_EVENTS", 1)
    alone = run_fused(signal_config(), 20_000, span_ns=2_000_000)
    monkeypatch.setattr(fused, "GROUP_EVENTS", 8192)
    monkeypatch.setattr(fused, "OUTPUT_EVENTS", 1)
    resumed_calls = []
    compiled = fused_loop.run_pieces

    def counting(*args):
        resumed_calls.append(args[7] > 0)  # start > 0: a call that resumes a group
        return compiled(*args)
    monkeypatch.setattr(fused_loop, "run_pieces", counting)
    resumed = run_fused(signal_config(), 20_000, span_ns=2_000_000)
    assert any(resumed_calls)
    assert len(grouped.orders()) > 100
    for other in (alone, resumed):
        assert grouped.intents.tobytes() == other.intents.tobytes()
        assert grouped.reports.tobytes() == other.reports.tobytes()


def test_a_venue_fifo_smaller_than_the_horizon_holds_batches_back_and_loses_none(monkeypatch):
    monkeypatch.setattr(fused, "VENUE_MARKET_CAPACITY", 1024)  # 4 batches; the 1 s horizon is ~10,000 events
    result = run_fused(signal_config(), 20_000, span_ns=2_000_000)
    c = result.counters
    assert c["execute"]["market_events"] == c["validate"]["out"] == c["feature"]["in"]
    assert c["execute"]["venue_dropped"] == 0
    assert len(result.orders()) > 100
