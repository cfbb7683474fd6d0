"""The gateway process: between execute's command rings and the live venues (gateway.live_venues), through ccxt.

Execute owns every order's state (stages.order_state); the gateway only speaks each venue's protocol. Per live
venue one :class:`pipeline.venues.ccxt_orders.OrderSession` runs on its own asyncio loop in a thread; the main
thread (this agent's ``do_work``) takes execute's commands from the venue's command ring and hands them to the
session, and publishes the session's answers to the venue's answer ring, in the order the session made them.
An answer never waits in a full ring by being dropped: it waits here (counted in ``answers_waiting``).

Start-up (``on_start``, before the process says ready): credentials from the environment or the owner-only file
(pipeline.venues.credentials), markets loaded, then reconciliation against the venue (pipeline.venues.reconcile):
our orders left open by an earlier run or incarnation are cancelled at the venue; a position at the venue that
execute does not hold fails the start (the run stops before it arms).

A spot venue keeps balances, not positions: while the run goes, the gateway checks each base currency's balance
against the balance at the run's start plus the fills it handed execute (pipeline.venues.holdings, every
``gateway.holdings_check_s``); a confirmed difference disables trading and names the currency.

The kill switch reaches the venue twice: execute cancels its open orders through the rings as soon as
``trading_enabled`` drops, and the gateway, seeing the drop itself, cancels every order of ours at every live
venue (orders execute may not know of, or a dead execute). While armed it refreshes the venue's dead-man's
switch (``gateway.dead_man_ms``) so the venue cancels our orders even if the whole host dies.

Concurrency: the sessions' loops hand answers to the main thread through one queue per venue; the counters in
the control-block slot are written by the main thread only.
"""
from __future__ import annotations

import asyncio
import queue
import sys
import threading
import time

import numpy as np

from pipeline import graph, kill_reasons, names, registry
from pipeline.hosting.agent import Agent, AgentRunner, AgentTerminated, sleeping
from pipeline.hosting.child import start
from pipeline.venues import client_ids
from pipeline.venues.holdings import HoldingsCheck
from shm import control as cb
from shm import ring
from stages import records
from stages.universe import instrument_key

COMMAND_BATCH = 256
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
COUNTERS_PERIOD_S = 0.2
IDLE_SLEEP_US = 100  # an idle gateway sleeps this long: a command waits at most about this for its session
W = {label: i for i, label in enumerate(registry.counters("gateway"))}
# the gateway's control-block words from its sessions' counters (pipeline.venues.ccxt_orders.Counters), summed: the
# orders the venue took (ACKs, not create calls), the venue's refusals (not the session's own local ones)
COUNTER_SOURCES = {"orders_placed": ("orders_placed",), "cancels_sent": ("cancels",),
                   "venue_rejects": ("venue_rejects",),
                   "unknown_outcomes": ("unknown",), "unknown_resolved": ("unknown_resolved", "unknown_absent"),
                   "queries": ("queries",), "stream_reconnects": ("stream_reconnects",),
                   "venue_errors": ("network_errors", "stream_errors"), "amends": ("amends",),
                   "amends_applied": ("amends_applied",), "amend_rejects": ("amend_rejects",)}


class SessionThread:
    """One venue's OrderSession on its own event loop; ``answers`` carries its VENUE_ANSWER arrays out."""

    def __init__(self, make_session, name: str):
        self.answers: queue.Queue = queue.Queue()
        self.failure: BaseException | None = None
        self.loop = asyncio.new_event_loop()
        self.session = make_session(self.answers.put)
        self._thread = threading.Thread(target=self._main, name=f"gateway-{name}", daemon=True)
        self._stop: asyncio.Event | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._stop = asyncio.Event()
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread, which fails the process
            self.failure = exc
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        await self._stop.wait()
        await self.session.stop()

    def start(self) -> None:
        self._thread.start()
        while self._stop is None and self._thread.is_alive():
            time.sleep(0.001)

    def call(self, coroutine, timeout: float):
        """Run ``coroutine`` on the session's loop and wait for its result (start-up, reconciliation, a kill)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def post(self, fn, *args) -> None:
        """``fn(*args)`` on the session's loop, without waiting (a command)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            try:
                self.loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop already ended
                pass
            self._thread.join(STOP_TIMEOUT_S)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class Venue:
    """One live venue: its rings, its session thread, the answers waiting for room in its answer ring."""

    def __init__(self, index: int, name: str, commands: ring.RingView, answers: ring.RingView):
        self.index, self.name = index, name
        self.commands, self.answers = commands, answers
        self.thread: SessionThread | None = None
        self.holdings: HoldingsCheck | None = None  # a spot venue's (None: futures, or the check is off)
        self.balances_due = None                      # a balance request in flight (concurrent.futures.Future)
        self.waiting: list[np.ndarray] = []
        self.scratch = np.zeros(COMMAND_BATCH, records.VENUE_COMMAND)


def session_factory(config, venue: int, name: str, log):
    """A function making the OrderSession of live venue ``venue`` (index in feed.venues) from an emit callback."""
    from pipeline.venues import credentials
    from pipeline.venues.ccxt_orders import OrderSession, Timeouts
    feed, g = config.feed, config.gateway
    exchange = g.exchange_ids(feed)[name]
    wanted = dict(str(e).split("=", 1) for e in g.symbol_map(feed) if "=" in str(e))
    symbols = {s: wanted.get(f"{name}:{symbol}", _ccxt_symbol(symbol)) for s, symbol in enumerate(feed.symbols)}
    creds = credentials.load(name, g.credentials_file or None)
    prefix = client_ids.prefix(config.run.name)
    timeouts = Timeouts(request_s=g.request_timeout_ms / 1e3, recv_window_s=g.request_timeout_ms / 1e3,
                        sweep_period_s=g.query_interval_ms / 1e3, stale_after_s=g.in_flight_query_ms / 1e3)

    def make(emit):
        return OrderSession(exchange, creds, venue, symbols, prefix, emit, rest_url=g.rest_url_of(feed).get(name, ""),
                            ws_url=g.ws_url_of(feed).get(name, ""), timeouts=timeouts, sandbox=g.sandbox, log=log)
    return make


def _ccxt_symbol(symbol: str) -> str:
    """feed.symbols' BTC-USDT as ccxt's BTC/USDT (a venue-specific market name goes in gateway.symbols)."""
    return symbol.replace("-", "/", 1)


class Gateway(Agent):
    role_name = "gateway"

    def __init__(self, config, block: cb.ControlBlock, slot: np.ndarray, make_sessions=None):
        self.config = config
        self.block = block
        self.slot = slot
        self.stats = slot[cb.S_CUSTOM:cb.S_CUSTOM + cb.CUSTOM_WORDS]
        self.venues: list[Venue] = []
        run = config.run.name
        for index in graph.live_venues(config):
            command_spec, answer_spec = graph.gateway_rings(config, index)
            commands = ring.attach_ring(names.ring(run, command_spec.name), command_spec.dtype, command_spec.capacity)
            answers = ring.attach_ring(names.ring(run, answer_spec.name), answer_spec.dtype, answer_spec.capacity)
            self.venues.append(Venue(index, config.feed.venues[index], commands, answers))
        self.make_sessions = make_sessions or (lambda v: session_factory(config, v.index, v.name, self._log))
        self.was_enabled = False
        self.next_dead_man = 0.0
        self.next_counters = 0.0
        self.next_holdings = 0.0

    @staticmethod
    def _log(text: str) -> None:
        print(f"gateway: {text}", flush=True)

    def on_start(self) -> None:
        for v in self.venues:
            v.thread = SessionThread(self.make_sessions(v), v.name)
            v.thread.start()
            v.thread.call(v.thread.session.start(), START_TIMEOUT_S)
            self._reconcile_at_start(v)

    def _reconcile_at_start(self, v: Venue) -> None:
        """Our orders left open at the venue (an earlier run or incarnation of this one) are cancelled: trading
        starts disarmed. At the run's start they are an earlier run's, execute does not know them, and the trades
        already made are history, not news: none becomes a fill here. At a restart within the run (this process
        replaces one that died) they are execute's own, which it holds open and which may have traded while no
        gateway listened: their trades are reported (execute drops those it had), then their end. At the run's
        start execute holds no position, so a venue that keeps positions must hold none of its instruments;
        otherwise the start fails and nothing is armed."""
        from pipeline.venues import reconcile
        fresh = int(self.block.globals[cb.G_RUN_STATE]) == cb.RUN_STARTING
        session = v.thread.session
        snapshot = v.thread.call(session.snapshot(), START_TIMEOUT_S)
        history = {(t.key, t.trade_id) for t in snapshot.trades}
        plan = reconcile.reconcile(snapshot, {}, {}, history, orphans="cancel",
                                   tolerance=self.config.gateway.position_tolerance)
        for line in plan.lines() + snapshot.notes:
            self._log(f"{v.name}: start-up reconciliation: {line}")
        if plan.cancel:
            counts = v.thread.call(session.cancel_orders(plan.cancel, inherited=not fresh), START_TIMEOUT_S)
            self._log(f"{v.name}: cancelled what an earlier {'run' if fresh else 'incarnation'} left open: {counts}")
        self.stats[W["reconciled"]] += 1
        if not snapshot.has_positions and self.config.gateway.holdings_check_s:
            self._start_holdings(v, snapshot, fresh)
        if fresh and plan.mismatches:
            held = ", ".join(f"{m.where()}: {m.venue:+.10g}" for m in plan.mismatches)
            raise ValueError(f"{v.name}: the venue holds positions this run does not ({held}): trading stays off; "
                             "close them at the venue (or trade them from a run that holds them) and start again")

    def _start_holdings(self, v: Venue, snapshot, fresh: bool) -> None:
        session = v.thread.session
        markets = session.ex.markets
        bases, symbols = {}, {}
        for symbol_index, symbol in session.symbols.items():
            key = instrument_key(v.index, symbol_index)
            base = (markets.get(symbol) or {}).get("base")
            if base:
                bases[key], symbols[key] = base, symbol
        v.holdings = HoldingsCheck(v.name, bases, symbols, self.config.gateway.position_tolerance)
        v.holdings.start(snapshot.balances, dict(session.base_fees))
        if not fresh:
            self._log(f"{v.name}: holdings check from now (a restarted gateway does not know the balances at the "
                      "run's start): " + ", ".join(f"{c} {b:.10g}" for c, b in v.holdings.baseline.items()))

    def _check_holdings(self) -> None:
        """Ask each spot venue for its balances (never waiting here); check what came back since the last call."""
        for v in self.venues:
            if v.holdings is None or v.thread is None or not v.thread.alive:
                continue
            due = v.balances_due
            if due is not None and due.done():
                v.balances_due = None
                try:
                    balances, settled = due.result()
                except Exception as exc:  # noqa: BLE001 - a failed request: the next period asks again
                    self._log(f"{v.name}: holdings check: balances not fetched ({exc!r})")
                    continue
                self.stats[W["holdings_checks"]] += 1
                lines = v.holdings.check(balances, dict(v.thread.session.base_fees), settled)
                if lines:
                    self.stats[W["holdings_mismatches"]] += 1
                    text = "holdings mismatch: " + "; ".join(lines)
                    for line in lines:
                        self._log(f"holdings mismatch, trading disabled: {line}")
                    cb.trip(self.block.globals, kill_reasons.KILL_VENUE_MISMATCH, registry.slot("gateway"),
                            text[:240], time.time_ns(), time.monotonic_ns())
            if v.balances_due is None:
                v.balances_due = asyncio.run_coroutine_threadsafe(v.thread.session.settled_balances(),
                                                                   v.thread.loop)

    def do_work(self) -> int:
        work = 0
        g = self.block.globals
        enabled = int(g[cb.G_TRADING_ENABLED]) != 0
        if self.was_enabled and not enabled:
            self._cancel_everything("trading disabled")
            work += 1
        self.was_enabled = enabled
        if enabled and self.config.gateway.dead_man_ms and time.monotonic() >= self.next_dead_man:
            self._refresh_dead_man()
        for v in self.venues:
            if not v.thread.alive:
                raise RuntimeError(f"the {v.name} session stopped: {v.thread.failure!r}")
            n = ring.read(v.commands.producer, v.commands.consumer, v.commands.records, v.scratch, COMMAND_BATCH)
            for i in range(n):
                cmd = v.scratch[i].copy()
                v.thread.post(v.thread.session.command, cmd)
            self.stats[W["commands"]] += n
            work += n + self._publish_answers(v)
        now = time.monotonic()
        if self.config.gateway.holdings_check_s and now >= self.next_holdings:
            self.next_holdings = now + self.config.gateway.holdings_check_s
            self._check_holdings()
        if now >= self.next_counters:  # the sessions' counters are a status figure: a few times a second will do
            self.next_counters = now + COUNTERS_PERIOD_S
            self._publish_counters()
        return work

    def _publish_answers(self, v: Venue) -> int:
        while True:
            try:
                batch = v.thread.answers.get_nowait()
            except queue.Empty:
                break
            v.waiting.append(batch)
            if v.holdings is not None:
                v.holdings.on_answers(batch)
        published = 0
        while v.waiting:
            batch = v.waiting[0]
            k = ring.try_write(v.answers.producer, v.answers.consumer, v.answers.records, batch, len(batch))
            if k <= 0:
                break
            published += k
            if k < len(batch):
                v.waiting[0] = batch[k:]
                break
            v.waiting.pop(0)
        self.stats[W["answers"]] += published
        self.stats[W["answers_waiting"]] = sum(len(b) for v_ in self.venues for b in v_.waiting)
        return published

    def _publish_counters(self) -> None:
        sessions = [v.thread.session.counters for v in self.venues if v.thread is not None]
        for word, fields in COUNTER_SOURCES.items():
            self.stats[W[word]] = sum(getattr(c, f) for c in sessions for f in fields)
        # list() of a deque copies it in one C call under the GIL: the session's thread appends meanwhile
        latencies = sorted(x for v in self.venues if v.thread is not None
                           for x in list(v.thread.session.ack_latencies_ns))
        if latencies:
            self.stats[W["ack_p50_us"]] = latencies[len(latencies) // 2] // 1_000
            self.stats[W["ack_max_us"]] = latencies[-1] // 1_000

    def _cancel_everything(self, why: str) -> None:
        for v in self.venues:
            if v.thread is not None and v.thread.alive:
                v.thread.post(lambda s=v.thread.session: asyncio.ensure_future(s.cancel_all()))
        self.stats[W["cancel_alls"]] += 1
        self._log(f"{why}: cancelling every order of ours at {', '.join(v.name for v in self.venues)}")

    def _refresh_dead_man(self) -> None:
        ms = int(self.config.gateway.dead_man_ms)
        for v in self.venues:
            v.thread.post(lambda s=v.thread.session: asyncio.ensure_future(s.dead_man(ms)))
        self.stats[W["dead_man_refreshes"]] += 1
        self.next_dead_man = time.monotonic() + ms / 3e3  # three refreshes per countdown

    def on_stop(self, level: int) -> None:
        # Execute has stopped (the supervisor stops the gateway after it): nothing of ours stays open at a venue.
        for v in self.venues:
            if v.thread is not None and v.thread.alive:
                try:
                    v.thread.call(v.thread.session.cancel_all(), STOP_TIMEOUT_S)
                except Exception as exc:  # noqa: BLE001 - said, and the next venue still gets its cancel
                    self._log(f"{v.name}: cancel-all at stop failed: {exc!r}; check the venue for open orders")
            self._publish_answers(v)
        self._publish_counters()
        raise AgentTerminated

    def on_close(self) -> None:
        for v in self.venues:
            if v.thread is not None:
                v.thread.stop()
            v.commands.close()
            v.answers.close()


def main() -> int:
    child = start("gateway")
    try:
        return AgentRunner(Gateway(child.config, child.block, child.slot), child, sleeping(IDLE_SLEEP_US)).run()
    finally:
        child.block.close()


if __name__ == "__main__":
    sys.exit(main())
