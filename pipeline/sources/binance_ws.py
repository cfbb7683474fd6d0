"""Raw Binance websocket captures: ``<receive ns> <JSON>`` per line (as recorded by hftbacktest).

Mapping (``origin_ts`` = the capture's receive ns; ``exch_ts`` = the venue's ``T`` (transaction or trade
time) when the message has one, else its event time ``E``, else 0 = the venue sent no time, as for spot
bookTicker and the spot REST snapshot):

- ``depthUpdate`` (spot, USDⓈ-M, COIN-M): one EV_BOOK_DELTA per level, bids (+1) then asks (-1) in
  message order; ``first_seq`` = U, ``venue_seq`` = u, ``prev_seq`` = pu (futures) or 0; F_LAST on the
  message's last record. Size 0 removes the level. An update with no levels at all produces no record
  (counted as ignored ``empty_depth``).
- The REST depth snapshot line (``{"lastUpdateId": L, "bids": ..., "asks": ...}``) that the recorder
  wrote after subscribing: an F_SNAPSHOT run, bids then asks. The depth diffs received before it and not
  already inside it (u > L) are the buffer Binance's sync procedure applies after the snapshot; the
  parser folds them into the snapshot, as a live client would, so the run is the book as of the last
  folded diff: ``first_seq`` = L, ``venue_seq`` = that diff's u (= L when nothing was folded). The diffs
  themselves stay in the stream where they were received, unsynced. Folding is skipped (the snapshot
  is emitted as received) if the buffered diffs do not bridge L or are not contiguous. A snapshot
  without a ``symbol`` field (spot) belongs to the one instrument the file has shown so far; with none
  or several it is counted bad (``snapshot_symbol_unknown``).
- ``bookTicker``: EV_BBO (bid_px[0], bid_sz[0], ask_px[0], ask_sz[0]), ``venue_seq`` = u.
- ``trade``: EV_TRADE, side -1 if ``m`` (the buyer is the maker, so the seller took) else +1,
  ``venue_seq`` = trade id ``t``, ``exch_ts`` = ``T``. ``aggTrade``: the same, with ``first_seq`` = f and
  ``venue_seq`` = l (first and last trade id, so both share the trade-id sequence).
- ``markPriceUpdate``: EV_MARK (price = p, aux = index i), then EV_FUNDING (price = r, aux = next
  funding time T in ns) when the contract has a funding rate.
- ``forceOrder``: EV_LIQUIDATION, side of the forced order (BUY +1: a short was liquidated), price
  ``o.p``, size ``o.q``, ``exch_ts`` = ``o.T``.

F_UNSYNCED follows :mod:`pipeline.sources.sync`. Sizes stay in venue units (COIN-M: contracts).
Performance: one orjson parse and a few dict look-ups per line; number strings are converted in one
vectorised pass at the end, and only if that fails are messages checked one by one to find the bad ones.
"""
from __future__ import annotations

from itertools import chain

import numpy as np
import orjson

from pipeline.sources.inputs import ParseResult, Tally, empty_records, read_input
from pipeline.sources.pyvalues import float_column, int_rows, ms_to_ns
from pipeline.sources.symbols import SymbolTable, UnknownInstrumentError, require_venue
from pipeline.sources.sync import mark_unsynced
from stages.records import (BUY, EV_BBO, EV_BOOK_DELTA, EV_FUNDING, EV_LIQUIDATION, EV_MARK, EV_TRADE, F_LAST,
                            F_SNAPSHOT, SELL)

FORMAT = "binance-ws"
BUFFER_KEEP = 512  # depth messages remembered per instrument, to fold into a snapshot received later
_NO_TIME = 0

# Message shapes. Each decoded message is one row (line, key, recv ns, exch ms, venue_seq, first_seq,
# prev_seq, aux ms, shape, n1, n2): n1 records of the shape's first kind/side, then n2 of its second.
(_DEPTH, _SNAP, _BBO, _TRADE_BUY, _TRADE_SELL, _MARK, _LIQ_BUY, _LIQ_SELL) = range(8)
_KIND = np.zeros((8, 2), np.uint8)
_SIDE = np.zeros((8, 2), np.int8)
for _shape, (_k1, _s1, _k2, _s2) in {
        _DEPTH: (EV_BOOK_DELTA, BUY, EV_BOOK_DELTA, SELL), _SNAP: (EV_BOOK_DELTA, BUY, EV_BOOK_DELTA, SELL),
        _BBO: (EV_BBO, 0, 0, 0), _TRADE_BUY: (EV_TRADE, BUY, 0, 0), _TRADE_SELL: (EV_TRADE, SELL, 0, 0),
        _MARK: (EV_MARK, 0, EV_FUNDING, 0), _LIQ_BUY: (EV_LIQUIDATION, BUY, 0, 0),
        _LIQ_SELL: (EV_LIQUIDATION, SELL, 0, 0)}.items():
    _KIND[_shape] = (_k1, _k2)
    _SIDE[_shape] = (_s1, _s2)
_WIDTH = np.zeros(16, np.int64)  # number values per record, by kind
_WIDTH[[EV_BOOK_DELTA, EV_TRADE, EV_LIQUIDATION, EV_MARK]] = 2
_WIDTH[EV_BBO] = 4
_WIDTH[EV_FUNDING] = 1
_COLUMNS = 11
C_LINE, C_KEY, C_RECV, C_EXCH, C_SEQ, C_FIRST, C_PREV, C_AUX, C_SHAPE, C_N1, C_N2 = range(_COLUMNS)


class _Malformed(Exception):
    pass


def _exch_time(data: dict):
    t = data.get("T")
    if t is None:
        t = data.get("E", _NO_TIME)
    return t


def _fold(bids, asks, last_id, buffered, nums):
    """The snapshot's levels with the buffered diffs (u > last_id) applied, as Binance's sync procedure
    does; (bids, asks, last u) or None when the diffs do not bridge the snapshot contiguously."""
    if not buffered:
        return None
    if buffered[0][0] > last_id + 1:
        return None
    prev_u = None
    for big_u, u, pu, _, _, _ in buffered:
        if prev_u is not None and not (pu == prev_u if pu else big_u == prev_u + 1):
            return None
        prev_u = u
    book_b = {float(p): (p, q) for p, q in bids}
    book_a = {float(p): (p, q) for p, q in asks}
    for _, _, _, off, nb, na in buffered:
        flat = nums[off:off + 2 * (nb + na)]
        for i in range(0, 2 * (nb + na), 2):
            p, q = flat[i], flat[i + 1]
            book = book_b if i < 2 * nb else book_a
            if float(q) == 0.0:
                book.pop(float(p), None)
            else:
                book[float(p)] = (p, q)
    out_b = [book_b[k] for k in sorted(book_b, reverse=True)]
    out_a = [book_a[k] for k in sorted(book_a)]
    return out_b, out_a, prev_u


def parse_binance_ws(source, table: SymbolTable, venue: str) -> ParseResult:
    """Decode a websocket capture (path or bytes; plain, gzip or zip) of venue ``venue`` into records."""
    require_venue(venue)
    tally = Tally()
    data, label = read_input(source, tally)
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()

    rows: list = []          # one tuple per message, see _COLUMNS
    nums: list = []          # every price/size/rate string, in record order
    keys: list = []          # key index -> (venue id, symbol id)
    key_of: dict = {}        # symbol name -> key index
    depth_buf: dict = {}     # key index -> [(U, u, pu, nums offset, n bids, n asks)]
    loads = orjson.loads
    JSONDecodeError = orjson.JSONDecodeError
    chain_ = chain.from_iterable
    append = rows.append

    def key_for(symbol, line_no):
        k = key_of.get(symbol)
        if k is None:
            ids = table.lookup(venue, symbol, label, line_no)
            if ids is None:
                raise _Malformed("bad_symbol")
            k = len(keys)
            keys.append(ids)
            key_of[symbol] = k
        return k

    for idx, ln in enumerate(lines):
        line_no = idx + 1
        sp = ln.find(b" ")
        try:
            recv = int(ln[:sp]) if sp > 0 else -1
        except ValueError:
            recv = -1
        if not 0 <= recv <= 0x7FFF_FFFF_FFFF_FFFF:
            if not ln.strip():
                tally.ignore("blank")
            else:
                tally.bad_line(line_no, "bad_prefix", ln)
            continue
        try:
            msg = loads(ln[sp + 1:])
        except JSONDecodeError:
            tally.bad_line(line_no, "bad_json", ln)
            continue
        try:
            if type(msg) is not dict:
                raise _Malformed("bad_message")
            d = msg.get("data", msg)
            if type(d) is not dict:
                raise _Malformed("bad_message")
            e = d.get("e")
            if e is None or e == "bookTicker":
                if "B" in d and "A" in d:
                    vals = (d["b"], d["B"], d["a"], d["A"])
                    s = d["s"]
                    k = key_of.get(s)
                    if k is None:
                        k = key_for(s, line_no)
                    t = d.get("T")
                    append((line_no, k, recv, t if t is not None else d.get("E", _NO_TIME), d["u"], 0, 0, 0, _BBO, 1, 0))
                    nums.extend(vals)
                elif "lastUpdateId" in d:
                    _snapshot(d, line_no, recv, key_for, keys, depth_buf, nums, append, tally)
                else:
                    tally.ignore("unsupported")
            elif e == "depthUpdate":
                b = d["b"]
                a = d["a"]
                nb, na = len(b), len(a)
                flat = list(chain_(b))
                flat.extend(chain_(a))
                if len(flat) != 2 * (nb + na) or (nb and set(map(len, b)) != {2}) or (na and set(map(len, a)) != {2}):
                    raise _Malformed("bad_message")
                s = d["s"]
                k = key_of.get(s)
                if k is None:
                    k = key_for(s, line_no)
                row = (line_no, k, recv, _exch_time(d), d["u"], d["U"], d.get("pu", 0), 0, _DEPTH, nb, na)
                if nb + na == 0:
                    tally.ignore("empty_depth")
                    continue
                buf = depth_buf.get(k)
                if buf is None:
                    buf = depth_buf[k] = []
                buf.append((row[C_FIRST], row[C_SEQ], row[C_PREV], len(nums), nb, na))
                if len(buf) > 2 * BUFFER_KEEP:
                    del buf[:-BUFFER_KEEP]
                nums.extend(flat)
                append(row)
            elif e == "trade" or e == "aggTrade":
                m = d["m"]
                if m is not True and m is not False:
                    raise _Malformed("bad_message")
                vals = (d["p"], d["q"])
                first, seq = (0, d["t"]) if e == "trade" else (d["f"], d["l"])
                s = d["s"]
                k = key_of.get(s)
                if k is None:
                    k = key_for(s, line_no)
                append((line_no, k, recv, d["T"], seq, first, 0, 0,
                        _TRADE_SELL if m else _TRADE_BUY, 1, 0))
                nums.extend(vals)
            elif e == "markPriceUpdate":
                p, i, r = d["p"], d.get("i", ""), d.get("r", "")
                has_funding = r not in ("", None)
                row = (line_no, key_for(d["s"], line_no), recv, d["E"], 0, 0, 0, d.get("T", 0) if has_funding else 0,
                       _MARK, 1, 1 if has_funding else 0)
                nums.append(p)
                nums.append(i if i not in ("", None) else "nan")
                if has_funding:
                    nums.append(r)
                append(row)
            elif e == "forceOrder":
                o = d["o"]
                if type(o) is not dict or o.get("S") not in ("BUY", "SELL"):
                    raise _Malformed("bad_message")
                vals = (o["p"], o["q"])
                append((line_no, key_for(o["s"], line_no), recv, o.get("T", d.get("E", _NO_TIME)), 0, 0, 0, 0,
                        _LIQ_BUY if o["S"] == "BUY" else _LIQ_SELL, 1, 0))
                nums.extend(vals)
            else:
                tally.ignore("unsupported")
        except UnknownInstrumentError:
            raise
        except _Malformed as exc:
            tally.bad_line(line_no, str(exc), ln)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            tally.bad_line(line_no, "bad_message", ln)

    records = _build(tally, lines, keys, rows, nums)
    mark_unsynced(records)
    return tally.result(label, FORMAT, records, len(lines) - tally.ignored.get("blank", 0))


def _snapshot(d, line_no, recv, key_for, keys, depth_buf, nums, append, tally):
    last_id, bids, asks = d["lastUpdateId"], d["bids"], d["asks"]
    if type(last_id) is not int:
        raise _Malformed("bad_number")
    if (bids and set(map(len, bids)) != {2}) or (asks and set(map(len, asks)) != {2}):
        raise _Malformed("bad_message")
    if "symbol" in d:
        k = key_for(d["symbol"], line_no)
    elif len(keys) == 1:
        k = 0
    else:
        raise _Malformed("snapshot_symbol_unknown")
    exch = _exch_time(d)
    try:
        folded = _fold(bids, asks, last_id, [x for x in depth_buf.get(k, ()) if x[1] > last_id], nums)
    except (ValueError, TypeError, OverflowError):
        folded = None
    u = last_id
    if folded is not None:
        bids, asks, u = folded
    nb, na = len(bids), len(asks)
    if nb + na == 0:
        tally.ignore("empty_snapshot")
        return
    nums.extend(chain.from_iterable(bids))
    nums.extend(chain.from_iterable(asks))
    depth_buf.pop(k, None)
    append((line_no, k, recv, exch, u, last_id, 0, 0, _SNAP, nb, na))


def _build(tally, lines, keys, rows, nums) -> np.ndarray:
    if not rows:
        return empty_records()
    table, ok = int_rows(rows, _COLUMNS)
    exch_ns, t_ok = ms_to_ns(table[:, C_EXCH])
    aux_ns, a_ok = ms_to_ns(table[:, C_AUX])
    ok &= t_ok & a_ok
    shape = table[:, C_SHAPE]
    n1, n2 = table[:, C_N1], table[:, C_N2]
    nrec = n1 + n2
    msg_of = np.repeat(np.arange(len(rows)), nrec)
    starts = np.cumsum(nrec) - nrec
    second = (np.arange(len(msg_of)) - starts[msg_of]) >= n1[msg_of]
    kind = _KIND[shape[msg_of], second.astype(np.int64)]
    width = _WIDTH[kind]
    nnum = np.bincount(msg_of, weights=width, minlength=len(rows)).astype(np.int64)
    vals, v_ok = float_column(nums, nnum)
    if v_ok is not None:
        ok &= v_ok
    for m in np.flatnonzero(~ok).tolist():
        line_no = rows[m][C_LINE]
        tally.bad_line(line_no, "bad_number", lines[line_no - 1])

    off = np.cumsum(width) - width
    last = np.zeros(len(msg_of), np.bool_)
    last[(starts + nrec)[nrec > 0] - 1] = True
    keep = ok[msg_of]
    msg_of, kind, second, off, last = msg_of[keep], kind[keep], second[keep], off[keep], last[keep]
    shape_r = shape[msg_of]

    out = empty_records(len(kind))
    key_ids = np.array(keys, np.int64).reshape(-1, 2)
    key = table[msg_of, C_KEY]
    out["origin_ts"] = table[msg_of, C_RECV]
    out["exch_ts"] = exch_ns[msg_of]
    out["venue_seq"] = table[msg_of, C_SEQ]
    out["first_seq"] = table[msg_of, C_FIRST]
    out["prev_seq"] = table[msg_of, C_PREV]
    out["kind"] = kind
    out["side"] = _SIDE[shape_r, second.astype(np.int64)]
    out["venue"] = key_ids[key, 0]
    out["symbol"] = key_ids[key, 1]
    out["flags"] = np.where(shape_r == _SNAP, F_SNAPSHOT, 0) | np.where(last, F_LAST, 0)
    bbo = kind == EV_BBO
    mark = kind == EV_MARK
    funding = kind == EV_FUNDING
    pair = _WIDTH[kind] == 2
    price = vals[off]
    second_val = vals[np.minimum(off + 1, len(vals) - 1)]
    out["price"] = np.where(bbo, 0.0, price)
    out["size"] = np.where(pair & ~mark, second_val, 0.0)
    out["aux"] = np.where(mark, second_val, np.where(funding, aux_ns[msg_of].astype(np.float64), 0.0))
    if bbo.any():
        o = off[bbo]
        out["bid_px"][bbo, 0] = vals[o]
        out["bid_sz"][bbo, 0] = vals[o + 1]
        out["ask_px"][bbo, 0] = vals[o + 2]
        out["ask_sz"][bbo, 0] = vals[o + 3]
    return out
