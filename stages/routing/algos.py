"""Execution algorithms on event time: a parent order that execute works through child orders. Pure numba.

A taker intent becomes a parent when it names an algo (ORDER_INTENT.algo and its parameters), or when the config
wraps takers above a notional in one (``[routing] algo``). The parent sits in a small table in execute's state; at
each market event (and at the end of each step, on the live clock) :func:`due` says how much its next child takes,
and execute sends that child through the router (when the parent routes) and the pre-trade gate like any order. A
child's fills and end come back through :func:`child_filled` and :func:`child_ended`.

- TWAP: ``slices`` children, slice i due at start + i * horizon / slices; each takes what is left (unfilled and not
  working) over the slices left, so a slice that filled short or was refused is made up later. It ends after its
  last slice.
- POV: its target is ``share`` x the volume of the trade events of its symbol since it started (on its venue, or on
  every venue when it routes); after a trade event (at most one child per trade: an IOC that found nothing is not
  sent again until the market trades) a child takes the shortfall of filled + working to the target, at most
  ``max_child`` (0: no cap) and at least ``min_child_usd`` unless that finishes it. Ends at its deadline.
- Iceberg: one resting limit child of ``shown`` (the displayed quantity) at the parent's price on its own venue; when
  it has filled, the next. At its deadline the child shown is cancelled.

Every child is an order at the parent's limit price; children of one parent go at least the gate's duplicate
window apart. A parent ends when filled, at its deadline or last slice, after MAX_REJECTS children in a row were
refused (by the gate or the venue), on a cancel-all and when trading is disabled; it is freed once its children
have ended (its row keeps its figures until reused).
"""
import numpy as np
from numba import njit

from stages.records import ALGO_ICEBERG, ALGO_NONE, ALGO_POV, ALGO_TWAP, ORDER_INTENT
from stages.routing.router import N_ROUTER_PARAMS, RP_MIN_CHILD_USD
from stages.universe import key_symbol, key_venue

(AP_ALGO, AP_ALGO_ABOVE_USD, AP_TWAP_SLICES, AP_TWAP_HORIZON_NS, AP_POV_SHARE, AP_POV_MAX_CHILD_USD,
 AP_POV_HORIZON_NS, AP_ICEBERG_DISPLAY_USD, AP_ICEBERG_HORIZON_NS) = range(N_ROUTER_PARAMS, N_ROUTER_PARAMS + 9)
N_PARAMS = N_ROUTER_PARAMS + 9

MAX_PARENTS = 32
MAX_SLICES = 10_000
MAX_REJECTS = 3  # children refused in a row before the parent gives up (a limit or collar that will not pass)
FREE, WORKING, DRAINING = range(3)  # PARENT.state: draining = no more children, waiting for the open ones
NEVER = -(1 << 62)

PARENT = np.dtype([
    ("state", np.int64), ("intent_id", np.int64), ("algo", np.int64), ("route", np.int64), ("key", np.int64),
    ("side", np.int64), ("start_ts", np.int64), ("end_ts", np.int64),  # end_ts: the deadline, 0 = none
    ("horizon_ns", np.int64), ("next_ts", np.int64), ("last_child_ts", np.int64),
    ("slices", np.int64), ("slices_sent", np.int64), ("children", np.int64), ("child_slot", np.int64),
    ("rejects", np.int64), ("n_children", np.int64), ("fresh", np.int64),  # fresh: POV, a trade since its last look
    ("price", np.float64), ("qty", np.float64), ("filled", np.float64), ("working", np.float64),
    ("notional", np.float64),  # sum of fill qty * price: the average fill price is notional / filled
    ("param", np.float64), ("max_child", np.float64), ("volume", np.float64), ("arrival_mid", np.float64),
], align=True)

# ints[RI_*]: counters of the parent table and the router
RI_ACTIVE, RI_STARTED, RI_DONE, RI_ROUTED, RI_SPLIT, RI_CHILDREN, RI_CHILD_REFUSED = range(7)
N_INTS = 8
COUNTER_NAMES = ("active_parents", "parents", "parents_done", "routed", "split", "child_orders", "children_refused")


def make_table():
    """(parents, the intent each parent came from: its children's template)."""
    return np.zeros(MAX_PARENTS, PARENT), np.zeros(MAX_PARENTS, ORDER_INTENT)


@njit(cache=True, _nrt=False)
def chosen(intent, rparams):
    """(algo, horizon ns, param, max child) a taker intent is worked with: its own; else, above the configured
    notional, the configured algo (its USD sizes in base units at the intent's price); else ALGO_NONE."""
    algo = np.int64(intent["algo"])
    if algo != ALGO_NONE:
        return algo, intent["algo_horizon_ms"] * 1e6, intent["algo_param"], intent["algo_max_child"]
    conf = np.int64(rparams[AP_ALGO])
    price = intent["price"]
    if conf == ALGO_NONE or not (intent["qty"] * price > rparams[AP_ALGO_ABOVE_USD]):
        return np.int64(ALGO_NONE), 0.0, 0.0, 0.0
    if conf == ALGO_TWAP:
        return conf, rparams[AP_TWAP_HORIZON_NS], rparams[AP_TWAP_SLICES], 0.0
    if conf == ALGO_POV:
        return conf, rparams[AP_POV_HORIZON_NS], rparams[AP_POV_SHARE], rparams[AP_POV_MAX_CHILD_USD] / price
    return conf, rparams[AP_ICEBERG_HORIZON_NS], rparams[AP_ICEBERG_DISPLAY_USD] / price, 0.0


@njit(cache=True, _nrt=False)
def valid(algo, horizon_ns, param, max_child):
    """The parameters make a parent that can finish (an intent's own may not)."""
    if not (0.0 <= horizon_ns < 1e18) or not (0.0 <= max_child < np.inf):
        return False
    if algo == ALGO_TWAP:
        return 1.0 <= param <= MAX_SLICES
    if algo == ALGO_POV:
        return 0.0 < param <= 1.0
    if algo == ALGO_ICEBERG:
        return 0.0 < param < np.inf
    return False


@njit(cache=True, _nrt=False)
def free_row(parents):
    for row in range(parents.shape[0]):
        if parents[row]["state"] == FREE:
            return row
    return -1


@njit(cache=True, _nrt=False)
def start(parents, intents, ints, row, intent, key, algo, horizon_ns, param, max_child, route, arrival_mid, now_ns):
    intents[row] = intent
    p = parents[row]
    p["state"], p["intent_id"], p["algo"], p["route"], p["key"] = WORKING, intent["intent_id"], algo, route, key
    p["side"], p["start_ts"], p["horizon_ns"] = intent["side"], now_ns, np.int64(horizon_ns)
    # TWAP ends after its last slice; the others at their deadline, if they have one
    p["end_ts"] = now_ns + np.int64(horizon_ns) if algo != ALGO_TWAP and horizon_ns > 0.0 else 0
    p["next_ts"], p["last_child_ts"] = now_ns, NEVER
    p["slices"] = np.int64(round(param)) if algo == ALGO_TWAP else 0
    p["slices_sent"], p["children"], p["child_slot"], p["rejects"], p["n_children"], p["fresh"] = 0, 0, -1, 0, 0, 0
    p["price"], p["qty"], p["filled"], p["working"], p["notional"] = intent["price"], intent["qty"], 0.0, 0.0, 0.0
    p["param"], p["max_child"], p["volume"], p["arrival_mid"] = param, max_child, 0.0, arrival_mid
    ints[RI_ACTIVE] += 1
    ints[RI_STARTED] += 1


@njit(cache=True, _nrt=False)
def remaining(p):
    """Neither filled nor working."""
    return p["qty"] - p["filled"] - p["working"]


@njit(cache=True, _nrt=False)
def due(p, rparams, now_ns, min_gap_ns):
    """The quantity of the child the parent sends now (0: none). A TWAP slice counts as sent once asked for."""
    if p["state"] != WORKING or now_ns - p["last_child_ts"] < min_gap_ns:
        return 0.0
    left = remaining(p)
    if left <= 1e-9 * p["qty"]:
        return 0.0
    algo = p["algo"]
    if algo == ALGO_TWAP:
        if p["slices_sent"] >= p["slices"] or now_ns < p["next_ts"]:
            return 0.0
        q = left / (p["slices"] - p["slices_sent"])
        p["slices_sent"] += 1
        p["next_ts"] = p["start_ts"] + p["horizon_ns"] * p["slices_sent"] // p["slices"]
        return q
    if algo == ALGO_POV:
        if p["fresh"] == 0:
            return 0.0
        p["fresh"] = 0
        q = min(p["param"] * p["volume"], p["qty"]) - p["filled"] - p["working"]
        if p["max_child"] > 0.0:
            q = min(q, p["max_child"])
        q = min(q, left)
        if q <= 0.0 or (q < left and q * p["price"] < rparams[RP_MIN_CHILD_USD]):
            return 0.0
        return q
    if p["children"] > 0:  # iceberg: the next one shows once the last has gone
        return 0.0
    return min(p["param"], left)


@njit(cache=True, _nrt=False)
def settle(p, now_ns):
    """Stop a working parent that is filled, past its deadline or last slice, or refused too often. True when it
    stopped now (execute cancels an iceberg's resting child)."""
    if p["state"] != WORKING:
        return False
    done = p["filled"] >= p["qty"] * (1.0 - 1e-9)
    if p["algo"] == ALGO_TWAP:
        over = p["slices_sent"] >= p["slices"]
    else:
        over = p["end_ts"] > 0 and now_ns >= p["end_ts"]
    if done or over or p["rejects"] >= MAX_REJECTS:
        p["state"] = DRAINING
        return True
    return False


@njit(cache=True, _nrt=False)
def release(p, ints):
    """A stopped parent whose children have all ended leaves the table."""
    if p["state"] == DRAINING and p["children"] <= 0:
        p["state"] = FREE
        ints[RI_ACTIVE] -= 1
        ints[RI_DONE] += 1


@njit(cache=True, _nrt=False)
def end_all(parents, ints):
    """A cancel-all or a kill: no parent sends another child."""
    if ints[RI_ACTIVE] == 0:
        return
    for row in range(parents.shape[0]):
        if parents[row]["state"] == WORKING:
            parents[row]["state"] = DRAINING


@njit(cache=True, _nrt=False)
def on_trade(parents, ints, ev):
    """A trade event: the volume POV parents of its symbol participate in."""
    for row in range(parents.shape[0]):
        p = parents[row]
        if (p["state"] == WORKING and p["algo"] == ALGO_POV and key_symbol(p["key"]) == ev["symbol"]
                and (p["route"] != 0 or key_venue(p["key"]) == ev["venue"])):
            p["volume"] += ev["size"]
            p["fresh"] = 1


@njit(cache=True, _nrt=False)
def child_sent(p, slot, qty, now_ns):
    p["children"] += 1
    p["n_children"] += 1
    p["working"] += qty
    p["last_child_ts"] = now_ns
    p["child_slot"] = slot
    p["rejects"] = 0


@njit(cache=True, _nrt=False)
def child_refused(p, now_ns):
    """The gate refused a child: counted toward MAX_REJECTS; the next one waits the pacing gap too."""
    p["rejects"] += 1
    p["last_child_ts"] = now_ns


@njit(cache=True, _nrt=False)
def child_filled(p, slot, qty, price, done):
    p["filled"] += qty
    p["notional"] += qty * price
    p["working"] -= qty
    if done:
        _ended(p, slot)


@njit(cache=True, _nrt=False)
def child_ended(p, slot, leaves, rejected):
    """A child ended unfilled (``leaves`` of it): cancelled, an IOC's rest, or rejected by the venue."""
    p["working"] -= leaves
    if rejected:
        p["rejects"] += 1
    _ended(p, slot)


@njit(cache=True, _nrt=False)
def _ended(p, slot):
    p["children"] -= 1
    if p["child_slot"] == slot:
        p["child_slot"] = -1
    if p["children"] <= 0:
        p["working"] = 0.0  # no rounding left over from many fills
