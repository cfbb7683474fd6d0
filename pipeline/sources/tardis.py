"""Tardis.dev downloadable CSV (https://docs.tardis.dev/downloadable-csv-files): µs timestamps;
``origin_ts`` = ``local_timestamp`` (Tardis's receive time), ``exch_ts`` = ``timestamp``.

- ``incremental_book_L2``: one EV_BOOK_DELTA per row (bid +1 / ask -1, amount 0 removes the level);
  ``is_snapshot`` true -> F_SNAPSHOT. A message is a run of consecutive rows with the same exchange,
  symbol, timestamps and is_snapshot; F_LAST on its last row. Tardis gives no sequence numbers
  (``venue_seq`` = ``first_seq`` = ``prev_seq`` = 0), so F_UNSYNCED only marks deltas before the first
  snapshot (see :mod:`pipeline.sources.sync`).
- ``book_snapshot_N`` (a top-N book per row): by default an F_SNAPSHOT run of EV_BOOK_DELTA records per
  row, bids then asks, best first, F_LAST on the last, so every level survives (N is often 25) and book
  builders treat it like any other snapshot; empty level columns (a thin book) are skipped.
  ``book_as="book"`` gives one EV_BOOK per row instead (top BOOK_LEVELS levels, NaN where the file has
  no level), the shape the feature stage reads directly.
- ``trades``: EV_TRADE, side = taker side (buy +1, sell -1, unknown 0); ``venue_seq`` = ``id`` when every
  id in the file is an integer (Binance), else 0 (BitMEX's UUIDs carry no order).
- ``quotes``: EV_BBO. An empty side is NaN (validate quarantines it).
- ``derivative_ticker``: EV_MARK (price = mark, aux = index or NaN) when the mark or index price
  changed since the instrument's previous row, then EV_FUNDING (price = funding rate, aux = funding
  timestamp in ns, or NaN) when the rate or its timestamp changed. Tardis writes a row whenever any
  ticker field changes (open interest, last price...), so emitting only changes drops duplicates,
  not information. The predicted rate, open interest and last price are not mapped.
- ``liquidations``: EV_LIQUIDATION, side = the liquidation order's side (buy +1: a short was
  liquidated; sell -1: a long was), price, amount; ``venue_seq`` as for trades.

The kind comes from the header; ``trades`` and ``liquidations`` share a header and are told apart by
``liquidation`` in the file name (or pass ``kind``). A header that does not fit the kind makes every
row bad (``bad_header``), never an exception.
"""
from __future__ import annotations

import os

import numpy as np

from pipeline.sources.csvread import (FLOAT, INT, OPTINT, SKIP, TEXT, categorical_map, message_ends, read_table,
                                      resolve_instruments, split_header)
from pipeline.sources.inputs import ParseResult, Tally, empty_records, read_input
from pipeline.sources.pyvalues import INT64_MAX
from pipeline.sources.symbols import SymbolTable
from pipeline.sources.sync import mark_unsynced
from stages.records import (BOOK_LEVELS, BUY, EV_BBO, EV_BOOK, EV_BOOK_DELTA, EV_FUNDING, EV_LIQUIDATION, EV_MARK,
                            EV_TRADE, F_LAST, F_SNAPSHOT, SELL)

KINDS = ("incremental_book_L2", "book_snapshot", "trades", "quotes", "derivative_ticker", "liquidations")
US_MAX = INT64_MAX // 1000
_COMMON = ["exchange", "symbol", "timestamp", "local_timestamp"]
_COLUMNS = {
    "incremental_book_L2": {"is_snapshot": TEXT, "side": TEXT, "price": FLOAT, "amount": FLOAT},
    "trades": {"id": OPTINT, "side": TEXT, "price": FLOAT, "amount": FLOAT},
    "liquidations": {"id": OPTINT, "side": TEXT, "price": FLOAT, "amount": FLOAT},
    "quotes": {"ask_amount": FLOAT, "ask_price": FLOAT, "bid_price": FLOAT, "bid_amount": FLOAT},
    "derivative_ticker": {"funding_timestamp": FLOAT, "funding_rate": FLOAT, "index_price": FLOAT,
                          "mark_price": FLOAT},
}
_OPTIONAL = {"id"}  # Tardis liquidations for some exchanges have no id column


def detect_kind(header: list, name: str = "") -> str | None:
    cols = set(header)
    if not set(_COMMON) <= cols:
        return None
    if "is_snapshot" in cols:
        return "incremental_book_L2"
    if "asks[0].price" in cols or "bids[0].price" in cols:
        return "book_snapshot"
    if "funding_rate" in cols or "mark_price" in cols:
        return "derivative_ticker"
    if "bid_price" in cols and "ask_price" in cols:
        return "quotes"
    if {"side", "price", "amount"} <= cols:
        return "liquidations" if "liquidation" in os.path.basename(name).lower() else "trades"
    return None


def _spec(header: list, kind: str) -> list | None:
    if kind == "book_snapshot":
        wanted = {h: FLOAT for h in header if h.startswith(("asks[", "bids[")) and h.endswith((".price", ".amount"))}
        if "asks[0].price" not in wanted and "bids[0].price" not in wanted:
            return None
    else:
        wanted = dict(_COLUMNS[kind])
    wanted.update({"exchange": TEXT, "symbol": TEXT, "timestamp": INT, "local_timestamp": INT})
    missing = set(wanted) - set(header) - _OPTIONAL
    if kind == "derivative_ticker":
        missing -= {"funding_timestamp", "funding_rate", "index_price", "mark_price"}
    if missing or len(set(header)) != len(header):
        return None
    return [(h, wanted.get(h, SKIP)) for h in header]


def parse_tardis(source, table: SymbolTable, kind: str | None = None, venue: str | None = None,
                 book_as: str = "deltas") -> ParseResult:
    """Decode a Tardis CSV file (path or bytes; plain, gzip or zip). ``venue`` overrides the file's
    ``exchange`` column (e.g. to map ``binance-futures`` onto a configured name without an alias)."""
    if book_as not in ("deltas", "book"):
        raise ValueError(f"book_as must be 'deltas' or 'book', not {book_as!r}")
    if kind is not None and kind.startswith("book_snapshot"):
        kind = "book_snapshot"
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown Tardis kind {kind!r}; one of {KINDS}")
    tally = Tally()
    data, label = read_input(source, tally)
    header, body = split_header(data)
    kind = kind or detect_kind(header, label)
    spec = _spec(header, kind) if kind else None
    fmt = f"tardis-{kind or 'unknown'}"
    if spec is None:
        n = sum(1 for ln in body.split(b"\n") if ln.strip())
        tally.bad_line(1, "bad_header", data[:200], count=max(n, 1))
        return tally.result(label, fmt, empty_records(), n)
    t = read_table(body, spec, tally, first_line=2)
    cols = t.columns
    ok = np.ones(len(t), np.bool_)
    vid, sid, inst_ok = resolve_instruments(table, venue if venue is not None else cols["exchange"],
                                            cols["symbol"], t.line, label)
    _count(tally, t, ~inst_ok & ok, "bad_symbol")
    ok &= inst_ok
    ts, ts_ok = _us_to_ns(cols["timestamp"])
    local, local_ok = _us_to_ns(cols["local_timestamp"])
    _count(tally, t, ~(ts_ok & local_ok) & ok, "bad_number")
    ok &= ts_ok & local_ok
    base = dict(origin_ts=local, exch_ts=ts, venue=vid, symbol=sid)

    if kind == "incremental_book_L2":
        side, side_ok = categorical_map(cols["side"], {"bid": BUY, "ask": SELL})
        snap, snap_ok = categorical_map(cols["is_snapshot"], {"true": 1, "false": 0})
        _count(tally, t, ~side_ok & ok, "bad_side")
        ok &= side_ok
        _count(tally, t, ~snap_ok & ok, "bad_flag")
        ok &= snap_ok
        rows = np.flatnonzero(ok)
        out = _rows(rows, base, kind=EV_BOOK_DELTA, side=side, price=cols["price"], size=cols["amount"])
        last = message_ends(vid[rows], sid[rows], ts[rows], local[rows], snap[rows])
        out["flags"] = np.where(snap[rows] != 0, F_SNAPSHOT, 0) | np.where(last, F_LAST, 0)
    elif kind in ("trades", "liquidations"):
        sides = {"buy": BUY, "sell": SELL} if kind == "liquidations" else {"buy": BUY, "sell": SELL, "unknown": 0, "": 0}
        side, side_ok = categorical_map(cols["side"], sides)
        _count(tally, t, ~side_ok & ok, "bad_side")
        ok &= side_ok
        rows = np.flatnonzero(ok)
        ids = cols.get("id", np.zeros(len(t), np.int64))
        out = _rows(rows, base, kind=EV_TRADE if kind == "trades" else EV_LIQUIDATION, side=side,
                    price=cols["price"], size=cols["amount"], venue_seq=ids)
        out["flags"] = F_LAST
    elif kind == "quotes":
        rows = np.flatnonzero(ok)
        out = _rows(rows, base, kind=EV_BBO)
        out["bid_px"][:, 0] = cols["bid_price"][rows]
        out["bid_sz"][:, 0] = cols["bid_amount"][rows]
        out["ask_px"][:, 0] = cols["ask_price"][rows]
        out["ask_sz"][:, 0] = cols["ask_amount"][rows]
        out["flags"] = F_LAST
    elif kind == "derivative_ticker":
        f_us = cols.get("funding_timestamp")
        if f_us is not None:
            f_bad = ~np.isnan(f_us) & ~(np.abs(f_us) <= US_MAX)
            _count(tally, t, f_bad & ok, "bad_number")
            ok &= ~f_bad
        out = _ticker(np.flatnonzero(ok), base, cols, len(t))
    else:
        rows = np.flatnonzero(ok)
        out = _book_deltas(rows, base, cols, header) if book_as == "deltas" else _book_top(rows, base, cols)
    mark_unsynced(out)
    if kind == "book_snapshot":
        fmt = f"tardis-book_snapshot_{_depth(header)}"
    return tally.result(label, fmt, out, t.n_rows)


def _count(tally: Tally, t, mask: np.ndarray, reason: str) -> None:
    idx = np.flatnonzero(mask)
    if len(idx):
        for i in idx[:20].tolist():
            tally.bad_line(int(t.line[i]), reason, "")
        if len(idx) > 20:
            tally.bad[reason] = tally.bad.get(reason, 0) + len(idx) - 20


def _us_to_ns(us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = (us >= -US_MAX) & (us <= US_MAX)
    return np.where(ok, us, 0) * 1000, ok


def _rows(rows: np.ndarray, base: dict, kind: int, side=None, price=None, size=None, venue_seq=None) -> np.ndarray:
    out = empty_records(len(rows))
    for name, col in base.items():
        out[name] = col[rows]
    out["kind"] = kind
    if side is not None:
        out["side"] = side[rows]
    if price is not None:
        out["price"] = price[rows]
    if size is not None:
        out["size"] = size[rows]
    if venue_seq is not None:
        out["venue_seq"] = venue_seq[rows]
    return out


def _depth(header: list) -> int:
    return sum(1 for h in header if h.startswith("bids[") and h.endswith(".price")) or \
        sum(1 for h in header if h.startswith("asks[") and h.endswith(".price"))


def _levels(cols: dict, side: str, n: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    px = np.full((len(rows), n), np.nan)
    sz = np.full((len(rows), n), np.nan)
    for j in range(n):
        p, a = cols.get(f"{side}[{j}].price"), cols.get(f"{side}[{j}].amount")
        if p is not None:
            px[:, j] = p[rows]
        if a is not None:
            sz[:, j] = a[rows]
    return px, sz


def _book_deltas(rows: np.ndarray, base: dict, cols: dict, header: list) -> np.ndarray:
    n = _depth(header)
    bpx, bsz = _levels(cols, "bids", n, rows)
    apx, asz = _levels(cols, "asks", n, rows)
    px = np.concatenate([bpx, apx], axis=1)
    sz = np.concatenate([bsz, asz], axis=1)
    valid = ~np.isnan(px)
    r, c = np.nonzero(valid)  # row-major: each row's bids, best first, then its asks
    out = empty_records(len(r))
    for name, col in base.items():
        out[name] = col[rows[r]]
    out["kind"] = EV_BOOK_DELTA
    out["side"] = np.where(c < n, BUY, SELL)
    out["price"] = px[r, c]
    out["size"] = sz[r, c]
    last = np.ones(len(r), np.bool_)
    last[:-1] = r[1:] != r[:-1]
    out["flags"] = F_SNAPSHOT | np.where(last, F_LAST, 0)
    return out


def _book_top(rows: np.ndarray, base: dict, cols: dict) -> np.ndarray:
    out = _rows(rows, base, kind=EV_BOOK)
    for side, px_name, sz_name in (("bids", "bid_px", "bid_sz"), ("asks", "ask_px", "ask_sz")):
        px, sz = _levels(cols, side, BOOK_LEVELS, rows)
        out[px_name] = px
        out[sz_name] = sz
    out["flags"] = F_SNAPSHOT | F_LAST
    return out


def _changed(key: np.ndarray, *values: np.ndarray) -> np.ndarray:
    """True where any value differs from the same key's previous row (NaN equals NaN); first rows True."""
    order = np.argsort(key, kind="stable")
    k = key[order]
    new_key = np.ones(len(k), np.bool_)
    new_key[1:] = k[1:] != k[:-1]
    diff = new_key.copy()
    for v in values:
        s = v[order]
        d = np.ones(len(s), np.bool_)
        d[1:] = ~((s[1:] == s[:-1]) | (np.isnan(s[1:]) & np.isnan(s[:-1])))
        diff |= d
    out = np.empty(len(key), np.bool_)
    out[order] = diff
    return out


def _ticker(rows: np.ndarray, base: dict, cols: dict, n: int) -> np.ndarray:
    nan = np.full(n, np.nan)
    mark = cols.get("mark_price", nan)[rows]
    index = cols.get("index_price", nan)[rows]
    rate = cols.get("funding_rate", nan)[rows]
    f_us = cols.get("funding_timestamp", nan)[rows]
    key = base["venue"][rows].astype(np.int64) << 16 | base["symbol"][rows].astype(np.int64)
    want_mark = ~np.isnan(mark) & _changed(key, mark, index)
    want_funding = ~np.isnan(rate) & _changed(key, rate, f_us)
    f_ns = np.where(np.isnan(f_us), np.nan, np.where(np.isnan(f_us), 0, f_us).astype(np.int64) * 1000.0)
    sel_m = np.flatnonzero(want_mark)
    sel_f = np.flatnonzero(want_funding)
    order = np.argsort(np.concatenate([sel_m * 2, sel_f * 2 + 1]), kind="stable")
    pos = np.concatenate([sel_m, sel_f])[order]
    is_mark = np.concatenate([np.ones(len(sel_m), np.bool_), np.zeros(len(sel_f), np.bool_)])[order]
    out = empty_records(len(pos))
    for name, col in base.items():
        out[name] = col[rows[pos]]
    out["kind"] = np.where(is_mark, EV_MARK, EV_FUNDING)
    out["price"] = np.where(is_mark, mark[pos], rate[pos])
    out["aux"] = np.where(is_mark, index[pos], f_ns[pos])
    last = np.ones(len(pos), np.bool_)
    last[:-1] = pos[1:] != pos[:-1]
    out["flags"] = np.where(last, F_LAST, 0)
    return out
