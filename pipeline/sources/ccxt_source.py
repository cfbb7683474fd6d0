"""Live market data through ccxt.pro websockets -> MARKET_EVENT records.

Per configured venue one ccxt.pro client (``ccxt.pro.binance``, ``binanceusdm``, ...), its REST and
websocket origins optionally replaced (a loopback server in tests, a proxy in production; paths are kept,
so the venue's own URL layout is what gets served). Per symbol it runs

- ``watch_order_book``: each resolved book becomes one EV_BOOK record, a top-``BOOK_LEVELS`` view with
  ``venue_seq`` = the book's nonce (the venue's last applied update id) and ``first_seq`` = the first
  update id the view covers (the previous view's nonce + 1; for the first view after a snapshot its own
  nonce, flagged F_SNAPSHOT). ccxt applies Binance's sync procedure (snapshot + buffered diffs, U/u/pu
  continuity); on a gap it raises ChecksumError and drops its book, and the next watch subscribes again
  and fetches a fresh snapshot: that is the resync, counted here. No view is emitted from a book that
  failed the check (ccxt rejects instead of resolving), nor from a crossed one (counted).
- ``watch_trades``: EV_TRADE per trade, side +1 when the buyer took, ``venue_seq`` = the trade id; a trade
  id already emitted is not emitted again (a reconnect may resend); ids skipped are counted (trade_gaps).
- ``watch_mark_price`` on swaps whose class has it: EV_MARK (mark, index) and EV_FUNDING (rate, next time).

``exch_ts`` is the venue's timestamp, ``origin_ts`` the local time the watch returned. A failed watch
(network error, dropped connection) retries after an exponential backoff (``feed.ccxt_reconnect_min_ms``
doubled per consecutive failure up to ``feed.ccxt_reconnect_max_ms``, with jitter), counted. The venue
clock is tracked two ways per venue: the REST server time against the local clock at the round trip's
midpoint (the fastest of ``CLOCK_SAMPLES`` round trips every ``CLOCK_PERIOD_S``; logged when it moves),
and an EWMA of venue-minus-receive time over the stream (which also holds the delivery latency).

Concurrency: :class:`CcxtSource` runs on one asyncio loop (its own thread in the feed process); records
leave through ``emit``, which may block (back-pressure from the ring); ``stats`` are written on that loop
and read elsewhere (plain numbers, read as a snapshot).
"""
from __future__ import annotations

import asyncio
import functools
import random
import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.ccxt_origins import point_at
from stages.records import BOOK_LEVELS, BUY, EV_BOOK, EV_FUNDING, EV_MARK, EV_TRADE, F_SNAPSHOT, MARKET_EVENT, SELL

CLOCK_PERIOD_S = 30.0
TRADES_KEPT = 10_000
CLOCK_SAMPLES = 3
CLOCK_LOG_STEP_MS = 50.0   # log the venue clock when it moved this much since last logged
TIME_ENDPOINTS = {"binance": "public", "binanceusdm": "fapiPublic", "binancecoinm": "dapiPublic"}
STREAM_OFFSET_ALPHA = 0.01
GAP_RETRY_S = 0.005  # after a book gap: let ccxt re-subscribe and fetch the snapshot before watching again
MARKET_TYPES = {"binance": "spot", "binanceusdm": "linear", "binancecoinm": "inverse"}  # markets each class loads


def _pairs(entries) -> dict:
    return dict(str(e).split("=", 1) for e in entries if "=" in str(e))


@dataclass(frozen=True)
class VenueSpec:
    venue: str                  # the venue's name in feed.venues
    venue_id: int
    exchange: str               # ccxt.pro class id
    rest_url: str = ""          # origin replacing the class's REST origins ("" = the real venue)
    ws_url: str = ""
    symbols: dict = field(default_factory=dict)  # feed symbol -> explicit ccxt symbol (others matched by id)


def venue_specs(feed) -> list[VenueSpec]:
    exchanges, rest, ws = _pairs(feed.ccxt_exchanges), _pairs(feed.ccxt_rest_urls), _pairs(feed.ccxt_ws_urls)
    explicit: dict = {}
    for entry in feed.ccxt_symbols:
        left, _, market = str(entry).partition("=")
        venue, _, symbol = left.partition(":")
        explicit.setdefault(venue, {})[symbol] = market
    return [VenueSpec(v, i, exchanges[v], rest.get(v, ""), ws.get(v, ""), explicit.get(v, {}))
            for i, v in enumerate(feed.venues)]


def _normal(name: str) -> str:
    return "".join(ch for ch in name.upper() if ch.isalnum())


def make_exchange(spec: VenueSpec):
    import ccxt.pro

    # ccxt keeps the latest tradesLimit trades per symbol; a watcher that falls further behind than that loses
    # trades (counted as trade_gaps), so keep more than a busy second of them
    options = {"tradesLimit": TRADES_KEPT}
    if spec.exchange in MARKET_TYPES:  # load only the product this venue is, not every Binance product
        options["fetchMarkets"] = {"types": [MARKET_TYPES[spec.exchange]]}
    cls = _coinm_class() if spec.exchange == "binancecoinm" else getattr(ccxt.pro, spec.exchange)
    ex = cls({"enableRateLimit": True, "options": options})
    point_at(ex, spec.rest_url, spec.ws_url)
    return ex


@functools.cache
def _coinm_class():
    import ccxt.pro

    class BinanceCoinM(ccxt.pro.binancecoinm):
        """ccxt unrolls the diffs it buffered during a COIN-M snapshot by the spot rule (each U = last u + 1),
        which COIN-M's ids, linked by pu, almost never meet: whenever a diff arrived while the snapshot was in
        flight the book broke its sequence check and resynced, again and again on a slow link. Binance
        documents the USDⓈ-M rule (U <= lastUpdateId <= u, then pu = last u) for COIN-M too."""

        async def fetch_order_book_snapshot(self, client, message, subscription):
            if subscription.get("type") == "inverse":
                subscription = dict(subscription, type="linear")
            return await super().fetch_order_book_snapshot(client, message, subscription)

    return BinanceCoinM


class Backoff:
    """Exponential retry delay: min, 2 min, 4 min, ... up to max, each with jitter in [0.5, 1]."""

    def __init__(self, min_ms: float, max_ms: float, rng: random.Random):
        self.min_s, self.max_s, self.rng = min_ms / 1e3, max_ms / 1e3, rng
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.max_s, self.min_s * 2 ** self.failures)
        self.failures += 1
        return delay * (0.5 + 0.5 * self.rng.random())

    def reset(self) -> None:
        self.failures = 0


@dataclass
class VenueStats:
    books: int = 0
    trades: int = 0
    marks: int = 0
    resyncs: int = 0            # ccxt's book failed its sequence check: a new snapshot was fetched
    reconnects: int = 0         # watches retried after a network error or a dropped connection
    errors: int = 0             # other failed watches (retried with the same backoff)
    crossed: int = 0            # books not emitted because their top was crossed
    trade_gaps: int = 0         # trade ids never seen between two seen ones (a reconnect, or a watcher behind)
    rest_offset_ms: float = float("nan")   # venue REST time minus local time at the round trip's midpoint
    rest_rtt_ms: float = float("nan")
    stream_offset_ms: float = float("nan")  # EWMA of exch_ts - origin_ts over the stream (includes latency)
    last_error: str = ""

    def line(self, venue: str) -> str:
        return (f"{venue}: books {self.books:,}, trades {self.trades:,}, marks {self.marks:,}, "
                f"resyncs {self.resyncs}, reconnects {self.reconnects}, errors {self.errors}, crossed {self.crossed}, "
                f"trades missed {self.trade_gaps}; "
                f"venue clock - local: REST {self.rest_offset_ms:+.1f} ms (rtt {self.rest_rtt_ms:.1f} ms), "
                f"stream {self.stream_offset_ms:+.1f} ms")


class CcxtSource:
    """The configured venues' books, trades and funding as MARKET_EVENT arrays passed to ``emit``."""

    def __init__(self, specs: list[VenueSpec], symbols: list[str], emit, *, reconnect_min_ms=100.0,
                 reconnect_max_ms=10_000.0, trades=True, funding=True, log=print, clock_ns=time.time_ns,
                 seed: int = 0):
        self.specs, self.symbols = specs, list(symbols)
        self.emit, self.log, self.clock_ns = emit, log, clock_ns
        self.reconnect = (reconnect_min_ms, reconnect_max_ms)
        self.trades, self.funding = trades, funding
        self.stats = {s.venue: VenueStats() for s in specs}
        self.markets: dict = {}   # venue -> {feed symbol: ccxt symbol}
        self.rng = random.Random(seed)
        self._stopping = False
        self._exchanges: list = []

    # --- lifecycle ------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Watch everything until ``stop`` is set, then close every client."""
        tasks = [asyncio.ensure_future(self._venue(spec)) for spec in self.specs]
        stopped = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopped:
                    t.result()  # a venue task only ends by failing (e.g. a symbol it cannot map): raise it
        finally:
            stopped.cancel()
            self._stopping = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(ex.close() for ex in self._exchanges), return_exceptions=True)

    async def _venue(self, spec: VenueSpec) -> None:
        ex = make_exchange(spec)
        self._exchanges.append(ex)
        stats = self.stats[spec.venue]
        backoff = Backoff(*self.reconnect, self.rng)
        while True:
            try:
                await ex.load_markets()
                break
            except Exception as exc:  # noqa: BLE001 - any failure to list markets is retried, and said
                stats.errors += 1
                stats.last_error = f"load_markets: {type(exc).__name__}: {exc}"
                self.log(f"ccxt {spec.venue}: {stats.last_error}; retrying")
                await asyncio.sleep(backoff.next_delay())
        markets = self._resolve(spec, ex)
        self.markets[spec.venue] = markets
        self.log(f"ccxt {spec.venue} ({spec.exchange}): watching "
                 + ", ".join(f"{s} as {m}" for s, m in markets.items()))
        jobs = [self._clock(spec, ex)]
        for symbol, market in markets.items():
            symbol_id = self.symbols.index(symbol)
            jobs.append(self._books(spec, ex, symbol_id, market))
            if self.trades:
                jobs.append(self._trades(spec, ex, symbol_id, market))
            if self.funding and ex.markets[market].get("swap") and ex.has.get("watchMarkPrice"):
                jobs.append(self._marks(spec, ex, symbol_id, market))
        await asyncio.gather(*jobs)

    def _resolve(self, spec: VenueSpec, ex) -> dict:
        by_id = {}
        for m in ex.markets.values():
            by_id.setdefault(_normal(m["id"]), m["symbol"])
        out = {}
        for symbol in self.symbols:
            market = spec.symbols.get(symbol) or by_id.get(_normal(symbol))
            if market is None:
                continue
            if market not in ex.markets:
                raise ValueError(f"feed.ccxt_symbols: {spec.venue}:{symbol}={market}: {spec.exchange} has no "
                                 f"market {market!r}; use one of {sorted(ex.markets)[:10]}")
            out[symbol] = market
        if not out:
            raise ValueError(f"feed.symbols: none of {self.symbols} is listed on {spec.venue} ({spec.exchange}); "
                             f"map them with feed.ccxt_symbols")
        return out

    # --- watchers -------------------------------------------------------------------------------------

    async def _retry(self, spec: VenueSpec, backoff: Backoff, what: str, exc: Exception) -> None:
        import ccxt

        stats = self.stats[spec.venue]
        stats.last_error = f"{what}: {type(exc).__name__}: {str(exc)[:200]}"
        if isinstance(exc, ccxt.NetworkError):
            stats.reconnects += 1
        else:
            stats.errors += 1
        delay = backoff.next_delay()
        self.log(f"ccxt {spec.venue}: {stats.last_error}; retry {backoff.failures} in {delay * 1e3:.0f} ms")
        await asyncio.sleep(delay)

    async def _books(self, spec: VenueSpec, ex, symbol_id: int, market: str) -> None:
        import ccxt

        stats = self.stats[spec.venue]
        backoff = Backoff(*self.reconnect, self.rng)
        last_nonce, book_obj, last_gap = 0, None, None
        while not self._stopping:
            try:
                ob = await ex.watch_order_book(market)
            except ccxt.ChecksumError as exc:  # a sequence gap: ccxt dropped its book; the next watch resyncs
                book_obj = None
                # A gap ccxt saw while no watch was pending stays in its cached, already-rejected future until
                # the new snapshot resolves it: every watch until then re-raises the same error at once, without
                # yielding, so a bare retry spins forever and the re-subscription never runs. One gap counts once.
                if exc is not last_gap:
                    last_gap = exc
                    stats.resyncs += 1
                    stats.last_error = f"book {market}: sequence gap"
                    self.log(f"ccxt {spec.venue}: {market} book sequence gap ({str(exc)[:80]}...); resync "
                             f"{stats.resyncs} from a new snapshot")
                await asyncio.sleep(GAP_RETRY_S)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is counted and retried
                book_obj = None
                await self._retry(spec, backoff, f"book {market}", exc)
                continue
            now = self.clock_ns()
            backoff.reset()
            nonce = ob.get("nonce") or 0
            fresh = ob is not book_obj or nonce < last_nonce
            if not fresh and nonce == last_nonce:
                continue
            bids, asks = ob["bids"], ob["asks"]
            if bids and asks and bids[0][0] >= asks[0][0]:
                stats.crossed += 1
                continue
            rec = np.zeros(1, MARKET_EVENT)
            r = rec[0]
            r["origin_ts"] = now
            ts = ob.get("timestamp")
            r["exch_ts"] = int(ts) * 1_000_000 if ts else 0
            r["venue_seq"] = nonce
            r["first_seq"] = nonce if fresh else last_nonce + 1
            r["kind"] = EV_BOOK
            r["venue"], r["symbol"] = spec.venue_id, symbol_id
            r["flags"] = F_SNAPSHOT if fresh else 0
            for side, px, sz in ((bids, r["bid_px"], r["bid_sz"]), (asks, r["ask_px"], r["ask_sz"])):
                n = min(BOOK_LEVELS, len(side))
                for j in range(n):
                    px[j], sz[j] = side[j][0], side[j][1]
                px[n:] = np.nan  # a thin book: validation quarantines it rather than trusting zeros
            book_obj, last_nonce = ob, nonce
            stats.books += 1
            self._track(stats, r)
            self.emit(rec)

    async def _trades(self, spec: VenueSpec, ex, symbol_id: int, market: str) -> None:
        stats = self.stats[spec.venue]
        backoff = Backoff(*self.reconnect, self.rng)
        last_id = 0
        while not self._stopping:
            try:
                trades = await ex.watch_trades(market)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                await self._retry(spec, backoff, f"trades {market}", exc)
                continue
            now = self.clock_ns()
            backoff.reset()
            fresh = [t for t in trades if t.get("id") is not None and int(t["id"]) > last_id]
            if not fresh:
                continue
            rec = np.zeros(len(fresh), MARKET_EVENT)
            for r, t in zip(rec, fresh):
                r["origin_ts"] = now
                r["exch_ts"] = int(t["timestamp"]) * 1_000_000 if t.get("timestamp") else 0
                r["venue_seq"] = int(t["id"])
                r["kind"] = EV_TRADE
                r["side"] = BUY if t["side"] == "buy" else SELL
                r["venue"], r["symbol"] = spec.venue_id, symbol_id
                r["price"], r["size"] = t["price"], t["amount"]
            if last_id and int(fresh[0]["id"]) > last_id + 1:
                stats.trade_gaps += int(fresh[0]["id"]) - last_id - 1
            last_id = int(fresh[-1]["id"])
            stats.trades += len(fresh)
            self._track(stats, rec[-1])
            self.emit(rec)

    async def _marks(self, spec: VenueSpec, ex, symbol_id: int, market: str) -> None:
        stats = self.stats[spec.venue]
        backoff = Backoff(*self.reconnect, self.rng)
        while not self._stopping:
            try:
                ticker = await ex.watch_mark_price(market)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                await self._retry(spec, backoff, f"mark price {market}", exc)
                continue
            now = self.clock_ns()
            backoff.reset()
            info = ticker.get("info") or {}
            mark = ticker.get("markPrice") or _float(info.get("p"))
            if not mark:
                continue
            rate = _float(info.get("r"))
            rec = np.zeros(2 if rate == rate else 1, MARKET_EVENT)
            ts = ticker.get("timestamp")
            rec["origin_ts"] = now
            rec["exch_ts"] = int(ts) * 1_000_000 if ts else 0
            rec["venue"], rec["symbol"] = spec.venue_id, symbol_id
            rec[0]["kind"], rec[0]["price"] = EV_MARK, mark
            rec[0]["aux"] = ticker.get("indexPrice") or _float(info.get("i"))
            if len(rec) == 2:
                rec[1]["kind"], rec[1]["price"] = EV_FUNDING, rate
                rec[1]["aux"] = _float(info.get("T")) * 1e6
            stats.marks += 1
            self.emit(rec)

    async def _clock(self, spec: VenueSpec, ex) -> None:
        stats = self.stats[spec.venue]
        logged = float("nan")
        while not self._stopping:
            try:
                samples = [await _time_probe(ex) for _ in range(CLOCK_SAMPLES)]
                rtt_ns, offset_ns = min(samples)  # the fastest round trip bounds the error best (as NTP does)
                stats.rest_offset_ms, stats.rest_rtt_ms = offset_ns / 1e6, rtt_ns / 1e6
                if not abs(stats.rest_offset_ms - logged) < CLOCK_LOG_STEP_MS:
                    logged = stats.rest_offset_ms
                    self.log(f"ccxt {spec.venue}: venue clock - local {stats.rest_offset_ms:+.1f} ms "
                             f"(REST, rtt {stats.rest_rtt_ms:.1f} ms); stream {stats.stream_offset_ms:+.1f} ms")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the clock is advisory; the stream offset still runs
                stats.last_error = f"server time: {type(exc).__name__}: {str(exc)[:200]}"
            await asyncio.sleep(CLOCK_PERIOD_S)

    @staticmethod
    def _track(stats: VenueStats, r) -> None:
        if r["exch_ts"] <= 0:
            return
        lag_ms = (int(r["exch_ts"]) - int(r["origin_ts"])) / 1e6
        if stats.stream_offset_ms != stats.stream_offset_ms:
            stats.stream_offset_ms = lag_ms
        else:
            stats.stream_offset_ms += STREAM_OFFSET_ALPHA * (lag_ms - stats.stream_offset_ms)


async def _time_probe(ex) -> tuple[int, int]:
    """(round trip ns, venue time minus local time at its midpoint, ns) from one server-time request.

    Binance classes are asked directly (ccxt's ``fetch`` without its rate-limit throttle, whose wait would
    count as round trip); others through ``fetch_time``."""
    path = TIME_ENDPOINTS.get(ex.id)
    if path is not None:
        request = ex.sign("time", [path], "GET", {})
        t0 = time.time_ns()
        reply = await ex.fetch(request["url"], "GET", request["headers"], request["body"])
        t1 = time.time_ns()
        venue_ms = int(reply["serverTime"])
    else:
        t0 = time.time_ns()
        venue_ms = await ex.fetch_time()
        t1 = time.time_ns()
    return t1 - t0, venue_ms * 1_000_000 - (t0 + t1) // 2


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
