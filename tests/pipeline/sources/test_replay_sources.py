"""Replay sources: each format decodes the samples (tests/data) into the right records; merge and pacer;
malformed input is counted, never raised (hypothesis fuzzing of every parser)."""
import functools
import gzip
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.sources import (Pacer, SymbolTable, UnknownFormatError, UnknownInstrumentError, merge,
                              parse_binance_depth, parse_binance_trades, parse_binance_ws, parse_file, parse_tardis,
                              sniff)
from stages.records import (BUY, EV_BBO, EV_BOOK, EV_BOOK_DELTA, EV_FUNDING, EV_LIQUIDATION, EV_MARK, EV_TRADE, F_LAST,
                            F_SNAPSHOT, F_UNSYNCED, MARKET_EVENT, SELL)
from tests.conftest import kernel_params

DATA = Path(__file__).resolve().parents[2] / "data"
WS = DATA / "binance-ws-capture"
CSV = DATA / "nautilus-samples"

VENUES = ["binance", ("binance-usdm", "binance-futures"), "binance-coinm", "deribit", "bitmex", "huobi-dm-swap"]
SYMBOLS = ["BTC-USDT", "ETH-USDT", "BTCUSD_PERP", "BTC-PERPETUAL", "XBTUSD", "BTC-USD"]
BINANCE, USDM, COINM, DERIBIT, BITMEX, HUOBI = range(6)
BTC_USDT, ETH_USDT, BTCUSD_PERP, BTC_PERPETUAL, XBTUSD, BTC_USD = range(6)

# SOURCES.md: lines and depth / bookTicker / trade messages per capture
CAPTURES = {
    "spot_btcusdt_20240808.gz": ("binance", 41_249, 3_451, 28_040, 9_757),
    "spot_ethusdt_20240808.gz": ("binance", 33_618, 3_434, 24_077, 6_106),
    "usdm_btcusdt_20240808.gz": ("binance-usdm", 93_954, 6_551, 66_089, 21_313),
    "cm_btcusd_perp_20240808.gz": ("binance-coinm", 48_270, 26_847, 19_136, 2_286),
    "spot_btcusdt_20240809.gz": ("binance", 58_325, 3_044, 45_134, 10_147),
}


def table(strict=True):
    return SymbolTable(venues=VENUES, symbols=SYMBOLS, strict=strict)


@functools.lru_cache(maxsize=None)
def capture(name):
    return parse_binance_ws(WS / name, table(), CAPTURES[name][0])


def messages(rec, kind, snapshot=None):
    sel = rec[(rec["kind"] == kind) & ((rec["flags"] & F_LAST) != 0)]
    if snapshot is not None:
        sel = sel[((sel["flags"] & F_SNAPSHOT) != 0) == snapshot]
    return sel


def flag(rec, f):
    return (rec["flags"] & f) != 0


def ws_lines(name, n):
    with gzip.open(WS / name) as f:
        return b"".join(f.readline() for _ in range(n))



@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_capture_message_counts_match_sources_table(name):
    _, lines, depth, book_ticker, trade = CAPTURES[name]
    r = capture(name)
    assert r.format == "binance-ws"
    assert (r.lines, r.bad, r.ignored) == (lines, {}, {})
    rec = r.records
    assert rec.dtype == MARKET_EVENT
    assert len(messages(rec, EV_BOOK_DELTA, snapshot=False)) == depth
    assert len(messages(rec, EV_BBO)) == book_ticker
    assert len(messages(rec, EV_TRADE)) == trade
    # SOURCES.md says no REST snapshot is included; the 2024-08-08 files do carry one (the line the
    # recorder wrote after subscribing), which is why their line counts exceed the stream totals by one.
    assert len(messages(rec, EV_BOOK_DELTA, snapshot=True)) == (0 if name.endswith("0809.gz") else 1)
    assert np.all(np.diff(rec["origin_ts"]) >= 0)
    assert np.all(rec["origin_seq"] == 0) and np.all(rec["reason"] == 0)


def test_spot_first_lines():
    rec = capture("spot_btcusdt_20240808.gz").records
    depth = rec[:12]  # line 1: depthUpdate U=50093239189 u=50093239202, 3 bids then 9 asks
    assert np.all(depth["kind"] == EV_BOOK_DELTA)
    assert np.all(depth["origin_ts"] == 1723161253937085768)
    assert np.all(depth["exch_ts"] == 1723161255208_000_000)
    assert np.all(depth["first_seq"] == 50093239189) and np.all(depth["venue_seq"] == 50093239202)
    assert np.all(depth["prev_seq"] == 0)
    assert list(depth["side"]) == [BUY] * 3 + [SELL] * 9
    assert list(depth["price"][:3]) == [61737.63, 61730.17, 56854.58]
    assert list(depth["size"][:3]) == [0.0, 0.0, 0.0]
    assert (depth["price"][3], depth["size"][3]) == (61837.64, 1.54698)
    assert (depth["price"][11], depth["size"][11]) == (61937.64, 0.02)
    assert list(flag(depth, F_LAST)) == [False] * 11 + [True]
    assert np.all(flag(depth, F_UNSYNCED))  # received before the REST snapshot
    bbo = rec[rec["origin_ts"] == 1723161254087891268]  # line 3
    assert len(bbo) == 1 and bbo["kind"][0] == EV_BBO
    assert bbo["venue_seq"][0] == 50093239212 and bbo["exch_ts"][0] == 0  # spot bookTicker has no time
    assert (bbo["bid_px"][0, 0], bbo["bid_sz"][0, 0], bbo["ask_px"][0, 0], bbo["ask_sz"][0, 0]) == \
        (61837.63, 3.78826, 61837.64, 1.54698)
    assert bbo["price"][0] == 0.0 and np.all(bbo["bid_px"][0, 1:] == 0.0)
    trade = rec[rec["origin_ts"] == 1723161254087896568]  # line 4: m=true -> seller-initiated
    assert trade["kind"][0] == EV_TRADE and trade["side"][0] == SELL
    assert (trade["venue_seq"][0], trade["price"][0], trade["size"][0]) == (3735683259, 61837.63, 0.02)
    assert trade["exch_ts"][0] == 1723161255342_000_000
    assert (trade["venue"][0], trade["symbol"][0]) == (BINANCE, BTC_USDT)
    last = rec[-1]  # last line: bookTicker u=50093421612
    assert last["kind"] == EV_BBO and last["venue_seq"] == 50093421612
    assert (last["bid_px"][0], last["ask_sz"][0]) == (61685.99, 2.44807)


def test_futures_depth_trade_and_ticker():
    usdm = capture("usdm_btcusdt_20240808.gz").records
    first = usdm[usdm["origin_ts"] == 1723161255030314667]
    assert np.all(first["first_seq"] == 5123107832006) and np.all(first["venue_seq"] == 5123107837557)
    assert np.all(first["prev_seq"] == 5123107831937)
    assert np.all(first["exch_ts"] == 1723161256298_000_000)  # T (transaction time), not E
    assert (first["price"][0], first["size"][0], first["side"][0]) == (58710.2, 0.014, BUY)
    assert (first["venue"][0], first["symbol"][0]) == (USDM, BTC_USDT)
    trade = usdm[usdm["origin_ts"] == 1723161282127472309]  # the 1000th trade: m=false -> buyer-initiated
    assert (trade["kind"][0], trade["side"][0], trade["venue_seq"][0]) == (EV_TRADE, BUY, 5266584934)
    assert (trade["price"][0], trade["size"][0]) == (61833.4, 0.228)
    bbo = usdm[usdm["origin_ts"] == 1723161255088169167][0]
    assert bbo["venue_seq"] == 5123107839020 and bbo["exch_ts"] == 1723161256313_000_000
    last = usdm[usdm["origin_ts"] == 1723161599833492584]  # last line: 2 bids, no asks
    assert list(last["price"]) == [61631.7, 61632.6] and list(last["size"]) == [0.283, 0.0]
    assert list(flag(last, F_LAST)) == [False, True] and not flag(last, F_UNSYNCED).any()

    cm = capture("cm_btcusd_perp_20240808.gz").records
    msg = cm[cm["origin_ts"] == 1723161325192421323]  # line 9402: 1 bid, 2 asks, contracts
    assert list(msg["side"]) == [BUY, SELL, SELL] and list(msg["price"]) == [60993.8, 61842.4, 62008.8]
    assert np.all(msg["size"] == 0.0) and np.all(msg["prev_seq"] == 1007199411267)
    assert (msg["venue"][0], msg["symbol"][0]) == (COINM, BTCUSD_PERP)
    trade = cm[(cm["kind"] == EV_TRADE)][0]
    assert (trade["venue_seq"], trade["price"], trade["size"], trade["side"]) == (849714402, 61804.8, 4.0, BUY)
    assert trade["exch_ts"] == 1723161257679_000_000


def test_rest_snapshot_is_an_f_snapshot_run():
    rec = capture("spot_ethusdt_20240808.gz").records
    snap = rec[flag(rec, F_SNAPSHOT)]
    # line 6: lastUpdateId 35346513512 equals the last diff received before it, so nothing is folded in
    assert len(snap) == 2000 and np.all(snap["origin_ts"] == 1723161254152322667)
    assert np.all(snap["first_seq"] == 35346513512) and np.all(snap["venue_seq"] == 35346513512)
    assert list(snap["side"][[0, 999, 1000]]) == [BUY, BUY, SELL]
    assert (snap["price"][0], snap["size"][0]) == (2683.8, 3.0292)
    assert (snap["price"][-1], snap["size"][-1]) == (2711.76, 0.0116)
    assert list(flag(snap, F_LAST)) == [False] * 1999 + [True]
    assert not flag(snap, F_UNSYNCED).any()
    # spot BTC: diffs up to u=50093239224 arrived before the snapshot (L=50093239218) and are folded in
    btc = capture("spot_btcusdt_20240808.gz").records
    snap = btc[flag(btc, F_SNAPSHOT)]
    assert np.all(snap["first_seq"] == 50093239218) and np.all(snap["venue_seq"] == 50093239224)


@pytest.mark.parametrize("name", ["spot_ethusdt_20240808.gz", "usdm_btcusdt_20240808.gz"])
def test_book_from_records_matches_book_ticker(name):
    """A book built from the snapshot and the synced diffs has the venue's own best bid/ask wherever a
    bookTicker carries the same update id as a diff message (spot and futures sequencing rules)."""
    rec = capture(name).records
    bbo = rec[rec["kind"] == EV_BBO]
    by_u = dict(zip(bbo["venue_seq"].tolist(), zip(bbo["bid_px"][:, 0].tolist(), bbo["ask_px"][:, 0].tolist(),
                                                    bbo["bid_sz"][:, 0].tolist(), bbo["ask_sz"][:, 0].tolist())))
    d = rec[(rec["kind"] == EV_BOOK_DELTA) & ~flag(rec, F_UNSYNCED)]
    bids, asks, matched, new_book = {}, {}, 0, True
    for side, px, sz, fl, u in zip(d["side"].tolist(), d["price"].tolist(), d["size"].tolist(), d["flags"].tolist(),
                                   d["venue_seq"].tolist()):
        if fl & F_SNAPSHOT and new_book:
            bids.clear(), asks.clear()
        new_book = bool(fl & F_LAST) or not fl & F_SNAPSHOT
        book = bids if side == BUY else asks
        if sz == 0.0:
            book.pop(px, None)
        else:
            book[px] = sz
        if fl & F_LAST and u in by_u:
            best_bid, best_ask = max(bids), min(asks)
            assert (best_bid, best_ask, bids[best_bid], asks[best_ask]) == by_u[u], u
            matched += 1
    assert matched > 500


def test_unsynced_until_snapshot_and_across_files():
    a = capture("spot_btcusdt_20240808.gz")
    b = capture("spot_btcusdt_20240809.gz")
    da = a.records[a.records["kind"] == EV_BOOK_DELTA]
    first_snap = np.flatnonzero(flag(da, F_SNAPSHOT))[0]
    assert flag(da[:first_snap], F_UNSYNCED).all() and not flag(da[first_snap:], F_UNSYNCED).any()
    assert flag(b.records[b.records["kind"] == EV_BOOK_DELTA], F_UNSYNCED).all()  # alone: no snapshot
    merged = merge([b, a])  # argument order does not matter: merged by receive time
    d = merged[merged["kind"] == EV_BOOK_DELTA]
    assert flag(d, F_UNSYNCED).sum() == first_snap  # 0809 continues 0808's diff stream: stays synced


def ws(*objs, t0=1_700_000_000_000_000_000):
    return b"".join(b"%d %s\n" % (t0 + i, orjson.dumps(o)) for i, o in enumerate(objs))


def depth(U, u, bids, asks=(), pu=None, s="BTCUSDT"):
    d = {"e": "depthUpdate", "E": 1_700_000_000_000, "s": s, "U": U, "u": u, "b": [list(x) for x in bids],
         "a": [list(x) for x in asks]}
    if pu is not None:
        d["pu"] = pu
    return {"stream": "btcusdt@depth@100ms", "data": d}


def test_sequence_gap_makes_book_unsynced_until_next_snapshot():
    lines = ws(depth(1, 5, [("10", "1")]),
               {"lastUpdateId": 5, "bids": [["10", "1"]], "asks": [["11", "2"]]},
               depth(6, 7, [("10", "2")]),
               depth(8, 9, [("10", "3")]),
               depth(11, 12, [("10", "4")]),  # 10 is missing: a gap
               depth(13, 13, [("10", "5")]),
               {"lastUpdateId": 20, "bids": [["10", "6"]], "asks": []},
               depth(18, 19, [("10", "7")]),  # already inside the snapshot: stale
               depth(20, 22, [("10", "8")]))
    rec = parse_binance_ws(lines, table(), "binance").records
    unsynced = [bool(f & F_UNSYNCED) for f in rec["flags"]]
    assert unsynced == [True, False, False, False, False, True, True, False, True, False]
    futures = ws({"lastUpdateId": 100, "symbol": "BTCUSDT", "bids": [["10", "1"]], "asks": []},
                 depth(90, 105, [("10", "2")], pu=89), depth(106, 110, [("10", "3")], pu=105),
                 depth(112, 115, [("10", "4")], pu=111))  # pu != previous u: a gap
    rec = parse_binance_ws(futures, table(), "binance-usdm").records
    assert [bool(f & F_UNSYNCED) for f in rec["flags"]] == [False, False, False, True]


def test_snapshot_folds_diffs_received_before_it():
    lines = ws(depth(1, 3, [("10", "1"), ("9", "1")]),
               depth(4, 6, [("10", "0"), ("8", "5")], [("12", "1")]),
               {"lastUpdateId": 4, "bids": [["10", "1"], ["9", "1"]], "asks": [["11", "2"]]},
               depth(7, 7, [("9", "3")]))
    rec = parse_binance_ws(lines, table(), "binance").records
    snap = rec[flag(rec, F_SNAPSHOT)]
    assert list(zip(snap["side"], snap["price"], snap["size"])) == [(BUY, 9.0, 1.0), (BUY, 8.0, 5.0),
                                                                   (SELL, 11.0, 2.0), (SELL, 12.0, 1.0)]
    assert np.all(snap["first_seq"] == 4) and np.all(snap["venue_seq"] == 6)
    assert not flag(rec[-1:], F_UNSYNCED).any()


def test_mark_price_force_order_and_agg_trade():
    lines = ws({"stream": "btcusdt@markPrice", "data": {"e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT",
                                                        "p": "11794.15", "i": "11784.62", "P": "11784.25",
                                                        "r": "0.00038167", "T": 1562306400000}},
               {"stream": "btcusdt@forceOrder", "data": {"e": "forceOrder", "E": 1568014460893, "o": {
                   "s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "0.014", "p": "9910", "ap": "9910",
                   "X": "FILLED", "l": "0.014", "z": "0.014", "T": 1568014460893}}},
               {"e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 5, "p": "0.001", "q": "100", "f": 100, "l": 105,
                "T": 123456785, "m": True})
    rec = parse_binance_ws(lines, table(), "binance-usdm").records
    assert list(rec["kind"]) == [EV_MARK, EV_FUNDING, EV_LIQUIDATION, EV_TRADE]
    assert (rec[0]["price"], rec[0]["aux"]) == (11794.15, 11784.62)
    assert (rec[1]["price"], rec[1]["aux"]) == (0.00038167, 1562306400000e6)
    assert list(flag(rec, F_LAST)) == [False, True, True, True]
    assert (rec[2]["side"], rec[2]["price"], rec[2]["size"]) == (SELL, 9910.0, 0.014)
    assert rec[2]["exch_ts"] == 1568014460893_000_000
    assert (rec[3]["side"], rec[3]["first_seq"], rec[3]["venue_seq"]) == (SELL, 100, 105)


def test_ws_malformed_lines_are_counted_with_reasons():
    good = ws(depth(1, 2, [("10", "1")]))
    lines = (good + b"\n   \nnot-a-number {}\n123\n1 {not json\n2 [1,2]\n3 {\"e\":\"depthUpdate\"}\n"
             b'4 {"e":"trade","s":"BTCUSDT","t":1,"p":"x","q":"1","T":1,"m":true}\n'
             b'5 {"e":"trade","s":"BTCUSDT","t":1.5,"p":"1","q":"1","T":1,"m":true}\n'
             b'6 {"e":"trade","s":"\\u0000","t":1,"p":"1","q":"1","T":1,"m":true}\n'
             b'7 {"e":"kline","s":"BTCUSDT"}\n'
             b'8 {"lastUpdateId":5,"bids":[],"asks":[]}\n' + good)
    r = parse_binance_ws(lines, table(), "binance")
    assert r.bad == {"bad_prefix": 2, "bad_json": 1, "bad_message": 2, "bad_number": 2, "bad_symbol": 1}
    assert r.ignored == {"blank": 2, "unsupported": 1, "empty_snapshot": 1}
    assert len(r.records) == 2 and r.lines == 12
    assert [e[0] for e in r.examples] == [4, 5, 6, 7, 8, 9, 10, 11]



def test_plain_gzip_and_zip_give_the_same_records(tmp_path):
    plain = ws_lines("cm_btcusd_perp_20240808.gz", 300)  # includes the REST snapshot (line 37)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("capture.txt", plain)
    results = [parse_binance_ws(data, table(), "binance-coinm")
               for data in (plain, gzip.compress(plain), zipped.getvalue())]
    (tmp_path / "c.gz").write_bytes(gzip.compress(plain))
    results.append(parse_binance_ws(tmp_path / "c.gz", table(), "binance-coinm"))
    assert len(results[0].records) > 1000 and not results[0].bad
    for r in results[1:]:
        assert r.records.tobytes() == results[0].records.tobytes() and r.bad == {}
    csv = (CSV / "tardis_trades.csv").read_bytes()
    assert parse_tardis(gzip.compress(csv), table()).records.tobytes() == parse_tardis(csv, table()).records.tobytes()


def test_truncated_gzip_is_counted_not_raised():
    plain = ws_lines("spot_ethusdt_20240808.gz", 400)
    whole = parse_binance_ws(plain, table(), "binance")
    r = parse_binance_ws(gzip.compress(plain)[:-2000], table(), "binance")
    assert r.bad.get("corrupt_compression") == 1 and r.n_bad <= 2
    assert 0 < len(r.records) < len(whole.records)
    assert r.records.tobytes() == whole.records[:len(r.records)].tobytes()


def test_sniff_and_parse_file(tmp_path):
    assert sniff(WS / "spot_ethusdt_20240808.gz") == "binance-ws"
    assert sniff(CSV / "tardis_quotes.csv") == "tardis"
    assert sniff(CSV / "btcusdt-depth-update.csv") == "binance-depth-csv"
    p = tmp_path / "BTCUSDT-aggTrades-2025-01-01.csv"
    p.write_bytes(b"1,100.5,0.1,10,12,1735689600000000,True,True\n")
    assert sniff(p) == "binance-aggTrades-csv"
    r = parse_file(p, table(), venue="binance")
    assert r.records["venue_seq"][0] == 12 and r.records["exch_ts"][0] == 1735689600000000_000
    assert parse_file(CSV / "bitmex_trades_XBTUSD.csv", table()).format == "tardis-trades"
    with pytest.raises(UnknownFormatError):
        sniff(b"hello,world\n1,2\n")



def test_tardis_incremental_book_l2():
    r = parse_tardis(CSV / "deribit_incremental_book_L2_BTC-PERPETUAL.csv", table())
    rec = r.records
    assert (r.format, r.lines, r.bad, len(rec)) == ("tardis-incremental_book_L2", 15, {}, 15)
    assert np.all(rec["kind"] == EV_BOOK_DELTA) and np.all(rec["side"] == SELL)
    assert np.all(rec["origin_ts"] == 1585699200355684_000) and np.all(rec["exch_ts"] == 1585699200245000_000)
    assert (rec["price"][0], rec["size"][0]) == (6421.5, 18640.0)
    assert (rec["price"][-1], rec["size"][-1]) == (6428.5, 39950.0)
    assert np.all(flag(rec, F_SNAPSHOT)) and list(flag(rec, F_LAST)) == [False] * 14 + [True]
    assert not flag(rec, F_UNSYNCED).any()
    assert (rec["venue"][0], rec["symbol"][0]) == (DERIBIT, BTC_PERPETUAL)
    crafted = (b"exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
               b"deribit,BTC-PERPETUAL,1,2,false,bid,10,1\n"
               b"deribit,BTC-PERPETUAL,3,4,true,bid,10,2\n"
               b"deribit,BTC-PERPETUAL,3,4,true,ask,11,2\n"
               b"deribit,BTC-PERPETUAL,5,6,false,ask,11,0\n"
               b"deribit,BTC-PERPETUAL,5,6,false,bid,9.5,3\n")
    rec = parse_tardis(crafted, table()).records
    assert list(rec["flags"]) == [F_LAST | F_UNSYNCED, F_SNAPSHOT, F_SNAPSHOT | F_LAST, 0, F_LAST]


def test_tardis_book_snapshots():
    r = parse_tardis(CSV / "binance-futures_book_snapshot_25_BTCUSDT.csv", table())
    rec = r.records
    assert (r.format, r.lines, len(rec)) == ("tardis-book_snapshot_25", 10, 500)
    row = rec[:50]
    assert np.all(flag(row, F_SNAPSHOT)) and list(flag(row, F_LAST)) == [False] * 49 + [True]
    assert list(row["side"]) == [BUY] * 25 + [SELL] * 25
    assert (row["price"][0], row["size"][0], row["price"][25], row["size"][25]) == (11657.07, 10.896, 11657.08, 1.714)
    assert (row["price"][1], row["price"][26]) == (11656.97, 11657.54)
    assert np.all(row["origin_ts"] == 1598918403810979_000) and np.all(row["venue"] == USDM)
    top = parse_tardis(CSV / "binance-futures_book_snapshot_5_BTCUSDT.csv", table(), book_as="book").records
    assert len(top) == 10 and np.all(top["kind"] == EV_BOOK)
    assert list(top["bid_px"][0]) == [11657.07, 11656.97, 11655.78, 11655.77, 11655.68]
    assert list(top["ask_sz"][0]) == [1.714, 5.4, 0.238, 0.077, 0.918]
    assert top["ask_sz"][1][0] == 1.476 and top["exch_ts"][-1] == 1598918404284000_000
    thin = (b"exchange,symbol,timestamp,local_timestamp,asks[0].price,asks[0].amount,bids[0].price,bids[0].amount,"
            b"asks[1].price,asks[1].amount,bids[1].price,bids[1].amount\n"
            b"deribit,BTC-PERPETUAL,1,2,11,1,10,1,,,9,2\n")
    rec = parse_tardis(thin, table()).records
    assert list(zip(rec["side"], rec["price"])) == [(BUY, 10.0), (BUY, 9.0), (SELL, 11.0)]


def test_tardis_trades():
    rec = parse_tardis(CSV / "tardis_trades.csv", table()).records
    assert len(rec) == 9999 and np.all(rec["kind"] == EV_TRADE) and np.all(flag(rec, F_LAST))
    assert (rec[0]["venue_seq"], rec[0]["side"], rec[0]["price"], rec[0]["size"]) == (42377944, BUY, 9682.0, 0.132)
    assert (rec[0]["exch_ts"], rec[0]["origin_ts"]) == (1582329602111000_000, 1582329602418379_000)
    assert (rec[-1]["venue_seq"], rec[-1]["side"], rec[-1]["price"], rec[-1]["size"]) == (42387942, SELL, 9666.84, 0.07)
    bitmex = parse_tardis(CSV / "bitmex_trades_XBTUSD.csv", table()).records
    assert len(bitmex) == 10 and np.all(bitmex["venue_seq"] == 0)  # UUID ids carry no order
    assert (bitmex[0]["side"], bitmex[0]["price"], bitmex[0]["size"]) == (SELL, 8531.5, 2152.0)
    assert (bitmex[0]["venue"], bitmex[0]["symbol"]) == (BITMEX, XBTUSD)


def test_tardis_quotes():
    rec = parse_tardis(CSV / "huobi-dm-swap_quotes_BTC-USD.csv", table()).records
    assert len(rec) == 10 and np.all(rec["kind"] == EV_BBO)
    q = rec[0]
    assert (q["bid_px"][0], q["bid_sz"][0], q["ask_px"][0], q["ask_sz"][0]) == (8629.2, 806.0, 8629.3, 5494.0)
    assert (q["venue"], q["symbol"], q["origin_ts"]) == (HUOBI, BTC_USD, 1588291201234268_000)
    big = parse_tardis(CSV / "tardis_quotes.csv", table()).records
    assert len(big) == 9999
    assert (big[-1]["bid_px"][0], big[-1]["ask_px"][0], big[-1]["ask_sz"][0]) == (9671.19, 9672.09, 0.031)
    empty_side = (b"exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n"
                  b"deribit,BTC-PERPETUAL,1,2,5,11,,\n")
    r = parse_tardis(empty_side, table())
    assert not r.bad and np.isnan(r.records["bid_px"][0, 0]) and r.records["ask_px"][0, 0] == 11.0


def test_tardis_derivative_ticker():
    data = (b"exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,predicted_funding_rate,"
            b"open_interest,last_price,index_price,mark_price\n"
            b"binance-futures,BTCUSDT,1000,1100,28800000000,0.0001,0.0002,10,100,99.5,99.75\n"
            b"binance-futures,BTCUSDT,2000,2100,28800000000,0.0001,0.0003,11,101,99.5,99.75\n"  # only OI/last moved
            b"binance-futures,BTCUSDT,3000,3100,28800000000,0.0001,,11,101,99.6,99.75\n"       # index moved
            b"binance-futures,BTCUSDT,4000,4100,57600000000,0.00012,,11,101,99.6,99.75\n"      # new funding
            b"deribit,BTC-PERPETUAL,5000,5100,,,,1,,,6500\n")
    r = parse_tardis(data, table())
    rec = r.records
    assert r.format == "tardis-derivative_ticker" and not r.bad
    assert list(rec["kind"]) == [EV_MARK, EV_FUNDING, EV_MARK, EV_FUNDING, EV_MARK]
    assert (rec[0]["price"], rec[0]["aux"], rec[0]["exch_ts"]) == (99.75, 99.5, 1000_000)
    assert (rec[1]["price"], rec[1]["aux"]) == (0.0001, 28800000000_000.0)
    assert (rec[2]["aux"], rec[2]["origin_ts"]) == (99.6, 3100_000)
    assert (rec[3]["price"], rec[3]["aux"]) == (0.00012, 57600000000_000.0)
    assert (rec[4]["price"], rec[4]["venue"], rec[4]["symbol"]) == (6500.0, DERIBIT, BTC_PERPETUAL)
    assert np.isnan(rec[4]["aux"])
    assert list(flag(rec, F_LAST)) == [False, True, True, True, True]


def test_tardis_liquidations(tmp_path):
    # columns as documented by Tardis: exchange,symbol,timestamp,local_timestamp,id,side,price,amount
    path = tmp_path / "binance-futures_liquidations_2020-09-01_BTCUSDT.csv"
    path.write_bytes(b"exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
                     b"binance-futures,BTCUSDT,1598918403696000,1598918403810979,,sell,11657.1,0.5\n"
                     b"binance-futures,BTCUSDT,1598918404696000,1598918404810979,,buy,11700,1.25\n")
    r = parse_tardis(path, table())
    rec = r.records
    assert r.format == "tardis-liquidations" and not r.bad and np.all(rec["kind"] == EV_LIQUIDATION)
    assert list(rec["side"]) == [SELL, BUY] and list(rec["price"]) == [11657.1, 11700.0]
    assert list(rec["size"]) == [0.5, 1.25] and np.all(rec["venue_seq"] == 0)
    assert rec["origin_ts"][1] == 1598918404810979_000
    same = parse_tardis(path.read_bytes(), table(), kind="liquidations")
    assert same.records.tobytes() == rec.tobytes()


def test_tardis_bad_rows_are_counted_and_good_rows_unchanged():
    clean = (CSV / "tardis_trades.csv").read_bytes()
    lines = clean.split(b"\n")
    dirty = b"\n".join(lines[:50] + [b"binance-futures,BTCUSDT,1,2,3,buy,9682", b"binance-futures,BTCUSDT,x,2,3,buy,1,1",
                                     b"binance-futures,BTCUSDT,1,2,3,sideways,1,1", b"\xff\xfe,BTCUSDT,1,2,3,buy,1,1",
                                     b"binance-futures,BTCUSDT,1,99999999999999999999,3,buy,1,1"] + lines[50:])
    r = parse_tardis(dirty, table())
    assert r.bad == {"field_count": 1, "bad_number": 2, "bad_side": 1, "bad_text": 1}
    assert r.records.tobytes() == parse_tardis(clean, table()).records.tobytes()
    assert [e[0] for e in r.examples] == [51, 52, 53, 54, 55]
    header_only = parse_tardis(b"exchange,symbol,nonsense\nbinance-futures,BTCUSDT,1\n", table(), kind="trades")
    assert header_only.bad == {"bad_header": 1} and len(header_only.records) == 0


def test_csv_line_endings():
    clean = (CSV / "tardis_quotes.csv").read_bytes()
    crlf = parse_tardis(clean.replace(b"\n", b"\r\n"), table())
    assert not crlf.bad and crlf.records.tobytes() == parse_tardis(clean, table()).records.tobytes()
    head = b"\n".join(clean.split(b"\n")[:30]) + b"\n"
    stray = parse_tardis(head.replace(b"9682,", b"96\r82,", 1), table())
    assert stray.n_bad == 1 and len(stray.records) == stray.lines - 1



def test_binance_depth_snapshot_and_update():
    snap = parse_binance_depth(CSV / "btcusdt-depth-snap.csv", table(), "binance-usdm")
    rec = snap.records
    assert (snap.lines, snap.bad, len(rec)) == (100, {}, 100)
    assert np.all(rec["kind"] == EV_BOOK_DELTA) and np.all(rec["side"] == BUY) and np.all(flag(rec, F_SNAPSHOT))
    assert (rec[0]["price"], rec[0]["size"], rec[-1]["price"], rec[-1]["size"]) == (20377.0, 1.77, 20365.9, 0.207)
    assert np.all(rec["origin_ts"] == 1667346579146_000_000) and np.all(rec["exch_ts"] == rec["origin_ts"])
    assert np.all(rec["venue_seq"] == 2098021528332) and np.all(rec["first_seq"] == 2098021528332)
    assert np.all(rec["prev_seq"] == 0)  # pu = -1 in snapshots
    assert list(flag(rec, F_LAST)) == [False] * 99 + [True] and not flag(rec, F_UNSYNCED).any()
    upd = parse_binance_depth(CSV / "btcusdt-depth-update.csv", table(), "binance-usdm").records
    assert len(upd) == 100 and (upd["side"] == SELL).sum() == 77 and (upd["side"] == BUY).sum() == 23
    assert (upd[0]["price"], upd[0]["size"], upd[-1]["price"], upd[-1]["size"]) == (20472.8, 0.0, 20879.1, 10.249)
    assert np.all(upd["first_seq"] == 2098041693435) and np.all(upd["venue_seq"] == 2098041696700)
    assert np.all(upd["prev_seq"] == 2098041693400) and not flag(upd, F_SNAPSHOT).any()
    assert flag(upd, F_UNSYNCED).all()  # no snapshot before it
    merged = merge([parse_binance_depth(CSV / "btcusdt-depth-snap.csv", table(), "binance-usdm"), upd])
    assert flag(merged[100:], F_UNSYNCED).all()  # ten minutes later: does not continue the snapshot


def test_binance_trades_and_agg_trades():
    spot = b"3735683259,61837.63000000,0.02000000,1236.75260000,1723161255342,True,True\n" \
           b"3735683260,61837.64000000,0.00100000,61.83764000,1723161255350,False,True\n"
    rec = parse_binance_trades(spot, table(), "binance", symbol="BTCUSDT").records
    assert list(rec["venue_seq"]) == [3735683259, 3735683260] and list(rec["side"]) == [SELL, BUY]
    assert list(rec["price"]) == [61837.63, 61837.64] and rec["exch_ts"][1] == 1723161255350_000_000
    assert np.all(rec["origin_ts"] == rec["exch_ts"]) and (rec["venue"][0], rec["symbol"][0]) == (BINANCE, BTC_USDT)
    futures = b"id,price,qty,quote_qty,time,is_buyer_maker\n5266583935,61800.30,0.006,370.8018,1723161256322,false\n"
    rec = parse_binance_trades(futures, table(), "binance-usdm", symbol="BTCUSDT").records
    assert (rec[0]["venue_seq"], rec[0]["side"], rec[0]["size"]) == (5266583935, BUY, 0.006)
    agg_spot_us = b"1,100.5,0.1,10,12,1735689600000001,True,True\n"  # 2025+ spot files: µs
    rec = parse_binance_trades(agg_spot_us, table(), "binance", symbol="BTCUSDT", kind="aggTrades").records
    assert (rec[0]["first_seq"], rec[0]["venue_seq"], rec[0]["exch_ts"]) == (10, 12, 1735689600000001_000)
    agg_fut = (b"agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
               b"10,64100.00,0.100,1,2,1786394553105,true\n11,64101.00,0.200,3,4,1786394553106,false\n")
    rec = parse_binance_trades(agg_fut, table(), "binance-usdm", symbol="BTCUSDT", kind="aggTrades").records
    assert list(rec["first_seq"]) == [1, 3] and list(rec["venue_seq"]) == [2, 4] and list(rec["side"]) == [SELL, BUY]
    r = parse_binance_trades(agg_fut + b"12,1,1,5,6,7,maybe\n13,1,1,5\n", table(), "binance-usdm", symbol="BTCUSDT",
                             kind="aggTrades")
    assert r.bad == {"bad_flag": 1, "field_count": 1} and len(r.records) == 2



def test_symbol_table_matching_strictness_and_errors():
    t = table()
    assert t.lookup("Binance-Futures", "btcusdt") == (USDM, BTC_USDT)
    assert t.lookup("binance", "BTC/USDT") == (BINANCE, BTC_USDT)
    assert t.lookup("binance", "\x00") is None
    with pytest.raises(UnknownInstrumentError, match=r"capture\.gz:7: unknown symbol .*'binance'/'DOGEUSDT'"):
        t.lookup("binance", "DOGEUSDT", "capture.gz", 7)
    with pytest.raises(UnknownInstrumentError, match=r"tardis_trades\.csv:2: unknown venue"):
        parse_tardis(CSV / "tardis_trades.csv", SymbolTable(venues=["deribit"], symbols=["BTCUSDT"]))
    with pytest.raises(UnknownInstrumentError, match=":1: unknown symbol"):
        parse_binance_ws(ws(depth(1, 2, [("1", "1")], s="DOGEUSDT")), table(), "binance")
    grow = table(strict=False)
    rec = parse_binance_ws(ws(depth(1, 2, [("1", "1")], s="DOGEUSDT")), grow, "binance").records
    assert rec["symbol"][0] == len(SYMBOLS) and grow.added == [("symbol", "DOGEUSDT", len(SYMBOLS))]
    with pytest.raises(ValueError, match="listed twice"):
        SymbolTable(venues=["a", "A"], symbols=["x"])



def _events(ts, venue=0):
    rec = np.zeros(len(ts), MARKET_EVENT)
    rec["origin_ts"] = ts
    rec["venue"] = venue
    rec["kind"] = EV_TRADE
    rec["flags"] = F_LAST
    return rec


def test_merge_orders_by_receive_time_stably():
    a = _events([10, 20, 20, 30], venue=0)
    b = _events([5, 20, 40], venue=1)
    m = merge([a, b])
    assert list(m["origin_ts"]) == [5, 10, 20, 20, 20, 30, 40]
    assert list(m["venue"]) == [1, 0, 0, 0, 1, 0, 1]  # ties: first argument first, then file order
    assert list(m["origin_seq"]) == list(range(1, 8))
    assert len(merge([])) == 0
    eth = capture("spot_ethusdt_20240808.gz")
    tardis = parse_tardis(CSV / "tardis_quotes.csv", table())
    big = merge([eth, tardis, capture("cm_btcusd_perp_20240808.gz")])
    assert len(big) == len(eth.records) + len(tardis.records) + len(capture("cm_btcusd_perp_20240808.gz").records)
    assert np.all(np.diff(big["origin_ts"]) >= 0) and np.all(big["origin_seq"] == np.arange(1, len(big) + 1))
    d = big[big["kind"] == EV_BOOK_DELTA]
    ends = np.flatnonzero(flag(d, F_LAST))
    starts = np.concatenate([[0], ends[:-1] + 1])
    assert np.all(d["venue_seq"][starts] == d["venue_seq"][ends])  # every message's records stayed together


class FakeClock:
    def __init__(self, t=1_000):
        self.t = t
        self.slept = []

    def now(self):
        return self.t

    def sleep(self, ns):
        self.slept.append(ns)
        self.t += ns


def test_pacer_real_time_and_scaled():
    rec = _events([100, 100, 150, 1_100, 5_100])
    clock = FakeClock()
    pacer = Pacer(rec, speed=1.0, clock_ns=clock.now, sleep_ns=clock.sleep)
    got = [(clock.t, list(b["origin_ts"])) for b in pacer]
    assert got == [(1_000, [100, 100]), (1_050, [150]), (2_000, [1_100]), (6_000, [5_100])]
    assert sum(clock.slept) == 5_000
    clock = FakeClock()
    got = [(clock.t, len(b)) for b in Pacer(rec, speed=10.0, clock_ns=clock.now, sleep_ns=clock.sleep)]
    assert got == [(1_000, 2), (1_005, 1), (1_100, 1), (1_500, 1)]
    clock = FakeClock()
    assert [len(b) for b in Pacer(rec, speed=None, clock_ns=clock.now, sleep_ns=clock.sleep, max_batch=2)] == [2, 2, 1]
    assert clock.slept == []
    clock = FakeClock()
    capped = Pacer(rec, speed=1.0, clock_ns=clock.now, sleep_ns=clock.sleep, max_gap_ns=500)
    assert np.concatenate(list(capped)).tobytes() == rec.tobytes() and sum(clock.slept) == 1_050


def test_pacer_poll_never_waits():
    pacer = Pacer(_events([0, 10, 20, 30]), speed=2.0, max_batch=8)
    assert len(pacer.poll(1_000)) == 1
    assert len(pacer.poll(1_004)) == 0 and pacer.next_due_ns() == 1_005
    assert len(pacer.poll(1_010)) == 2 and not pacer.done
    assert len(pacer.poll(10_000)) == 1 and pacer.done and pacer.next_due_ns() is None
    assert len(pacer.poll(20_000)) == 0



# REPLAY_FUZZ_EXAMPLES=5000 for a long soak; the default keeps this file at a few seconds
FUZZ = settings(max_examples=int(os.environ.get("REPLAY_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
WS_SAMPLE = [ln for ln in ws_lines("usdm_btcusdt_20240808.gz", 60).split(b"\n") if ln] + \
            [ln for ln in ws_lines("spot_ethusdt_20240808.gz", 8).split(b"\n") if ln] + \
            ws({"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": "1.5", "i": "1.4", "r": "0.0001", "T": 2},
               {"e": "forceOrder", "E": 1, "o": {"s": "BTCUSDT", "S": "BUY", "p": "9910", "q": "0.014", "T": 3}},
               {"e": "aggTrade", "s": "BTCUSDT", "p": "1", "q": "2", "f": 1, "l": 2, "T": 4, "m": False},
               {"lastUpdateId": 5123107837557, "symbol": "BTCUSDT", "E": 1, "T": 1, "bids": [["61800.1", "1"]],
                "asks": [["61800.2", "2"]]}).split(b"\n")[:-1]
json_values = st.recursive(st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**64 - 1) |
                           st.floats() | st.text(max_size=8),
                           lambda inner: (st.lists(inner, max_size=3)
                                          | st.dictionaries(st.text(max_size=3), inner, max_size=3)),
                           max_leaves=6)


def mutate(line: bytes, data) -> bytes:
    op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
    if not line:
        return data.draw(st.binary(max_size=40))
    i = data.draw(st.integers(0, len(line) - 1))
    if op == "flip":
        return line[:i] + bytes([line[i] ^ (1 << data.draw(st.integers(0, 7)))]) + line[i + 1:]
    if op == "cut":
        return line[:i]
    if op == "insert":
        return line[:i] + data.draw(st.binary(min_size=1, max_size=6)) + line[i:]
    return line[:i] + line[i + data.draw(st.integers(1, 8)):]


def check_ws_accounting(r, n_lines):
    messages_out = int(flag(r.records, F_LAST).sum())
    assert r.records.dtype == MARKET_EVENT
    assert messages_out + r.n_bad + sum(r.ignored.values()) == n_lines


@FUZZ
@given(st.data())
def test_fuzz_binance_ws_mutated_lines(data):
    lines = [mutate(ln, data) if data.draw(st.booleans()) else ln
             for ln in data.draw(st.lists(st.sampled_from(WS_SAMPLE), min_size=1, max_size=12))]
    lines = [ln.replace(b"\n", b" ") for ln in lines]
    r = parse_binance_ws(b"\n".join(lines) + b"\n", table(strict=False), "binance-usdm")
    check_ws_accounting(r, len(lines))


@FUZZ
@given(st.data())
def test_fuzz_binance_ws_field_values(data):
    base = orjson.loads(data.draw(st.sampled_from(WS_SAMPLE)).split(b" ", 1)[1])
    target = base.get("data", base)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(target) + ["b", "s", "e", "lastUpdateId"]))
        target[key] = data.draw(json_values)
    line = b"1723161255030314667 " + orjson.dumps(base, option=orjson.OPT_NON_STR_KEYS) if data.draw(st.booleans()) \
        else data.draw(st.binary(max_size=60)).replace(b"\n", b"")
    r = parse_binance_ws(b"\n".join([WS_SAMPLE[0], line, WS_SAMPLE[1]]), table(strict=False), "binance-usdm")
    check_ws_accounting(r, 3)


CSV_SAMPLES = {
    "tardis-trades": (CSV / "tardis_trades.csv", lambda d: parse_tardis(d, table(strict=False))),
    "tardis-quotes": (CSV / "huobi-dm-swap_quotes_BTC-USD.csv", lambda d: parse_tardis(d, table(strict=False))),
    "tardis-l2": (CSV / "deribit_incremental_book_L2_BTC-PERPETUAL.csv", lambda d: parse_tardis(d, table(strict=False))),
    "tardis-snapshot": (CSV / "binance-futures_book_snapshot_5_BTCUSDT.csv", lambda d: parse_tardis(d, table(strict=False))),
    "tardis-ticker": (None, lambda d: parse_tardis(d, table(strict=False), kind="derivative_ticker")),
    "binance-depth": (CSV / "btcusdt-depth-update.csv", lambda d: parse_binance_depth(d, table(strict=False), "binance")),
    "binance-trades": (None, lambda d: parse_binance_trades(d, table(strict=False), "binance", symbol="BTCUSDT")),
}
TICKER = (b"exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,predicted_funding_rate,"
          b"open_interest,last_price,index_price,mark_price\n"
          b"binance-futures,BTCUSDT,1000,1100,28800000000,0.0001,0.0002,10,100,99.5,99.75\n"
          b"binance-futures,BTCUSDT,3000,3100,28800000000,0.0001,,11,101,99.6,99.75\n")
TRADES = (b"id,price,qty,quote_qty,time,is_buyer_maker\n"
          b"1,10.5,0.1,1.05,1723161256322,false\n2,10.6,0.2,2.1,1723161256323,true\n")
ONE_RECORD_PER_ROW = {"tardis-trades", "tardis-quotes", "tardis-l2", "binance-depth", "binance-trades"}


@FUZZ
@given(st.sampled_from(sorted(CSV_SAMPLES)), st.data())
def test_fuzz_csv_parsers(name, data):
    path, parse = CSV_SAMPLES[name]
    raw = path.read_bytes() if path else (TICKER if name == "tardis-ticker" else TRADES)
    header, *rows = [ln for ln in raw.split(b"\n")[:12] if ln]
    rows = [mutate(r, data) if data.draw(st.booleans()) else r for r in rows]
    rows += data.draw(st.lists(st.binary(max_size=30), max_size=2))
    rows = [r.replace(b"\n", b"").replace(b"\r", b"") for r in rows]  # line endings: test_csv_line_endings
    r = parse(b"\n".join([header] + rows) + b"\n")
    assert r.records.dtype == MARKET_EVENT
    n_rows = sum(1 for row in rows if row)
    assert r.lines == n_rows
    if name in ONE_RECORD_PER_ROW:
        assert len(r.records) + r.n_bad == n_rows


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(blob):
    for parse in (lambda d: parse_binance_ws(d, table(strict=False), "binance"),
                  lambda d: parse_tardis(d, table(strict=False), kind="trades"),
                  lambda d: parse_tardis(d, table(strict=False)),
                  lambda d: parse_binance_depth(d, table(strict=False), "binance"),
                  lambda d: parse_binance_trades(d, table(strict=False), "binance", symbol="X", kind="aggTrades")):
        assert parse(blob).records.dtype == MARKET_EVENT


def replay_config(tmp_path, *files):
    from pipeline.config import Config
    return Config().with_overrides(feed={"source": "replay", "venues": ["spot"], "symbols": ["ETH-USDT"],
                                         "files": [f"spot={f}" for f in files]})


def test_lines_a_parser_refused_are_quarantined_as_unparsable_by_validate(tmp_path):
    """They used to vanish before validate: not in its counters, not in the error-rate guard, not journalled."""
    from pipeline.sources.replay_feed import load_recording
    from shm import control as cb
    from stages import validate
    good = ws_lines("spot_ethusdt_20240808.gz", 400)
    bad = b"".join(b"1723161254024619568 {not json %d\n" % i for i in range(60))
    path = tmp_path / "mixed.ws"
    half = good.index(b"\n", len(good) // 2) + 1
    path.write_bytes(good[:half] + bad + good[half:])
    stream, notes = load_recording(replay_config(tmp_path, path))
    assert "60 bad (quarantined as unparsable" in notes[0]
    stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
    state = validate.make_state(len(stream))
    out = np.zeros(len(stream), MARKET_EVENT)
    validate.step(stream, len(stream), stream[:0], 0, state, kernel_params("validate", n_venues=1, n_symbols=1, ticks=(), lots=(), max_stale_ms=1e12), None,
                  stats, out, 0)
    assert stats[1 + validate.R_UNPARSABLE] == 60 and stats[validate.ST_QUARANTINED] >= 60
    kept = np.zeros(len(stream), MARKET_EVENT)
    n, _ = validate.take_quarantined(state, kept)
    assert (kept[:n]["reason"] == validate.R_UNPARSABLE).sum() == 60
    assert validate.STATS[1 + validate.R_UNPARSABLE] == "unparsable"


@pytest.mark.parametrize("content, said", [
    (b"", "0 events from 0 lines (empty file)"),
    (b"exchange,symbol,timestamp,local_timestamp,id,side,price,amountX\nbinance,ETHUSDT,1,2,3,buy,1,1\n",
     "not a recognised replay format"),
    (b"exchange,symbol,timestamp,local_timestamp,id,side,price,amount\nbinance,ETHUSDT,x,y,3,buy,1,1\n",
     "0 events from 1 lines (refused: "),
])
def test_a_replay_file_that_yields_no_event_fails_saying_what_was_read(tmp_path, content, said):
    from pipeline.sources.replay_feed import ReplayInputError, load_recording
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(ReplayInputError) as err:
        load_recording(replay_config(tmp_path, path))
    assert str(err.value).startswith(f"feed.files: {path}") and said in str(err.value), str(err.value)
