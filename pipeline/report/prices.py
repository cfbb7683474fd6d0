"""Event time and the prices a report marks with, per instrument (venue, symbol).

Event time is the running maximum of the market events' ``origin_ts`` (local receive time), so an event
stamped out of order never moves the clock back. Only events validation accepted are used: a record with
``reason != 0``, or whose ``origin_seq`` the quarantine stream lists, sets no price. Non-finite and
non-positive prices are skipped. The *mid* of an instrument is (bid_px[0] + ask_px[0]) / 2 of its EV_BOOK
and EV_BBO events; an instrument with neither but with L2 deltas (EV_BOOK_DELTA) gets the mid of a book
built with stages.book while that book is synced. The *mark* is the EV_MARK price where the instrument
has one, else its mid. A price holds from its event until the next one of the instrument.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from stages import book, records
from stages.universe import MAX_SYMBOLS, MAX_VENUES, instrument_key


@dataclass(frozen=True)
class Series:
    """A step function of event time: ``values[i]`` holds from ``ts[i]`` (sorted) to the next."""
    ts: np.ndarray
    values: np.ndarray

    def at(self, when: np.ndarray) -> np.ndarray:
        """The value at each time of ``when`` (NaN before the first)."""
        idx = np.searchsorted(self.ts, when, side="right") - 1
        out = np.full(np.shape(when), np.nan)
        ok = idx >= 0
        out[ok] = self.values[idx[ok]]
        return out

    def __len__(self) -> int:
        return len(self.ts)


def event_times(market: np.ndarray) -> np.ndarray:
    if not len(market):
        return np.zeros(0, np.int64)
    return np.maximum.accumulate(market["origin_ts"].astype(np.int64))


def accepted(market: np.ndarray, quarantine: np.ndarray) -> np.ndarray:
    """Mask of the events validation accepted."""
    ok = market["reason"] == 0
    if len(quarantine):
        ok &= ~np.isin(market["origin_seq"], quarantine["origin_seq"])
    return ok


def instrument_ids(venue, symbol):
    """One id per (venue, symbol) that never collides (instrument_key only covers the configured universe)."""
    return np.asarray(venue, np.int64) * 65536 + np.asarray(symbol, np.int64)


def instrument_name(iid: int, universe: dict | None) -> str:
    venue, symbol = divmod(int(iid), 65536)
    venues, symbols = (universe or {}).get("venues") or [], (universe or {}).get("symbols") or []
    v = venues[venue] if venue < len(venues) else f"venue{venue}"
    s = symbols[symbol] if symbol < len(symbols) else f"symbol{symbol}"
    return f"{v}/{s}"


def instrument_key_of(iid: int) -> int | None:
    venue, symbol = divmod(int(iid), 65536)
    return instrument_key(venue, symbol) if venue < MAX_VENUES and symbol < MAX_SYMBOLS else None


@njit(cache=True)
def _delta_mids(events, use, books, out):
    """Fold the used deltas into ``books``; out[i] is the instrument's mid after event i (NaN while its book
    is unsynced or a side is empty). Single owner of ``books``."""
    for i in range(events.shape[0]):
        out[i] = np.nan
        if not use[i]:
            continue
        ev = events[i]
        book.apply(books, ev)
        key = book.key_of(ev["venue"], ev["symbol"], books.state.shape[0])
        if key < 0 or not book.is_synced(books, key):
            continue
        bid, _, ask, _ = book.best(books, key)
        if bid > 0.0 and ask > 0.0 and np.isfinite(bid) and np.isfinite(ask):
            out[i] = 0.5 * (bid + ask)


@dataclass(frozen=True)
class Prices:
    times: np.ndarray          # event time of every market event (running max of origin_ts)
    valid: np.ndarray          # validation accepted it
    ids: np.ndarray            # instrument id of every market event
    mids: dict                 # instrument id -> Series of mids
    marks: dict                # instrument id -> Series of marks
    mark_source: dict          # instrument id -> "mark" | "book" | "bbo" | "book_delta" | "none"


def _series(ts, values) -> Series:
    ok = np.isfinite(values) & (values > 0)
    return Series(ts[ok], values[ok])


def build(market: np.ndarray, quarantine: np.ndarray) -> Prices:
    times = event_times(market)
    valid = accepted(market, quarantine) if len(market) else np.zeros(0, bool)
    ids = instrument_ids(market["venue"], market["symbol"]) if len(market) else np.zeros(0, np.int64)
    kind = market["kind"] if len(market) else np.zeros(0, np.uint8)
    view = valid & ((kind == records.EV_BOOK) | (kind == records.EV_BBO))
    with np.errstate(invalid="ignore"):
        view_mid = np.where(view, 0.5 * (market["bid_px"][:, 0] + market["ask_px"][:, 0]), np.nan) \
            if len(market) else np.zeros(0)
        bad_side = ~((market["bid_px"][:, 0] > 0) & (market["ask_px"][:, 0] > 0)) if len(market) else view
    view_mid[bad_side] = np.nan
    delta_ids = set(np.unique(ids[valid & (kind == records.EV_BOOK_DELTA)]).tolist()) \
        - set(np.unique(ids[view]).tolist())
    delta_mid = np.full(len(market), np.nan)
    if delta_ids:
        use = valid & (kind == records.EV_BOOK_DELTA) & np.isin(ids, list(delta_ids))
        events = np.ascontiguousarray(market)
        if not events.flags.writeable:
            events = events.copy()
        _delta_mids(events, use, book.make_books(), delta_mid)
    mids, marks, source = {}, {}, {}
    for iid in np.unique(ids).tolist():
        mine = ids == iid
        if iid in delta_ids:
            mid, how = _series(times[mine], delta_mid[mine]), "book_delta"
        else:
            mid = _series(times[mine & view], view_mid[mine & view])
            how = "book" if np.any(kind[mine & view] == records.EV_BOOK) else "bbo"
        mids[iid] = mid
        mark_rows = mine & valid & (kind == records.EV_MARK)
        mark = _series(times[mark_rows], market["price"][mark_rows].astype(np.float64))
        if len(mark):
            marks[iid], source[iid] = mark, "mark"
        else:
            marks[iid], source[iid] = mid, (how if len(mid) else "none")
    return Prices(times, valid, ids, mids, marks, source)
