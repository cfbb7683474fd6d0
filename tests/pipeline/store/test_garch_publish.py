"""Refitted GARCH parameters reach a running pipeline: the published table, the risk stage taking it at a bar
boundary, and ``bot4 risk fit-garch --publish`` against a live run."""
import math
import multiprocessing
import os
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pytest
from numba import njit

from pipeline import names
from pipeline.registry import STAGE_NAMES
from pipeline.store import garch_store
from shm import control as cb
from shm import seqlock
from shm.segment import SegmentError
from stages import garch, risk
from stages.universe import MAX_KEYS, MAX_VENUES, instrument_key
from tests.conftest import ROOT
from tests.stages.test_risk import GARCH, Risk, S

REFIT = np.array([0.2, 0.05, 0.9])  # unconditional variance 4 bps^2 per bar


def doc_with(params, bar_s=1.0, fitted_at="2026-11-26T06:00:00+00:00"):
    entry = {"omega": params[0], "alpha": params[1], "beta": params[2], "fitted_at": fitted_at}
    return {"version": garch.FORMAT_VERSION, "bar_s": bar_s, "symbols": {garch.DEFAULT_KEY: entry}}


def publish_local(r: Risk, params):
    seqs, records, _ = r.state[8]
    record = garch.published_record(doc_with(params), ["BTC-USDT"], S, 1)
    src = np.zeros(1, garch.PUBLISHED_GARCH)
    src[0] = record
    assert seqlock.write_contended(seqs, records, 0, src, 0, 10) > 0


PATTERN = np.dtype([("writer", np.int64), ("n", np.int64), ("check", np.int64, (30,))])


@njit(cache=True)
def _write_contended_many(seqs, records, src, writer, n):
    for i in range(n):
        src[0]["writer"] = writer
        src[0]["n"] = i
        for j in range(30):
            src[0]["check"][j] = writer * 1_000_000_000 + i
        if seqlock.write_contended(seqs, records, 0, src, 0, 1 << 40) < 0:
            return False
    return True


@njit(cache=True)
def _read_torn(seqs, records, dst, n):
    torn = 0
    for _ in range(n):
        if seqlock.read(seqs, records, 0, dst, 0, 1 << 40) >= 0:
            expect = dst[0]["writer"] * 1_000_000_000 + dst[0]["n"]
            for j in range(30):
                if dst[0]["check"][j] != expect:
                    torn += 1
                    break
    return torn


def _contending_writer(name, writer, n):
    table = seqlock.SeqlockTable.attach(name, PATTERN, 1)
    ok = _write_contended_many(table.seqs, table.records, np.zeros(1, PATTERN), writer, n)
    os._exit(0 if ok else 1)


def test_contended_writers_never_interleave_or_lose_a_write(shm_prefix):
    local = seqlock.local_table(PATTERN, 1)
    _write_contended_many(local[0], local[1], np.zeros(1, PATTERN), 1, 2)  # compile before forking
    _read_torn(local[0], local[1], np.zeros(1, PATTERN), 1)
    table = seqlock.SeqlockTable.create(f"{shm_prefix}.contended", PATTERN, 1)
    try:
        ctx = multiprocessing.get_context("fork")
        n = 300_000
        writers = [ctx.Process(target=_contending_writer, args=(table.segment.name, w, n)) for w in (1, 2)]
        for w in writers:
            w.start()
        torn = 0
        while any(w.is_alive() for w in writers):
            torn += _read_torn(table.seqs, table.records, np.zeros(1, PATTERN), 10_000)
        for w in writers:
            w.join(30)
            assert w.exitcode == 0
        assert torn == 0
        # With plain seqlock.write two writers lose increments (both read s, both store s + 2).
        assert table.read(0)[1] == 2 * n
    finally:
        table.close()
        table.segment.unlink()


def test_published_parameters_apply_at_the_next_bar_and_the_variance_carries_on():
    r = Risk()
    for i, mid in enumerate((100.0, 100.1, 100.2)):
        r.step([(0, mid)], (10 + i) * S)  # bar 11 closes with a return under the start-up parameters
    assert r.table[0, risk.G_BARS] == 1
    h_before = r.table[0, risk.G_H]
    assert r.stats[risk.ST_GARCH_VERSION] == 0  # a local table nobody published to
    publish_local(r, REFIT)
    r.step([(0, 100.3)], 12 * S + 500_000_000)  # same bar: nothing changes mid-bar
    assert tuple(r.table[0, risk.G_OMEGA:risk.G_BETA + 1]) == tuple(GARCH)
    r.step([(0, 100.4)], 13 * S)  # bar 12 closes: the new parameters first, then its update under them
    assert tuple(r.table[0, risk.G_OMEGA:risk.G_BETA + 1]) == tuple(REFIT)
    x = 1e4 * math.log(100.3 / 100.1)  # bar 11 closed at 100.1, bar 12 at 100.3
    assert r.table[0, risk.G_H] == pytest.approx(garch.update(h_before, x, *REFIT), rel=1e-12)
    assert r.stats[risk.ST_GARCH_VERSION] == 1
    # an instrument without a bar yet starts at the new unconditional level
    assert r.table[5, risk.G_H] == pytest.approx(REFIT[0] / (1 - REFIT[1] - REFIT[2]))


def test_a_non_stationary_row_is_refused_by_the_kernel_and_counted():
    r = Risk()
    r.step([(0, 100.0)], 10 * S)
    seqs, records, _ = r.state[8]
    src = np.zeros(1, garch.PUBLISHED_GARCH)
    src[0]["params"] = np.tile(REFIT, (MAX_KEYS, 1))
    src[0]["params"][3] = (0.1, 0.5, 0.6)  # alpha + beta > 1
    seqlock.write_contended(seqs, records, 0, src, 0, 10)
    r.step([(0, 100.0)], 11 * S)
    assert r.stats[risk.ST_GARCH_REFUSED] == 1
    assert tuple(r.table[3, risk.G_OMEGA:risk.G_BETA + 1]) == tuple(GARCH)
    assert tuple(r.table[2, risk.G_OMEGA:risk.G_BETA + 1]) == tuple(REFIT)


def test_the_publisher_maps_symbols_by_name_and_refuses_another_bar_or_a_bad_fit(shm_prefix):
    run = shm_prefix.removeprefix("/bot4.")
    table = garch_store.create(run)
    try:
        with pytest.raises(garch_store.PublishError, match="not published its GARCH parameters yet"):
            garch_store.publish_refit(run, doc_with(REFIT))
        garch_store.publish_initial(table, doc_with(GARCH), ["BTC-USDT", "ETH-USDT"], S)
        doc = doc_with(REFIT)
        doc["symbols"]["ETHUSDT"] = {"omega": 0.3, "alpha": 0.1, "beta": 0.8}
        version, _ = garch_store.publish_refit(run, doc)
        assert version == 2
        record, count = table.read(0)
        assert count == 2 and garch.published_symbols(record) == ["BTC-USDT", "ETH-USDT"]
        for venue in range(MAX_VENUES):
            assert tuple(record["params"][instrument_key(venue, 1)]) == (0.3, 0.1, 0.8)
            assert tuple(record["params"][instrument_key(venue, 0)]) == tuple(REFIT)
        assert record["fitted_ns"] == int(datetime(2026, 11, 26, 6, tzinfo=timezone.utc).timestamp()) * 10 ** 9
        with pytest.raises(garch_store.PublishError, match=r"uses 1 s bars \(risk.bar_s\); refit with --bar-s 1"):
            garch_store.publish_refit(run, doc_with(REFIT, bar_s=5.0))
        with pytest.raises(garch_store.PublishError, match="not a covariance-stationary"):
            garch_store.publish_refit(run, doc_with([0.1, 0.5, 0.6]))
        failed = {"version": garch.FORMAT_VERSION, "bar_s": 1.0, "symbols": {"default": {"failed": "no data"}}}
        with pytest.raises(garch_store.PublishError, match="no usable 'default' entry"):
            garch_store.publish_refit(run, failed)
        assert table.read(0)[1] == 2  # nothing refused reached the table
    finally:
        table.close()
        table.segment.unlink()
    with pytest.raises(SegmentError, match="does not exist"):
        garch_store.publish_refit(run, doc_with(REFIT))
    control = cb.ControlBlock.create(names.control(run))  # a run without a risk stage (bot4 record)
    try:
        with pytest.raises(garch_store.PublishError, match="without a risk stage"):
            garch_store.publish_refit(run, doc_with(REFIT))
    finally:
        control.close()
        control.segment.unlink()


def test_fit_garch_publish_reaches_the_risk_stage_of_a_live_run(live, tmp_path):
    from tests.pipeline.safety.test_killswitch_live import attach, wait_until
    run = live("--quiet")
    run.wait_for(r"bot4: running")
    block = attach(run)
    risk_slot = block.stages[STAGE_NAMES.index("risk")]
    version = lambda: int(risk_slot[cb.S_CUSTOM + risk.ST_GARCH_VERSION])  # noqa: E731
    try:
        assert wait_until(lambda: version() == 1, timeout=10)  # the start-up parameters, taken at the first bar
        out = tmp_path / "garch.json"
        sample = os.path.join(ROOT, "tests", "data", "binance-ws-capture", "spot_btcusdt_20240809.gz")
        fit = subprocess.run([sys.executable, "-m", "tools.cli", "risk", "fit-garch", "--file", f"binance={sample}",
                              "--out", str(out), "--min-bars", "50", "--publish", run.name], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert fit.returncode == 0, fit.stdout + fit.stderr
        assert f"published to run {run.name!r} as version 2" in fit.stdout, fit.stdout + fit.stderr
        assert wait_until(lambda: version() == 2, timeout=10)  # the synthetic market's next bar boundary
        reader = garch_store.GarchStoreReader(run.name)
        try:
            record, count = reader.current()
        finally:
            reader.close()
        assert count == 2 and record["fitted_ns"] > 0
        status = subprocess.run([sys.executable, "-m", "tools.cli", "status", "--name", run.name], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert "GARCH parameters version 2 (1 refit published)" in status.stdout, status.stdout
    finally:
        block.close()
    run.proc.send_signal(__import__("signal").SIGTERM)
    code, output = run.finish()
    assert not any(name.startswith(names.garch_params(run.name).lstrip("/")) for name in os.listdir("/dev/shm"))
