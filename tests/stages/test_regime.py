"""The regime detector on hand-built event streams: a random walk with drift, a loud walk, a price pinned to
its anchor; warm-up; bad inputs."""
import math

import numpy as np
import pytest

from stages.records import FEATURE_NAMES, N_FEATURES, REGIME_RANGE, REGIME_TRENDING, REGIME_VOLATILE
from stages.strategies import regime

RVOL_1S = FEATURE_NAMES.index("rvol_1s_bps")
EVENTS_PER_S = 1000
GAP_NS = 1_000_000_000 // EVENTS_PER_S


def stream(rng, seconds, sigma_bps, drift_bps_per_s=0.0, pull=0.0, x0=0.0):
    """Log mids (bps) of one key, one event per ms: shocks of ``sigma_bps``, pulled back to ``x0`` by ``pull``
    per event (range-bound), and the per-second variance rvol_1s**2 * ln 2 the feature stage would report."""
    n = int(seconds * EVENTS_PER_S)
    x = np.empty(n)
    level = x0
    for i in range(n):
        level += sigma_bps * rng.standard_normal() + drift_bps_per_s / EVENTS_PER_S - pull * (level - x0)
        x[i] = level
    rvol_1s = math.sqrt(sigma_bps ** 2 * EVENTS_PER_S / math.log(2.0))
    return x, rvol_1s


def feed(state, params, xs, rvol_1s, t0_ns=0, key=3, base_mid=100.0):
    """update() over the stream; returns the detected regime after every event and the next event time."""
    features = np.zeros(N_FEATURES)
    features[RVOL_1S] = rvol_1s
    out = np.empty(len(xs), np.int64)
    ts = t0_ns
    for i, x in enumerate(xs):
        ts += GAP_NS
        out[i] = regime.update(state, params, key, ts, base_mid * math.exp(x * 1e-4), features, math.nan)
    return out, ts


def fraction(detected, code, last_s):
    tail = detected[-int(last_s * EVENTS_PER_S):]
    return float(np.mean(tail == code))


def test_quiet_anchored_price_is_range_bound():
    rng = np.random.default_rng(1)
    state, params = regime.make_state(), regime.make_params()
    xs, rvol = stream(rng, 30, sigma_bps=1.0, pull=0.05)
    detected, _ = feed(state, params, xs, rvol)
    assert fraction(detected, REGIME_RANGE, 25) > 0.99


def test_sustained_walk_is_trending_and_a_louder_one_volatile():
    """The baseline learns the calm walk's level first; four times its variance (the feed's volatile regime)
    is then volatile, and the calm walk again trending."""
    rng = np.random.default_rng(2)
    state, params = regime.make_state(), regime.make_params()
    calm, rvol = stream(rng, 60, sigma_bps=1.0, drift_bps_per_s=5.0)
    detected, ts = feed(state, params, calm, rvol)
    assert fraction(detected, REGIME_TRENDING, 50) > 0.95
    loud, rvol_loud = stream(rng, 30, sigma_bps=2.0, x0=calm[-1])
    detected, ts = feed(state, params, loud, rvol_loud, ts)
    assert fraction(detected, REGIME_VOLATILE, 20) > 0.9
    calm_again, _ = stream(rng, 30, sigma_bps=1.0, drift_bps_per_s=5.0, x0=loud[-1])
    detected, _ = feed(state, params, calm_again, rvol, ts)
    assert fraction(detected, REGIME_TRENDING, 20) > 0.9


def test_a_walk_after_a_range_switches_within_seconds():
    rng = np.random.default_rng(3)
    state, params = regime.make_state(), regime.make_params()
    quiet, rvol_q = stream(rng, 20, sigma_bps=1.0, pull=0.05)
    _, ts = feed(state, params, quiet, rvol_q)
    walk, rvol_w = stream(rng, 20, sigma_bps=1.0, x0=quiet[-1])
    detected, _ = feed(state, params, walk, rvol_w, ts)
    first = int(np.argmax(detected != REGIME_RANGE))
    assert detected[first] != REGIME_RANGE and first < 5 * EVENTS_PER_S
    assert fraction(detected, REGIME_RANGE, 15) < 0.02


def test_warm_up_answers_the_default_then_the_data():
    rng = np.random.default_rng(4)
    state = regime.make_state()
    params = regime.make_params(warmup_samples=50, min_dwell_ms=0.0)
    walk, rvol = stream(rng, 20, sigma_bps=1.0)
    detected, _ = feed(state, params, walk, rvol)
    warm_ms = 50 * 100  # 50 samples of 100 ms
    assert (detected[:warm_ms - 100] == regime.DEFAULT_REGIME).all()
    assert fraction(detected, REGIME_TRENDING, 10) > 0.95


def test_keys_are_independent():
    rng = np.random.default_rng(5)
    state, params = regime.make_state(), regime.make_params()
    walk, rvol = stream(rng, 20, sigma_bps=1.0)
    detected, _ = feed(state, params, walk, rvol, key=7)
    assert detected[-1] == REGIME_TRENDING
    assert regime.update(state, params, 8, 30 * 10 ** 9, 100.0, np.zeros(N_FEATURES), math.nan) == \
        regime.DEFAULT_REGIME


@pytest.mark.parametrize("mid", [math.nan, math.inf, -1.0, 0.0])
def test_bad_mid_or_features_never_crash_nor_answer_an_invalid_code(mid):
    rng = np.random.default_rng(6)
    state, params = regime.make_state(), regime.make_params(min_dwell_ms=0.0)
    valid = (REGIME_TRENDING, REGIME_RANGE, REGIME_VOLATILE)
    walk, rvol = stream(rng, 10, sigma_bps=1.0)
    _, ts = feed(state, params, walk, rvol)
    before = state[0].copy()
    bad = np.full(N_FEATURES, math.nan)
    for i in range(3000):
        ts += GAP_NS
        assert regime.update(state, params, 3, ts, mid, bad, math.nan) in valid
    assert np.array_equal(state[0], before, equal_nan=True)  # a bad mid folds nothing
    for i in range(3000):  # a good mid with NaN / inf / negative features and garch
        ts += GAP_NS
        features = np.full(N_FEATURES, (math.nan, math.inf, -5.0)[i % 3])
        got = regime.update(state, params, 3, ts, 100.0 * (1 + 1e-4 * rng.standard_normal()), features, math.inf)
        assert got in valid
    assert np.isfinite(state[0][3]).all()
    for key in (-1, 10 ** 6):
        assert regime.update(state, params, key, ts, 100.0, bad, 0.0) == regime.DEFAULT_REGIME
    assert regime.update(state, params, 3, 0, 100.0, bad, 0.0) in valid  # time going backwards


def test_a_price_that_never_moves_is_range_bound():
    state, params = regime.make_state(), regime.make_params()
    features = np.zeros(N_FEATURES)
    features[RVOL_1S] = 5.0
    got = [regime.update(state, params, 0, (i + 1) * GAP_NS, 100.0, features, math.nan) for i in range(10_000)]
    assert got[-1] == REGIME_RANGE


def test_params_refuse_out_of_range_values():
    with pytest.raises(ValueError, match="sample_ms"):
        regime.make_params(sample_ms=0.0)
    with pytest.raises(ValueError, match="range_vr"):
        regime.make_params(range_vr=-1.0)
