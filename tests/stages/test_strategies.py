"""The regime mode's strategies one by one (hand-built predictions), the allocator's limits, and the stage
allocating them in fused mode."""
import numpy as np
import pytest

from stages import records
from stages.feature import F_FUNDING_RATE_BPS, F_MOM_1S_BPS, F_RVOL_1S_BPS
from stages.records import BUY, INTENT_IOC, INTENT_QUOTE, ORDER_INTENT, PREDICTION, SELL
from stages.strategies import allocator, arbitrage, market_making, mean_reversion, momentum
from stages.universe import MAX_KEYS, instrument_key

MOM_10S, MOM_60S, RVOL_60S = F_MOM_1S_BPS + 1, F_MOM_1S_BPS + 2, F_RVOL_1S_BPS + 2


def prediction(venue=0, symbol=0, bid=99.99, ask=100.01, t=10**9, **values):
    p = np.zeros(1, PREDICTION)
    p["venue"], p["symbol"], p["bid"], p["ask"], p["origin_ts"], p["origin_seq"] = venue, symbol, bid, ask, t, t
    p["buy_budget"] = p["sell_budget"] = 1e9
    p["equity"], p["horizon_sigma_bps"], p["garch_sigma_bps"], p["prob_up"] = 100_000.0, 10.0, 5.0, 0.5
    for name, value in values.items():
        p["values"][0, {"mom_10s": MOM_10S, "mom_60s": MOM_60S, "rvol_60s": RVOL_60S,
                        "funding": F_FUNDING_RATE_BPS}[name]] = value
    return p


def out():
    return np.zeros(16, ORDER_INTENT), np.zeros(1, np.int64)


MOMENTUM = momentum.make_params(w_10s=0.5, w_60s=0.5, w_model=0.0, beta=0.5, entry_bps=1.0, exit_bps=2.0,
                                slippage_bps=1.0, kelly_fraction=0.25, min_trade_usd=200.0, cooldown_ms=1000.0)


def test_momentum_enters_with_the_trend_only_when_the_edge_pays_the_round_trip():
    state = momentum.make_state(MAX_KEYS)
    intents, ids = out()
    p = prediction(mom_10s=30.0, mom_60s=30.0)  # signal 30 bps, expected 15, costs 2*5 + 2 + 1 = 13: edge 2 > 1
    n = momentum.decide(state, MOMENTUM, 0, p[0], 100.0, 1.0, 0.0, 1e9, 1e9, 100_000.0, 5.0, intents, 0, ids,
                        p["origin_ts"][0], 1)
    assert n == 1 and intents[0]["side"] == BUY and intents[0]["kind"] == INTENT_IOC
    assert intents[0]["strategy"] == records.STRAT_MOMENTUM and intents[0]["regime"] == 1
    assert intents[0]["price"] == pytest.approx(100.01) and intents[0]["signal"] == pytest.approx(30.0)
    weak = prediction(mom_10s=20.0, mom_60s=20.0)  # expected 10 < costs 13: no edge net of costs
    assert momentum.decide(momentum.make_state(MAX_KEYS), MOMENTUM, 0, weak[0], 100.0, 1.0, 0.0, 1e9, 1e9,
                           100_000.0, 5.0, intents, 0, ids, weak["origin_ts"][0], 1) == 0


def test_momentum_holds_inside_the_hysteresis_band_and_exits_below_it_or_when_switched_off():
    state = momentum.make_state(MAX_KEYS)
    intents, ids = out()
    state[0, momentum.M_SIDE] = 1.0
    held = 10.0
    hold = prediction(mom_10s=5.0, mom_60s=5.0, t=5 * 10**9)  # below entry, above exit (2 bps): keep
    assert momentum.decide(state, MOMENTUM, 0, hold[0], 100.0, 1.0, held, 1e9, 1e9, 1e5, 5.0, intents, 0, ids,
                           0, 1) == 0
    fade = prediction(mom_10s=1.0, mom_60s=1.0, t=6 * 10**9)
    n = momentum.decide(state, MOMENTUM, 0, fade[0], 100.0, 1.0, held, 1e9, 1e9, 1e5, 5.0, intents, 0, ids, 0, 1)
    assert n == 1 and intents[0]["side"] == SELL and intents[0]["qty"] == pytest.approx(held)
    state[0, momentum.M_SIDE] = 1.0
    off = prediction(mom_10s=50.0, mom_60s=50.0, t=8 * 10**9)
    n = momentum.decide(state, MOMENTUM, 0, off[0], 100.0, 0.0, held, 1e9, 1e9, 1e5, 5.0, intents, 0, ids, 0, 2)
    assert n == 1 and intents[0]["side"] == SELL and intents[0]["qty"] == pytest.approx(held)


MEAN_REVERSION = mean_reversion.make_params(entry_z=2.0, exit_z=0.5, stop_z=4.0, reversion=0.5, min_edge_bps=0.5,
                                            slippage_bps=1.0, order_usd=2000.0, cooldown_ms=1000.0,
                                            min_trade_usd=100.0)


def test_mean_reversion_fades_a_deviation_then_exits_at_the_band_or_the_stop():
    state = mean_reversion.make_state(MAX_KEYS)
    intents, ids = out()
    rich = prediction(mom_60s=30.0, rvol_60s=10.0)  # z = 3: past entry (2), short of the stop (4)
    n = mean_reversion.decide(state, MEAN_REVERSION, 0, rich[0], 100.0, 1.0, 0.0, 1e9, 1e9, 5.0, intents, 0, ids,
                              0, 2)
    assert n == 1 and intents[0]["side"] == SELL and intents[0]["qty"] == pytest.approx(20.0)
    assert intents[0]["signal"] == pytest.approx(3.0)
    back = prediction(mom_60s=2.0, rvol_60s=10.0, t=3 * 10**9)
    n = mean_reversion.decide(state, MEAN_REVERSION, 0, back[0], 100.0, 1.0, -20.0, 1e9, 1e9, 5.0, intents, 0, ids,
                              0, 2)
    assert n == 1 and intents[0]["side"] == BUY and intents[0]["qty"] == pytest.approx(20.0)
    worse = prediction(mom_60s=45.0, rvol_60s=10.0, t=5 * 10**9)  # short and the deviation grew to z = 4.5: stop
    n = mean_reversion.decide(state, MEAN_REVERSION, 0, worse[0], 100.0, 1.0, -20.0, 1e9, 1e9, 5.0, intents, 0,
                              ids, 0, 2)
    assert n == 1 and intents[0]["side"] == BUY
    assert state[0, mean_reversion.R_STOPPED_NS] == 5 * 10**9
    small = prediction(mom_60s=12.0, rvol_60s=5.0, t=9 * 10**9)  # z = 2.4 but 0.5 * 12 = 6 bps < costs 13
    assert mean_reversion.decide(mean_reversion.make_state(MAX_KEYS), MEAN_REVERSION, 0, small[0], 100.0, 1.0, 0.0,
                                 1e9, 1e9, 5.0, intents, 0, ids, 0, 2) == 0


ARBITRAGE = arbitrage.make_params(entry_bps=1.0, exit_bps=1.0, slippage_bps=1.0, order_usd=2000.0, max_age_ms=50.0,
                                  leg_timeout_ms=500.0, max_hold_s=300.0, expected_hold_s=60.0, min_trade_usd=100.0)


def test_arbitrage_sends_both_legs_when_the_gap_pays_both_fees_and_closes_a_residual_leg():
    state = arbitrage.make_state()
    latest = np.zeros(MAX_KEYS, PREDICTION)
    fresh = np.zeros(MAX_KEYS, np.int64)
    own = allocator.make_state()[1]
    fees = np.array([5.0, 5.0, 0.0, 0.0])
    there = prediction(venue=1, bid=100.20, ask=100.22)
    latest[instrument_key(1, 0)] = there[0]
    fresh[instrument_key(1, 0)] = there["origin_ts"][0]
    here = prediction(venue=0, bid=99.98, ask=100.00, t=there["origin_ts"][0] + 10**6)  # 20 bps gap, costs 12
    intents, ids = out()
    s = allocator.S_ARBITRAGE
    n = arbitrage.decide(state, ARBITRAGE, here[0], latest, fresh, own, s, 1.0, fees, intents, 0, ids, 0, 1)
    assert n == 2
    assert (intents[0]["venue"], intents[0]["side"], intents[0]["price"]) == (0, BUY, 100.00)
    assert (intents[1]["venue"], intents[1]["side"], intents[1]["price"]) == (1, SELL, 100.20)
    assert intents[0]["qty"] == intents[1]["qty"] and intents[1]["origin_seq"] == here["origin_seq"][0]
    # only the bought leg filled: after the leg timeout the residual is closed on the venue holding it
    own[instrument_key(0, 0), s, allocator.O_POSITION] = 20.0
    t = here["origin_ts"][0]
    again = prediction(venue=0, bid=99.98, ask=100.00, t=t + 10**6)
    assert arbitrage.decide(state, ARBITRAGE, again[0], latest, fresh, own, s, 1.0, fees, intents, 0, ids, 0, 1) == 0
    late = prediction(venue=0, bid=99.98, ask=100.00, t=t + 10**9)
    n = arbitrage.decide(state, ARBITRAGE, late[0], latest, fresh, own, s, 1.0, fees, intents, 0, ids, 0, 1)
    assert n == 1 and intents[0]["side"] == SELL and intents[0]["qty"] == pytest.approx(20.0)
    narrow = prediction(venue=0, bid=100.09, ask=100.11, t=t + 2 * 10**6)  # 9 bps: below fees + slippage
    latest[instrument_key(1, 0)]["origin_ts"] = narrow["origin_ts"][0]
    fresh[instrument_key(1, 0)] = narrow["origin_ts"][0]
    assert arbitrage.decide(arbitrage.make_state(), ARBITRAGE, narrow[0], latest, fresh,
                            np.zeros_like(own), s, 1.0, fees, intents, 0, ids, 0, 1) == 0


MARKET_MAKING = market_making.make_params(gamma=0.1, q_max=5.0, k_default=0.5, interval_ms=100.0, requote_ticks=1.0,
                                          vol_widen=1.0, vol_slow_s=60.0, quote_usd=1000.0, fit_half_life_s=60.0,
                                          fit_min_count=5.0, fit_min_points=3)


def test_market_making_quotes_once_per_interval_skews_with_inventory_and_never_crosses():
    state = market_making.make_state()
    intents, ids = out()
    tick = 0.01
    p = prediction(bid=99.99, ask=100.01, t=10**9)
    p["garch_sigma_bps"] = 2.0
    n = market_making.decide(state, MARKET_MAKING, 0, p[0], 100.0, tick, 1.0, 0.0, 1e9, 1e9, 1.0, intents, 0, ids,
                             0, 2)
    assert n == 2 and set(intents[:2]["kind"]) == {INTENT_QUOTE}
    bid, ask = intents[0]["price"], intents[1]["price"]
    assert bid <= 99.99 + 1e-9 and ask >= 100.01 - 1e-9 and bid < ask
    assert abs(bid / tick - round(bid / tick)) < 1e-6 and abs(ask / tick - round(ask / tick)) < 1e-6
    # within the same 100 ms nothing more; on the next interval, long inventory lowers both quotes
    assert market_making.decide(state, MARKET_MAKING, 0, p[0], 100.0, tick, 1.0, 0.0, 1e9, 1e9, 1.0, intents, 0,
                                ids, 0, 2) == 0
    later = prediction(bid=99.99, ask=100.01, t=10**9 + 150_000_000)
    later["garch_sigma_bps"] = 2.0
    n = market_making.decide(state, MARKET_MAKING, 0, later[0], 100.0, tick, 1.0, 40.0, 1e9, 1e9, 1.0, intents, 0,
                             ids, 0, 2)
    quotes = {int(i["side"]): i["price"] for i in intents[:n]}
    assert quotes.get(SELL, ask) <= ask and quotes.get(BUY, bid) <= bid and n >= 1


def test_the_allocator_switches_a_strategy_off_below_its_loss_limit_and_buckets_its_orders():
    weights = np.ones((allocator.N_REGIMES, allocator.N_STRATEGIES))
    params = allocator.make_params(weights=weights, max_position_usd=[1000.0] * 4, orders_per_s=[2.0] * 4,
                                   burst=[2.0] * 4, loss_limit_usd=[100.0] * 4)
    state = allocator.make_state()
    s = allocator.S_MOMENTUM
    allocator.on_fill(state, s, 0, BUY, 10.0, 100.0, 1.0)
    allocator.mark(state, 0, 95.0)  # 10 x -5 - 1 = -51: inside the limit
    assert not allocator.check_loss(state, params, s) and allocator.weight(state, params, 0, s) == 1.0
    allocator.mark(state, 0, 90.0)  # -101
    assert allocator.check_loss(state, params, s) and allocator.weight(state, params, 0, s) == 0.0
    assert allocator.room(state, params, s, 0, BUY, 100.0) == pytest.approx(0.0)
    assert allocator.room(state, params, s, 0, SELL, 100.0) == pytest.approx(20.0)
    b = allocator.S_ARBITRAGE
    assert allocator.has_token(state, params, b, 0)
    allocator.spend_tokens(state, params, b, 0, 2)
    assert not allocator.has_token(state, params, b, 100_000_000)   # 0.2 tokens back after 100 ms
    assert allocator.has_token(state, params, b, 600_000_000)       # 1.2 after 600 ms


def _publish(state, weights):
    from shm import seqlock
    seqs, records_, _ = state[5]
    src = np.zeros(1, allocator.PUBLISHED_WEIGHTS)
    src[0]["weights"] = weights
    assert seqlock.write_contended(seqs, records_, 0, src, 0, 10) > 0


def test_published_weights_replace_the_configured_ones_and_a_bad_table_is_refused_whole():
    configured = np.zeros((allocator.N_REGIMES, allocator.N_STRATEGIES))
    configured[0, allocator.S_MOMENTUM] = 1.0
    params = allocator.make_params(weights=configured, max_position_usd=[1000.0] * 4, orders_per_s=[2.0] * 4,
                                   burst=[2.0] * 4, loss_limit_usd=[100.0] * 4)
    state = allocator.make_state()
    allocator.apply_published(state)  # nothing published (a backtest): the params' weights hold
    assert allocator.weights_version(state) == 0 and allocator.weight(state, params, 0, allocator.S_MOMENTUM) == 1.0
    new = np.zeros_like(configured)
    new[1, allocator.S_MEAN_REVERSION] = 0.5
    _publish(state, new)
    allocator.apply_published(state)
    assert allocator.weights_version(state) == 1
    assert allocator.weight(state, params, 0, allocator.S_MOMENTUM) == 0.0
    assert allocator.weight(state, params, 1, allocator.S_MEAN_REVERSION) == 0.5
    for bad in (np.nan, -1.0, allocator.MAX_WEIGHT + 1):
        table = new.copy()
        table[2, allocator.S_ARBITRAGE] = 3.0
        table[0, allocator.S_MOMENTUM] = bad
        _publish(state, table)
        allocator.apply_published(state)
        assert allocator.weights_version(state) == 1  # the whole table refused: arbitrage stays off too
        assert allocator.weight(state, params, 2, allocator.S_ARBITRAGE) == 0.0
    assert allocator.weights_refused(state) == 3
    allocator.apply_published(state)  # seen already: not counted twice
    assert allocator.weights_refused(state) == 3


def test_regime_mode_in_fused_runs_is_deterministic_and_every_intent_says_who_and_why():
    from pipeline.config import Config
    from pipeline.hosting.fused import run_fused
    every = ("momentum=1", "mean_reversion=1", "market_making=1", "arbitrage=1")  # the defaults leave two off
    config = Config().with_overrides(strategy={"kind": "regime"},
                                     allocator={"trending": every, "range_bound": every, "volatile": every})
    first, second = run_fused(config, 30_000, span_ns=5_000_000), run_fused(config, 30_000, span_ns=5_000_000)
    assert first.intents.tobytes() == second.intents.tobytes()
    assert first.reports.tobytes() == second.reports.tobytes()
    intents = first.intents
    assert len(intents) > 20
    allocated = {records.STRAT_MOMENTUM, records.STRAT_MEAN_REVERSION, records.STRAT_MARKET_MAKING,
                 records.STRAT_ARBITRAGE}
    assert set(np.unique(intents["strategy"])) <= allocated
    assert np.all((intents["regime"] >= 1) & (intents["regime"] <= 3))
    c = first.counters["strategy"]
    for s, name in enumerate(allocator.STRATEGY_KEYS):
        assert c[f"{name}_intents"] == int(np.sum(intents["strategy"] == allocator.STRATEGY_IDS[s])), name
    assert sum(c[f"regime_{r}"] for r in ("trending", "range", "volatile")) == c["predictions"] - c["no_market"]
