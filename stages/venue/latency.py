"""Order latency: how long an order or a cancel takes to reach the venue, and the venue's answer to come back.

Constant (entry, response), or interpolated from measured rows ``(request, venue, response)`` — local send time,
venue time, local receive time of the answer, ns — the way hftbacktest's IntpOrderLatency does: the entry latency
``venue - request`` and the response latency ``response - venue`` are interpolated linearly in request time between
the two rows around the send time (held flat before the first row and after the last). A row whose venue time is
not positive is an order the venue never took: an order sent where either neighbouring row says so is rejected,
and the rejection is seen ``response - request`` after the send.
"""
import numpy as np
from numba import njit

T_REQUEST, T_VENUE, T_RESPONSE = range(3)   # columns of a latency table (int64 ns)


def empty_table() -> np.ndarray:
    return np.zeros((0, 3), np.int64)


def check_table(table: np.ndarray, source: str) -> np.ndarray:
    """A latency table as int64[n, 3], request times strictly increasing, every response after its request;
    ValueError naming ``source`` and the row otherwise."""
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[1] != 3 or len(table) == 0:
        raise ValueError(f"{source}: want rows of (request_ns, venue_ns, response_ns), got shape {table.shape}")
    if not np.all(np.isfinite(table.astype(np.float64))):
        raise ValueError(f"{source}: a latency row is not a finite number")
    table = table.astype(np.int64)
    bad = np.nonzero(np.diff(table[:, T_REQUEST]) <= 0)[0]
    if len(bad):
        raise ValueError(f"{source}: row {int(bad[0]) + 1}: request times must increase strictly")
    bad = np.nonzero(table[:, T_RESPONSE] < table[:, T_REQUEST])[0]
    if len(bad):
        raise ValueError(f"{source}: row {int(bad[0])}: the response comes before its request")
    taken = table[:, T_VENUE] > 0
    bad = np.nonzero(taken & ((table[:, T_VENUE] < table[:, T_REQUEST]) | (table[:, T_VENUE] > table[:, T_RESPONSE])))[0]
    if len(bad):
        raise ValueError(f"{source}: row {int(bad[0])}: the venue time is outside [request, response]; give a venue "
                         "time between them, or 0 or less for an order the venue rejected")
    return table


@njit(cache=True, _nrt=False)
def _around(table, t):
    """(row before, row after, weight of the row after) for request time ``t``."""
    n = table.shape[0]
    if t <= table[0, T_REQUEST]:
        return 0, 0, 0.0
    if t >= table[n - 1, T_REQUEST]:
        return n - 1, n - 1, 0.0
    a, b = 0, n - 1
    while b - a > 1:
        m = (a + b) >> 1
        if table[m, T_REQUEST] <= t:
            a = m
        else:
            b = m
    span = table[b, T_REQUEST] - table[a, T_REQUEST]
    return a, b, (t - table[a, T_REQUEST]) / span


@njit(cache=True, _nrt=False)
def order_latency(table, entry_ns, response_ns, send_ts):
    """(entry ns, response ns, rejected) of an order or cancel sent at local time ``send_ts``. With an empty table
    the constant latencies; a rejected order's response delay counts from the send."""
    if table.shape[0] == 0:
        return entry_ns, response_ns, False
    a, b, w = _around(table, send_ts)
    if table[a, T_VENUE] <= 0 or table[b, T_VENUE] <= 0:
        total = (1.0 - w) * (table[a, T_RESPONSE] - table[a, T_REQUEST]) + w * (table[b, T_RESPONSE] - table[b, T_REQUEST])
        return 0, int(total), True
    entry = (1.0 - w) * (table[a, T_VENUE] - table[a, T_REQUEST]) + w * (table[b, T_VENUE] - table[b, T_REQUEST])
    back = (1.0 - w) * (table[a, T_RESPONSE] - table[a, T_VENUE]) + w * (table[b, T_RESPONSE] - table[b, T_VENUE])
    return int(entry), int(back), False


@njit(cache=True, _nrt=False)
def response_latency(table, response_ns, local_ts):
    """The answer's delay for something the venue did by itself (a resting order's fill, a funding payment) at
    the venue time that corresponds to local time ``local_ts``."""
    if table.shape[0] == 0:
        return response_ns
    a, b, w = _around(table, local_ts)
    if table[a, T_VENUE] <= 0 or table[b, T_VENUE] <= 0:
        return response_ns if response_ns > 0 else 0
    return int((1.0 - w) * (table[a, T_RESPONSE] - table[a, T_VENUE]) + w * (table[b, T_RESPONSE] - table[b, T_VENUE]))
