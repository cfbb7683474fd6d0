"""GARCH(1,1): the online recursion against arch on real series, forecasts, bars, and the refit rules."""
import json
import math
import os
from datetime import datetime, timezone

import numpy as np
import pytest
from arch import arch_model
from arch.data import sp500

from stages import garch
from tools import fit_garch

CAPTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "binance-ws-capture")


@pytest.fixture(scope="module")
def sp500_fit():
    prices = sp500.load()["Adj Close"]
    y = (100.0 * prices.pct_change().dropna()).to_numpy()
    return y, arch_model(y, mean="Constant", vol="GARCH", p=1, q=1).fit(disp="off")


@pytest.fixture(scope="module")
def btc_samples():
    """One-second bar returns of BTCUSDT mids: spot on two days, and the USD-M perpetual (each file alone)."""
    spot, perp = {}, {}
    days = [f"binance={CAPTURES}/spot_btcusdt_20240808.gz", f"binance={CAPTURES}/spot_btcusdt_20240809.gz"]
    fit_garch.load_files(days, 1_000_000_000, spot)
    fit_garch.load_files([f"binance={CAPTURES}/usdm_btcusdt_20240808.gz"], 1_000_000_000, perp)
    return spot["BTCUSDT"], perp["BTCUSDT"]


@pytest.fixture(scope="module")
def capture_returns(btc_samples):
    return btc_samples[0].series()


def _online(resids, omega, alpha, beta, start):
    out = np.empty_like(resids)
    return garch.filter_variance(resids, omega, alpha, beta, start, out)


def test_online_recursion_matches_arch_conditional_volatility_on_sp500(sp500_fit):
    y, res = sp500_fit
    mu, omega, alpha, beta = (res.params[k] for k in ("mu", "omega", "alpha[1]", "beta[1]"))
    # arch starts from the backcast of its starting residuals (y minus the sample mean), then uses the fitted mu.
    h = _online(y - mu, omega, alpha, beta, garch.backcast(y - y.mean()))
    np.testing.assert_allclose(np.sqrt(h), res.conditional_volatility, rtol=1e-8, atol=0)


def test_online_recursion_matches_arch_on_bar_returns_of_a_binance_capture(capture_returns):
    r = capture_returns
    assert len(r) > 600 and np.std(r) > 0.1  # ~650 one-second bars of BTCUSDT spot mids, in bps
    res = arch_model(r, mean="Zero", vol="GARCH", p=1, q=1, rescale=False).fit(disp="off")
    omega, alpha, beta = (res.params[k] for k in ("omega", "alpha[1]", "beta[1]"))
    assert alpha > 0.005 and beta > 0.5  # a fit with both terms at work, so the match tests both
    h = _online(r, omega, alpha, beta, garch.backcast(r))
    np.testing.assert_allclose(np.sqrt(h), res.conditional_volatility, rtol=1e-8, atol=0)


def test_forecasts_match_arch_and_the_closed_form_horizon_variance(sp500_fit):
    y, res = sp500_fit
    mu, omega, alpha, beta = (res.params[k] for k in ("mu", "omega", "alpha[1]", "beta[1]"))
    h = _online(y - mu, omega, alpha, beta, garch.backcast(y - y.mean()))
    h_next = garch.update(h[-1], y[-1] - mu, omega, alpha, beta)
    ours = np.empty(20)
    total = garch.forecast(h_next, omega, alpha, beta, 20, ours)
    expected = res.forecast(horizon=20, reindex=False).variance.to_numpy()[-1]
    np.testing.assert_allclose(ours, expected, rtol=1e-10)
    assert total == pytest.approx(expected.sum(), rel=1e-12)
    assert garch.horizon_variance(h_next, omega, alpha, beta, 20) == pytest.approx(total, rel=1e-12)
    # Far ahead the forecast reverts to the unconditional variance.
    far = np.empty(5000)
    garch.forecast(h_next, omega, alpha, beta, 5000, far)
    assert far[-1] == pytest.approx(omega / (1 - alpha - beta), rel=1e-9)
    assert garch.horizon_variance(5.0, 0.1, 0.0, 1.0, 3) == pytest.approx(5.0 + 5.1 + 5.2)  # unit root branch


def test_bar_returns_close_on_event_time_and_empty_bars_return_zero():
    s = 1_000_000_000
    ts = np.array([0, s // 2, s + 1, 4 * s + 7, 4 * s + 9, 5 * s], np.int64) + 10 * s
    mids = np.array([100.0, 101.0, 102.0, 99.0, 98.0, 97.0])
    out = np.full(10, np.nan)
    n = garch.bar_returns(ts, mids, s, out)
    # bars 10..14 closed (15 still open): closes 101, 102, 102, 102, 98; bar 10 only starts the series
    expected = 1e4 * np.log([102 / 101, 1.0, 1.0, 98 / 102])
    np.testing.assert_allclose(out[:n], expected, rtol=1e-12, atol=1e-12)
    assert n == 4 == garch.returns_capacity(ts, s) - 2


def test_refit_accepts_a_good_fit_and_records_date_sample_and_loglikelihood(btc_samples):
    sample = btc_samples[0]
    when = datetime(2026, 1, 2, tzinfo=timezone.utc)
    doc = fit_garch.refit({"BTCUSDT": sample}, 1.0, None, min_bars=200, now=when)
    entry = doc["symbols"]["BTCUSDT"]
    assert entry["fitted_at"].startswith("2026-01-02")
    assert entry["n_bars"] == len(sample.series()) and math.isfinite(entry["loglik"])
    assert entry["sample"]["sources"] == ["spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz"]
    assert entry["sample"]["start"].startswith("2024-08-08")
    assert entry["alpha"] + entry["beta"] < 1 and entry["omega"] > 0
    assert garch.params_for(doc, "BTC-USDT") == (entry["omega"], entry["alpha"], entry["beta"])


def test_a_failed_refit_keeps_the_previous_parameters_and_says_why(btc_samples, tmp_path):
    previous = {"version": 1, "bar_s": 1.0, "symbols": {
        "BTCUSDT": {"omega": 0.02, "alpha": 0.05, "beta": 0.9, "loglik": -1.0, "fitted_at": "2025-01-01"},
        "XRPUSDT": {"omega": 0.01, "alpha": 0.1, "beta": 0.8},
        "SOLUSDT": {"omega": 0.04, "alpha": 0.1, "beta": 0.8},
        "default": {"omega": 0.03, "alpha": 0.05, "beta": 0.9}}}
    short, flat = fit_garch.Sample(), fit_garch.Sample()
    short.add(btc_samples[0].series()[:50], "a", 1, 2)
    flat.add(np.zeros(400), "b", 1, 2)
    # The perpetual's ~345 bars alone: arch's optimum sits on the unit root (beta = 1), which is refused.
    doc = fit_garch.refit({"BTCUSDT": short, "ETHUSDT": flat, "XRPUSDT": btc_samples[1]}, 1.0, previous, min_bars=200)
    btc = doc["symbols"]["BTCUSDT"]
    assert (btc["omega"], btc["alpha"], btc["beta"], btc["fitted_at"]) == (0.02, 0.05, 0.9, "2025-01-01")
    assert "fewer than min_bars=200" in btc["last_failure"]["reason"]
    xrp = doc["symbols"]["XRPUSDT"]
    assert (xrp["omega"], xrp["alpha"], xrp["beta"]) == (0.01, 0.1, 0.8)
    assert "not covariance-stationary" in xrp["last_failure"]["reason"]
    assert doc["symbols"]["SOLUSDT"] == previous["symbols"]["SOLUSDT"]  # not in this sample: kept as it was
    assert "constant" in doc["symbols"]["ETHUSDT"]["failed"]
    assert not fit_garch.usable(doc["symbols"]["ETHUSDT"])
    path = tmp_path / "g.json"
    path.write_text(json.dumps(doc))
    loaded = garch.load_params(path, 1.0)
    assert garch.params_for(loaded, "ETH-USDT") == garch.params_for(loaded, "default")


def test_parameter_file_errors_name_the_config_key_and_the_fix(tmp_path):
    with pytest.raises(garch.GarchParamsError, match=r"risk.garch_params=.*does not exist; run `bot4 risk"):
        garch.load_params(tmp_path / "missing.json", 1.0)
    with pytest.raises(garch.GarchParamsError, match=r"risk.bar_s=5.0; refit with --bar-s 5.0"):
        garch.load_params(garch.DEFAULT_PARAMS_PATH, 5.0)


def test_shipped_parameters_load_and_are_stationary():
    doc = garch.load_params(garch.DEFAULT_PARAMS_PATH, 1.0)
    for symbol in ("BTC-USDT", "ETH-USDT", "SOL-USDT"):
        omega, alpha, beta = garch.params_for(doc, symbol)
        assert omega > 0 and alpha >= 0 and beta >= 0 and alpha + beta < 1


def test_the_periodic_refit_rewrites_the_file_each_period_until_stopped(tmp_path):
    import threading
    out = tmp_path / "g.json"
    files = [f"binance={CAPTURES}/spot_btcusdt_20240808.gz", f"binance={CAPTURES}/spot_btcusdt_20240809.gz"]
    stop = threading.Event()
    writes = []

    def after(doc):
        writes.append((doc, json.loads(out.read_text())))
        if len(writes) == 2:
            stop.set()

    assert fit_garch.refit_every(0.01, stop, files, None, None, 1.0, 200, out, after=after) == 2
    (first, first_file), (second, second_file) = writes
    assert first == first_file and second == second_file  # what was fitted is what is on disk
    assert first["symbols"]["BTCUSDT"]["n_bars"] == second["symbols"]["BTCUSDT"]["n_bars"] > 600
    assert not list(tmp_path.glob("*.tmp"))


def test_fit_garch_reads_a_journal_with_the_run_config_symbol_names(tmp_path):
    from pipeline.config import load
    from pipeline.sources.replay_feed import load_recording
    from pipeline.store.journal import JournalWriter
    from stages.records import MARKET_EVENT
    conf = tmp_path / "run.toml"
    conf.write_text(f'[feed]\nsource = "replay"\nfiles = ["binance={CAPTURES}/spot_btcusdt_20240809.gz"]\n'
                    'venues = ["binance"]\nsymbols = ["BTC-USDT"]\n')
    events, _ = load_recording(load(conf))
    with JournalWriter(str(tmp_path / "j"), "market", MARKET_EVENT) as writer:
        writer.append(events)
    out = tmp_path / "g.json"
    fit_garch.main(["--journal", str(tmp_path / "j"), "--config", str(conf), "--out", str(out)])
    entry = json.loads(out.read_text())["symbols"]["BTCUSDT"]
    span_s = (events["origin_ts"][-1] - events["origin_ts"][0]) / 1e9
    if "last_failure" in entry or "failed" in entry:
        pytest.fail(f"the capture should fit: {entry}")
    assert abs(entry["n_bars"] - span_s) <= 2 and entry["sample"]["sources"] == [f"journal:{tmp_path / 'j'}"]
