"""Fractional Kelly sizing: the fraction of equity to hold, from an edge and its risk.

Binary form (a bet that wins ``b`` per unit staked with probability ``p``, loses the stake otherwise):
``f* = p - q / b`` with ``q = 1 - p``. Continuous form (a return with mean ``mu`` and variance ``sigma2``):
``f* = mu / sigma2``. Both are scaled by the Kelly multiple ``c`` (0.25 by default: a quarter of the growth-
optimal bet keeps most of the growth at a fraction of the drawdown, and forgives an over-stated edge). A
negative fraction means the edge is on the other side. Callers cap the result by the risk stage's budgets.
"""
from numba import njit


@njit(cache=True)
def binary(p, b, c):
    """``c * (p - (1 - p) / b)``: the fraction of equity to stake on a win probability ``p`` and payoff ``b``."""
    if not (b > 0.0) or not (0.0 <= p <= 1.0):
        return 0.0
    return c * (p - (1.0 - p) / b)


@njit(cache=True)
def continuous(mu, sigma2, c):
    """``c * mu / sigma2``: the leverage (position notional over equity) for mean ``mu`` and variance ``sigma2``
    of the return over one holding period (same units, e.g. fractions)."""
    if not (sigma2 > 0.0):
        return 0.0
    return c * mu / sigma2


@njit(cache=True)
def capped(f, cap):
    """``f`` clipped to ``[-cap, cap]``."""
    if f > cap:
        return cap
    if f < -cap:
        return -cap
    return f
