"""Regime detector: trending / range-bound / volatile per instrument key, online on event time.

The mid is sampled every ``sample_ms`` of event time (``origin_ts``; a gap of k intervals counts as k). Two
scale-free statistics of the sampled log returns ``r`` (bps) decide:

- **variance ratio** ``vr = V / T``: ``V`` is an EWMA of ``r**2`` per sample (half-life ``fast_half_life``
  samples), ``T`` the same EWMA of the per-event variance over the sample interval, from the feature stage's
  ``rvol_1s_bps`` (``rvol_1s**2 * ln 2`` is its variance per second). A random walk has ``vr`` ~ 1; a price
  pulled back to an anchor faster than the sample interval has ``vr`` << 1: its event-to-event shocks are
  there but do not add up. ``vr < range_vr`` -> RANGE.
- **volatility level** against the calm level: ``dev = ln V - B``, ``B`` the mean of ``ln V`` over the
  samples classified trending (a running mean, then an EWMA with time constant ``baseline_samples``
  samples); samples classified volatile move it too, at ``volatile_weight`` of that rate, so a lasting
  change of level becomes the new calm one. ``dev > volatile_dev`` -> VOLATILE, else TRENDING. On the
  synthetic feed the volatile regime's variance is 4x the trending one's (ln 4 = 1.39 apart); a market of
  one steady level stays trending (the noise of ``ln V`` is ~0.26 at the default half-life).

Hysteresis: the current regime's side of each boundary is widened by ``hysteresis`` (in log units of
``vr`` and of ``dev``); a new regime is taken only after it has been the raw classification for
``min_dwell_ms`` of event time. Until ``warmup_samples`` samples the detector returns DEFAULT_REGIME.

Measured and left out (tools/regime_eval, tuning seeds 1-5): trend efficiency |net move| / sum |moves| over
10 s of samples is 0.11 trending against 0.11-0.15 volatile (the trend's drift, 5 bps/s, is small beside
~70 bps/s of noise), so it does not separate them; risk's GARCH sigma (1 s bars, persistence ~0.985, a
half-life of ~46 bars against regimes of 30 s on average) has the same median in trending and volatile
periods. ``update`` takes ``garch_sigma_bps`` for the interface's sake and, by the above, does not use it.

Single owner: the strategy stage calls :func:`update` from one thread; nothing here allocates.
"""
import math

import numpy as np
from numba import njit

from stages.records import FEATURE_NAMES, REGIME_RANGE, REGIME_TRENDING, REGIME_VOLATILE
from stages.universe import MAX_KEYS

DEFAULT_REGIME = REGIME_RANGE  # during warm-up: the synthetic feed starts every symbol range-bound
F_RVOL_1S_BPS = FEATURE_NAMES.index("rvol_1s_bps")
LN2 = math.log(2.0)
VAR_FLOOR = 1e-12  # bps^2: ln of a sampled variance that is exactly 0 (a price that never moved)

(P_SAMPLE_NS, P_FAST_ALPHA, P_SLOW_ALPHA, P_LN_RANGE_VR, P_VOLATILE_DEV, P_HYSTERESIS, P_MIN_DWELL_NS,
 P_WARMUP_SAMPLES, P_VOLATILE_WEIGHT) = range(9)
N_PARAMS = 9

# state columns (float64)
(C_LAST_X, C_FAST_VAR, C_TICK_VAR, C_BASE, C_BASE_N, C_SAMPLES, C_REGIME, C_CANDIDATE, C_VR, C_DEV,
 C_HAS_TICK, C_STARTED) = range(12)
N_COLUMNS = 12
# state times (int64 ns: float64 cannot hold a timestamp exactly)
T_SAMPLE, T_CANDIDATE = range(2)
N_TIMES = 2


def make_params(*, sample_ms: float = 100.0, fast_half_life: float = 10.0, baseline_samples: float = 3000.0,
                range_vr: float = 0.6, volatile_dev: float = 0.5, hysteresis: float = 0.1,
                min_dwell_ms: float = 200.0, warmup_samples: int = 30, volatile_weight: float = 0.03) -> np.ndarray:
    """Thresholds tuned on synthetic seeds 1-5 only (tools/regime_eval); see the module docstring."""
    for name, value, ok in (("sample_ms", sample_ms, sample_ms > 0.0),
                            ("fast_half_life", fast_half_life, fast_half_life > 0.0),
                            ("baseline_samples", baseline_samples, baseline_samples >= 1.0),
                            ("range_vr", range_vr, range_vr > 0.0), ("hysteresis", hysteresis, hysteresis >= 0.0),
                            ("min_dwell_ms", min_dwell_ms, min_dwell_ms >= 0.0),
                            ("warmup_samples", warmup_samples, warmup_samples >= 1),
                            ("volatile_dev", volatile_dev, math.isfinite(volatile_dev)),
                            ("volatile_weight", volatile_weight, 0.0 <= volatile_weight <= 1.0)):
        if not ok:
            raise ValueError(f"regime {name}={value!r} is out of range; see stages.strategies.regime.make_params")
    p = np.zeros(N_PARAMS)
    p[P_SAMPLE_NS] = sample_ms * 1e6
    p[P_FAST_ALPHA] = 1.0 - 0.5 ** (1.0 / fast_half_life)
    p[P_SLOW_ALPHA] = 1.0 / baseline_samples
    p[P_LN_RANGE_VR] = math.log(range_vr)
    p[P_VOLATILE_DEV] = volatile_dev
    p[P_HYSTERESIS] = hysteresis
    p[P_MIN_DWELL_NS] = min_dwell_ms * 1e6
    p[P_WARMUP_SAMPLES] = warmup_samples
    p[P_VOLATILE_WEIGHT] = volatile_weight
    return p


def make_state():
    """(columns per key, times per key): every key starts in DEFAULT_REGIME with no samples."""
    values = np.zeros((MAX_KEYS, N_COLUMNS))
    values[:, C_REGIME] = DEFAULT_REGIME
    values[:, C_CANDIDATE] = DEFAULT_REGIME
    return values, np.zeros((MAX_KEYS, N_TIMES), np.int64)


@njit(cache=True, _nrt=False)
def _classify(row, params):
    """The raw regime of the key's latest sample, with the current regime's boundaries widened."""
    h = params[P_HYSTERESIS]
    current = int(row[C_REGIME])
    if row[C_HAS_TICK] != 0.0 and row[C_TICK_VAR] > 0.0:
        ln_vr = math.log(max(row[C_FAST_VAR], VAR_FLOOR) / row[C_TICK_VAR])
        row[C_VR] = math.exp(ln_vr)
        if ln_vr < params[P_LN_RANGE_VR] + (h if current == REGIME_RANGE else -h):
            return REGIME_RANGE
    dev = math.log(max(row[C_FAST_VAR], VAR_FLOOR)) - row[C_BASE]
    row[C_DEV] = dev
    if row[C_BASE_N] == 0.0:
        return REGIME_TRENDING
    if dev > params[P_VOLATILE_DEV] + (-h if current == REGIME_VOLATILE else h):
        return REGIME_VOLATILE
    return REGIME_TRENDING


@njit(cache=True, _nrt=False)
def update(state, params, key, ts_ns, mid, features, garch_sigma_bps):
    """The key's regime (REGIME_*) as of event time ``ts_ns``, after folding in this event's ``mid`` and
    feature ``values`` row. A NaN or non-positive mid, a NaN rvol, time going backwards or a key outside
    0..MAX_KEYS-1 fold nothing; the answer is then the regime as it stood (DEFAULT_REGIME for a bad key)."""
    values, times = state
    if key < 0 or key >= values.shape[0]:
        return DEFAULT_REGIME
    row = values[key]
    if not (mid > 0.0 and mid < math.inf):
        return int(row[C_REGIME])
    x = math.log(mid) * 1e4
    sample_ns = params[P_SAMPLE_NS]
    if row[C_STARTED] == 0.0:
        row[C_STARTED] = 1.0
        row[C_LAST_X] = x
        times[key, T_SAMPLE] = ts_ns
        return int(row[C_REGIME])
    elapsed = float(ts_ns - times[key, T_SAMPLE])
    if not elapsed >= sample_ns:
        return int(row[C_REGIME])
    steps = math.floor(elapsed / sample_ns)
    times[key, T_SAMPLE] += int(steps * sample_ns)
    r = x - row[C_LAST_X]
    row[C_LAST_X] = x
    a = params[P_FAST_ALPHA]
    first = row[C_SAMPLES] == 0.0
    per_sample = r * r / steps
    row[C_FAST_VAR] = per_sample if first else row[C_FAST_VAR] + a * (per_sample - row[C_FAST_VAR])
    rvol = features[F_RVOL_1S_BPS]
    if rvol >= 0.0 and rvol < math.inf:
        tick = rvol * rvol * LN2 * sample_ns * 1e-9
        row[C_TICK_VAR] = tick if row[C_HAS_TICK] == 0.0 else row[C_TICK_VAR] + a * (tick - row[C_TICK_VAR])
        row[C_HAS_TICK] = 1.0
    row[C_SAMPLES] += 1.0
    if row[C_SAMPLES] < params[P_WARMUP_SAMPLES]:
        return int(row[C_REGIME])
    raw = _classify(row, params)
    if raw != REGIME_RANGE:
        # the calm level: a running mean of ln V over trending samples, an EWMA once it has 1 / alpha of them
        if raw == REGIME_TRENDING:
            row[C_BASE_N] += 1.0
        w = max(params[P_SLOW_ALPHA], 1.0 / max(row[C_BASE_N], 1.0))
        if raw == REGIME_VOLATILE:
            w *= params[P_VOLATILE_WEIGHT]
        row[C_BASE] += w * (math.log(max(row[C_FAST_VAR], VAR_FLOOR)) - row[C_BASE])
    current = int(row[C_REGIME])
    if raw == current:
        row[C_CANDIDATE] = raw
    elif raw != int(row[C_CANDIDATE]):
        row[C_CANDIDATE] = raw
        times[key, T_CANDIDATE] = ts_ns
    if raw != current and float(ts_ns - times[key, T_CANDIDATE]) >= params[P_MIN_DWELL_NS]:
        row[C_REGIME] = raw
    return int(row[C_REGIME])
