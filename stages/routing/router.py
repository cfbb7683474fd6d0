"""Smart order routing: which venues take a taker order, and how much each. Pure numba, no I/O, no clock.

Execute hands the router the visible levels each venue shows on the side a taker order takes (from its book view,
BBO or its own L2 ladder of that venue: ``levels[venue, j] = (price, size)`` best first, ``n_levels[venue]`` of
them, -1 where the venue does not list the symbol), the venue model's taker fees and what execute measured of each
venue (``venue_stats``). A unit taken at price ``px`` on venue v costs, signed so that lower is better for the
order's side,

    side * px * (1 + side * taker_fee_v)  +  ref * penalty_v,
    penalty_v = ack_latency_ms_v * latency_bps_per_ms + health_v * health_bps          (bps of the reference mid)

- :func:`rank`: each venue's all-in cost of the whole order in bps from the reference mid: its levels within the
  limit walked up to the size, the part they do not cover priced at the limit (thin depth ranks worse), the fee
  and the penalty on top. Ties go to the lower venue index.
- :func:`split`: every (venue, level) within the limit, cheapest unit first, taken until the size is covered; a
  venue's child has the quantity it got and, as its limit, the worst level taken there (it cannot walk further on a
  book that moved). What the visible depth does not cover, and shares under ``min_child_usd``, go to the best-ranked
  venue at the parent's limit, as an unrouted IOC would.
- Health: a venue's reject, or an ack later than ``ack_timeout``, adds 1, halved every ``health_halflife`` of event
  time; a venue at ``health_max`` or above is left out while it decays (when every venue is, the intent's own).
- Latency: an EWMA of ack time minus send time of every order execute sends there. A venue not measured yet counts
  0 (so it is tried, then measured).

Not modelled: how stale a venue's book is, depth our own orders took that the book does not show yet, hidden size.
"""
import numpy as np
from numba import njit

from stages.records import BOOK_LEVELS
from stages.universe import MAX_VENUES
from stages.venue.exchange import V_FEES

# The routing block of execute's params (stages.routing.make_params builds it): the router's keys, then the algos'.
(RP_ACTIVE, RP_ROUTE_TAKERS, RP_LATENCY_BPS_PER_MS, RP_LATENCY_ALPHA, RP_HEALTH_BPS, RP_HEALTH_HALFLIFE_NS,
 RP_HEALTH_MAX, RP_ACK_TIMEOUT_NS, RP_MIN_CHILD_USD) = range(9)
N_ROUTER_PARAMS = 9

# venue_stats[venue, VS_*]
VS_LATENCY_NS, VS_ACKS, VS_HEALTH, VS_HEALTH_TS, VS_REJECTS, VS_TIMEOUTS = range(6)
N_VS = 8
MAX_CHUNKS = MAX_VENUES * BOOK_LEVELS
# chunks[i, CH_*]: one (venue, level) the split may take
CH_COST, CH_VENUE, CH_PRICE, CH_SIZE = range(4)
# alloc[venue, AL_*]: a venue's child
AL_QTY, AL_PRICE = range(2)


def make_venue_stats() -> np.ndarray:
    return np.zeros((MAX_VENUES, N_VS))


@njit(cache=True, _nrt=False)
def health(venue_stats, rparams, venue, now_ns):
    """The venue's failures, each decayed by half every RP_HEALTH_HALFLIFE_NS since it happened."""
    row = venue_stats[venue]
    if row[VS_HEALTH] == 0.0:
        return 0.0
    age = max(now_ns - row[VS_HEALTH_TS], 0.0)
    return row[VS_HEALTH] * 0.5 ** (age / rparams[RP_HEALTH_HALFLIFE_NS])


@njit(cache=True, _nrt=False)
def _failed(venue_stats, rparams, venue, now_ns):
    venue_stats[venue, VS_HEALTH] = health(venue_stats, rparams, venue, now_ns) + 1.0
    venue_stats[venue, VS_HEALTH_TS] = now_ns


@njit(cache=True, _nrt=False)
def on_ack(venue_stats, rparams, venue, latency_ns, now_ns):
    """An order's ack came back ``latency_ns`` after it was sent: the venue's latency EWMA, and a late one counts
    as a timeout."""
    row = venue_stats[venue]
    if row[VS_ACKS] == 0.0:
        row[VS_LATENCY_NS] = latency_ns
    else:
        row[VS_LATENCY_NS] += rparams[RP_LATENCY_ALPHA] * (latency_ns - row[VS_LATENCY_NS])
    row[VS_ACKS] += 1.0
    if latency_ns > rparams[RP_ACK_TIMEOUT_NS]:
        row[VS_TIMEOUTS] += 1.0
        _failed(venue_stats, rparams, venue, now_ns)


@njit(cache=True, _nrt=False)
def on_reject(venue_stats, rparams, venue, now_ns):
    """The venue refused an order (the gate's own refusals are not the venue's)."""
    venue_stats[venue, VS_REJECTS] += 1.0
    _failed(venue_stats, rparams, venue, now_ns)


@njit(cache=True, _nrt=False)
def penalty_bps(venue_stats, rparams, venue, now_ns):
    return (venue_stats[venue, VS_LATENCY_NS] * 1e-6 * rparams[RP_LATENCY_BPS_PER_MS]
            + health(venue_stats, rparams, venue, now_ns) * rparams[RP_HEALTH_BPS])


@njit(cache=True, _nrt=False)
def _within(side, price, limit):
    return price <= limit if side > 0 else price >= limit


@njit(cache=True, _nrt=False)
def _eligible(n_levels, venue_stats, rparams, venue, now_ns):
    return n_levels[venue] >= 0 and health(venue_stats, rparams, venue, now_ns) < rparams[RP_HEALTH_MAX]


@njit(cache=True, _nrt=False)
def rank(levels, n_levels, vparams, venue_stats, rparams, side, qty, limit, ref, now_ns, scores, order):
    """``scores[v]``: venue v's all-in cost of ``qty`` at ``limit`` in bps from ``ref`` (inf: not eligible);
    ``order``: the venues best first, the ineligible last. Returns how many are eligible."""
    eligible = 0
    for v in range(MAX_VENUES):
        scores[v] = np.inf
        if not _eligible(n_levels, venue_stats, rparams, v, now_ns):
            continue
        eligible += 1
        left, paid = qty, 0.0
        for j in range(n_levels[v]):
            px, sz = levels[v, j, 0], levels[v, j, 1]
            if left <= 0.0 or not _within(side, px, limit):
                break
            take = min(sz, left)
            paid += take * px
            left -= take
        fee = vparams[V_FEES + 2 * v + 1] * 1e-4
        price = (paid + max(left, 0.0) * limit) / qty * (1.0 + side * fee)
        scores[v] = side * (price - ref) / ref * 1e4 + penalty_bps(venue_stats, rparams, v, now_ns)
    for i in range(MAX_VENUES):  # insertion sort: stable, so a tie keeps the lower venue first
        order[i] = i
    for i in range(1, MAX_VENUES):
        v = order[i]
        j = i
        while j > 0 and scores[order[j - 1]] > scores[v]:
            order[j] = order[j - 1]
            j -= 1
        order[j] = v
    return eligible


@njit(cache=True, _nrt=False)
def split(levels, n_levels, vparams, venue_stats, rparams, side, qty, limit, ref, home, now_ns, scores, order,
          chunks, alloc):
    """The children of a taker order of ``qty`` at ``limit``: ``alloc[v] = (qty, limit price)`` (qty 0: none),
    ``order`` the venues best first (send in that order). ``home``: the intent's own venue, when no venue is
    eligible. Returns the number of children."""
    for v in range(MAX_VENUES):
        alloc[v, AL_QTY] = 0.0
        alloc[v, AL_PRICE] = 0.0
    if rank(levels, n_levels, vparams, venue_stats, rparams, side, qty, limit, ref, now_ns, scores, order) == 0:
        alloc[home, AL_QTY], alloc[home, AL_PRICE] = qty, limit
        order[0], order[home] = home, 0  # rank left every venue in index order
        return 1
    m = 0
    for v in range(MAX_VENUES):
        if scores[v] == np.inf:
            continue
        fee = vparams[V_FEES + 2 * v + 1] * 1e-4
        penalty = ref * penalty_bps(venue_stats, rparams, v, now_ns) * 1e-4
        for j in range(n_levels[v]):
            px = levels[v, j, 0]
            if not _within(side, px, limit):
                break
            cost = side * px * (1.0 + side * fee) + penalty
            i = m  # stable insertion: equal costs keep venue, then level, order
            while i > 0 and chunks[i - 1, CH_COST] > cost:
                for f in range(4):
                    chunks[i, f] = chunks[i - 1, f]
                i -= 1
            chunks[i, CH_COST], chunks[i, CH_VENUE], chunks[i, CH_PRICE], chunks[i, CH_SIZE] = cost, v, px, levels[v, j, 1]
            m += 1
    left = qty
    for i in range(m):
        if left <= 0.0:
            break
        v = np.int64(chunks[i, CH_VENUE])
        take = min(chunks[i, CH_SIZE], left)
        alloc[v, AL_QTY] += take
        alloc[v, AL_PRICE] = chunks[i, CH_PRICE]  # cheapest first, so a venue's later level is its worse one
        left -= take
    for v in range(MAX_VENUES):
        if 0.0 < alloc[v, AL_QTY] and alloc[v, AL_QTY] * alloc[v, AL_PRICE] < rparams[RP_MIN_CHILD_USD]:
            left += alloc[v, AL_QTY]
            alloc[v, AL_QTY] = 0.0
    if left > 1e-12 * qty:
        best = order[0]
        alloc[best, AL_QTY] += left
        alloc[best, AL_PRICE] = limit
    children = 0
    for v in range(MAX_VENUES):
        if alloc[v, AL_QTY] > 0.0:
            children += 1
    return children
