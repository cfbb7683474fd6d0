"""Live venue latency at the loopback Binance: intent -> order on the wire -> ACK back in execute's answer ring,
and kill -> every order cancelled at the venue, through the live venue gateway (``pipeline.venues.gateway``),
beside the same ccxt client called directly.

Processes (forked from the bench process, not pinned: the gateway has two threads; everything shares the cores):

- bench: the loopback Binance spot (``tools.binance_loopback`` with ``tools.loopback_orders``; a static book: the
  replay never starts) on a thread. It stamps every signed request as it reaches its handler (the routes'
  ``arrivals``) and the end of every order (a listener on its account); otherwise it conducts the rounds from a
  blocking pipe read.
- execute: writes VENUE_COMMAND records into the gateway's command ring with execute's own njit code
  (``stages.venue.link.send_new``, ``send_ts`` = the wall clock read just before), and reads the answer ring
  (``link.take_answers``) every ~0.1 ms while it waits for an ACK (a short sleep between reads: a spinner would take
  one of the two cores from the gateway), stamping each read.
- gateway: the real ``Gateway`` agent under ``AgentRunner`` with the production idle strategy (sleep 100 us with no
  work), its session from ``gateway.session_factory`` on a Config with one live venue at the loopback (credentials
  from the environment: the loopback's own test key); its rings are created by the bench under the run's names.
- session: an ``OrderSession`` from the same factory on its own event loop, fed on that loop (``submit``): the
  gateway without its rings, its polling main thread and the hop to the session's thread.
- ccxt: the ccxt.pro binance client the session factory builds (same options: rate limiter on, recvWindow,
  timeout, time-difference adjustment), ``create_order`` / ``cancel_all_orders`` awaited directly: the floor; and
  a second one with ccxt's own rate limiter put back ("stock": its leaky bucket refills only while a request
  waits, so every lone request waits cost x rateLimit, 10 ms for a Binance order; the session's credits idle time).

Intent -> wire: ``send_ts`` (ccxt: just before ``create_order``) to the loopback's handler entry for that client
order id. Intent -> ACK: to the ACK read from the answer ring (gateway), emitted by the session (session), or
``create_order`` returning (ccxt). Orders are resting GTC buys 10% under the bid, sent one at a time, each after the
previous one's ACK and a ``--gap-ms`` pause (so ccxt's leaky bucket, 10 ms per order on Binance, never holds one
back); after each case's batch its orders are cancelled (untimed).

Kill: N resting orders (``--resting``) placed through the case's own path (a burst), a pause for ccxt's bucket to
refill, then the gateway: ``trading_enabled`` dropped in the shared globals (the gateway sees it in ``do_work`` and
runs ``cancel_all``); ccxt: ``cancel_all_orders(symbol)``; measured until the loopback has ended the last of them.
Execute's own cancels through the ring (which race the gateway's in a real run) are not sent here.

Wall clock (``time.time_ns``) throughout: ``send_ts`` is execute's wall clock, and every stamp is taken on this
machine. Rounds rotate the cases (A B C, B C A, ...); figures are percentiles over every round's samples, with the
per-round p50 range.

    python -m bench.live_venue_latency [--rounds 3] [--orders 40] [--resting 10,50] [--gap-ms 20] [--warmup 5]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import threading
import time
import traceback
from multiprocessing.connection import Pipe
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bench._common import (Children, fmt_ns, fmt_ratio, machine_info, reclaim_stale_bench_segments, shared_array,
                           terminate_as_exit)
from pipeline import graph, names
from pipeline.config import Config
from pipeline.venues import client_ids
from shm import control as cb
from shm import ring, segment
from stages.records import ANS_ACK, ANS_REJECTED, BUY, INTENT_QUOTE, VENUE_COMMAND
from stages.universe import instrument_key
from stages.venue import link
from tools.binance_loopback import LoopbackServer

CAPTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "binance-ws-capture" / "spot_btcusdt_20240808.gz"
KEY, SECRET = "benchLoopbackKey3b7e", "benchLoopbackSecret91c4"  # the loopback's own: no account anywhere
VENUE_NAME, SYMBOL, MARKET = "spot", "BTC-USDT", "BTC/USDT"
VENUE = 0                         # index of "spot" in the config's feed.venues
KEY_BTC = instrument_key(VENUE, 0)
QTY = 0.001
PRE_KILL_S = 0.3                  # after the burst of resting orders: ccxt's bucket (1 token, 0.02/ms) is full again
SETTLE_S = 1.0                    # after a session's cancel_all: its open-order listing costs 16 tokens (0.8 s)
POLL_S = 20e-6                    # execute's answer-ring poll: a sleep between reads (~0.1 ms here), not a spin
RUN_STEM = "bench"                # run names bench{gw,ss,cx,st}<pid>
LATENCY_CASES = ("stock", "ccxt", "session", "gateway")
KILL_CASES = ("ccxt", "gateway")
LABEL = {"stock": "ccxt create_order, ccxt's own rate limiter", "ccxt": "ccxt create_order (floor)",
         "session": "OrderSession on its loop", "gateway": "gateway (rings)"}
KILL_LABEL = {"ccxt": "ccxt cancel_all_orders", "gateway": "gateway: trading_enabled 0"}


# ---------------------------------------------------------------------------------------------------------
# Shared pieces


def venue_config(run: str, server: LoopbackServer) -> Config:
    """A run with one live venue, "spot", at the loopback (what test_live_venue's TOML says)."""
    return Config().with_overrides(
        run={"name": run},
        feed={"source": "ccxt", "venues": [VENUE_NAME], "symbols": [SYMBOL],
              "ccxt_exchanges": [f"{VENUE_NAME}=binance"], "ccxt_rest_urls": [f"{VENUE_NAME}={server.rest_url}"],
              "ccxt_ws_urls": [f"{VENUE_NAME}={server.ws_url}"]},
        gateway={"live_venues": [VENUE_NAME]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reply(conn, fn) -> None:
    try:
        conn.send(("ok", fn()))
    except Exception:  # noqa: BLE001 - the bench process raises it
        conn.send(("error", traceback.format_exc()))


async def reply_async(conn, coro) -> None:
    try:
        value = await coro
    except Exception:  # noqa: BLE001
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ok", value))


def ask(conn, job: tuple, timeout: float = 120.0):
    conn.send(job)
    if not conn.poll(timeout):
        raise TimeoutError(f"{job[0]}: no answer in {timeout:.0f} s")
    status, value = conn.recv()
    if status != "ok":
        raise RuntimeError(f"{job[0]} failed in the child:\n{value}")
    return value


# ---------------------------------------------------------------------------------------------------------
# Children. Each waits for ("go",) before it connects (the loopback starts after the forks), then serves jobs:
# ("place", first order id, count, gap s): gap > 0 one at a time, each after the previous ACK; 0 a burst.
# Rows: (order id, sent ns, ACK ns, ok, the session's arrive_ts or 0).


def execute_child(conn, cmd: ring.RingView, ans: ring.RingView, price: float) -> int:
    links = link.make_links({VENUE: ((cmd.producer, cmd.consumer, cmd.records),
                                     (ans.producer, ans.consumer, ans.records))})
    scratch = links[link.L_ANSWER_SCRATCH]
    counts: dict[int, int] = {}

    def take(acks: dict) -> int:
        n = link.take_answers(links, VENUE, scratch.shape[0])
        if n:
            t = time.time_ns()
            for a in scratch[:n]:
                kind = int(a["kind"])
                counts[kind] = counts.get(kind, 0) + 1
                if kind in (ANS_ACK, ANS_REJECTED):
                    acks.setdefault(int(a["order_id"]), (t, kind == ANS_ACK, int(a["arrive_ts"]), int(a["send_ts"])))
        return n

    def wait(acks: dict, want, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(oid in acks for oid in want):
            if not take(acks):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no ACK for {[o for o in want if o not in acks][:5]}")
                time.sleep(POLL_S)

    def send(oid: int) -> int:
        sent = time.time_ns()
        if not link.send_new(links, VENUE, oid, oid % 4096, KEY_BTC, INTENT_QUOTE, BUY, price, QTY, 0, 0, sent):
            raise RuntimeError("the command ring is full")
        return sent

    def place(first: int, n: int, gap_s: float) -> list:
        acks: dict = {}
        while take(acks):  # answers of earlier work (cancels) are not this job's
            pass
        acks.clear()
        ids = range(first, first + n)
        sent = {}
        for oid in ids:
            sent[oid] = send(oid)
            if gap_s > 0:
                wait(acks, (oid,), 30.0)
                time.sleep(gap_s)
        wait(acks, ids, 60.0)
        rows = []
        for oid in ids:
            t, ok, arrive, echo = acks[oid]
            if echo != sent[oid]:
                raise RuntimeError(f"order {oid}: the ACK's send_ts {echo} is not the command's {sent[oid]}")
            rows.append((oid, sent[oid], t, ok, arrive))
        return rows

    def drain(quiet_s: float) -> dict:
        acks: dict = {}
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            if take(acks):
                last = time.monotonic()
            else:
                time.sleep(0.001)
        return dict(counts)

    while True:
        job = conn.recv()
        if job[0] == "stop":
            reply(conn, lambda: dict(counts))
            return 0
        if job[0] == "go":
            reply(conn, lambda: None)
        elif job[0] == "place":
            reply(conn, lambda: place(*job[1:]))
        elif job[0] == "drain":
            reply(conn, lambda: drain(job[1]))


def gateway_child(conn, config: Config, block, slot: np.ndarray) -> int:
    from pipeline.hosting.agent import AgentRunner, sleeping
    from pipeline.venues.gateway import IDLE_SLEEP_US, Gateway
    conn.recv()  # go
    logs: list[str] = []
    gw = Gateway(config, block, slot)
    gw._log = logs.append  # quiet: one line per kill otherwise
    child = SimpleNamespace(name="gateway", block=block, slot=slot)
    rc = AgentRunner(gw, child, sleeping(IDLE_SLEEP_US)).run()
    sessions = [v.thread.session for v in gw.venues if v.thread is not None]
    conn.send(("ok", dict(rc=rc, logs=logs[-20:], counters=sessions[0].counters.as_dict() if sessions else {})))
    return rc


def session_child(conn, config: Config) -> int:
    asyncio.run(_session_main(conn, config))
    return 0


async def _session_main(conn, config: Config) -> None:
    from pipeline.venues.gateway import session_factory
    loop = asyncio.get_running_loop()
    logs: list[str] = []
    acks: dict = {}
    news = asyncio.Event()

    def emit(batch: np.ndarray) -> None:
        t = time.time_ns()
        for a in batch:
            if int(a["kind"]) in (ANS_ACK, ANS_REJECTED):
                acks.setdefault(int(a["order_id"]), (t, int(a["kind"]) == ANS_ACK, int(a["arrive_ts"])))
        news.set()

    async def until(want) -> None:
        deadline = time.monotonic() + 60.0
        while not all(oid in acks for oid in want):
            news.clear()
            await asyncio.wait_for(news.wait(), max(0.001, deadline - time.monotonic()))

    async def place(first: int, n: int, gap_s: float, price: float) -> list:
        ids = range(first, first + n)
        sent = {}
        for oid in ids:
            cmd = np.zeros(1, VENUE_COMMAND)
            cmd["kind"], cmd["order_id"], cmd["slot"], cmd["key"] = 1, oid, oid % 4096, KEY_BTC
            cmd["order_kind"], cmd["side"], cmd["price"], cmd["qty"] = INTENT_QUOTE, BUY, price, QTY
            cmd["send_ts"] = sent[oid] = time.time_ns()
            session.submit(cmd)  # on its loop: no thread hop
            if gap_s > 0:
                await until((oid,))
                await asyncio.sleep(gap_s)
        await until(ids)
        return [(oid, sent[oid], acks[oid][0], acks[oid][1], acks[oid][2]) for oid in ids]

    await loop.run_in_executor(None, conn.recv)  # go
    session = session_factory(config, VENUE, VENUE_NAME, logs.append)(emit)
    try:
        await reply_async(conn, session.start())
        while True:
            job = await loop.run_in_executor(None, conn.recv)
            if job[0] == "stop":
                break
            if job[0] == "place":
                await reply_async(conn, place(*job[1:]))
            elif job[0] == "cancel_all":
                await reply_async(conn, session.cancel_all())
    finally:
        await session.stop()
    conn.send(("ok", dict(logs=logs[-20:], counters=session.counters.as_dict())))


def ccxt_child(conn, configs: dict) -> int:
    asyncio.run(_ccxt_main(conn, configs))
    return 0


async def _ccxt_main(conn, configs: dict) -> None:
    """``configs``: {"ccxt": config, "stock": config}: the client an OrderSession makes (its options, rate limiter,
    timeout, URLs), used directly; "stock" with ccxt's own rate limiter put back."""
    import ccxt
    from ccxt.async_support.base.throttler import Throttler
    from pipeline.venues.gateway import session_factory
    loop = asyncio.get_running_loop()
    prefixes = {case: client_ids.prefix(config.run.name) for case, config in configs.items()}
    clients = {case: session_factory(config, VENUE, VENUE_NAME, lambda text: None)(lambda answers: None).ex
               for case, config in configs.items()}
    stock = clients["stock"]
    stock.throttler = Throttler(stock.tokenBucket, stock.asyncio_loop)

    async def one(case: str, oid: int, price: float) -> tuple:
        cid = client_ids.client_order_id(prefixes[case], oid)
        t0 = time.time_ns()
        info = await clients[case].create_order(MARKET, "limit", "buy", QTY, price,
                                                {"clientOrderId": cid, "timeInForce": "GTC"})
        return oid, t0, time.time_ns(), info.get("status") == "open", 0

    async def place(case: str, first: int, n: int, gap_s: float, price: float) -> list:
        if gap_s <= 0:
            return list(await asyncio.gather(*(one(case, oid, price) for oid in range(first, first + n))))
        rows = []
        for oid in range(first, first + n):
            rows.append(await one(case, oid, price))
            await asyncio.sleep(gap_s)
        return rows

    async def cancel_all(case: str) -> tuple:
        t0 = time.time_ns()
        try:
            n = len(await clients[case].cancel_all_orders(MARKET))
        except ccxt.OrderNotFound:  # the venue's -2011: nothing open
            n = 0
        return t0, time.time_ns(), n

    async def start() -> None:
        for ex in clients.values():
            await ex.load_markets()

    await loop.run_in_executor(None, conn.recv)  # go
    try:
        await reply_async(conn, start())
        while True:
            job = await loop.run_in_executor(None, conn.recv)
            if job[0] == "stop":
                break
            if job[0] == "place":
                await reply_async(conn, place(*job[1:]))
            elif job[0] == "cancel_all":
                await reply_async(conn, cancel_all(*job[1:]))
    finally:
        for ex in clients.values():
            await ex.close()
    conn.send(("ok", {}))


# ---------------------------------------------------------------------------------------------------------
# The bench process


class EndWatch:
    """On the loopback's loop: the wall time at which the last of a set of orders ended (its account listener)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.remaining: set | None = None
        self.done_ns = 0
        self.event = threading.Event()

    def arm(self, cids) -> None:
        with self.lock:
            self.remaining, self.done_ns = set(cids), 0
            self.event.clear()

    def on_change(self, order, exec_type, fill, now_ms) -> None:
        t = time.time_ns()
        with self.lock:
            if self.remaining is None or order.open or order.client_id not in self.remaining:
                return
            self.remaining.discard(order.client_id)
            if not self.remaining:
                self.remaining, self.done_ns = None, t
                self.event.set()


class Bench:
    def __init__(self, server: LoopbackServer, conns: dict, prefixes: dict, globals_: np.ndarray, price: float,
                 gap_s: float):
        self.server, self.routes = server, server.order_routes
        self.conns, self.prefixes, self.g, self.price, self.gap_s = conns, prefixes, globals_, price, gap_s
        self.watch = EndWatch()
        self.routes.account.listeners.append(self.watch.on_change)
        self.next_id = {case: 1 for case in LATENCY_CASES}

    def ids(self, case: str, n: int) -> int:
        first = self.next_id[case]
        self.next_id[case] += n
        return first

    def place(self, case: str, n: int, gap_s: float) -> list:
        first = self.ids(case, n)
        if case == "gateway":
            conn, job = self.conns["execute"], ("place", first, n, gap_s)
        elif case == "session":
            conn, job = self.conns["session"], ("place", first, n, gap_s, self.price)
        else:
            conn, job = self.conns["ccxt"], ("place", case, first, n, gap_s, self.price)
        rows = ask(conn, job, timeout=60.0 + n * (gap_s + 0.1))
        if not all(r[3] for r in rows):
            raise RuntimeError(f"{case}: {sum(not r[3] for r in rows)} of {n} orders were not placed open")
        return rows

    def open_cids(self, case: str) -> list[str]:
        prefix = self.prefixes[case]
        return [o["clientOrderId"] for o in self.server.account_snapshot()["open_orders"]
                if o["clientOrderId"].startswith(prefix)]

    def wait_listing(self, mark: int, timeout: float = 30.0) -> None:
        """Until a GET openOrders reached the loopback after arrivals[mark]: the session's cancel_all has listed
        the venue's open orders (only the gateway is busy then)."""
        deadline = time.monotonic() + timeout
        while not any(m == "GET" and p.endswith("/openOrders") for _, m, p, _ in self.routes.arrivals[mark:]):
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway's cancel_all never listed the open orders")
            time.sleep(0.01)

    def cancel_all(self, case: str) -> tuple[int, int]:
        """Every open order of the case cancelled by its own path; (ns until the venue ended the last one, ns
        until the call returned: ccxt only, else 0); (0, 0) when none was open."""
        cids = self.open_cids(case)
        if not cids:
            return 0, 0
        self.watch.arm(cids)
        returned = 0
        if case == "gateway":
            mark = len(self.routes.arrivals)
            t0 = time.time_ns()
            self.g[cb.G_TRADING_ENABLED] = 0
        elif case == "session":
            t0 = time.time_ns()
            ask(self.conns["session"], ("cancel_all",))
        else:
            t0, t1, _ = ask(self.conns["ccxt"], ("cancel_all", case))
            returned = t1 - t0
        if not self.watch.event.wait(120.0):
            raise TimeoutError(f"{case}: orders still open at the loopback after its cancel-all")
        venue = self.watch.done_ns - t0
        if case == "gateway":
            self.wait_listing(mark)
            time.sleep(SETTLE_S)
            self.g[cb.G_TRADING_ENABLED] = 1
            time.sleep(0.01)  # the gateway sees it armed again before the next drop
            ask(self.conns["execute"], ("drain", 0.05))
        elif case == "session":
            time.sleep(SETTLE_S)
        else:
            time.sleep(0.1)
        if self.open_cids(case):
            raise RuntimeError(f"{case}: orders still open after the cancel-all")
        return venue, returned

    def latency(self, case: str, n: int) -> dict:
        rows = self.place(case, n, self.gap_s)
        prefix = self.prefixes[case]
        arrived = {}
        for t, method, path, cid in list(self.routes.arrivals):
            if method == "POST" and path.endswith("/order") and cid.startswith(prefix):
                arrived.setdefault(cid, t)
        out = dict(wire=[], ack=[], session=[])
        for oid, sent, acked, _, session_ts in rows:
            wire = arrived[client_ids.client_order_id(prefix, oid)]
            out["wire"].append(wire - sent)
            out["ack"].append(acked - sent)
            if session_ts:  # decomposition: wire -> the session had the ACK -> execute read it
                out["session"].append((wire - sent, session_ts - wire, acked - session_ts))
        self.cancel_all(case)
        return out

    def kill(self, case: str, n: int) -> tuple[int, int]:
        self.place(case, n, 0.0)
        if len(self.open_cids(case)) != n:
            raise RuntimeError(f"{case}: {len(self.open_cids(case))} open orders, not {n}")
        time.sleep(PRE_KILL_S)
        return self.cancel_all(case)


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def rotate(items, r: int) -> list:
    k = r % len(items)
    return list(items[k:]) + list(items[:k])


def run(args) -> int:
    pid = os.getpid()
    runs = {"gateway": f"{RUN_STEM}gw{pid}", "session": f"{RUN_STEM}ss{pid}", "ccxt": f"{RUN_STEM}cx{pid}",
            "stock": f"{RUN_STEM}st{pid}"}
    server = LoopbackServer([CAPTURE], "spot", speed=0, wait_streams=99, port=free_port(),
                            orders=dict(api_key=KEY, secret=SECRET, balances={"USDT": 1e9, "BTC": 1000.0}))
    server.order_routes.arrivals = []
    price = round(max(server.books["BTCUSDT"].bids) * 0.9, 2)
    os.environ.update({"BOT4_SPOT_API_KEY": KEY, "BOT4_SPOT_API_SECRET": SECRET})  # the loopback's test key
    configs = {case: venue_config(name, server) for case, name in runs.items()}
    prefixes = {case: client_ids.prefix(name) for case, name in runs.items()}
    import ccxt
    print(f"machine: {machine_info()}")
    print(f"ccxt {ccxt.__version__}; loopback Binance spot on {server.rest_url} (static book, bid "
          f"{max(server.books['BTCUSDT'].bids):.2f}; orders: buy {QTY} BTC at {price:.2f}, GTC)")
    print(f"rounds {args.rounds}; {args.orders} orders per latency case per round, one at a time, "
          f"{args.gap_ms:g} ms apart; kill with {', '.join(map(str, args.resting))} resting orders; "
          f"warm-up {args.warmup} orders per case")

    cmd_spec, ans_spec = graph.gateway_rings(configs["gateway"], VENUE)
    made: list[ring.RingView] = []
    g = shared_array(cb.GLOBAL_WORDS)
    slot = shared_array(cb.STAGE_WORDS)
    g[cb.G_RUN_STATE] = cb.RUN_RUNNING
    conns: dict = {}
    try:
        for spec in (cmd_spec, ans_spec):
            made.append(ring.create_ring(names.ring(runs["gateway"], spec.name), spec.dtype, spec.capacity))
        cmd, ans = made
        with Children() as kids:
            for case, fn, fargs in (("execute", execute_child, (cmd, ans, price)),
                                    ("gateway", gateway_child, (configs["gateway"], SimpleNamespace(globals=g), slot)),
                                    ("session", session_child, (configs["session"],)),
                                    ("ccxt", ccxt_child, ({c: configs[c] for c in ("ccxt", "stock")},))):
                mine, theirs = Pipe()
                kids.spawn(None, fn, theirs, *fargs)
                theirs.close()
                conns[case] = mine
            server.start()
            try:
                return conduct(args, server, conns, kids, prefixes, g, slot, price, made)
            finally:
                slot[cb.S_STOP] = 1  # the gateway cancels what is left and stops
                for case in ("execute", "session", "ccxt"):
                    with contextlib.suppress(Exception):
                        ask(conns[case], ("stop",), timeout=20.0)
                with contextlib.suppress(Exception):
                    if conns["gateway"].poll(20.0):
                        report = conns["gateway"].recv()[1]
                        print(f"gateway: exit {report['rc']}; session counters: " + ", ".join(
                            f"{k} {report['counters'].get(k, 0)}" for k in
                            ("creates", "acks", "cancels", "cancelled", "rejects", "unknown", "errors",
                             "stream_updates", "foreign_updates")))
                        errors = [line for line in report["logs"]
                                  if "error" in line or ("failed" in line and "'failed': 0" not in line)]
                        if errors:
                            print("gateway log (errors):\n  " + "\n  ".join(errors))
                with contextlib.suppress(TimeoutError):
                    kids.wait(30.0)
    finally:
        for view in made:
            with contextlib.suppress(Exception):
                view.segment.unlink()
        server.stop()


def conduct(args, server, conns, kids, prefixes, g, slot, price, made) -> int:
    for case in ("execute", "session", "ccxt"):
        conns[case].send(("go",))
    conns["gateway"].send(("go",))
    for case in ("execute", "session", "ccxt"):
        if not conns[case].poll(60.0):
            raise TimeoutError(f"{case} did not start")
        status, value = conns[case].recv()
        if status != "ok":
            raise RuntimeError(f"{case} failed to start:\n{value}")
    deadline = time.monotonic() + 60.0
    while slot[cb.S_STATE] not in (cb.READY, cb.RUNNING):  # (the run already runs: READY, then RUNNING)
        if time.monotonic() > deadline or conns["gateway"].poll(0):
            raise RuntimeError("the gateway did not start (its output is above)")
        time.sleep(0.01)
    for view in made:  # every process has mapped them
        view.segment.unlink()
    g[cb.G_TRADING_ENABLED] = 1
    time.sleep(0.01)

    bench = Bench(server, conns, prefixes, g, price, args.gap_ms / 1e3)
    t_start = time.monotonic()
    for case in LATENCY_CASES:
        bench.latency(case, args.warmup)
    lat = {case: [] for case in LATENCY_CASES}        # per round: dict(wire, ack, session)
    kills = {(n, case): [] for n in args.resting for case in KILL_CASES}  # (venue ns, call ns)
    for r in range(args.rounds):
        line = []
        for case in rotate(LATENCY_CASES, r):
            res = bench.latency(case, args.orders)
            lat[case].append(res)
            line.append(f"{case} {fmt_ns(np.median(res['wire']))} / {fmt_ns(np.median(res['ack']))}")
        print(f"round {r + 1}: p50 wire / ack: " + ", ".join(line), flush=True)
        line = []
        for n in args.resting:
            for case in rotate(KILL_CASES, r):
                venue, call = bench.kill(case, n)
                kills[(n, case)].append((venue, call))
                line.append(f"{case}×{n} {fmt_ns(venue)}")
        print(f"round {r + 1}: kill -> all cancelled: " + ", ".join(line), flush=True)
    took = time.monotonic() - t_start
    return report(args, lat, kills, took)


def report(args, lat, kills, took) -> int:
    out = {"bench": "live_venue_latency", "rounds": args.rounds, "orders": args.orders, "gap_ms": args.gap_ms,
           "resting": list(args.resting), "wire_us": {}, "ack_us": {}, "kill_ms": {}}

    def pooled(case, what):
        return np.concatenate([np.asarray(r[what], np.float64) for r in lat[case]])

    for what, title in (("wire", "Intent -> order on the wire (send_ts -> the loopback's handler)"),
                        ("ack", "Intent -> ACK (gateway: read from the answer ring; session: emitted; "
                                "ccxt: create_order returned)")):
        floor = pooled("ccxt", what)
        f50, f99 = pct(floor, 50), pct(floor, 99)
        print(f"\n{title}\n")
        print("| case | p50 | p99 | p50 ÷ ccxt | p99 ÷ ccxt | per-round p50 range | samples |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for case in LATENCY_CASES:
            v = pooled(case, what)
            rounds = [np.median(r[what]) for r in lat[case]]
            p50, p99 = pct(v, 50), pct(v, 99)
            print(f"| {LABEL[case]} | {fmt_ns(p50)} | {fmt_ns(p99)} | {fmt_ratio(p50 / f50)} | {fmt_ratio(p99 / f99)} "
                  f"| {fmt_ns(min(rounds))}–{fmt_ns(max(rounds))} | {len(v)} |")
            out[f"{what}_us"][case] = {"p50": round(p50 / 1e3, 1), "p99": round(p99 / 1e3, 1),
                                       "p50_ratio": round(p50 / f50, 3), "p99_ratio": round(p99 / f99, 3)}
    print("\nWhere the time goes, p50 (the session's arrive_ts: when it had the ACK):\n")
    print("| case | send_ts -> wire | wire -> ACK in the session | session -> ACK read by execute |")
    print("| --- | --- | --- | --- |")
    for case in ("session", "gateway"):
        parts = np.array([p for r in lat[case] for p in r["session"]], np.float64)
        print(f"| {LABEL[case]} | {fmt_ns(pct(parts[:, 0], 50))} | {fmt_ns(pct(parts[:, 1], 50))} "
              f"| {fmt_ns(pct(parts[:, 2], 50))} |")
    print("\nKill -> every order cancelled at the loopback (p99 of a few rounds: about their max)\n")
    print("| resting | case | p50 | p99 | min–max | p50 ÷ ccxt | call returned p50 | rounds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in args.resting:
        floor = pct([v for v, _ in kills[(n, "ccxt")]], 50)
        out["kill_ms"][str(n)] = {}
        for case in KILL_CASES:
            venue = [v for v, _ in kills[(n, case)]]
            calls = [c for _, c in kills[(n, case)] if c]
            p50, p99 = pct(venue, 50), pct(venue, 99)
            print(f"| {n} | {KILL_LABEL[case]} | {fmt_ns(p50)} | {fmt_ns(p99)} | {fmt_ns(min(venue))}–"
                  f"{fmt_ns(max(venue))} | {fmt_ratio(p50 / floor)} | {fmt_ns(pct(calls, 50)) if calls else '-'} "
                  f"| {len(venue)} |")
            out["kill_ms"][str(n)][case] = {"p50": round(p50 / 1e6, 3), "p99": round(p99 / 1e6, 3),
                                            "p50_ratio": round(p50 / floor, 2)}
    print(f"\n({took:.0f} s of rounds)")
    print(json.dumps(out))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.live_venue_latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--orders", type=int, default=40, help="orders per latency case per round")
    ap.add_argument("--resting", default="10,50", help="resting orders at each kill, comma-separated")
    ap.add_argument("--gap-ms", type=float, default=20.0, help="pause after each ACK before the next order")
    ap.add_argument("--warmup", type=int, default=5, help="orders per latency case before the rounds (not counted)")
    args = ap.parse_args(argv)
    args.resting = [int(x) for x in str(args.resting).split(",") if x.strip()]
    if args.rounds < 1 or args.orders < 1 or not args.resting or min(args.resting) < 1 or args.warmup < 1:
        ap.error("--rounds, --orders, --warmup and each --resting must be at least 1")
    stale = reclaim_stale_bench_segments()
    for name in segment.list_segments(f"{segment.NAME_PREFIX}{RUN_STEM}gw"):
        with contextlib.suppress(Exception):
            if segment.reclaim_if_stale(name):
                stale.append(name)
    if stale:
        print(f"note: reclaimed {len(stale)} stale segment(s) of dead bench runs: {stale}")
    with terminate_as_exit():
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
