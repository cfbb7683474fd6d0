"""Helpers of the venue tests: a session against the loopback Binance and what it emitted and logged."""
import asyncio
import contextlib
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pipeline.venues import client_ids
from pipeline.venues.ccxt_orders import OrderSession, Timeouts
from pipeline.venues.credentials import Credentials
from stages.records import BUY, INTENT_QUOTE, VENUE_ANSWER, VENUE_COMMAND
from stages.universe import instrument_key
from tools.binance_loopback import LoopbackServer

CAPTURE = Path(__file__).resolve().parents[2] / "data" / "binance-ws-capture" / "spot_btcusdt_20240808.gz"
FUTURES_CAPTURE = CAPTURE.parent / "usdm_btcusdt_20240808.gz"
# the loopback's own test credentials (no real account anywhere), distinctive so a leak is easy to find
KEY, SECRET = "loopbackKey7f3a9c21e8", "loopbackSecret5d8e0b44c6"
VENUE = 1
KEY_BTC = instrument_key(VENUE, 2)
SYMBOLS = {2: "BTC/USDT"}
FAST = dict(request_s=3.0, recv_window_s=1.0, first_query_s=0.1, max_query_delay_s=0.4, absent_margin_s=0.3,
            fill_grace_s=0.1, sweep_period_s=0.5, stale_after_s=1.0, reconnect_min_s=0.1, reconnect_max_s=0.5,
            stream_ready_s=5.0, stop_wait_s=1.0)


def loopback_server():
    """The loopback Binance spot with its order endpoints, a static book (the replay never starts) and a rich
    account."""
    return LoopbackServer([CAPTURE], "spot", speed=0, wait_streams=99,
                          orders=dict(api_key=KEY, secret=SECRET, balances={"USDT": 10_000_000.0, "BTC": 100.0}))


def futures_loopback_server():
    """The loopback Binance USD-M futures with its order endpoints, a static book and a 100,000 USDT wallet at 20x
    (a session on it: ``Run(server, name, exchange="binanceusdm", symbols={2: "BTC-USDT"})``)."""
    return LoopbackServer([FUTURES_CAPTURE], "usdm", speed=0, wait_streams=99,
                          orders=dict(api_key=KEY, secret=SECRET, balance=100_000.0, leverage=20))


def venue_orders(server, prefix: str = "") -> list:
    """The loopback's orders (its account_snapshot), those of a client id prefix when given."""
    return [SimpleNamespace(client_id=o["clientOrderId"], order_id=o["orderId"], qty=float(o["qty"]),
                            price=float(o["price"]), executed=float(o["executed"]), status=o["status"],
                            created_ms=o["time"],
                            open=o["status"] in ("NEW", "PARTIALLY_FILLED"))
            for o in server.account_snapshot()["orders"] if o["clientOrderId"].startswith(prefix)]


def venue_trades(server, venue_order_id=None) -> list:
    """The loopback's trades (of one order when given), oldest first."""
    return [dict(id=t["tradeId"], qty=float(t["qty"]), price=float(t["price"]), fee=float(t["fee"]),
                 fee_asset=t["feeAsset"], maker=t["maker"])
            for t in server.account_snapshot()["trades"] if venue_order_id is None or t["orderId"] == venue_order_id]


def command(kind, order_id, side=BUY, price=0.0, qty=0.0, order_kind=INTENT_QUOTE, slot=5, key=KEY_BTC):
    c = np.zeros(1, VENUE_COMMAND)
    c["kind"], c["order_id"], c["slot"], c["key"], c["order_kind"] = kind, order_id, slot, key, order_kind
    c["side"], c["price"], c["qty"], c["send_ts"] = side, price, qty, time.time_ns()
    return c


class Run:
    """A session against the loopback and everything it emitted and logged."""

    def __init__(self, server, name, secret=SECRET, user_stream=True, symbols=None, exchange="binance",
                 **timeouts):
        self.server, self.prefix = server, client_ids.prefix(name)
        self.batches, self.logs = [], []
        self.session = OrderSession(exchange, Credentials("binance", KEY, secret), VENUE, symbols or SYMBOLS,
                                    self.prefix,
                                    self.batches.append, rest_url=server.rest_url, ws_url=server.ws_url,
                                    timeouts=Timeouts(**{**FAST, **timeouts}), user_stream=user_stream,
                                    log=self.logs.append)

    @property
    def answers(self) -> np.ndarray:
        return np.concatenate(self.batches) if self.batches else np.zeros(0, VENUE_ANSWER)

    def of(self, order_id) -> np.ndarray:
        a = self.answers
        return a[a["order_id"] == order_id]

    def kinds(self, order_id) -> list:
        return [int(k) for k in self.of(order_id)["kind"]]

    async def until(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; answers {self.answers[['kind', 'order_id']].tolist()}; "
                                     f"logs {self.logs[-5:]}")
            await asyncio.sleep(0.02)

    def venue_orders(self) -> list:
        return venue_orders(self.server, self.prefix)

    def venue_trades(self, venue_order_id) -> list:
        return venue_trades(self.server, venue_order_id)


@contextlib.asynccontextmanager
async def running(server, name, **kw):
    run = Run(server, name, **kw)
    await run.session.start()
    try:
        yield run
    finally:
        await run.session.stop()
    assert not [line for line in run.logs if "internal error" in line]


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def best(server):
    book = server.books["BTCUSDT"]
    asks = sorted(book.asks)
    return max(book.bids), asks, book
