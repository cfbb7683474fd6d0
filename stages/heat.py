"""Portfolio heat and the room it leaves, with an EWMA covariance of bar returns across instruments.

Heat is the risk to a stop over equity: ``stop_sigmas * sqrt(w' S w) / equity`` where ``w`` is the signed
position notional per instrument and ``S_ij = rho_ij * sigma_i * sigma_j`` (sigma: each instrument's GARCH
horizon volatility, a fraction; rho: the EWMA correlation of bar returns). Until the covariance is warm the
correlation-free bound ``sum |w_i| sigma_i`` is used instead: it is the largest ``sqrt(w' S w)`` can be for
any correlation, so a cold start never under-states heat.

The room for a trade is exact, not linearised: the largest notional ``d`` in direction ``s`` on instrument
``k`` with ``heat(w + s d e_k) <= limit``; a trade that lowers the risk is always allowed up to the point
where the risk is back at today's level (``no new risk above the limit``, but never blocked from reducing).
"""
import math

from numba import njit

UNLIMITED = 1e300


@njit(cache=True)
def ewma_cov_update(cov, returns, active, lam):
    """``cov = lam * cov + (1 - lam) * r r'`` over the active instruments (returns in bps)."""
    n = returns.shape[0]
    for i in range(n):
        if not active[i]:
            continue
        for j in range(n):
            if active[j]:
                cov[i, j] = lam * cov[i, j] + (1.0 - lam) * returns[i] * returns[j]


@njit(cache=True)
def correlation(cov, i, j):
    d = cov[i, i] * cov[j, j]
    if not (d > 0.0):
        return 0.0
    rho = cov[i, j] / math.sqrt(d)
    return max(-1.0, min(1.0, rho))


@njit(cache=True)
def portfolio_sigma(w, sigma, cov, warm):
    """``sqrt(w' S w)`` in the units of ``w`` (sigma as fractions); the correlation-free bound when not warm."""
    n = w.shape[0]
    if not warm:
        total = 0.0
        for i in range(n):
            total += abs(w[i]) * sigma[i]
        return total
    var = 0.0
    for i in range(n):
        if w[i] == 0.0:
            continue
        for j in range(n):
            if w[j] != 0.0:
                rho = 1.0 if i == j else correlation(cov, i, j)
                var += w[i] * w[j] * rho * sigma[i] * sigma[j]
    return math.sqrt(max(var, 0.0))


@njit(cache=True)
def heat(w, sigma, cov, warm, stop_sigmas, equity):
    if not (equity > 0.0):
        return UNLIMITED
    return stop_sigmas * portfolio_sigma(w, sigma, cov, warm) / equity


@njit(cache=True)
def abs_room(x, s, others, per_unit, limit):
    """Largest ``d >= 0`` with ``others + per_unit * |x + s d| <= limit``, or, if none, the reduction that
    brings ``|x + s d|`` back to ``|x|`` (a trade against ``x`` never increases the total)."""
    if not (per_unit > 0.0):
        return UNLIMITED
    m = (limit - others) / per_unit  # the largest |x + s d| allowed
    room = m - s * x if m >= 0.0 else 0.0
    if s * x < 0.0:
        room = max(room, 2.0 * abs(x))
    return max(room, 0.0)


@njit(cache=True)
def room(w, k, s, sigma, cov, warm, stop_sigmas, equity, limit):
    """Largest notional ``d >= 0`` to add in direction ``s`` (+1 buy, -1 sell) on instrument ``k`` keeping
    heat within ``limit`` (or not raising the risk, when it is already above)."""
    if not (equity > 0.0) or not (stop_sigmas > 0.0):
        return 0.0
    target = limit * equity / stop_sigmas  # allowed portfolio sigma, in notional units
    if not warm:
        others = 0.0
        for i in range(w.shape[0]):
            if i != k:
                others += abs(w[i]) * sigma[i]
        return abs_room(w[k], s, others, sigma[k], target)
    n = w.shape[0]
    a = 0.0   # w' S w
    b = 0.0   # s (S w)_k
    for i in range(n):
        if w[i] == 0.0:
            continue
        rho_ik = 1.0 if i == k else correlation(cov, i, k)
        b += w[i] * rho_ik * sigma[i] * sigma[k]
        for j in range(n):
            if w[j] != 0.0:
                rho = 1.0 if i == j else correlation(cov, i, j)
                a += w[i] * w[j] * rho * sigma[i] * sigma[j]
    b *= s
    c = sigma[k] * sigma[k]
    if not (c > 0.0):
        return UNLIMITED
    # c d^2 + 2 b d + a <= target^2
    disc = b * b - c * (a - target * target)
    best = 0.0
    if disc >= 0.0:
        best = max(0.0, (-b + math.sqrt(disc)) / c)
    if b < 0.0:
        best = max(best, -2.0 * b / c)
    return best
