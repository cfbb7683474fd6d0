"""Live source throughput: a whole Binance capture through the ccxt source vs a raw websocket client.

Each round starts a loopback server (``python -m tools.binance_loopback``, its own process, as fast as
the client reads: ``--speed 0``) on one capture and consumes its depth and trade streams to the end:

- ``ccxt source``: :class:`pipeline.sources.ccxt_source.CcxtSource` (ccxt.pro's binance client: JSON decode, its
  book sync, its trade cache, then our record building), books and trades;
- ``raw aiohttp+orjson``: one combined-stream connection, each message decoded with orjson and dropped,
  the floor any Python websocket client pays.

Each reads until it has the capture's last depth update id and last trade id. Reported: messages/s
(depth diffs + trades served), records/s emitted and the number of book views (ccxt coalesces what
arrives together into one view); medians over interleaved rounds (A B, B A, ...), min-max shown. Timing
runs from the client's start (for ccxt: load_markets and the REST snapshot included) to the last message;
the server process shares the two cores.

    python -m bench.ccxt_source [--rounds 5] [--capture spot_btcusdt_20240808.gz --product spot]
"""
from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import orjson

from pipeline.sources.ccxt_source import CcxtSource, VenueSpec
from stages.records import EV_BOOK, EV_TRADE
from tools.binance_loopback import load_capture

CAPTURES = Path(__file__).resolve().parents[1] / "tests" / "data" / "binance-ws-capture"
EXCHANGE = {"spot": "binance", "usdm": "binanceusdm", "coinm": "binancecoinm"}


class Server:
    def __init__(self, path: Path, product: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "tools.binance_loopback", "--product", product,
                                      "--speed", "0", "--wait-streams", "2", str(path)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        self.port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))

    def stop(self):
        self.proc.terminate()
        self.proc.communicate(timeout=10)


async def run_ccxt(port, product, symbol, last_u, last_trade):
    got = []
    spec = VenueSpec(product, 0, EXCHANGE[product], f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
    source = CcxtSource([spec], [symbol], got.append, funding=False, log=lambda text: None)
    stop = asyncio.Event()
    task = asyncio.ensure_future(source.run(stop))
    start = time.perf_counter()
    book_u = trade_id = 0
    seen = 0
    while not (book_u >= last_u and trade_id >= last_trade):
        await asyncio.sleep(0.001)
        for rec in got[seen:]:
            if rec["kind"][0] == EV_BOOK:
                book_u = int(rec["venue_seq"][-1])
            elif rec["kind"][0] == EV_TRADE:
                trade_id = int(rec["venue_seq"][-1])
        seen = len(got)
        if task.done():
            task.result()
        if time.perf_counter() - start > 300:
            raise TimeoutError("the ccxt source did not reach the end of the capture")
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    records = np.concatenate(got)
    return elapsed, len(records), int((records["kind"] == EV_BOOK).sum())


async def run_raw(port, product, symbol_id, last_u, last_trade):
    root = "" if product == "spot" else "/public"
    url = f"ws://127.0.0.1:{port}{root}/stream?streams={symbol_id.lower()}@depth@100ms/{symbol_id.lower()}@trade"
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        async with session.ws_connect(url, max_msg_size=0) as ws:
            book_u = trade_id = 0
            async for msg in ws:
                data = orjson.loads(msg.data)["data"]
                if data["e"] == "depthUpdate":
                    book_u = data["u"]
                else:
                    trade_id = data["t"]
                if book_u >= last_u and trade_id >= last_trade:
                    break
    return time.perf_counter() - start, 0, 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ccxt_source", description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", default="spot_btcusdt_20240808.gz")
    ap.add_argument("--product", default="spot", choices=sorted(EXCHANGE))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    path = CAPTURES / args.capture
    events, books = load_capture([path], args.product)
    symbol_id = events[0].symbol
    depth = [e for e in events if e.channel == "depth"]
    trades = [e for e in events if e.channel == "trade"]
    last_u, last_trade = depth[-1].data["u"], trades[-1].data["t"]
    messages = len(depth) + len(trades)
    print(f"{args.capture}: {len(depth):,} depth diffs + {len(trades):,} trades served per round; "
          f"{args.rounds} rounds, interleaved")
    runners = {"ccxt source": lambda port: run_ccxt(port, args.product, symbol_id, last_u, last_trade),
               "raw aiohttp+orjson": lambda port: run_raw(port, args.product, symbol_id, last_u, last_trade)}
    rates: dict = {name: [] for name in runners}
    extra: dict = {name: [] for name in runners}
    order = list(runners)
    for r in range(args.rounds):
        for name in order[r % 2:] + order[:r % 2]:
            server = Server(path, args.product)
            try:
                elapsed, n_records, n_views = asyncio.run(runners[name](server.port))
            finally:
                server.stop()
            rates[name].append(messages / elapsed)
            extra[name].append((n_records / elapsed, n_views))
    for name in order:
        v = rates[name]
        line = f"{name:>20}: {statistics.median(v):>9,.0f} msg/s (min {min(v):,.0f}, max {max(v):,.0f})"
        if name == "ccxt source":
            rec = statistics.median(x[0] for x in extra[name])
            views = statistics.median(x[1] for x in extra[name])
            line += f"; {rec:,.0f} records/s; {views:,.0f} book views for {len(depth):,} depth messages"
        print(line)
    ratio = statistics.median(rates["raw aiohttp+orjson"]) / statistics.median(rates["ccxt source"])
    print(f"raw client / ccxt source: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
