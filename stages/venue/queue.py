"""Queue position of a resting order: how much of its price level is ahead of it, as the level changes.

A new order joins the back of its level: ``front`` (the quantity ahead) starts at the level's displayed size
when the order reaches the venue. Trades at the order's price eat the queue from the front (``front -= qty``);
when ``front`` goes below zero the excess is what the order itself filled. What a depth decrease at the level
does to ``front`` is the model:

- ``front``: no queue at all, the order is always first (the old trade-through paper venue).
- ``risk_averse``: a decrease is a cancel behind us; ``front`` only shrinks to stay within the level.
- probabilistic (hftbacktest's ProbQueueModel): a decrease ``chg`` (net of the trades already counted since the
  last depth change) is split between ahead and behind: with ``p = f(front, back)`` the share behind,
  ``front -= (1 - p) * chg`` and whatever the back cannot absorb (``back - p * chg < 0``) comes off the front.
  ``f`` is one of ``power`` ``b^n / (b^n + f^n)``, ``power2`` ``b^n / (b + f)^n``, ``power3``
  ``1 - (f / (f + b))^n``, ``log`` ``ln(1 + b) / (ln(1 + b) + ln(1 + f))``, ``log2`` ``ln(1 + b) / ln(1 + b + f)``.
  An increase is assumed to join behind.

Exact FIFO needs per-order data, which none of the supported recordings carry.
"""
import math

from numba import njit

Q_FRONT, Q_RISK_AVERSE, Q_POWER, Q_POWER2, Q_POWER3, Q_LOG, Q_LOG2 = range(7)
MODELS = {"front": Q_FRONT, "risk_averse": Q_RISK_AVERSE, "power": Q_POWER, "power2": Q_POWER2,
          "power3": Q_POWER3, "log": Q_LOG, "log2": Q_LOG2}


@njit(cache=True, _nrt=False)
def share_behind(model, n, front, back):
    """The probability that a decrease at the level happened behind the order."""
    if model == Q_POWER:
        b = back ** n
        p = b / (b + front ** n)
    elif model == Q_POWER2:
        p = back ** n / (back + front) ** n
    elif model == Q_POWER3:
        p = 1.0 - (front / (front + back)) ** n
    elif model == Q_LOG:
        lb = math.log1p(back)
        p = lb / (lb + math.log1p(front))
    else:
        p = math.log1p(back) / math.log1p(back + front)
    return p if math.isfinite(p) else 1.0


@njit(cache=True, _nrt=False)
def joined(model, level_qty):
    """``front`` of an order that has just joined a level showing ``level_qty``."""
    return 0.0 if model == Q_FRONT else level_qty


@njit(cache=True, _nrt=False)
def on_trade(order, qty):
    """A trade of ``qty`` at the order's price."""
    order["front"] -= qty
    order["cum_trade"] += qty


@njit(cache=True, _nrt=False)
def on_depth(order, model, n, prev_qty, new_qty):
    """The level at the order's price went from ``prev_qty`` to ``new_qty``."""
    if model == Q_FRONT:
        order["cum_trade"] = 0.0
        return
    if model == Q_RISK_AVERSE:
        order["front"] = min(order["front"], new_qty)
        order["cum_trade"] = 0.0
        return
    chg = prev_qty - new_qty - order["cum_trade"]  # trades already came off the front
    order["cum_trade"] = 0.0
    if chg < 0.0:
        order["front"] = min(order["front"], new_qty)
        return
    front = order["front"]
    back = prev_qty - front
    p = share_behind(model, n, front, back)
    estimate = front - (1.0 - p) * chg + min(back - p * chg, 0.0)
    order["front"] = min(estimate, new_qty)


@njit(cache=True, _nrt=False)
def executable(order, lot):
    """The quantity the queue lets the order fill now (``-front`` once the queue ahead is gone, rounded to the
    lot when one is given), resetting ``front`` to 0; 0.0 while anything is ahead."""
    ahead = order["front"]
    if ahead >= 0.0:
        return 0.0
    q = -ahead
    if lot > 0.0:
        q = round(q / lot) * lot
    if q <= 0.0:
        return 0.0
    order["front"] = 0.0
    return q
