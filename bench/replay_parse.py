"""Replay parse throughput per format: input rows/s and records/s, median of 3 runs.

Websocket captures are parsed as they are (gzip, whole files, decompression included). The CSV samples
in tests/data are a few to 10,000 rows, too small to time a vectorised parser, so each is also timed
"tiled": its body repeated in memory up to about ``--rows`` rows. Formats with no public sample
(Tardis derivative_ticker and liquidations, Binance trades/aggTrades) use generated rows, marked
"generated". Run from the repository root: ``python -m bench.replay_parse``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from pipeline.sources import SymbolTable, parse_binance_depth, parse_binance_trades, parse_binance_ws, parse_tardis

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
WS = DATA / "binance-ws-capture"
CSV = DATA / "nautilus-samples"

TABLE = SymbolTable(
    venues=["binance", ("binance-usdm", "binance-futures"), "binance-coinm", "deribit", "bitmex", "huobi-dm-swap"],
    symbols=["BTC-USDT", "ETH-USDT", "BTCUSD_PERP", "BTC-PERPETUAL", "XBTUSD", "BTC-USD"])


def _tile(data: bytes, rows: int, header: bool = True) -> bytes:
    head, body = data.split(b"\n", 1) if header else (b"", data)
    if not body.endswith(b"\n"):
        body += b"\n"
    k = max(1, rows // max(1, body.count(b"\n")))
    return (head + b"\n" if header else b"") + body * k


def _generated(kind: str, rows: int) -> bytes:
    j = np.arange(rows)
    t_us = 1_600_000_000_000_000 + j * 1000
    price = (10000 + j % 100).astype(str)
    qty = np.char.mod("%.3f", 0.001 * (1 + j % 50))
    maker = np.where(j % 3 == 0, "false", "true")
    if kind == "derivative_ticker":
        head = ("exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,predicted_funding_rate,"
                "open_interest,last_price,index_price,mark_price")
        cols = ["binance-futures", "BTCUSDT", t_us, t_us + 150, 1_600_028_800_000_000,
                np.char.mod("%.8f", 0.0001 + (j % 7) * 1e-6), "", "1000.5", 10000 + j % 13,
                np.char.mod("%.1f", 10000.5 + j % 11), np.char.mod("%.2f", 10000.25 + j % 17)]
    elif kind == "liquidations":
        head = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount"
        cols = ["binance-futures", "BTCUSDT", t_us, t_us + 150, j, np.where(j % 2, "buy", "sell"), price, qty]
    elif kind == "trades":
        head = "id,price,qty,quote_qty,time,is_buyer_maker"
        cols = [j, price, qty, "10.0", t_us // 1000, maker]
    else:
        head = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
        cols = [j, price, qty, 2 * j, 2 * j + 1, t_us // 1000, maker]
    body = np.broadcast_to(np.asarray(cols[0]).astype(str), (rows,))
    for col in cols[1:]:
        body = np.char.add(np.char.add(body, ","), np.broadcast_to(np.asarray(col).astype(str), (rows,)))
    return (head + "\n" + "\n".join(body.tolist()) + "\n").encode()


def _time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000, help="rows to tile small CSV samples up to")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = args.rows

    cases = []
    for name, venue in (("spot_btcusdt_20240808.gz", "binance"), ("spot_ethusdt_20240808.gz", "binance"),
                        ("usdm_btcusdt_20240808.gz", "binance-usdm"), ("cm_btcusd_perp_20240808.gz", "binance-coinm"),
                        ("spot_btcusdt_20240809.gz", "binance")):
        path = WS / name
        cases.append((f"binance-ws {name}", lambda p=path, v=venue: parse_binance_ws(p, TABLE, v)))
    for name, opts, tile_rows in (("deribit_incremental_book_L2_BTC-PERPETUAL.csv", {}, rows),
                                  ("binance-futures_book_snapshot_25_BTCUSDT.csv", {}, rows // 50),
                                  ("binance-futures_book_snapshot_5_BTCUSDT.csv", {}, rows // 10),
                                  ("binance-futures_book_snapshot_5_BTCUSDT.csv", {"book_as": "book"}, rows),
                                  ("tardis_trades.csv", {}, rows), ("bitmex_trades_XBTUSD.csv", {}, rows),
                                  ("tardis_quotes.csv", {}, rows)):
        data = (CSV / name).read_bytes()
        label = f"tardis {name}" + (" book_as=book" if opts else "")
        cases.append((label, lambda d=data, o=opts: parse_tardis(d, TABLE, **o)))
        tiled = _tile(data, tile_rows)
        cases.append((label + " tiled", lambda d=tiled, o=opts: parse_tardis(d, TABLE, **o)))
    for kind in ("derivative_ticker", "liquidations"):
        data = _generated(kind, rows)
        cases.append((f"tardis {kind} generated", lambda d=data, k=kind: parse_tardis(d, TABLE, kind=k)))
    for name in ("btcusdt-depth-snap.csv", "btcusdt-depth-update.csv"):
        data = (CSV / name).read_bytes()
        cases.append((f"binance-csv {name}", lambda d=data: parse_binance_depth(d, TABLE, "binance-usdm")))
        tiled = _tile(data, rows)
        cases.append((f"binance-csv {name} tiled", lambda d=tiled: parse_binance_depth(d, TABLE, "binance-usdm")))
    for kind in ("trades", "aggTrades"):
        data = _generated(kind, rows)
        cases.append((f"binance-csv {kind} generated",
                      lambda d=data, k=kind: parse_binance_trades(d, TABLE, "binance-usdm", symbol="BTCUSDT", kind=k)))

    # compile the numba kernel and warm the imports outside the timings
    parse_tardis((CSV / "deribit_incremental_book_L2_BTC-PERPETUAL.csv").read_bytes(), TABLE)
    print(f"{'format / input':<66} {'rows':>9} {'records':>9} {'median s':>9} {'rows/s':>11} {'records/s':>11}")
    for label, fn in cases:
        seconds, result = _time(fn, args.repeats)
        bad = f"  bad={result.n_bad}" if result.n_bad else ""
        print(f"{label:<66} {result.lines:>9,} {len(result.records):>9,} {seconds:>9.4f} "
              f"{result.lines / seconds:>11,.0f} {len(result.records) / seconds:>11,.0f}{bad}")


if __name__ == "__main__":
    main()
