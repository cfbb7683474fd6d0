"""Client order ids: what the venue knows our orders by, derived from execute's order id and the run's name.

Execute numbers a live run's orders from the wall clock in microseconds at the stage's start (one per order
after that), and the gate's rate limit keeps a run far below one order per microsecond, so an id is never
reused by a restarted stage or a later run of the same name. The run's name rides along so orders of other runs
(or placed by hand) on the same account are never taken for ours. The id is the key of every idempotent query:
after a timeout the gateway asks the venue for the order by it instead of sending the order again.

Binance accepts ``^[.A-Z:/a-z0-9_-]{1,36}$``: "b4" + up to 12 characters of the run name + "-" + the decimal id
(at most 19 digits) fits, barely; the run name's characters outside that set are dropped.
"""
from __future__ import annotations

import re

MAX_LENGTH = 36
_ALLOWED = re.compile(r"[^A-Za-z0-9_]")
RUN_CHARS = 12


def prefix(run: str) -> str:
    """The client order id prefix of ``run``'s orders."""
    return "b4" + _ALLOWED.sub("", run)[:RUN_CHARS] + "-"


def client_order_id(run_prefix: str, order_id: int) -> str:
    cid = f"{run_prefix}{int(order_id)}"
    if len(cid) > MAX_LENGTH or order_id <= 0:
        raise ValueError(f"order id {order_id} does not make a client order id of at most {MAX_LENGTH} characters")
    return cid


def order_id(run_prefix: str, cid: str | None) -> int | None:
    """Execute's order id of a client order id of this run, else None (another run's or a hand-placed order)."""
    if not cid or not cid.startswith(run_prefix):
        return None
    digits = cid[len(run_prefix):]
    return int(digits) if digits.isdigit() else None
