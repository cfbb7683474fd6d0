"""Risk layer: Kelly sizing, GARCH on bars inside the risk stage, heat, drawdown and the liquidation guard,
each on scripted inputs, and the decision record that explains an order afterwards."""
import math
import os

import numpy as np
import pytest

from pipeline import kill_reasons
from pipeline.config import WatchdogConfig
from pipeline.registry import STAGE_NAMES
from pipeline.safety.panic import PanicMonitor
from shm import control as cb
from stages import garch, heat, kelly, records, risk, strategy
from stages.records import BUY, INTENT_IOC, ORD_FILLED, SELL
from stages.universe import MAX_KEYS, instrument_key
from tests.conftest import kernel_params, signal_config
from tests.pipeline.safety.test_panic import MONO, NOW, reasons, running_block

S = 1_000_000_000
GARCH = np.array([0.05, 0.1, 0.85])  # omega (bps^2), alpha, beta: unconditional variance 1 bps^2 per bar


# --- Kelly ---------------------------------------------------------------------------------------------------

def test_kelly_textbook_cases_at_full_kelly():
    assert kelly.binary(0.6, 1.0, 1.0) == pytest.approx(0.2)       # p - q/b = 0.6 - 0.4
    assert kelly.continuous(0.1, 0.2 ** 2, 1.0) == pytest.approx(2.5)  # mu / sigma^2
    assert kelly.binary(0.5, 2.0, 1.0) == pytest.approx(0.25)      # 2:1 payoff at even odds
    assert kelly.binary(0.4, 1.0, 1.0) == pytest.approx(-0.2)      # the edge is on the other side


@pytest.mark.parametrize("c", [0.25, 0.5, 0.1])
def test_fractional_kelly_scales_linearly(c):
    assert kelly.binary(0.6, 1.0, c) == pytest.approx(0.2 * c)
    assert kelly.continuous(0.1, 0.04, c) == pytest.approx(2.5 * c)


def test_kelly_refuses_nonsense_inputs_and_caps():
    assert kelly.binary(1.2, 1.0, 0.25) == 0.0 and kelly.binary(0.6, 0.0, 0.25) == 0.0
    assert kelly.continuous(0.1, 0.0, 0.25) == 0.0
    assert kelly.capped(2.5, 1.0) == 1.0 and kelly.capped(-2.5, 1.0) == -1.0 and kelly.capped(0.3, 1.0) == 0.3


def _prediction(prob_up, equity=100_000.0, bid=99.99, ask=100.01, budget=1e9, horizon_sigma_bps=100.0):
    p = np.zeros(1, records.PREDICTION)
    p["bid"], p["ask"], p["prob_up"], p["equity"] = bid, ask, prob_up, equity
    p["buy_budget"] = p["sell_budget"] = budget
    p["size_scale"] = 1.0
    p["horizon_sigma_bps"], p["heat"], p["drawdown"] = horizon_sigma_bps, 0.07, 0.03
    p["reasons"] = records.RISK_NOTIONAL_LIMIT
    return p


def _strategy(p, form="binary", position=0.0, take_usd=1e9):
    ctl = np.zeros(cb.GLOBAL_WORDS, np.int64)
    ctl[cb.G_TRADING_ENABLED] = 1
    out = np.zeros(strategy.out_capacity(1), records.ORDER_INTENT)
    params = kernel_params("strategy", mode="signal", threshold=0.1, take_usd=take_usd, quote_usd=500.0, half_spread_bps=4.0,
                           requote_bps=2.0, skew_bps=2.0, cooldown_ms=50.0, quoting=False, max_position_usd=50_000.0,
                           kelly_fraction=0.25, kelly_payoff_ratio=1.0, kelly_form=form)
    state = strategy.make_state()
    state[0][0, strategy.K_POSITION] = position
    stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
    n = strategy.step(p, 1, np.zeros(0, records.EXEC_REPORT), 0, state, params, ctl, stats, out, 0)
    return out[:n], stats


def test_strategy_takes_the_step_to_the_fractional_kelly_target_and_says_so_on_the_intent():
    # binary: 0.25 * (0.65 - 0.35) = 0.075 of $100,000 = $7,500; long $5,000 already: $2,500 more
    out, stats = _strategy(_prediction(0.65), position=50.0)
    assert len(out) == 1 and out[0]["kind"] == INTENT_IOC and out[0]["side"] == BUY
    assert out[0]["qty"] * 100.0 == pytest.approx(2_500.0, rel=1e-9)
    assert out[0]["kelly_f"] == pytest.approx(0.075)
    assert out[0]["risk_reasons"] == records.RISK_NOTIONAL_LIMIT | records.RISK_KELLY
    assert (out[0]["heat"], out[0]["drawdown"], out[0]["horizon_sigma_bps"]) == (0.07, 0.03, 100.0)
    assert stats[strategy.ST_KELLY_SIZED] == 1
    # short side: 1 - 0.3 = 0.7 for down: 0.25 * 0.4 = 0.1 -> $10,000 short
    out, _ = _strategy(_prediction(0.3))
    assert out[0]["side"] == SELL and out[0]["qty"] * 100.0 == pytest.approx(10_000.0)
    assert out[0]["kelly_f"] == pytest.approx(-0.1)


def test_strategy_continuous_kelly_uses_the_garch_horizon_sigma():
    # mu = (2p - 1) sigma = 0.3 * 1% ; f = 0.25 * mu / sigma^2 = 0.25 * 0.3 / 0.01 = 7.5 (times equity)
    out, _ = _strategy(_prediction(0.65, horizon_sigma_bps=100.0), form="continuous")
    assert out[0]["kelly_f"] == pytest.approx(7.5)
    assert out[0]["qty"] * 100.0 == pytest.approx(750_000.0)


def test_strategy_never_exceeds_the_risk_budget_or_trades_past_the_target():
    out, _ = _strategy(_prediction(0.65, budget=3.0))
    assert out[0]["qty"] == 3.0 and not out[0]["risk_reasons"] & records.RISK_KELLY  # the budget bound, not Kelly
    out, stats = _strategy(_prediction(0.65), position=80.0)  # $8,000 long > $7,500 target: nothing to add
    assert len(out) == 0 and stats[strategy.ST_TAKES] == 0


# --- the risk stage on scripted inputs -----------------------------------------------------------------------

class Risk:
    def __init__(self, **overrides):
        kw = dict(max_position_usd=1e9, max_order_usd=1e6, vol_ref_bps=1e9, capital_usd=100_000.0,
                  soft_drawdown_pct=15.0, bar_s=1.0, horizon_bars=100, cov_halflife_bars=50.0, cov_min_bars=20,
                  max_gross_usd=1e12, max_leverage=1e6, heat_limit=0.25, heat_stop_sigmas=2.0,
                  maintenance_margin_pct=0.5, liq_distance_sigmas=0.0)
        kw.update(overrides)
        self.params = risk.make_params(**kw)
        self.state = risk.make_state(np.tile(GARCH, (MAX_KEYS, 1)))
        self.stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
        self.out = np.zeros(64, records.RISK_DECISION)

    def step(self, mids, ts, fills=()):
        """One feature vector per (symbol, mid) at event time ``ts``."""
        f = np.zeros(len(mids), records.FEATURE_VECTOR)
        f["schema_hash"] = records.FEATURE_SCHEMA_HASH
        f["origin_ts"] = ts
        for i, (symbol, mid) in enumerate(mids):
            f[i]["symbol"] = symbol
            f[i]["bid"], f[i]["ask"] = mid * (1 - 1e-6), mid * (1 + 1e-6)
        reports = np.array(list(fills), records.EXEC_REPORT)
        n = risk.step(f, len(f), reports, len(reports), self.state, self.params, None, self.stats, self.out, 0)
        return self.out[:n].copy()

    def hold(self, symbol, qty, price):
        """A fill that sets the position (bought or sold at ``price``)."""
        r = np.zeros(1, records.EXEC_REPORT)[0]
        current = self.state[0][symbol]
        r["symbol"], r["state"], r["liquidity"] = symbol, ORD_FILLED, -1
        r["side"] = BUY if qty > current else SELL
        r["qty"], r["price"], r["position"] = abs(qty - current), price, qty
        return r

    @property
    def table(self):
        return self.state[4]


def test_garch_in_the_risk_stage_follows_the_offline_bars_and_recursion_exactly():
    rng = np.random.default_rng(5)
    ts = np.sort(rng.integers(0, 400 * S, 3000)) + 1_000 * S
    ts[1500:] += 37 * S  # a 37-second silence: empty bars, closed in one step online
    mids = 100.0 * np.exp(np.cumsum(rng.normal(0, 2e-5, len(ts))))
    r = Risk()
    for i in range(0, len(ts), 64):
        r.step([(0, m) for m in mids[i:i + 64]], ts[i:i + 64])  # one record per event, batch by batch
    r.step([(0, mids[-1])], ts[-1] // S * S + S)  # open the next bar: the last one closes
    returns = np.zeros(garch.returns_capacity(ts, S) + 1)
    n = garch.bar_returns(np.append(ts, ts[-1] // S * S + S), np.append(mids, mids[-1]), S, returns)
    h = GARCH[0] / (1 - GARCH[1] - GARCH[2])
    for x in returns[:n]:
        h = garch.update(h, x, *GARCH)
    assert r.table[0, risk.G_BARS] == n > 430
    assert r.table[0, risk.G_H] == pytest.approx(h, rel=1e-12)
    d = r.step([(0, mids[-1])], ts[-1] // S * S + S)[0]
    assert d["garch_sigma_bps"] == pytest.approx(math.sqrt(h), rel=1e-12)
    assert d["horizon_sigma_bps"] ** 2 == pytest.approx(garch.horizon_variance(h, *GARCH, 100), rel=1e-12)


def test_heat_room_is_exact_and_reductions_always_pass():
    w = np.array([30_000.0, -10_000.0, 0.0])
    sigma = np.array([0.01, 0.02, 0.015])
    cov = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, -0.3], [0.2, -0.3, 1.0]])
    for warm in (False, True):
        for k in range(3):
            for s in (1.0, -1.0):
                d = heat.room(w, k, s, sigma, cov, warm, 2.0, 10_000.0, 0.25)
                after = w.copy()
                after[k] += s * d
                if d > 0 and heat.heat(after, sigma, cov, warm, 2.0, 10_000.0) > 0.25 * (1 + 1e-9):
                    # above the limit already: the room is a reduction back to today's risk, never beyond
                    assert heat.portfolio_sigma(after, sigma, cov, warm) <= \
                        heat.portfolio_sigma(w, sigma, cov, warm) * (1 + 1e-9)
                elif d > 0:
                    assert heat.heat(after, sigma, cov, warm, 2.0, 10_000.0) == pytest.approx(0.25, rel=1e-9)
    # 0.25 * 1e6 / 2 = $125,000 of portfolio sigma; one position of sigma 1% may be $12.5M
    assert heat.room(np.zeros(3), 0, 1.0, sigma, cov, True, 2.0, 1e6, 0.25) == pytest.approx(12.5e6)


def test_heat_is_correlation_aware_once_the_covariance_is_warm():
    w = np.array([10_000.0, 10_000.0])
    sigma = np.array([0.01, 0.01])
    hedged = np.array([[1.0, -1.0], [-1.0, 1.0]])
    assert heat.heat(w, sigma, hedged, False, 2.0, 1e5) == pytest.approx(2 * 200 / 1e5)  # cold: sum of risks
    assert heat.heat(w, sigma, hedged, True, 2.0, 1e5) == pytest.approx(0.0, abs=1e-15)   # perfectly hedged
    cov = np.zeros((2, 2))
    for r in ([1.0, 1.0], [-2.0, -2.0], [0.5, 0.5]):
        heat.ewma_cov_update(cov, np.array(r), np.array([1.0, 1.0]), 0.9)
    assert heat.correlation(cov, 0, 1) == pytest.approx(1.0)


def test_heat_threshold_on_a_scripted_equity_path_blocks_new_risk_but_not_reductions():
    r = Risk(heat_limit=0.25, heat_stop_sigmas=2.0)
    ts = 1_000 * S
    r.step([(0, 100.0)], ts, fills=[r.hold(0, 5_000.0, 100.0)])  # long $500,000 on $100,000 capital
    d = r.step([(0, 100.0)], ts + 1)[0]
    sigma_h = d["horizon_sigma_bps"] * 1e-4  # 100 bars of ~1 bps: ~10 bps
    assert d["heat"] == pytest.approx(2 * sigma_h * 500_000 / 100_000, rel=1e-9)
    assert d["buy_budget"] > 0 and not d["reasons"] & records.RISK_HEAT
    # a volatility burst (1.5% bars) raises the GARCH variance, so heat crosses 0.25 while equity swings
    path = [100.0, 101.5, 100.0, 101.5, 100.0, 101.5]
    seen = []
    for i, mid in enumerate(path):
        d = r.step([(0, mid)], ts + (i + 1) * S)[0]
        seen.append((d["heat"], d["buy_budget"], d["sell_budget"], d["reasons"]))
    over = [s for s in seen if s[0] > 0.25]
    under = [s for s in seen if s[0] <= 0.25]
    assert over and under, seen
    for h, buy, sell, why in over:
        assert buy == 0.0 and why & records.RISK_HEAT and sell > 0  # no new risk; reducing allowed
    for h, buy, sell, why in under:
        assert buy > 0.0
    assert r.stats[risk.ST_HEAT_LIMITED] >= len(over) and r.stats[risk.ST_HEAT_BPS] > 2500


def test_drawdown_on_a_scripted_equity_path_halves_at_15_and_trips_the_watchdog_at_20():
    block = running_block()
    r = Risk(max_order_usd=1_000.0, heat_limit=10.0)
    r.stats = block.stages[STAGE_NAMES.index("risk")][cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
    monitor = PanicMonitor(WatchdogConfig(hard_drawdown_pct=20.0))
    r.step([(0, 100.0)], 1_000 * S, fills=[r.hold(0, 1_000.0, 100.0)])  # long $100,000 = all the equity
    marks = {110.0: (0.0, False, False), 95.0: (0.1364, False, False), 93.6: (0.1491, False, False),
             93.5: (0.15, True, False), 88.1: (0.1991, True, False), 88.0: (0.2, True, True),
             120.0: (0.0, False, False)}
    for i, (mid, (drawdown, halved, tripped)) in enumerate(marks.items()):
        d = r.step([(0, mid)], 1_000 * S + i + 1)[0]
        assert d["drawdown"] == pytest.approx(drawdown, abs=1e-4), mid
        assert bool(d["reasons"] & records.RISK_DRAWDOWN) == halved, mid
        assert d["buy_budget"] * mid == pytest.approx(500.0 if halved else 1000.0), mid
        assert d["equity"] == pytest.approx(100_000.0 + 1_000.0 * (mid - 100.0))
        got = reasons(monitor.evaluate(block, NOW, MONO))
        assert got == ([(kill_reasons.KILL_HARD_DRAWDOWN, STAGE_NAMES.index("risk"))] if tripped else []), mid
    assert r.stats[risk.ST_PEAK_CENTS] == 12_000_000  # the peak follows the marks up


def test_gross_and_leverage_caps():
    r = Risk(max_gross_usd=150_000.0, max_leverage=1.2)
    r.step([(0, 100.0), (1, 50.0)], 1_000 * S, fills=[r.hold(0, 500.0, 100.0), r.hold(1, -1_000.0, 50.0)])
    d = r.step([(0, 100.0), (1, 50.0)], 1_000 * S + 1)
    # gross $100,000; the cap is min($150,000, 1.2 * $100,000) = $120,000: $20,000 more on either instrument
    assert d[0]["buy_budget"] * 100.0 == pytest.approx(20_000.0)
    assert d[1]["sell_budget"] * 50.0 == pytest.approx(20_000.0)
    assert d[0]["sell_budget"] * 100.0 == pytest.approx(120_000.0)  # back to flat, then $70,000 short
    assert d[0]["reasons"] & records.RISK_GROSS_LIMIT and r.stats[risk.ST_GROSS_USD] == 100_000


def test_liquidation_guard_blocks_new_risk_and_asks_for_the_reduction_that_restores_the_distance():
    r = Risk(max_order_usd=1e9, max_leverage=1e6, heat_limit=100.0, liq_distance_sigmas=3.0,
             maintenance_margin_pct=0.5)
    ts = 1_000 * S
    r.step([(0, 100.0)], ts, fills=[r.hold(0, 20_000.0, 100.0)])  # $2M long on $100k: 20x
    d = r.step([(0, 100.0)], ts + 1)[0]
    sigma_h = d["horizon_sigma_bps"] * 1e-4
    allowed = 100_000.0 / (0.005 + 3.0 * sigma_h * 1.005)  # equity / (mmr + k sigma (1 + mmr)), ~$12.5M
    assert 2e6 < allowed and d["reduce_qty"] == 0.0 and d["buy_budget"] * 100.0 == pytest.approx(allowed - 2e6)
    assert d["reasons"] & records.RISK_LIQUIDATION  # the guard is what bounds the buy side
    held = 1.5 * allowed
    r.step([(0, 100.0)], ts + 2, fills=[r.hold(0, held / 100.0, 100.0)])  # beyond the allowed notional
    d = r.step([(0, 100.0)], ts + 3)[0]
    assert d["reasons"] & records.RISK_LIQUIDATION and d["buy_budget"] == 0.0
    assert d["reduce_qty"] * 100.0 == pytest.approx(-(held - allowed), rel=1e-9)
    # distance to liquidation after the reduction is exactly liq_distance_sigmas horizon sigmas
    n = held + d["reduce_qty"] * 100.0
    distance = (100_000.0 - 0.005 * n) / (n * (1 - 0.005))
    assert distance == pytest.approx(3.0 * sigma_h * 1.005 / (1 - 0.005), rel=1e-6)
    assert r.stats[risk.ST_LIQ_LIMITED] >= 1


def test_risk_reduction_request_becomes_a_reduce_only_intent():
    p = _prediction(0.9)
    p["reduce_qty"] = -5.0
    out, stats = _strategy(p, position=8.0)
    assert len(out) == 1 and out[0]["side"] == SELL and out[0]["qty"] == 5.0 and out[0]["price"] == 99.99
    assert out[0]["strategy"] == records.STRAT_RISK_REDUCE and stats[strategy.ST_RISK_REDUCTIONS] == 1
    out, _ = _strategy(p, position=3.0)  # never more than the position
    assert out[0]["qty"] == 3.0


def test_the_decision_carries_its_inputs_and_the_shipped_fit_applies_per_symbol():
    from pipeline.config import Config
    from pipeline.plan import resolve
    from stages.garch import DEFAULT_PARAMS_PATH, load_params, params_for
    table = resolve(Config()).garch_table
    doc = load_params(DEFAULT_PARAMS_PATH, 1.0)
    assert tuple(table[0]) == params_for(doc, "BTC-USDT") == params_for(doc, "BTCUSDT")
    assert tuple(table[instrument_key(1, 2)]) == params_for(doc, "default")  # SOL has no fit of its own
    r = Risk()
    d = r.step([(0, 100.0), (1, 50.0)], 1_000 * S)
    assert np.all(d["equity"] == 100_000.0) and np.all(d["drawdown"] == 0.0) and np.all(d["heat"] == 0.0)
    np.testing.assert_allclose(d["garch_sigma_bps"], 1.0, rtol=1e-12)  # the unconditional level to start


@pytest.mark.parametrize("section,key,value,fix", [
    ("risk", "kelly_form", "half", "use 'binary' or 'continuous'"),
    ("risk", "kelly_fraction", 1.5, r"use \(0, 1\]"),
    ("risk", "heat_limit", 0.0, r"use \(0, 10\]"),
    ("risk", "liq_distance_sigmas", -1.0, "use 0 \\(off\\) or more"),
    ("execute", "price_collar_bps", 0.0, "use a positive number"),
    ("execute", "order_burst", 0, "use 1 or more"),
])
def test_bad_risk_and_gate_settings_name_the_key_and_the_fix(section, key, value, fix):
    from pipeline.config import Config, ConfigError
    with pytest.raises(ConfigError, match=rf"{section}.{key}=.*{fix}"):
        Config().with_overrides(**{section: {key: value}})


def test_a_garch_fit_that_cannot_serve_the_run_is_a_config_error_when_the_run_is_planned():
    from pipeline.config import Config, ConfigError
    from pipeline.plan import resolve
    config = Config().with_overrides(risk={"garch_params": "/nonexistent/g.json"})  # a check reads no file
    with pytest.raises(ConfigError, match=r"risk.garch_params=.*does not exist; run `bot4 risk fit-garch"):
        resolve(config)


def test_a_fused_replay_of_a_real_capture_runs_garch_on_its_bars_and_intents_carry_the_risk_inputs():
    from pipeline.config import Config
    from pipeline.hosting.fused import run_fused
    from pipeline.sources.replay_feed import load_recording
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "binance-ws-capture", "spot_btcusdt_20240809.gz")
    config = signal_config(feed={"source": "replay", "files": (f"binance={path}",), "venues": ("binance",),
                                           "symbols": ("BTC-USDT",)})
    events, _ = load_recording(config)
    span_s = (events["origin_ts"][-1] - events["origin_ts"][0]) / 1e9
    result = run_fused(config, market_source=iter([events]))
    c = result.counters["risk"]
    assert abs(c["bars"] - span_s) <= 2  # one-second bars by receive time
    assert c["decisions"] == result.counters["feature"]["out"] > 100_000
    intents = result.intents
    assert len(intents) > 100
    sigma = intents["horizon_sigma_bps"]
    assert np.all(sigma > 0) and np.unique(sigma).size > 10  # the variance moves with the bars
    assert np.all(intents["risk_reasons"] & records.RISK_NOTIONAL_LIMIT)
    assert np.all(np.isfinite(intents["heat"])) and np.all(intents["drawdown"] >= 0)


def test_heat_in_the_stage_turns_correlation_aware_when_the_covariance_is_warm():
    """Two instruments whose bar returns are exact opposites, held long and long in equal notional: before
    cov_min_bars the heat is the sum of both risks; once warm, the EWMA correlation (-1) nets them."""
    r = Risk(cov_min_bars=20, heat_limit=10.0)
    ts = 1_000 * S
    r.step([(0, 100.0), (1, 100.0)], ts, fills=[r.hold(0, 100.0, 100.0), r.hold(1, 100.0, 100.0)])
    rng = np.random.default_rng(2)
    a = b = 100.0
    heats = []
    for i in range(1, 40):
        x = rng.normal(0, 2e-4)
        a, b = a * math.exp(x), b * math.exp(-x)
        d = r.step([(0, a), (1, b)], ts + i * S)
        heats.append((i, d[0]["heat"], d[0]["horizon_sigma_bps"], d[1]["horizon_sigma_bps"], a * 100, b * 100))
    for i, h, s0, s1, w0, w1 in heats:
        bound = 2.0 * (w0 * s0 + w1 * s1) * 1e-4 / (100_000.0 + w0 + w1 - 20_000.0)
        netted = 2.0 * abs(w0 * s0 - w1 * s1) * 1e-4 / (100_000.0 + w0 + w1 - 20_000.0)
        if i <= 20:  # bars closed so far: i - 1 < 20
            assert h == pytest.approx(bound, rel=1e-9), i
        else:
            assert h == pytest.approx(netted, rel=1e-6, abs=1e-12), i
    assert heats[-1][1] < heats[10][1] / 10


def test_every_order_and_rejection_in_a_journal_is_explained_by_its_intent(tmp_path, capsys):
    from pipeline.config import Config
    from pipeline.store.journal_replay import record
    from tools import explain_orders
    config = signal_config(execute={"max_order_usd": 1_500.0})  # takes of $2,000 are rejected
    result = record(config, 6_000, str(tmp_path))
    reports = result.reports
    answered = reports[(reports["state"] == records.ORD_ACKED) | (reports["state"] == records.ORD_REJECTED)]
    pairs = explain_orders.explain(result.intents, reports)
    assert len(pairs) == len(answered) > 0
    for intent, report in pairs:
        assert (intent["origin_seq"], intent["side"], intent["qty"]) == (report["origin_seq"], report["side"],
                                                                        report["qty"])
        assert intent["risk_reasons"] & records.RISK_NOTIONAL_LIMIT and intent["horizon_sigma_bps"] > 0
    rejected = [r for _, r in pairs if r["state"] == records.ORD_REJECTED]
    assert rejected and all(r["reject_reason"] == records.REJ_MAX_NOTIONAL for r in rejected)
    assert explain_orders.main([str(tmp_path), "--rejected", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "REJECTED (max order notional)" in out and "sized by: order notional limit" in out
    assert f"{len(rejected):,} rejected intents" in out
