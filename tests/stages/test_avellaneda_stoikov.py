"""Avellaneda-Stoikov quotes (finite and infinite horizon) against hand-computed values, their monotonicity, the
tick grid, and the online fit of lambda(delta) = A exp(-k delta) on simulated Poisson arrivals."""
import math

import numpy as np
import pytest

from stages.strategies import avellaneda_stoikov as av
from stages.universe import MAX_KEYS

S, GAMMA, SIGMA, K = 100.0, 0.1, 2.0, 1.5
NS = 1_000_000_000


def test_finite_horizon_quotes_match_the_formulas_by_hand():
    # q = 2, tau = 0.5: r = 100 - 2 * 0.1 * 4 * 0.5 = 99.6; spread = 0.1 * 4 * 0.5 + 20 ln(1 + 0.1/1.5) = 0.2 + 1.290770
    bid, ask, ok = av.finite_horizon_quotes(S, 2.0, GAMMA, SIGMA, 0.5, K)
    assert ok
    spread = 0.2 + 20.0 * math.log(1.0 + 0.1 / 1.5)
    assert spread == pytest.approx(1.4907704, abs=1e-7)
    assert bid == pytest.approx(99.6 - spread / 2, abs=1e-12) and ask == pytest.approx(99.6 + spread / 2, abs=1e-12)
    assert av.reservation_price(S, 2.0, GAMMA, SIGMA, 0.5) == pytest.approx(99.6, abs=1e-12)
    # the quotes are r^b - (1/g) ln(1 + g/k) and r^a + (1/g) ln(1 + g/k) with r^a,b = s + (+-1 - 2q) g s^2 tau / 2
    r_a = S + (1 - 2 * 2) * GAMMA * SIGMA ** 2 * 0.5 / 2
    r_b = S + (-1 - 2 * 2) * GAMMA * SIGMA ** 2 * 0.5 / 2
    h = math.log(1 + GAMMA / K) / GAMMA
    assert bid == pytest.approx(r_b - h, abs=1e-12) and ask == pytest.approx(r_a + h, abs=1e-12)


def test_infinite_horizon_quotes_match_the_formulas_by_hand():
    q_max = 5.0
    omega = av.paper_omega(GAMMA, SIGMA, q_max)
    assert omega == pytest.approx(0.5 * 0.01 * 4 * 36)  # 0.72
    # q = 2: g^2 s^2 = 0.04, D(q) = 2 omega - g^2 s^2 q^2: D(2) = 1.44 - 0.16 = 1.28, D(1) = 1.44 - 0.04 = 1.40
    r_b, r_a, ok = av.infinite_horizon_reservation(S, 2.0, GAMMA, SIGMA, omega)
    assert ok
    assert r_b == pytest.approx(S + 10.0 * math.log(1 + (-1 - 4) * 0.04 / 1.28), abs=1e-12)
    assert r_a == pytest.approx(S + 10.0 * math.log(1 + (1 - 4) * 0.04 / 1.40), abs=1e-12)
    p_b, p_a, ok = av.paper_infinite_horizon_reservation(S, 2.0, GAMMA, SIGMA, omega)  # as printed: D(q) in both
    assert ok and p_b == r_b and p_a == pytest.approx(S + 10.0 * math.log(1 + (1 - 4) * 0.04 / 1.28), abs=1e-12)
    bid, ask, ok = av.infinite_horizon_quotes(S, 2.0, GAMMA, SIGMA, K, omega)
    h = 10.0 * math.log(1 + GAMMA / K)
    assert ok and bid == pytest.approx(r_b - h, abs=1e-12) and ask == pytest.approx(r_a + h, abs=1e-12)


def _vbar(x, s, q, gamma, sigma, omega):
    """The section 2.3 value of holding q forever, no trading: -exp(-gamma (x + q s)) / (omega - g^2 s^2 q^2 / 2)."""
    return -math.exp(-gamma * (x + q * s)) / (omega - 0.5 * gamma ** 2 * sigma ** 2 * q ** 2)


@pytest.mark.parametrize("q", [-3.0, -1.0, 0.0, 1.0, 2.0, 4.0])
def test_infinite_horizon_reservation_prices_are_the_indifference_prices_of_the_paper_objective(q):
    omega = av.paper_omega(GAMMA, SIGMA, 5.0)
    r_b, r_a, ok = av.infinite_horizon_reservation(S, q, GAMMA, SIGMA, omega)
    v = _vbar(0.0, S, q, GAMMA, SIGMA, omega)
    assert _vbar(-r_b, S, q + 1, GAMMA, SIGMA, omega) == pytest.approx(v, rel=1e-9)  # buying one at r^b
    assert _vbar(r_a, S, q - 1, GAMMA, SIGMA, omega) == pytest.approx(v, rel=1e-9)   # selling one at r^a
    m_b, m_a, _ = av.infinite_horizon_reservation(S, -q, GAMMA, SIGMA, omega)
    assert r_a - S == pytest.approx(S - m_b, abs=1e-9) and S - r_b == pytest.approx(m_a - S, abs=1e-9)  # mirror
    p_b, p_a, _ = av.paper_infinite_horizon_reservation(S, q, GAMMA, SIGMA, omega)
    assert p_b == r_b and p_a != r_a  # the printed bid is exact, its ask is not
    wide = av.paper_omega(GAMMA, SIGMA, 100.0)       # g^2 s^2 / D small: the printed ask agrees to first order
    (_, w_a, _), (_, wp_a, _) = (f(S, q, GAMMA, SIGMA, wide) for f in (av.infinite_horizon_reservation,
                                                                       av.paper_infinite_horizon_reservation))
    assert wp_a - S == pytest.approx(w_a - S, rel=0.01, abs=1e-12)


def test_infinite_horizon_stops_bidding_at_q_max_and_asking_at_minus_q_max():
    omega = av.paper_omega(GAMMA, SIGMA, 5.0)
    bid, ask, ok = av.infinite_horizon_quotes(S, 5.0, GAMMA, SIGMA, K, omega)
    assert ok and bid == -np.inf and math.isfinite(ask) and ask < S  # long to the bound: only a keen ask
    bid, ask, ok = av.infinite_horizon_quotes(S, -5.0, GAMMA, SIGMA, K, omega)
    assert ok and ask == np.inf and math.isfinite(bid) and bid > S
    bid, ask, ok = av.infinite_horizon_quotes(S, 4.0, GAMMA, SIGMA, K, omega)
    assert ok and math.isfinite(bid) and math.isfinite(ask)
    bid, ask, ok = av.infinite_horizon_quotes(S, 7.0, GAMMA, SIGMA, K, omega)  # beyond what omega admits
    assert ok and bid == -np.inf and ask == np.inf
    _, p_a, _ = av.paper_infinite_horizon_reservation(S, -5.0, GAMMA, SIGMA, omega)
    assert math.isfinite(p_a)  # the printed formula still asks at -q_max (its asymmetry)


def test_paper_omega_makes_the_infinite_horizon_quotes_independent_of_sigma_and_a_fixed_omega_does_not():
    quotes = [av.infinite_horizon_quotes(S, 2.0, GAMMA, sigma, K, av.paper_omega(GAMMA, sigma, 5.0))[:2]
              for sigma in (0.5, 2.0, 8.0)]
    assert quotes[0] == pytest.approx(quotes[1], abs=1e-9) and quotes[1] == pytest.approx(quotes[2], abs=1e-9)
    skews = [S - sum(av.infinite_horizon_quotes(S, 2.0, GAMMA, sigma, K, 0.72)[:2]) / 2 for sigma in (0.5, 1.0, 2.0)]
    assert 0.0 < skews[0] < skews[1] < skews[2]  # a fixed omega: more volatility, more skew for the same q


@pytest.mark.parametrize("horizon", ["finite", "infinite"])
def test_more_inventory_lowers_both_quotes_and_more_risk_aversion_skews_more(horizon):
    def quotes(q, gamma=GAMMA, sigma=SIGMA):
        if horizon == "finite":
            return av.finite_horizon_quotes(S, q, gamma, sigma, 0.5, K)[:2]
        return av.infinite_horizon_quotes(S, q, gamma, sigma, K, 0.72)[:2]

    mids = [sum(quotes(q)) / 2 for q in (-3.0, -1.0, 0.0, 1.0, 3.0)]
    assert all(a > b for a, b in zip(mids, mids[1:]))  # the reservation price falls with inventory
    assert mids[2] == pytest.approx(S, abs=1e-12) if horizon == "finite" else mids[2] < S + 1.0
    bids = [quotes(q)[0] for q in (-1.0, 0.0, 1.0)]
    asks = [quotes(q)[1] for q in (-1.0, 0.0, 1.0)]
    assert bids[0] > bids[1] > bids[2] and asks[0] > asks[1] > asks[2]
    skew = [S - sum(quotes(2.0, gamma=g)) / 2 for g in (0.05, 0.1, 0.2)]
    if horizon == "finite":  # q gamma sigma^2 tau: linear in gamma and in sigma^2
        assert skew == pytest.approx([2.0 * g * 4.0 * 0.5 for g in (0.05, 0.1, 0.2)], abs=1e-12)
        assert S - sum(quotes(2.0, sigma=4.0)) / 2 == pytest.approx(4.0 * skew[1], abs=1e-12)
    else:
        assert skew[0] < skew[1] < skew[2]


def test_finite_horizon_spread_grows_with_volatility_and_time_left_and_its_gamma_to_zero_limit_is_2_over_k():
    spreads = [av.total_spread(GAMMA, sigma, tau, K) for sigma, tau in ((1.0, 0.5), (2.0, 0.5), (2.0, 1.0))]
    assert spreads[0] < spreads[1] < spreads[2]
    assert av.total_spread(0.0, SIGMA, 0.5, K) == pytest.approx(2.0 / K, abs=1e-12)
    assert av.total_spread(1e-9, SIGMA, 0.5, K) == pytest.approx(2.0 / K, abs=1e-8)
    # at the horizon only the arrival term is left, and the reservation price is the mid whatever q
    bid, ask, _ = av.finite_horizon_quotes(S, 4.0, GAMMA, SIGMA, 0.0, K)
    assert (bid + ask) / 2 == pytest.approx(S, abs=1e-12) and ask - bid == pytest.approx(20 * math.log(1 + 0.1 / 1.5))


@pytest.mark.parametrize("args", [
    (np.nan, 0.0, GAMMA, SIGMA, 0.5, K), (S, np.nan, GAMMA, SIGMA, 0.5, K), (S, 0.0, np.nan, SIGMA, 0.5, K),
    (S, 0.0, -0.1, SIGMA, 0.5, K), (S, 0.0, GAMMA, np.nan, 0.5, K), (S, 0.0, GAMMA, -1.0, 0.5, K),
    (S, 0.0, GAMMA, SIGMA, np.nan, K), (S, 0.0, GAMMA, SIGMA, -0.1, K), (S, 0.0, GAMMA, SIGMA, 0.5, 0.0),
    (S, 0.0, GAMMA, SIGMA, 0.5, -1.5), (S, 0.0, GAMMA, SIGMA, 0.5, np.nan), (S, 0.0, GAMMA, np.inf, 0.5, K)])
def test_unusable_inputs_give_no_quotes_and_the_flag_never_nan(args):
    s, q, gamma, sigma, tau, k = args
    for bid, ask, ok in (av.finite_horizon_quotes(s, q, gamma, sigma, tau, k),
                         av.infinite_horizon_quotes(s, q, gamma if gamma != 0 else 0.1, sigma, k, 0.72
                                                    if math.isfinite(tau) and tau >= 0 else np.nan)):
        assert not ok and bid == -np.inf and ask == np.inf


def test_zero_sigma_quotes_the_arrival_spread_around_the_mid_in_both_horizons():
    for bid, ask, ok in (av.finite_horizon_quotes(S, 3.0, GAMMA, 0.0, 0.5, K),
                         av.infinite_horizon_quotes(S, 3.0, GAMMA, 0.0, K, av.paper_omega(GAMMA, 0.0, 5.0))):
        h = 10.0 * math.log(1 + GAMMA / K)
        assert ok and bid == pytest.approx(S - h, abs=1e-12) and ask == pytest.approx(S + h, abs=1e-12)


def test_on_grid_floors_bids_ceils_asks_and_keeps_prices_on_the_grid_exact():
    tick = 0.1
    assert av.on_grid(99.37, 100.71, tick, np.nan, np.nan, av.GRID_FREE) == (993.0, 1008.0)
    assert av.on_grid(99.3, 100.7, tick, np.nan, np.nan, av.GRID_FREE) == (993.0, 1007.0)  # on the grid: kept
    assert av.on_grid(-np.inf, np.inf, tick, 100.0, 100.1, av.GRID_JOIN) == (-np.inf, np.inf)


def test_on_grid_join_never_improves_the_touch_and_no_cross_never_crosses_it():
    tick = 0.1
    # desired quotes inside a 99.5 / 100.5 book
    assert av.on_grid(99.82, 100.13, tick, 99.5, 100.5, av.GRID_JOIN) == (995.0, 1005.0)
    assert av.on_grid(99.82, 100.13, tick, 99.5, 100.5, av.GRID_NO_CROSS) == (998.0, 1002.0)
    # desired quotes that would cross a book that moved up (bid above the best ask) / down
    assert av.on_grid(100.62, 101.5, tick, 100.5, 100.6, av.GRID_NO_CROSS) == (1005.0, 1015.0)
    assert av.on_grid(98.0, 99.33, tick, 99.4, 99.5, av.GRID_NO_CROSS) == (980.0, 995.0)
    assert av.on_grid(100.62, 101.5, tick, 100.5, 100.6, av.GRID_JOIN) == (1005.0, 1015.0)
    # quotes behind the book are left alone by both
    assert av.on_grid(99.0, 101.0, tick, 99.5, 100.5, av.GRID_NO_CROSS) == (990.0, 1010.0)
    assert av.on_grid(99.0, 101.0, tick, 99.5, 100.5, av.GRID_JOIN) == (990.0, 1010.0)


def test_trade_distance_is_positive_on_the_side_the_aggressor_took():
    assert av.trade_distance_ticks(100.3, 1, 100.05, 0.1) == pytest.approx(2.5)
    assert av.trade_distance_ticks(99.8, -1, 100.05, 0.1) == pytest.approx(2.5)
    assert av.trade_distance_ticks(99.9, 1, 100.05, 0.1) == pytest.approx(-1.5)  # a buy below a stale mid


def _poisson_trades(rng, a_per_s, k_per_tick, seconds):
    """Trade times (ns) at rate A and distances with P(D >= d) = exp(-k d): lambda(d) = A exp(-k d)."""
    n = rng.poisson(a_per_s * seconds)
    ts = np.sort(rng.uniform(0.0, seconds, n)) * NS
    return ts, rng.exponential(1.0 / k_per_tick, n)


@pytest.mark.parametrize("a_per_s,k_per_tick", [(4.0, 0.4), (20.0, 1.2)])
def test_fit_recovers_a_and_k_from_poisson_arrivals(a_per_s, k_per_tick):
    rng = np.random.default_rng(12)
    cal = av.make_calibration(MAX_KEYS, 24)
    key = 9
    half_life = 600.0 * NS
    ts, dist = _poisson_trades(rng, a_per_s, k_per_tick, 1800.0)
    for t, d in zip(ts, dist):
        assert av.record_trade(cal.grid, cal.counts, cal.clock, key, t, d, half_life)
    a, k, n, ok = av.fit_intensity(cal.grid, cal.counts, cal.clock, key, 1800.0 * NS, half_life, 10.0, 3)
    assert ok and n >= 3
    # ~A * 866 s effective trades: the tolerance is several standard errors of the fit (seen: < 4% on both)
    assert k == pytest.approx(k_per_tick, rel=0.10) and a == pytest.approx(a_per_s, rel=0.15)
    assert cal.clock[key, av.CLK_TRADES] == len(ts)
    assert not cal.counts[:key].any() and not cal.counts[key + 1:].any()  # other keys untouched


def test_decay_forgets_old_arrivals_with_the_half_life():
    rng = np.random.default_rng(3)
    cal = av.make_calibration(1, 24)
    half_life = 60.0 * NS
    ts, dist = _poisson_trades(rng, 10.0, 0.3, 900.0)            # a thin market for 15 minutes ...
    for t, d in zip(ts, dist):
        av.record_trade(cal.grid, cal.counts, cal.clock, 0, t, d, half_life)
    ts2, dist2 = _poisson_trades(rng, 30.0, 1.0, 600.0)           # ... then a busier, tighter one for 10
    for t, d in zip(ts2 + 900.0 * NS, dist2):
        av.record_trade(cal.grid, cal.counts, cal.clock, 0, t, d, half_life)
    a, k, n, ok = av.fit_intensity(cal.grid, cal.counts, cal.clock, 0, 1500.0 * NS, half_life, 10.0, 3)
    assert ok and k == pytest.approx(1.0, rel=0.2) and a == pytest.approx(30.0, rel=0.25)
    # the exposure is the decayed time: tau (1 - 2^-(25 min / 1 min)) ~ tau
    assert cal.clock[0, av.CLK_EXPOSURE_S] == pytest.approx(60.0 / math.log(2.0), rel=1e-6)


def test_advance_composes_one_long_step_equals_many_short_ones():
    one, many = av.make_calibration(1, 4), av.make_calibration(1, 4)
    for cal in (one, many):
        av.record_trade(cal.grid, cal.counts, cal.clock, 0, 0.0, 3.0, 30.0 * NS)
    av.advance(one.counts, one.clock, 0, 100.0 * NS, 30.0 * NS)
    for t in np.linspace(1.0, 100.0, 37):
        av.advance(many.counts, many.clock, 0, t * NS, 30.0 * NS)
    assert np.allclose(one.counts, many.counts, rtol=1e-12) and np.allclose(one.clock, many.clock, rtol=1e-12)
    assert one.counts[0, 0] == pytest.approx(2.0 ** (-100.0 / 30.0))


def test_degenerate_calibrations_give_the_fallback_flag():
    cal = av.make_calibration(2, 8)
    hl = 60.0 * NS
    # no trades at all
    assert av.fit_intensity(cal.grid, cal.counts, cal.clock, 0, 10.0 * NS, hl, 1.0, 3)[3] is False
    # nan and negative distances are not recorded
    assert not av.record_trade(cal.grid, cal.counts, cal.clock, 0, 1.0 * NS, np.nan, hl)
    assert not av.record_trade(cal.grid, cal.counts, cal.clock, 0, 1.0 * NS, -0.5, hl)
    assert cal.clock[0, av.CLK_IGNORED] == 2 and not cal.counts.any()
    # trades at one distance only: one grid point reaches min_count
    for i in range(50):
        av.record_trade(cal.grid, cal.counts, cal.clock, 0, (2.0 + i) * NS, 0.7, hl)
    a, k, n, ok = av.fit_intensity(cal.grid, cal.counts, cal.clock, 0, 60.0 * NS, hl, 1.0, 3)
    assert not ok and n == 1 and math.isnan(a) and math.isnan(k)
    # intensity rising with distance (more trades far than near can't happen cumulatively; flat is k = 0)
    flat = av.make_calibration(1, 8)
    for i in range(40):
        av.record_trade(flat.grid, flat.counts, flat.clock, 0, i * NS, 100.0, np.inf)  # every trade reaches all
    a, k, n, ok = av.fit_intensity(flat.grid, flat.counts, flat.clock, 0, 40.0 * NS, np.inf, 1.0, 3)
    assert n == 8 and not ok and k == pytest.approx(0.0, abs=1e-12)
    # a trade before any elapsed time: counts but no exposure
    once = av.make_calibration(1, 8)
    for d in (0.6, 1.6, 2.6, 3.6):
        av.record_trade(once.grid, once.counts, once.clock, 0, 5.0 * NS, d, hl)
    assert av.fit_intensity(once.grid, once.counts, once.clock, 0, 5.0 * NS, hl, 1.0, 3)[3] is False


def test_make_calibration_rejects_a_bad_grid():
    with pytest.raises(ValueError, match="delta_step_ticks"):
        av.make_calibration(4, 8, 0.5, 0.0)
    cal = av.make_calibration()
    assert cal.counts.shape == (MAX_KEYS, av.N_DELTAS) and cal.grid[0] == 0.5 and cal.grid[1] == 1.5
    assert (cal.clock[:, av.CLK_LAST_NS] == -1).all()
