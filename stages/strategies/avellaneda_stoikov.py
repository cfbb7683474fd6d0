"""Avellaneda-Stoikov quotes and the online fit of the order-arrival intensity lambda(delta) = A * exp(-k * delta).

Pure numba over plain floats and arrays, no I/O; the market-making strategy and ``tools.as2008`` (the paper's
simulation) call the same functions.

Source: M. Avellaneda and S. Stoikov, "High-frequency trading in a limit order book", Quantitative Finance
8(3):217-224, 2008 (preprint of 2006 at math.nyu.edu/~avellane/HighFrequencyTrading.pdf; equation numbers
below are the preprint's, read from a transcription of it in the search tool's code corpus).

Finite horizon (section 2.2 eqs 2.6-2.7, section 3.2 eqs 3.17-3.18), t in [0, T], tau = T - t::

    r^a = s + (1 - 2q) * gamma * sigma^2 * tau / 2         reservation ask (indifferent to selling one)
    r^b = s + (-1 - 2q) * gamma * sigma^2 * tau / 2        reservation bid (indifferent to buying one)
    r   = (r^a + r^b) / 2 = s - q * gamma * sigma^2 * tau  reservation price
    delta^a + delta^b = gamma * sigma^2 * tau + (2 / gamma) * ln(1 + gamma / k)   total spread, around r

Infinite horizon (section 2.3), objective vbar(x, s, q) = E[int_0^inf -exp(-omega t) exp(-gamma (x + q S_t)) dt]
= -exp(-gamma (x + q s)) / (omega - gamma^2 sigma^2 q^2 / 2) for omega > gamma^2 sigma^2 q^2 / 2. The paper prints

    rbar^a = s + (1 / gamma) * ln(1 + (1 - 2q) * gamma^2 sigma^2 / (2 omega - gamma^2 q^2 sigma^2))
    rbar^b = s + (1 / gamma) * ln(1 + (-1 - 2q) * gamma^2 sigma^2 / (2 omega - gamma^2 q^2 sigma^2))

(:func:`paper_infinite_horizon_reservation`). Solving its own indifference definition vbar(x - r^b, s, q + 1) =
vbar(x, s, q) and vbar(x + r^a, s, q - 1) = vbar(x, s, q) with D(q) = 2 omega - gamma^2 sigma^2 q^2 gives::

    rbar^b = s + (1 / gamma) * ln(D(q + 1) / D(q))   = the printed rbar^b exactly
    rbar^a = s - (1 / gamma) * ln(D(q - 1) / D(q))   = s + (1/gamma) ln(1 + (1 - 2q) gamma^2 sigma^2 / D(q - 1))

i.e. the printed rbar^a has D(q) where the definition gives D(q - 1) (:func:`infinite_horizon_reservation`,
which the quotes use, takes the definition's). They agree to first order in gamma^2 sigma^2 / D; the exact pair
is mirror-symmetric (a short -q quotes the mirror image of a long q: rbar^a(q) - s = s - rbar^b(-q)), the printed
one is not (at q = q_max it stops bidding, at q = -q_max it still asks). The paper's "natural choice" omega =
gamma^2 sigma^2 (q_max + 1)^2 / 2 (:func:`paper_omega`) bounds the prices for |q| <= q_max: a trade that would
take |q| to q_max + 1 has D = 0, so the bid goes at q = q_max and the ask at q = -q_max (-inf / +inf).
With that omega the ratio inside the log depends on q and q_max only, so the quotes no longer depend on sigma:
a caller that wants quotes to widen with volatility fixes omega (a rate, 1 / time unit) instead of
recomputing it from the current sigma; the admissible inventory then shrinks as sigma grows.

Quotes from reservation prices (section 3.1 eqs 3.6-3.7 with lambda = A exp(-k delta), so
-lambda / lambda' = 1 / k): s - r^b = delta^b - (1/gamma) ln(1 + gamma/k) and r^a - s = delta^a - (1/gamma)
ln(1 + gamma/k), i.e.::

    bid = r^b - (1 / gamma) * ln(1 + gamma / k)        ask = r^a + (1 / gamma) * ln(1 + gamma / k)

which in the finite horizon is r -/+ spread / 2 with the total spread above; the infinite-horizon quotes use
the same half-spread term around rbar^b and rbar^a. As gamma -> 0 the term tends to 1 / k.

Units (any consistent set): s, quotes and 1/gamma, 1/k in price units; q in units of the quoted size; sigma in
price units per sqrt(time unit); tau in time units; omega in 1 / time unit. A quote side that must not be sent
is -inf (bid) / +inf (ask); no function here returns nan for a quote. ``ok`` is False when an input is not
usable (nan, gamma < 0, k <= 0, ...): both sides are then infinite and the caller uses its defaults.

Intensity calibration (the way hftbacktest's "GLFT Market Making Model and Grid Trading" example fits it: count
the market trades that reached at least each distance delta from the mid, divide by the time observed, and fit
ln lambda(delta) = ln A - k delta by least squares). Here, per instrument key and online:

- a trade's distance is measured in ticks from the mid at the time (buyer-initiated: (price - mid) / tick,
  seller-initiated: (mid - price) / tick; :func:`trade_distance_ticks`); negative distances (a trade on the
  wrong side of a stale mid) and nan are not recorded, as in the example;
- ``counts[key, i]`` is the number of trades with distance >= ``grid[i]`` (ticks), decayed exponentially in
  event time with a half-life; ``exposure`` is the event time observed, decayed the same way (seconds), so
  counts / exposure estimates lambda(grid[i]) per second whatever the age of the record;
- :func:`fit_intensity` is a weighted least-squares fit of ln(counts / exposure) on the grid points with at
  least ``min_count`` trades, weights = counts (the Poisson variance of ln C is about 1 / C; the cumulative
  counts are correlated across points, so the weights are a heuristic, as the example's plain OLS is). It returns
  A (per second), k (per tick: divide by the tick for k in 1 / price unit), the number of points used and ok;
  ok is False (use defaults) with fewer than ``min_points`` points, no exposure, or a k that is not > 0.

Concurrency: one writer per calibration state (the strategy stage's thread); nothing here is shared.
"""
import math
from typing import NamedTuple

import numpy as np
from numba import njit

from stages.universe import MAX_KEYS

GAMMA_EPS = 1e-12   # below this gamma the half-spread term is its limit 1 / k (ln(1+x)/x at x = 1e-12 is exact)
LOG_ARG_EPS = 1e-9  # infinite horizon: a log argument at or below this is the inventory bound (that side not quoted)
TICK_EPS = 1e-9     # the fixed quoter's epsilon: a price exactly on the grid is not pushed a tick away

GRID_FREE = 0       # on_grid: rounding only
GRID_NO_CROSS = 1   # ... and never cross the book: bid <= best_ask - tick, ask >= best_bid + tick (may improve)
GRID_JOIN = 2       # ... and never inside the touch: bid <= best_bid, ask >= best_ask (at best join it)

N_DELTAS = 32           # default grid: 0.5, 1.5, ..., 31.5 ticks from the mid
FIRST_DELTA_TICKS = 0.5
DELTA_STEP_TICKS = 1.0

CLK_LAST_NS, CLK_EXPOSURE_S, CLK_TRADES, CLK_IGNORED = range(4)
N_CLOCK = 4


class Calibration(NamedTuple):
    grid: np.ndarray      # (n_deltas,) distances from the mid, ticks, ascending
    counts: np.ndarray    # (n_keys, n_deltas) decayed counts of trades with distance >= grid[i]
    clock: np.ndarray     # (n_keys, N_CLOCK): last event ns (-1: none), decayed seconds observed,
    #                       trades recorded, trades ignored (both undecayed, for status)


def make_calibration(n_keys: int = MAX_KEYS, n_deltas: int = N_DELTAS, first_delta_ticks: float = FIRST_DELTA_TICKS,
                     delta_step_ticks: float = DELTA_STEP_TICKS) -> Calibration:
    if n_keys < 1 or n_deltas < 2 or not first_delta_ticks >= 0.0 or not delta_step_ticks > 0.0:
        raise ValueError(f"calibration grid: n_keys={n_keys} (>= 1), n_deltas={n_deltas} (>= 2), "
                         f"first_delta_ticks={first_delta_ticks} (>= 0), delta_step_ticks={delta_step_ticks} (> 0)")
    grid = first_delta_ticks + delta_step_ticks * np.arange(n_deltas, dtype=np.float64)
    clock = np.zeros((n_keys, N_CLOCK))
    clock[:, CLK_LAST_NS] = -1.0
    return Calibration(grid, np.zeros((n_keys, n_deltas)), clock)


@njit(cache=True, _nrt=False)
def arrival_half_spread(gamma, k):
    """(1 / gamma) * ln(1 + gamma / k), the half-spread from order arrivals; 1 / k in the limit gamma -> 0."""
    if gamma < GAMMA_EPS:
        return 1.0 / k
    return math.log1p(gamma / k) / gamma


@njit(cache=True, _nrt=False)
def reservation_price(s, q, gamma, sigma, tau):
    """Finite horizon r = s - q * gamma * sigma^2 * tau (eq 3.17)."""
    return s - q * gamma * sigma * sigma * tau


@njit(cache=True, _nrt=False)
def total_spread(gamma, sigma, tau, k):
    """Finite horizon delta^a + delta^b = gamma * sigma^2 * tau + (2 / gamma) * ln(1 + gamma / k) (eq 3.18)."""
    return gamma * sigma * sigma * tau + 2.0 * arrival_half_spread(gamma, k)


@njit(cache=True, _nrt=False)
def _usable(s, q, gamma, sigma, k):
    return (math.isfinite(s) and math.isfinite(q) and math.isfinite(gamma) and gamma >= 0.0
            and math.isfinite(sigma) and sigma >= 0.0 and math.isfinite(k) and k > 0.0)


@njit(cache=True, _nrt=False)
def finite_horizon_quotes(s, q, gamma, sigma, tau, k):
    """(bid, ask, ok): r -/+ total_spread / 2 around the mid ``s`` with inventory ``q``, ``tau`` = T - t >= 0."""
    if not (_usable(s, q, gamma, sigma, k) and math.isfinite(tau) and tau >= 0.0):
        return -np.inf, np.inf, False
    r = reservation_price(s, q, gamma, sigma, tau)
    half = 0.5 * total_spread(gamma, sigma, tau, k)
    return r - half, r + half, True


@njit(cache=True, _nrt=False)
def paper_omega(gamma, sigma, q_max):
    """The paper's omega = gamma^2 sigma^2 (q_max + 1)^2 / 2: prices bounded for |q| <= q_max (section 2.3)."""
    return 0.5 * gamma * gamma * sigma * sigma * (q_max + 1.0) * (q_max + 1.0)


@njit(cache=True, _nrt=False)
def _log_side(s, gamma, num, den):
    """s + (1/gamma) ln(1 + num / den), or +-inf (by the sign of num) where the argument is not > 0."""
    if den <= 0.0:
        return np.inf if num > 0.0 else -np.inf
    arg = 1.0 + num / den
    # at the bound the argument is 0 exactly in reals, a rounding error either side of it in floats
    if arg <= LOG_ARG_EPS:
        return np.inf if num > 0.0 else -np.inf
    return s + math.log(arg) / gamma


@njit(cache=True, _nrt=False)
def _infinite_inputs_ok(s, q, gamma, sigma, omega):
    return _usable(s, q, gamma, sigma, 1.0) and gamma > 0.0 and math.isfinite(omega) and omega >= 0.0


@njit(cache=True, _nrt=False)
def infinite_horizon_reservation(s, q, gamma, sigma, omega):
    """(rbar^b, rbar^a, ok): the exact indifference prices of the section 2.3 objective (see the module doc);
    a side whose trade would leave the inventory omega admits is -inf (bid) / +inf (ask)."""
    if not _infinite_inputs_ok(s, q, gamma, sigma, omega):
        return -np.inf, np.inf, False
    g2s2 = gamma * gamma * sigma * sigma
    if g2s2 == 0.0:  # no inventory risk: both reservation prices are the mid (the sigma -> 0 limit at fixed omega)
        return s, s, True
    d_q = 2.0 * omega - g2s2 * q * q
    if d_q <= 0.0:   # q itself beyond the bound omega sets: the value function has no value
        return -np.inf, np.inf, True
    # D(q + 1) / D(q) = 1 + (-1 - 2q) g2s2 / D(q);  D(q) / D(q - 1) = 1 + (1 - 2q) g2s2 / D(q - 1)
    r_b = _log_side(s, gamma, (-1.0 - 2.0 * q) * g2s2, d_q)
    r_a = _log_side(s, gamma, (1.0 - 2.0 * q) * g2s2, 2.0 * omega - g2s2 * (q - 1.0) * (q - 1.0))
    return r_b, r_a, True


@njit(cache=True, _nrt=False)
def paper_infinite_horizon_reservation(s, q, gamma, sigma, omega):
    """(rbar^b, rbar^a, ok) as printed in section 2.3 (q^2 in both denominators); for comparison only."""
    if not _infinite_inputs_ok(s, q, gamma, sigma, omega):
        return -np.inf, np.inf, False
    g2s2 = gamma * gamma * sigma * sigma
    if g2s2 == 0.0:
        return s, s, True
    den = 2.0 * omega - g2s2 * q * q
    if den <= 0.0:
        return -np.inf, np.inf, True
    return (_log_side(s, gamma, (-1.0 - 2.0 * q) * g2s2, den), _log_side(s, gamma, (1.0 - 2.0 * q) * g2s2, den),
            True)


@njit(cache=True, _nrt=False)
def infinite_horizon_quotes(s, q, gamma, sigma, k, omega):
    """(bid, ask, ok): rbar^b - (1/gamma) ln(1 + gamma/k) and rbar^a + (1/gamma) ln(1 + gamma/k)."""
    if not (math.isfinite(k) and k > 0.0):
        return -np.inf, np.inf, False
    r_b, r_a, ok = infinite_horizon_reservation(s, q, gamma, sigma, omega)
    if not ok:
        return -np.inf, np.inf, False
    half = arrival_half_spread(gamma, k)
    return r_b - half, r_a + half, True


@njit(cache=True, _nrt=False)
def on_grid(bid, ask, tick, best_bid, best_ask, mode):
    """(bid tick, ask tick) as integral floats: bid floored, ask ceiled to multiples of ``tick``, then held back
    by the book per ``mode`` (GRID_FREE, GRID_NO_CROSS, GRID_JOIN; a nan best price skips its constraint).
    An infinite side stays infinite (not quoted). Price = tick index * tick."""
    b = math.floor(bid / tick + TICK_EPS) if math.isfinite(bid) else -np.inf
    a = math.ceil(ask / tick - TICK_EPS) if math.isfinite(ask) else np.inf
    if mode == GRID_NO_CROSS:
        if math.isfinite(best_ask):
            b = min(b, math.ceil(best_ask / tick - TICK_EPS) - 1.0)
        if math.isfinite(best_bid):
            a = max(a, math.floor(best_bid / tick + TICK_EPS) + 1.0)
    elif mode == GRID_JOIN:
        if math.isfinite(best_bid):
            b = min(b, math.floor(best_bid / tick + TICK_EPS))
        if math.isfinite(best_ask):
            a = max(a, math.ceil(best_ask / tick - TICK_EPS))
    if a <= b:  # both rounded onto one grid point (a spread below the float epsilon): keep one tick apart
        a = b + 1.0
    return b, a


@njit(cache=True, _nrt=False)
def trade_distance_ticks(price, aggressor_side, mid, tick):
    """Distance of a trade from the mid, ticks, positive on the side it took: +1 buyer-, -1 seller-initiated."""
    if aggressor_side > 0:
        return (price - mid) / tick
    return (mid - price) / tick


@njit(cache=True, _nrt=False)
def advance(counts, clock, key, ts_ns, half_life_ns):
    """Decay ``key``'s counts and exposure to event time ``ts_ns`` (an earlier ts decays nothing)."""
    last = clock[key, CLK_LAST_NS]
    if last < 0.0:
        clock[key, CLK_LAST_NS] = ts_ns
        return
    dt_ns = ts_ns - last
    if not dt_ns > 0.0:
        return
    clock[key, CLK_LAST_NS] = ts_ns
    if math.isfinite(half_life_ns):
        x = dt_ns * math.log(2.0) / half_life_ns
        f = math.exp(-x)
        for i in range(counts.shape[1]):
            counts[key, i] *= f
        tau_s = half_life_ns * 1e-9 / math.log(2.0)
        # the decayed integral of 1 over the elapsed time: E' = E f + tau (1 - f); composes exactly over steps
        clock[key, CLK_EXPOSURE_S] = clock[key, CLK_EXPOSURE_S] * f - tau_s * math.expm1(-x)
    else:
        clock[key, CLK_EXPOSURE_S] += dt_ns * 1e-9


@njit(cache=True, _nrt=False)
def record_trade(grid, counts, clock, key, ts_ns, distance_ticks, half_life_ns):
    """Record one trade ``distance_ticks`` from the mid at ``ts_ns``; False (ignored) for nan or < 0."""
    advance(counts, clock, key, ts_ns, half_life_ns)
    if not (distance_ticks >= 0.0):
        clock[key, CLK_IGNORED] += 1.0
        return False
    for i in range(grid.shape[0]):
        if grid[i] > distance_ticks + TICK_EPS:
            break
        counts[key, i] += 1.0
    clock[key, CLK_TRADES] += 1.0
    return True


@njit(cache=True, _nrt=False)
def fit_intensity(grid, counts, clock, key, ts_ns, half_life_ns, min_count, min_points):
    """(A per second, k per tick, grid points used, ok): weighted least squares of ln(counts / exposure) on the
    grid; points are those with a decayed count >= ``min_count`` (a prefix: counts fall along the grid)."""
    advance(counts, clock, key, ts_ns, half_life_ns)
    exposure = clock[key, CLK_EXPOSURE_S]
    sw = 0.0
    swx = 0.0
    swy = 0.0
    n = 0
    if exposure > 0.0:
        for i in range(grid.shape[0]):
            c = counts[key, i]
            if not c >= min_count or c <= 0.0:
                break
            y = math.log(c / exposure)
            sw += c
            swx += c * grid[i]
            swy += c * y
            n += 1
    if n < max(min_points, 2):
        return np.nan, np.nan, n, False
    xm = swx / sw
    ym = swy / sw
    sxx = 0.0
    sxy = 0.0
    for i in range(n):
        c = counts[key, i]
        dx = grid[i] - xm
        sxx += c * dx * dx
        sxy += c * dx * (math.log(c / exposure) - ym)
    if not sxx > 0.0:
        return np.nan, np.nan, n, False
    k = -sxy / sxx
    log_a = ym + k * xm
    a = math.exp(log_a)
    ok = math.isfinite(k) and k > 0.0 and math.isfinite(a) and a > 0.0
    return a, k, n, ok
