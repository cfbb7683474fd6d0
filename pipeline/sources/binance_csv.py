"""Binance public-data CSV (data.binance.vision and its predecessors).

These files carry only the venue's time, so ``origin_ts`` = ``exch_ts`` = the file's timestamp: a
replay of them is in exchange time, with no receive latency to measure.

- Order-book files (``symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty,pu``,
  ms): one EV_BOOK_DELTA per row, side b +1 / a -1; ``update_type`` snap -> F_SNAPSHOT, set -> a diff;
  ``first_seq`` = first_update_id, ``venue_seq`` = last_update_id, ``prev_seq`` = pu (-1 in snapshots
  -> 0). A message is a run of consecutive rows with the same symbol, timestamp, update ids and
  update type; F_LAST on its last row. F_UNSYNCED per :mod:`pipeline.sources.sync`.
- ``trades`` (spot, headerless: id, price, qty, quoteQty, time, isBuyerMaker, isBestMatch; USDⓈ-M/COIN-M:
  ``id,price,qty,quote_qty,time,is_buyer_maker`` with or without the header): EV_TRADE, side -1 when
  the buyer is the maker, ``venue_seq`` = trade id.
- ``aggTrades`` (spot, headerless: agg id, price, qty, first id, last id, time, isBuyerMaker,
  isBestMatch; futures: ``agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,
  is_buyer_maker``): EV_TRADE with ``first_seq`` = first trade id and ``venue_seq`` = last trade id,
  so trades and aggTrades share one sequence (the aggregate id itself is not kept).

Trade times are ms, except spot files from 2025 on, which are µs: told apart per value (a time below
1e14 is ms). The symbol is the ``symbol`` argument or, by default, the file name's first dash-separated
part (``BTCUSDT-trades-2024-08-01.zip``); the venue is always the caller's.
"""
from __future__ import annotations

import os

import numpy as np

from pipeline.sources.csvread import (FLOAT, INT, SKIP, TEXT, categorical_map, message_ends, read_table,
                                      resolve_instruments, split_header)
from pipeline.sources.inputs import ParseResult, Tally, empty_records, read_input
from pipeline.sources.pyvalues import INT64_MAX, MS_MAX
from pipeline.sources.symbols import SymbolTable, require_venue
from pipeline.sources.sync import mark_unsynced
from stages.records import BUY, EV_BOOK_DELTA, EV_TRADE, F_LAST, F_SNAPSHOT, SELL

DEPTH_HEADER = ["symbol", "timestamp", "first_update_id", "last_update_id", "side", "update_type", "price", "qty", "pu"]
US_THRESHOLD = 10**14  # a trade time at or above this is µs (2025+ spot files), below it ms
_DEPTH_SPEC = [("symbol", TEXT), ("timestamp", INT), ("first_update_id", INT), ("last_update_id", INT),
               ("side", TEXT), ("update_type", TEXT), ("price", FLOAT), ("qty", FLOAT), ("pu", INT)]
_BOOL = {"true": True, "false": False}

# roles of trade columns, by header name
_ROLE = {"id": "id", "agg_trade_id": "id", "trade_id": "id", "price": "price", "qty": "qty", "quantity": "qty",
         "first_trade_id": "first", "last_trade_id": "last", "time": "time", "transact_time": "time",
         "timestamp": "time", "is_buyer_maker": "maker"}
_HEADERLESS = {  # (kind, field count) -> roles in file order
    ("trades", 7): ["id", "price", "qty", None, "time", "maker", None],
    ("trades", 6): ["id", "price", "qty", None, "time", "maker"],
    ("aggTrades", 8): ["id", "price", "qty", "first", "last", "time", "maker", None],
    ("aggTrades", 7): ["id", "price", "qty", "first", "last", "time", "maker"],
}
_ROLE_KIND = {"id": INT, "price": FLOAT, "qty": FLOAT, "first": INT, "last": INT, "time": INT, "maker": TEXT}


def _symbol_from_name(label: str) -> str:
    return os.path.basename(label).split("-")[0]


def _count(tally: Tally, line: np.ndarray, mask: np.ndarray, reason: str) -> None:
    idx = np.flatnonzero(mask)
    for i in idx[:20].tolist():
        tally.bad_line(int(line[i]), reason, "")
    if len(idx) > 20:
        tally.bad[reason] = tally.bad.get(reason, 0) + len(idx) - 20


def _bad_header(tally: Tally, label: str, fmt: str, data: bytes, body: bytes) -> ParseResult:
    n = sum(1 for ln in body.split(b"\n") if ln.strip())
    tally.bad_line(1, "bad_header", data[:200], count=max(n, 1))
    return tally.result(label, fmt, empty_records(), n)


def parse_binance_depth(source, table: SymbolTable, venue: str, symbol: str | None = None) -> ParseResult:
    """Decode a Binance order-book snapshot or update CSV (path or bytes; plain, gzip or zip)."""
    require_venue(venue)
    fmt = "binance-depth-csv"
    tally = Tally()
    data, label = read_input(source, tally)
    header, body = split_header(data)
    if header != DEPTH_HEADER:
        return _bad_header(tally, label, fmt, data, body)
    t = read_table(body, _DEPTH_SPEC, tally, first_line=2)
    c = t.columns
    ok = np.ones(len(t), np.bool_)
    vid, sid, inst_ok = resolve_instruments(table, venue, symbol if symbol is not None else c["symbol"], t.line, label)
    _count(tally, t.line, ~inst_ok, "bad_symbol")
    ok &= inst_ok
    side, side_ok = categorical_map(c["side"], {"b": BUY, "a": SELL, "bid": BUY, "ask": SELL})
    _count(tally, t.line, ~side_ok & ok, "bad_side")
    ok &= side_ok
    snap, type_ok = categorical_map(c["update_type"], {"snap": 1, "set": 0})
    _count(tally, t.line, ~type_ok & ok, "bad_flag")
    ok &= type_ok
    ms = c["timestamp"]
    ts_ok = (ms >= -MS_MAX) & (ms <= MS_MAX)
    _count(tally, t.line, ~ts_ok & ok, "bad_number")
    ok &= ts_ok
    rows = np.flatnonzero(ok)
    out = empty_records(len(rows))
    ns = ms[rows] * 1_000_000
    out["origin_ts"] = ns
    out["exch_ts"] = ns
    out["venue"] = vid[rows]
    out["symbol"] = sid[rows]
    out["kind"] = EV_BOOK_DELTA
    out["side"] = side[rows]
    out["price"] = c["price"][rows]
    out["size"] = c["qty"][rows]
    out["first_seq"] = c["first_update_id"][rows]
    out["venue_seq"] = c["last_update_id"][rows]
    out["prev_seq"] = np.maximum(c["pu"][rows], 0)
    last = message_ends(vid[rows], sid[rows], ms[rows], c["first_update_id"][rows], c["last_update_id"][rows],
                        snap[rows])
    out["flags"] = np.where(snap[rows] != 0, F_SNAPSHOT, 0) | np.where(last, F_LAST, 0)
    mark_unsynced(out)
    return tally.result(label, fmt, out, t.n_rows)


def parse_binance_trades(source, table: SymbolTable, venue: str, symbol: str | None = None,
                         kind: str = "trades") -> ParseResult:
    """Decode a Binance ``trades`` or ``aggTrades`` CSV (path or bytes; plain, gzip or zip)."""
    if kind not in ("trades", "aggTrades"):
        raise ValueError(f"kind must be 'trades' or 'aggTrades', not {kind!r}")
    require_venue(venue)
    fmt = f"binance-{kind}-csv"
    tally = Tally()
    data, label = read_input(source, tally)
    if symbol is None:
        if label == "<bytes>":
            raise ValueError("parse_binance_trades: give symbol= when the input is bytes (no file name to take it from)")
        symbol = _symbol_from_name(label)
    first_line = data[:data.find(b"\n") if b"\n" in data else len(data)].strip()
    headerless = first_line[:1].isdigit()
    if headerless:
        body, line0 = data, 1
        roles = _HEADERLESS.get((kind, first_line.count(b",") + 1))
    else:
        header, body = split_header(data)
        line0 = 2
        roles = [_ROLE.get(h.lower()) for h in header]
    needed = {"id", "price", "qty", "time", "maker"} | ({"first", "last"} if kind == "aggTrades" else set())
    if roles is None or not needed <= set(roles) or len([r for r in roles if r]) != len({r for r in roles if r}):
        return _bad_header(tally, label, fmt, data, body)
    spec = [(r or f"_skip{i}", _ROLE_KIND[r] if r else SKIP) for i, r in enumerate(roles)]
    t = read_table(body, spec, tally, first_line=line0)
    c = t.columns
    ok = np.ones(len(t), np.bool_)
    vid, sid, inst_ok = resolve_instruments(table, venue, symbol, t.line, label)
    _count(tally, t.line, ~inst_ok, "bad_symbol")
    ok &= inst_ok
    maker, maker_ok = categorical_map(c["maker"], _BOOL)
    _count(tally, t.line, ~maker_ok & ok, "bad_flag")
    ok &= maker_ok
    tm = c["time"]
    us = tm >= US_THRESHOLD
    ts_ok = np.where(us, tm <= INT64_MAX // 1000, tm >= -MS_MAX)
    _count(tally, t.line, ~ts_ok & ok, "bad_number")
    ok &= ts_ok
    rows = np.flatnonzero(ok)
    out = empty_records(len(rows))
    tm_r = tm[rows]
    ns = np.where(us[rows], tm_r * 1000, tm_r * 1_000_000)
    out["origin_ts"] = ns
    out["exch_ts"] = ns
    out["venue"] = vid[rows]
    out["symbol"] = sid[rows]
    out["kind"] = EV_TRADE
    out["side"] = np.where(maker[rows].astype(np.bool_), SELL, BUY)
    out["price"] = c["price"][rows]
    out["size"] = c["qty"][rows]
    if kind == "aggTrades":
        out["first_seq"] = c["first"][rows]
        out["venue_seq"] = c["last"][rows]
    else:
        out["venue_seq"] = c["id"][rows]
    out["flags"] = F_LAST
    return tally.result(label, fmt, out, t.n_rows)
