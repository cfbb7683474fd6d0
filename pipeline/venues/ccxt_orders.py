"""A live venue's order side through ccxt: execute's VENUE_COMMAND records become ccxt order calls, and what the
venue answers or streams becomes VENUE_ANSWER records (the answer codes the venue model uses, so execute takes both
alike). One :class:`OrderSession` per venue, on one asyncio loop (the gateway process's).

The session: ``await start()`` (markets, user stream subscribed, periodic work), ``command(cmd)`` /
``submit(cmd)`` / ``cancel(cmd)`` / ``amend(cmd)`` (never block), ``await cancel_all()`` (the kill switch), ``await
cancel_orders(venue_orders)`` (reconciliation's orphans), ``await dead_man(ms)`` (the venue's countdown cancel-all),
``await snapshot(orders, since_ms)`` (for :mod:`pipeline.venues.reconcile`), ``await resync()``, ``await stop()``;
``counters``, ``ack_latencies_ns``, ``stream_ready``, ``last_error`` for the gateway's status.

Commands
    ``submit(cmd)`` places a LIMIT order with the order's client order id (:mod:`pipeline.venues.client_ids`): GTC
    for INTENT_QUOTE, IOC for INTENT_IOC; ``cancel(cmd)`` cancels by client order id. Neither blocks: each schedules
    the call on the loop (from another thread too) and returns. Price and quantity go out at the market's
    precision (ccxt's ``price_to_precision`` / ``amount_to_precision``); ``leaves`` is counted from the quantity the
    venue took. A second command for an order id already seen is ignored (counted): nothing is ever sent twice.
    ``amend(cmd)`` changes an open order's price and total quantity in place (ccxt's ``edit_order`` by the order's
    venue id and client order id, at the market's precision), where the venue keeps the order id when it does
    (``amends_in_place``: Binance USD-M / COIN-M's PUT order; Binance spot's edit is a cancel-replace, a new order
    id, so spot refuses every amend here). One amend per order at a time, never sent twice.

Answers (``emit`` gets VENUE_ANSWER arrays, in order; the fields as the venue model fills them)
    ANS_ACK       the venue took the order: price and qty of the order as placed, leaves = qty, exch_ts its creation
                  time. Always the first answer of an order the venue has: a fill or an end seen first (the stream
                  can overtake the create's answer) makes the ACK go out just before it.
    ANS_FILL      one per venue trade: price and qty of the trade, ``trade_id`` the venue's (numeric ids as they are;
                  others hashed to a stable positive 63-bit int), ``liquidity`` +1 maker / -1 taker, ``leaves`` the
                  order's quantity minus every fill reported so far (0 on the fill that completes it: execute frees the
                  order then), ``fee`` in the quote currency (below). A trade id is reported once, whichever of the
                  create's answer, the user stream or a query brings it first.
    ANS_CANCELLED the order ended with quantity left (cancelled, an IOC's unfilled rest expired): qty = the quantity
                  that will never fill, leaves = 0. Sent only after every fill the venue counts for the order (when
                  the venue says it ended with more filled than reported, the order's trades are fetched first).
    ANS_REJECTED  the venue refused the create (InvalidOrder, InsufficientFunds, a duplicate client id, bad
                  request...), or the order was confirmed never placed after an unknown outcome, or it was refused
                  locally (its instrument is not this venue's, a quantity below the market's precision): qty = the
                  order's, leaves = 0.
    ANS_CANCEL_REJECTED
                  the cancel did not end the order: the venue does not know it (and a query shows it did not end
                  either), or it had already ended here, or the cancel kept failing while the order stayed open.
                  qty = leaves = 0.
    ANS_AMENDED   the venue applied an amend: price and qty (total) of the order now, leaves = qty minus the fills
                  reported so far. Fills after it count against the new quantity.
    ANS_AMEND_REJECTED
                  the order stands as it was (price, qty its old ones, leaves what is open; all 0 for an order
                  unknown here): the venue refused the amend, or a query past its recvWindow shows the old values,
                  or it was refused locally (the venue cannot amend in place, the order is not open here, its
                  create, a cancel or another amend is in flight, its venue id is not known yet, the new quantity is
                  not above what is filled, precision rounds it to 0). An order that ended meanwhile answers with its
                  end (fills, CANCELLED), not this.
    ``send_ts`` is the command's own send_ts on the answers to it: ACK, REJECTED, taker fills (they happen at entry)
    and an IOC's CANCELLED answer the create; CANCELLED / CANCEL_REJECTED after a cancel answer that cancel;
    AMENDED / AMEND_REJECTED answer the amend. Answers nobody asked for (a resting quote's maker fill, a cancel done
    by the venue) carry 0. ``arrive_ts`` is the local time the gateway had the news, ``exch_ts`` the venue's time of
    it. ``slot`` is -1 for an order of ours the session did not place (a previous incarnation's, found on the stream
    or by the kill switch).

Fees
    ccxt's trade fee (its ``fees`` list, else its ``fee``) in the quote currency is taken as is; in the base currency
    it is multiplied by the trade's price; in a third currency (BNB...) by that currency's last price in the quote
    currency: ``fee_rates`` given at construction, else fetched from the venue's ticker (``<currency>/<quote>``) the
    first time such a fee is seen and every ``rate_max_age_s`` after. A fill whose fee cannot be converted yet is
    reported with fee 0, counted (``fees_unconverted``) and logged with the venue's fee, so it can be corrected from
    the log; it is never held back.

Unknown outcomes
    A create that ends in a timeout, a dropped connection, a 5xx, a 429/418 or any error that is not a definite
    refusal leaves the order in flight: nothing definitive is emitted and the create is never sent again. The order
    is then queried by its client order id after ``first_query_s``, doubling to ``max_query_delay_s`` (at least the
    429's Retry-After), up to ``query_attempts`` times: found -> its state and trades are reported (ACK, fills, its
    end); not found -> it is confirmed absent (ANS_REJECTED) only by a query sent ``recv_window_s`` +
    ``absent_margin_s`` after the create failed: every request carries that recvWindow, and the venue refuses a
    request older than it, so a create still on its way can no longer be taken by then. Until then a "not found" is
    retried. The user stream settles an unknown too (its order update is as good as a query's). A 429 / 418's
    Retry-After holds back every request of the session until it has passed (the venue bans who keeps asking).

    A cancel that ends unknown is settled the same way: the order is queried; ended -> its end; still open -> the
    cancel is sent again (a cancel is idempotent), up to ``cancel_attempts``, then ANS_CANCEL_REJECTED. A cancel the
    venue answers "unknown order" -> the order is queried: if it ended, its end (fills, then CANCELLED, or the fill
    that completed it), else ANS_CANCEL_REJECTED. A cancel for an order whose create is still in flight waits for it.

    An amend that ends unknown is never sent again: the order is queried by its client order id (a 429's Retry-After
    first). The new price and quantity -> ANS_AMENDED; ended -> its end; still the old ones -> queried again until a
    query sent ``recv_window_s`` + ``absent_margin_s`` after the amend failed shows them, which proves it can no
    longer land -> ANS_AMEND_REJECTED. An amend the venue answers "unknown order" -> one query: ended -> its end,
    else ANS_AMEND_REJECTED. Any news of the order settles an amend too: a stream update (Binance USD-M's AMENDMENT),
    a cancel's or a resync's answer; an update of the stream is taken for the amend before the trades that came with
    it, so a fill after an amend is counted against the amended quantity.

The stream, and what it misses
    ``watch_orders`` and ``watch_my_trades`` loops keep the user stream subscribed; the session takes the updates
    from ccxt.pro's order and trade caches as the caches take them (caches made by the session, which hand each
    update on), not from what a watch returns: a watch returns only for a message that comes after it was called, so
    the tail of a burst would wait in the cache for the next message. A trade that comes before its order's first
    news waits for it (by the venue's order id). A failed watch (the user stream dropped) is retried after a backoff;
    once the stream is subscribed again (Binance spot: the subscription's answer) every order of ours still open or
    in doubt is queried (:meth:`OrderSession.resync`, which the gateway's reconciliation calls too), and an order the
    venue counts more filled than reported gets its trades fetched. A websocket that stays open for a request's time
    while the subscription does not complete (ccxt can leave a refused one pending for good) is dropped and made anew
    (``stream_renewals``). Every ``sweep_period_s`` the orders still in doubt for over ``stale_after_s`` are queried
    again. ``user_stream=False`` runs on REST alone: every sweep then queries every live order.

Orders of ours this session did not place (the run's prefix: a previous incarnation's) are answered with slot -1:
from the stream, their fills as they come; from the kill switch, only their end (their earlier fills are
reconciliation's to report, :mod:`pipeline.venues.reconcile`). Two kinds are execute's own orders, placed by an
earlier incarnation of this gateway (it died, and was restarted) and held open by execute, which cannot know what
they did meanwhile: an order execute asks to cancel that the session does not know (the slot as execute gave it), and
the orders reconciliation cancels when the gateway restarts within a run (``cancel_orders(..., inherited=True)``).
Every trade of theirs is reported (execute drops the trade ids it had), then their end; one the venue does not know
is ANS_REJECTED, never placed, once a query sent ``recv_window_s`` + ``absent_margin_s`` after this session started
does not find it (the earlier incarnation signed its requests before that). A duplicate client order id can only
mean another process placing with this run's ids (two incarnations at once): the venue refuses the create, and the
order is ANS_REJECTED and logged.

``emit`` may block (back-pressure from the ring) but should not raise; if it does, the answers are kept and offered
again 10 ms later (``emit_errors``).

Counters: :class:`Counters` (``session.counters``), plain ints the gateway exposes; create-to-ACK latencies in
``session.ack_latencies_ns`` (the latest 4,096).

Credentials: the ccxt client is built from :class:`pipeline.venues.credentials.Credentials`; every log line and
error message of the session goes through its ``mask``, and ccxt's own logger for this client is one that masks
them too (ccxt logs request headers, the API key among them, at DEBUG).
"""
from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import numpy as np

from pipeline.ccxt_origins import point_at
from pipeline.venues import client_ids
from pipeline.venues.credentials import Credentials, CredentialsError
from pipeline.venues.reconcile import VenueOrder, VenueSnapshot, VenueTrade
from stages.records import (ANS_ACK, ANS_AMEND_REJECTED, ANS_AMENDED, ANS_CANCEL_REJECTED, ANS_CANCELLED, ANS_FILL,
                            ANS_REJECTED, BUY, CMD_AMEND, CMD_CANCEL, CMD_NEW, INTENT_IOC, INTENT_QUOTE, SELL,
                            VENUE_ANSWER)
from stages.universe import instrument_key, key_symbol, key_venue

MARKET_TYPES = {"binance": "spot", "binanceusdm": "linear", "binancecoinm": "inverse"}  # markets each class loads
ENDED = ("closed", "canceled", "expired", "rejected")
QUERIES = ("query", "trades", "open-orders", "balance", "positions")  # what Counters.queries counts
ENDED_KEPT = 4096          # ended orders remembered (late duplicates of their trades are recognised)
PARKED_KEPT = 1024         # venue order ids with trades seen before their order
LATENCIES_KEPT = 4096
ID_LOOKUPS = 200           # venue order ids a snapshot looks up to tell whose its trades are
# ccxt classes whose edit_order amends in place (the order keeps its ids: Binance futures' PUT order); the others'
# (Binance spot's cancelReplace) place a new order, which is execute's cancel-replace, not an amend
AMENDS_IN_PLACE = ("binanceusdm", "binancecoinm")

_RETRY_AFTER: contextvars.ContextVar = contextvars.ContextVar("bot4_retry_after", default=None)


@dataclass
class Timeouts:
    request_s: float = 5.0          # ccxt's REST timeout
    recv_window_s: float = 5.0      # each request's recvWindow: the venue refuses it when older
    first_query_s: float = 0.25     # first query after an unknown outcome
    max_query_delay_s: float = 2.0  # the queries' backoff doubles up to this
    query_attempts: int = 8         # queries of one settling round (the sweep starts another)
    absent_margin_s: float = 0.5    # past recv_window_s, for the clocks' difference
    cancel_attempts: int = 3        # cancels sent for one order while a query shows it open
    fill_grace_s: float = 0.25      # an end or a filled quantity ahead of its trades: wait this long for the stream
    sweep_period_s: float = 2.0
    stale_after_s: float = 5.0
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 5.0
    stream_ready_s: float = 10.0    # how long start() and a resync wait for the user stream's subscription
    rate_max_age_s: float = 60.0    # fee conversion rates are fetched again after this
    time_sync_s: float = 300.0      # the venue's clock is measured again this often (ccxt's timeDifference)
    stop_wait_s: float = 2.0        # stop() lets calls in flight finish this long


@dataclass
class Counters:
    requests: int = 0            # REST calls made
    creates: int = 0
    cancels: int = 0             # cancel calls (an unknown one sent again counts again)
    queries: int = 0             # order, trade, open-order and account queries
    timeouts: int = 0            # calls that timed out
    rate_limited: int = 0        # 429 / 418
    network_errors: int = 0      # other failures of unknown outcome (5xx, dropped connections...)
    unknown: int = 0             # creates, cancels and amends whose outcome was unknown when their call ended
    unknown_resolved: int = 0    # creates settled later as placed, amends settled either way (a query, the stream)
    unknown_absent: int = 0      # creates confirmed never placed (ANS_REJECTED)
    acks: int = 0
    fills: int = 0
    cancelled: int = 0           # ANS_CANCELLED
    rejects: int = 0             # ANS_REJECTED (venue refusals, confirmed absent, local)
    local_rejects: int = 0       # ... of which refused here before any call
    cancel_rejects: int = 0      # ANS_CANCEL_REJECTED
    amends: int = 0              # amend calls sent (one per amend: never sent again)
    amends_applied: int = 0      # ANS_AMENDED
    amend_rejects: int = 0       # ANS_AMEND_REJECTED (venue refusals, not applied by the recvWindow, local)
    duplicate_trades: int = 0    # a trade id already reported (the stream and a query both had it)
    late_fills: int = 0          # a new trade of an order already ended here (reported, slot as it was)
    synthetic_fills: int = 0     # filled quantity the venue's trades never accounted for (trade_id 0)
    fees_unconverted: int = 0    # fills reported with fee 0: no rate yet for the fee's currency
    duplicate_commands: int = 0  # a create for an order id already seen, or a cancel already under way
    stream_updates: int = 0      # order and trade updates taken from the user stream
    stream_errors: int = 0       # failed watches
    stream_reconnects: int = 0   # drops of the user stream (each followed by a resync)
    stream_renewals: int = 0     # the user stream's websocket open but never subscribed: dropped and made anew
    resyncs: int = 0             # every live order queried (after a reconnect, or asked)
    sweeps: int = 0              # orders queried by the periodic sweep
    foreign_updates: int = 0     # stream updates of orders not ours (ignored)
    stray_orders: int = 0        # orders of ours this session did not place (slot -1)
    emit_errors: int = 0         # emit raised (the answers were kept and offered again)
    errors: int = 0              # internal errors (a task or a periodic job failed; logged) and emit errors
    dead_man_refreshes: int = 0  # countdown cancel-all calls the venue took
    ack_latency_count: int = 0   # create sent -> ACK (creates answered without an unknown outcome)
    ack_latency_sum_ns: int = 0
    ack_latency_max_ns: int = 0

    # the gateway's names (registry.GATEWAY_COUNTERS) for what is counted above
    @property
    def orders_placed(self) -> int:
        """Orders the venue took (ACKs)."""
        return self.acks

    @property
    def cancels_sent(self) -> int:
        return self.cancels

    @property
    def venue_rejects(self) -> int:
        """Creates the venue refused, or confirmed never placed (not the local refusals)."""
        return self.rejects - self.local_rejects

    @property
    def unknown_outcomes(self) -> int:
        return self.unknown

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(orders_placed=self.orders_placed, cancels_sent=self.cancels_sent,
                   venue_rejects=self.venue_rejects, unknown_outcomes=self.unknown_outcomes)
        return out


@dataclass(eq=False)
class _Order:
    order_id: int
    slot: int
    key: int
    symbol: str
    side: int
    kind: int
    price: float
    qty: float
    cid: str
    send_ts: int = 0
    t_sent: float = 0.0          # monotonic: the create went out
    t_unknown: float = 0.0       # monotonic: the create's outcome became unknown (0: known)
    t_activity: float = 0.0      # monotonic: the last news of it
    venue_id: str | None = None
    acked: bool = False
    done: bool = False
    filled: float = 0.0          # reported in fills
    notional: float = 0.0
    venue_filled: float = 0.0    # the most the venue said filled
    venue_cost: float = 0.0
    trades: set = field(default_factory=set)
    create_pending: bool = False
    cancel_send_ts: int = 0
    cancel_wanted: bool = False  # a cancel waits for the create to settle
    cancel_busy: bool = False
    resolving: bool = False
    catching_up: bool = False
    end: tuple | None = None     # (status, exch_ts): the venue ended it; reported once its fills are
    adopted: bool = False        # not placed by this session: its fills before the first news of it are not ours
    inherited: bool = False      # execute's, placed by an earlier incarnation: every trade of it is reported
    amend: _Amend | None = None  # the amend in flight
    amended_ts: int = 0          # venue time of its latest amendment seen (older news cannot settle an amend)


@dataclass(eq=False)
class _Amend:
    price: float                 # the new price and total quantity, at the market's precision
    qty: float
    send_ts: int
    t_failed: float = 0.0        # monotonic: the call's outcome became unknown, or the venue said "unknown order"
    refused: str = ""            # the venue said "unknown order": a query that shows it open proves it not applied
    settling: bool = False


class _Unknown(Exception):
    """A query kept failing: the outcome is still unknown."""


def _ns(ms) -> int:
    return int(ms) * 1_000_000 if ms else 0


def _f(x, default=0.0) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


def _normal(name: str) -> str:
    return "".join(ch for ch in str(name).upper() if ch.isalnum())


def _eps(qty: float) -> float:
    return max(abs(qty) * 1e-9, 1e-12)


def _same(x: float, y: float) -> bool:
    return abs(x - y) <= _eps(max(abs(x), abs(y)))


def trade_id_int(tid) -> int:
    """The venue's trade id as VENUE_ANSWER.trade_id: a decimal id as it is, anything else hashed (stable)."""
    s = str(tid)
    if s.isdigit() and 0 < int(s) < 2 ** 63:
        return int(s)
    h = int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big") & (2 ** 63 - 1)
    return h or 1


def _command(cmd) -> dict:
    """A VENUE_COMMAND record (a row, or an array of one) as plain Python values (the ring's slot may be reused)."""
    rec = cmd[0] if isinstance(cmd, np.ndarray) and cmd.shape else cmd
    return dict(kind=int(rec["kind"]), order_id=int(rec["order_id"]), slot=int(rec["slot"]), key=int(rec["key"]),
                order_kind=int(rec["order_kind"]), side=int(rec["side"]), price=float(rec["price"]),
                qty=float(rec["qty"]), send_ts=int(rec["send_ts"]))


def _unknown_outcome(exc: BaseException) -> bool:
    """Whether a failed create or cancel may have been done at the venue all the same (else: a definite refusal)."""
    import ccxt
    if isinstance(exc, (ccxt.NetworkError, ccxt.BadResponse, ccxt.OperationFailed)):
        return True   # timeouts, 5xx, 429, dropped connections; "execution status unknown" answers
    if type(exc) is ccxt.ExchangeError:
        return True   # ccxt's catch-all, also what a broken HTTP exchange becomes: not a refusal we can trust
    return not isinstance(exc, ccxt.ExchangeError)  # anything that is not the venue's own refusal


class _MaskingFilter(logging.Filter):
    def __init__(self, creds: Credentials):
        super().__init__()
        self.creds = creds

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot format is shown as its template
            text = str(record.msg)
        record.msg, record.args = self.creds.mask(text), None
        if record.exc_info:
            record.exc_text = self.creds.mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class OrderSession:
    """One venue's orders through a ccxt.pro client (see the module's doc)."""

    def __init__(self, exchange_id: str, credentials: Credentials, venue: int, symbols: dict[int, str],
                 client_prefix: str, emit, *, rest_url: str = "", ws_url: str = "", timeouts: Timeouts | None = None,
                 sandbox: bool = False, options: dict | None = None, fee_rates: dict[str, float] | None = None,
                 user_stream: bool = True, timeout_ms: float | None = None, query_interval_ms: float | None = None,
                 in_flight_query_ms: float | None = None, log=print, clock_ns=time.time_ns):
        """``symbols``: {symbol index: market} of this venue, a ccxt symbol or a name matching a market's id once
        upper-cased without separators (BTC-USDT: BTCUSDT), as the live source matches them (a symbol the venue
        does not list is left out: its orders are refused); ``client_prefix``: the run's client order id prefix
        (client_ids.prefix); ``emit(answers)``: VENUE_ANSWER arrays, called on the loop; ``rest_url`` / ``ws_url``:
        origins replacing the class's (a loopback, a proxy); ``sandbox``: ccxt's sandbox mode; ``fee_rates``:
        {currency: its price in the quote currency} for fees in a third currency; ``user_stream`` False: REST only
        (a venue without one, or a test of the queries): every sweep then queries every live order.
        ``timeout_ms`` / ``query_interval_ms`` / ``in_flight_query_ms`` (the gateway config's) override
        ``timeouts.request_s`` / ``sweep_period_s`` / ``stale_after_s``."""
        self.exchange_id, self.creds, self.venue = exchange_id, credentials, int(venue)
        self.symbols = {int(i): s for i, s in symbols.items()}
        self.symbol_index = {s: i for i, s in self.symbols.items()}
        self.prefix, self.emit_fn, self.log_fn, self.clock_ns = client_prefix, emit, log, clock_ns
        t = timeouts or Timeouts()
        overrides = {k: v / 1e3 for k, v in (("request_s", timeout_ms), ("sweep_period_s", query_interval_ms),
                                              ("stale_after_s", in_flight_query_ms)) if v is not None}
        self.t = Timeouts(**{**asdict(t), **overrides})
        self.rest_url, self.ws_url, self.sandbox, self.user_stream = rest_url, ws_url, sandbox, user_stream
        self._resync_busy = False
        self._started_mono = math.inf                    # monotonic: start() began (an earlier incarnation was gone)
        self._quiet_until = 0.0                          # monotonic: no request before (a 429's Retry-After)
        self._dead_man_said = False
        self._no_amend_said = False
        self.extra_options = dict(options or {})
        self.fee_rates = {c: (float(r), math.inf) for c, r in (fee_rates or {}).items()}  # currency -> (rate, expiry)
        self.counters = Counters()
        self.base_fees: dict[str, float] = {}  # running sums of fees taken in a base currency (the reported fills')
        self.ack_latencies_ns: deque = deque(maxlen=LATENCIES_KEPT)
        self.orders: dict[int, _Order] = {}               # live: in flight or open
        self.ended: OrderedDict[int, _Order] = OrderedDict()
        self.by_venue: dict[tuple, _Order] = {}           # (symbol, venue order id) -> order
        self._parked: OrderedDict[tuple, list] = OrderedDict()  # (symbol, venue order id) -> trades before their order
        self._foreign: OrderedDict[tuple, None] = OrderedDict()
        self._cid_of_venue_id: dict[tuple, str] = {}      # snapshot look-ups
        self._rates_busy: set = set()
        self._tasks: set = set()
        self._loops: list = []
        self._out: list = []
        self._flush_scheduled = False
        self._stream_orders: deque = deque()               # what ccxt's order / trade caches took, to scan
        self._stream_trades: deque = deque()
        self._scan_scheduled = False
        self._resync_pending = False
        self._auth: asyncio.Future | None = None          # the user stream's subscription call (_stream_ready)
        self._stopping = False
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = None
        self.stream_ready = False
        self.last_error = ""
        self.ex = self._make_exchange()

    # --- the client -------------------------------------------------------------------------------------

    def _make_exchange(self):
        import ccxt.pro

        # requests are stamped on the venue's clock (ccxt measures the difference when it loads the markets; the
        # sweep measures it again every time_sync_s): the recvWindow, and so the absence rule, hold on its clock
        options = {"recvWindow": int(self.t.recv_window_s * 1000), "adjustForTimeDifference": True,
                   "fetchCurrencies": False, "fetchMargins": False, "warnOnFetchOpenOrdersWithoutSymbol": False}
        if self.exchange_id in MARKET_TYPES:
            options["fetchMarkets"] = {"types": [MARKET_TYPES[self.exchange_id]]}
        options.update(self.extra_options)
        cls = getattr(ccxt.pro, self.exchange_id, None)
        if cls is None:
            raise ValueError(f"ccxt.pro has no exchange {self.exchange_id!r}")
        ex = cls({"enableRateLimit": True, "timeout": int(self.t.request_s * 1000), "options": options,
                  **self.creds.ccxt_config()})
        logger = logging.getLogger(f"bot4.venues.ccxt.{self.exchange_id}.{self.venue}")
        if not any(isinstance(f, _MaskingFilter) for f in logger.filters):
            logger.addFilter(_MaskingFilter(self.creds))
        ex.logger = logger
        if self.sandbox:
            ex.set_sandbox_mode(True)
        point_at(ex, self.rest_url, self.ws_url)
        original = ex.on_rest_response

        def on_rest_response(code, reason, url, method, headers, body, *rest):
            # the Retry-After of this request's answer, for the task that made it (ccxt's last_response_headers
            # is shared by every concurrent request)
            if code in (418, 429, 503):
                _RETRY_AFTER.set(_retry_after_s(headers))
            return original(code, reason, url, method, headers, body, *rest)

        ex.on_rest_response = on_rest_response
        ex.throttler = _idle_credit_throttler(ex.tokenBucket, ex.asyncio_loop)
        self._tap(ex)
        return ex

    def _tap(self, ex) -> None:
        """ccxt.pro creates its stream caches when first needed (and drops them when told to clean up): made here,
        they also hand every update to the scan."""
        if not getattr(ex.orders, "bot4_tapped", False):
            ex.orders = _tapped_cache(ex.safe_integer(ex.options, "ordersLimit", 1000), self._stream_orders,
                                      self._stream_news)
        if not getattr(ex.myTrades, "bot4_tapped", False):
            ex.myTrades = _tapped_cache(ex.safe_integer(ex.options, "tradesLimit", 1000), self._stream_trades,
                                        self._stream_news)

    def log(self, text: str) -> None:
        self.log_fn(self.creds.mask(f"venue {self.venue} ({self.exchange_id}): {text}"))

    def _err(self, exc: BaseException) -> str:
        return self.creds.mask(f"{type(exc).__name__}: {exc}")[:500]

    async def _rest(self, what: str, fn, *args):
        """One REST call, counted; a failure's Retry-After (seconds) rides on the exception as ``retry_after_s``."""
        import ccxt
        wait = self._quiet_until - time.monotonic()
        if wait > 0:  # the venue said when to come back (a 429 / 418's Retry-After): every request waits for it
            await asyncio.sleep(wait)
        _RETRY_AFTER.set(None)
        self.counters.requests += 1
        if what == "create":
            self.counters.creates += 1
        elif what == "cancel":
            self.counters.cancels += 1
        elif what == "amend":
            self.counters.amends += 1
        elif what in QUERIES:
            self.counters.queries += 1
        try:
            return await fn(*args)
        except ccxt.RequestTimeout as exc:
            self.counters.timeouts += 1
            exc.retry_after_s = None
            raise
        except (ccxt.DDoSProtection, ccxt.RateLimitExceeded) as exc:
            self.counters.rate_limited += 1
            exc.retry_after_s = _RETRY_AFTER.get()
            if exc.retry_after_s:
                self._quiet_until = max(self._quiet_until, time.monotonic() + exc.retry_after_s)
            raise
        except ccxt.NetworkError as exc:
            self.counters.network_errors += 1
            exc.retry_after_s = _RETRY_AFTER.get()
            raise

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the markets (check every symbol is the venue's), start the user stream and the periodic work, and
        wait until the stream is subscribed: RuntimeError when it is not within ``stream_ready_s`` (call stop())."""
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._started_mono = time.monotonic()
        delay = self.t.reconnect_min_s
        for attempt in range(5):
            try:
                await self._rest("markets", self.ex.load_markets)
                break
            except Exception as exc:  # noqa: BLE001 - retried, then raised
                self.last_error = self._err(exc)
                self.log(f"load_markets: {self.last_error}")
                if attempt == 4:
                    raise RuntimeError(self.creds.mask(f"venue {self.venue}: cannot load markets: "
                                                       f"{self.last_error}")) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.t.reconnect_max_s)
        self._resolve_symbols()
        await self._check_credentials()
        self._started = True
        self._loops = [asyncio.ensure_future(self._periodic(self.t.sweep_period_s, self._sweep))]
        if self.ex.options.get("adjustForTimeDifference") and hasattr(self.ex, "load_time_difference"):
            self._loops.append(asyncio.ensure_future(self._periodic(self.t.time_sync_s, self._time_sync)))
        if self.user_stream:
            self._loops += [asyncio.ensure_future(self._watch("orders")), asyncio.ensure_future(self._watch("trades"))]
            if not await self._stream_ready():  # no trading blind: the fills of resting orders come on it
                raise RuntimeError(self.creds.mask(f"venue {self.venue} ({self.exchange_id}): the user stream is not "
                                                   f"subscribed after {self.t.stream_ready_s:g} s: "
                                                   f"{self.last_error}"))

    async def _check_credentials(self) -> None:
        """One signed request before anything else: a key or secret the venue refuses is said as that (the user
        stream would only time out), in one line that names where the credentials came from and shows neither."""
        import ccxt
        try:
            await self._rest("balance", self.ex.fetch_balance)
        except (ccxt.AuthenticationError, ccxt.PermissionDenied) as exc:
            raise CredentialsError(self.creds.mask(
                f"venue {self.venue} ({self.exchange_id}): the venue refused the API key or secret "
                f"({type(exc).__name__}: {self._err(exc)}); check {self.creds!r}")) from None

    def _resolve_symbols(self) -> None:
        by_id: dict = {}
        for symbol, m in self.ex.markets.items():
            by_id.setdefault(_normal(m.get("id") or symbol), symbol)
        resolved, missing = {}, []
        for index, name in self.symbols.items():
            market = name if name in self.ex.markets else by_id.get(_normal(name))
            if market is None:
                missing.append(name)
            else:
                resolved[index] = market
        if not resolved:
            raise ValueError(f"venue {self.venue} ({self.exchange_id}) lists none of {sorted(self.symbols.values())}")
        if missing:
            self.log(f"no market for {', '.join(missing)}: orders for it are refused here")
        self.symbols = resolved
        self.symbol_index = {s: i for i, s in resolved.items()}

    async def stop(self) -> None:
        """Stop the stream and the periodic work, let calls in flight finish for ``stop_wait_s``, close the client.
        Orders stay as they are at the venue (cancel_all is the kill switch's, called before when wanted)."""
        self._stopping = True
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.t.stop_wait_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._flush()
        in_doubt = [o.cid for o in self.orders.values()
                    if not o.done and (o.t_unknown or o.create_pending or o.amend is not None)]
        if in_doubt:
            self.log(f"stopped with {len(in_doubt)} orders in doubt: {', '.join(in_doubt[:10])}")
        try:
            await self.ex.close()
        except Exception as exc:  # noqa: BLE001 - closing is best effort
            self.log(f"close: {self._err(exc)}")
        if self._auth is not None and not self._auth.done():
            self._auth.cancel()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.counters.errors += 1
            self.last_error = self._err(exc)
            self.log(f"internal error: {self.last_error}")

    def _on_loop(self, fn, *args) -> None:
        if self._loop is None:
            raise RuntimeError("OrderSession.start() has not run")
        if threading.get_ident() == self._thread_id:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    # --- answers ----------------------------------------------------------------------------------------

    def _answer(self, kind, o: _Order, *, price, qty, leaves, fee=0.0, liquidity=0, trade_id=0, exch_ts=0,
                send_ts=0) -> None:
        a = np.zeros(1, VENUE_ANSWER)[0]
        a["arrive_ts"], a["exch_ts"], a["send_ts"] = self.clock_ns(), exch_ts, send_ts
        a["order_id"], a["slot"], a["key"], a["side"], a["kind"] = o.order_id, o.slot, o.key, o.side, kind
        a["liquidity"], a["trade_id"], a["price"], a["qty"], a["leaves"], a["fee"] = (liquidity, trade_id, price, qty,
                                                                                    leaves, fee)
        self._out.append(a)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Everything answered in one step of the loop goes out as one array, in order. ``emit`` should not raise
        (it may block); when it does, the answers are kept and offered again 10 ms later (counted, logged)."""
        self._flush_scheduled = False
        if not self._out:
            return
        out, self._out = np.array(self._out, VENUE_ANSWER), []
        try:
            self.emit_fn(out)
        except Exception as exc:  # noqa: BLE001 - an answer is never dropped
            self.counters.emit_errors += 1
            self.counters.errors += 1
            self.last_error = self._err(exc)
            self.log(f"emit failed ({self.last_error}): {len(out)} answers kept, offered again")
            self._out = list(out) + self._out
            if not self._flush_scheduled and self._loop is not None and not self._loop.is_closed():
                self._flush_scheduled = True
                self._loop.call_later(0.01, self._flush)

    def _ack(self, o: _Order, exch_ts: int) -> None:
        o.acked = True
        if o.t_unknown:
            o.t_unknown = 0.0
            self.counters.unknown_resolved += 1
        elif o.t_sent:
            latency = int((time.monotonic() - o.t_sent) * 1e9)
            self.ack_latencies_ns.append(latency)
            c = self.counters
            c.ack_latency_count += 1
            c.ack_latency_sum_ns += latency
            c.ack_latency_max_ns = max(c.ack_latency_max_ns, latency)
        self.counters.acks += 1
        self._answer(ANS_ACK, o, price=o.price, qty=o.qty, leaves=o.qty - o.filled, exch_ts=exch_ts,
                     send_ts=o.send_ts)

    def _reject(self, o: _Order, why: str, local: bool = False, exch_ts: int = 0) -> None:
        self.counters.rejects += 1
        self.counters.local_rejects += int(local)
        self.log(f"order {o.cid} rejected: {why}")
        self._answer(ANS_REJECTED, o, price=o.price, qty=o.qty, leaves=0.0, exch_ts=exch_ts, send_ts=o.send_ts)
        self._retire(o)

    def _amend_settled(self, o: _Order) -> _Amend | None:
        """The order's amend is no longer in flight (whichever way it went): returned."""
        a, o.amend = o.amend, None
        if a is not None and a.t_failed and not a.refused:
            self.counters.unknown_resolved += 1
        return a

    def _amended(self, o: _Order, price: float, qty: float, exch_ts: int) -> None:
        """The venue applied the order's amend: the session's view of the order is the amended one."""
        a = self._amend_settled(o)
        o.price, o.qty = price, qty
        o.amended_ts = max(o.amended_ts, exch_ts)
        self.counters.amends_applied += 1
        self._answer(ANS_AMENDED, o, price=price, qty=qty, leaves=max(qty - o.filled, 0.0), exch_ts=exch_ts,
                     send_ts=a.send_ts)

    def _amend_rejected(self, o: _Order, why: str, send_ts: int, quiet: bool = False) -> None:
        """The order stands as it was (none of it is open when it has ended or is unknown here)."""
        self.counters.amend_rejects += 1
        if not quiet:
            self.log(f"amend of {o.cid} rejected: {why}")
        leaves = max(o.qty - o.filled, 0.0) if not o.done and o.order_id in self.orders else 0.0
        self._answer(ANS_AMEND_REJECTED, o, price=o.price, qty=o.qty, leaves=leaves, send_ts=send_ts)

    def _amend_failed(self, o: _Order, why: str) -> None:
        self._amend_rejected(o, why, self._amend_settled(o).send_ts)

    def _cancel_rejected(self, o: _Order, why: str) -> None:
        self.counters.cancel_rejects += 1
        self.log(f"cancel of {o.cid} rejected: {why}")
        self._answer(ANS_CANCEL_REJECTED, o, price=o.price, qty=0.0, leaves=0.0, send_ts=o.cancel_send_ts)

    def _retire(self, o: _Order) -> None:
        """The order ended here: nothing more will be reported of it but late news (counted)."""
        o.done = True
        self._amend_settled(o)  # an amend in flight is answered by the order's end
        if o.cancel_wanted:  # a cancel that waited for the create: the order ended before it could go
            o.cancel_wanted = False
            self._cancel_rejected(o, "the order ended before the cancel could be sent")
        self.orders.pop(o.order_id, None)
        self.ended[o.order_id] = o
        while len(self.ended) > ENDED_KEPT:
            _, old = self.ended.popitem(last=False)
            if old.venue_id is not None and self.by_venue.get((old.symbol, old.venue_id)) is old:
                del self.by_venue[(old.symbol, old.venue_id)]

    # --- commands ---------------------------------------------------------------------------------------

    def command(self, cmd) -> None:
        """A VENUE_COMMAND of any kind (a record, or an array of one): submit, cancel or amend."""
        kind = int((cmd[0] if isinstance(cmd, np.ndarray) and cmd.shape else cmd)["kind"])
        if kind == CMD_NEW:
            self.submit(cmd)
        elif kind == CMD_CANCEL:
            self.cancel(cmd)
        elif kind == CMD_AMEND:
            self.amend(cmd)
        else:
            raise ValueError(f"VENUE_COMMAND kind {kind}: not CMD_NEW, CMD_CANCEL nor CMD_AMEND")

    def submit(self, cmd) -> None:
        """Place the order of a CMD_NEW record: scheduled on the loop, never blocks."""
        self._on_loop(self._submit, _command(cmd))

    def cancel(self, cmd) -> None:
        """Cancel the order of a CMD_CANCEL record: scheduled on the loop, never blocks."""
        self._on_loop(self._cancel_cmd, _command(cmd))

    def amend(self, cmd) -> None:
        """Amend in place the order of a CMD_AMEND record (its new price and total quantity): scheduled on the loop,
        never blocks."""
        self._on_loop(self._amend_cmd, _command(cmd))

    @property
    def amends_in_place(self) -> bool:
        """Whether this venue's ccxt edit_order changes an order in place (same order id and client order id)."""
        return self.exchange_id in AMENDS_IN_PLACE and bool(self.ex.has.get("editOrder"))

    def _new_order(self, c: dict, symbol: str) -> _Order:
        return _Order(order_id=c["order_id"], slot=c["slot"], key=c["key"], symbol=symbol, side=c["side"],
                      kind=c["order_kind"], price=c["price"], qty=c["qty"], cid="", send_ts=c["send_ts"])

    def _submit(self, c: dict) -> None:
        oid = c["order_id"]
        if oid in self.orders or oid in self.ended:
            self.counters.duplicate_commands += 1
            self.log(f"order {oid} was already sent: the second create is ignored")
            return
        symbol = self.symbols.get(key_symbol(c["key"]), "") if key_venue(c["key"]) == self.venue else ""
        o = self._new_order(c, symbol)
        try:
            o.cid = client_ids.client_order_id(self.prefix, oid)
        except ValueError as exc:
            o.cid = str(oid)
            return self._reject(o, str(exc), local=True)
        if not symbol:
            return self._reject(o, f"instrument key {c['key']} is not one of venue {self.venue}'s symbols", local=True)
        if o.side not in (BUY, SELL) or o.kind not in (INTENT_IOC, INTENT_QUOTE):
            return self._reject(o, f"side {o.side} / order kind {o.kind} not supported", local=True)
        if not (o.price > 0 and o.qty > 0 and math.isfinite(o.price) and math.isfinite(o.qty)):
            return self._reject(o, f"price {o.price} / quantity {o.qty} not positive", local=True)
        if self._stopping or not self._started:
            return self._reject(o, "the session is not running", local=True)
        try:
            o.qty = float(self.ex.amount_to_precision(symbol, o.qty))
            o.price = float(self.ex.price_to_precision(symbol, o.price))
        except Exception as exc:  # noqa: BLE001 - ccxt says why (below the market's precision...)
            return self._reject(o, f"precision: {self._err(exc)}", local=True)
        if not (o.qty > 0 and o.price > 0):
            return self._reject(o, "quantity or price rounds to 0 at the market's precision", local=True)
        o.create_pending = True
        self.orders[oid] = o
        self._spawn(self._create(o))

    async def _create(self, o: _Order) -> None:
        params = {"clientOrderId": o.cid, "timeInForce": "IOC" if o.kind == INTENT_IOC else "GTC"}
        o.t_sent = o.t_activity = time.monotonic()
        try:
            info = await self._rest("create", self.ex.create_order, o.symbol, "limit",
                                    "buy" if o.side == BUY else "sell", o.qty, o.price, params)
        except asyncio.CancelledError:
            o.create_pending = False
            o.t_unknown = time.monotonic()
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is either a refusal or an unknown outcome
            o.create_pending = False
            if o.done:
                return
            if not _unknown_outcome(exc):
                return self._reject(o, self._err(exc))
            self.counters.unknown += 1
            if not o.acked:  # the stream may have told already
                o.t_unknown = time.monotonic()
                self.log(f"create of {o.cid}: outcome unknown ({self._err(exc)}): it will be queried")
                self._resolve_soon(o, getattr(exc, "retry_after_s", None))
            return
        o.create_pending = False
        self._apply_order(o, info, at_entry=True)

    def _cancel_cmd(self, c: dict) -> None:
        oid = c["order_id"]
        o = self.orders.get(oid)
        if o is None:
            done = self.ended.get(oid)
            if done is None:
                symbol = self.symbols.get(key_symbol(c["key"]), "") if key_venue(c["key"]) == self.venue else ""
                done = self._new_order(c, symbol)
                done.cid = client_ids.client_order_id(self.prefix, oid) if oid > 0 else str(oid)
                if symbol and oid > 0 and not self._stopping:
                    # execute's, yet not placed by this session: an earlier incarnation's (it died). Execute cannot
                    # know what the order did meanwhile: its trades are reported, then its end
                    done.acked, done.inherited, done.cancel_send_ts = True, True, c["send_ts"]
                    self.counters.stray_orders += 1
                    self.orders[oid] = done
                    self._spawn(self._cancel(done))
                    return
            done.cancel_send_ts = c["send_ts"]
            self._cancel_rejected(done, "the order had already ended")
            return
        if o.cancel_busy or o.cancel_wanted:
            self.counters.duplicate_commands += 1
            return
        o.cancel_send_ts = c["send_ts"]
        self._request_cancel(o)

    def _request_cancel(self, o: _Order) -> None:
        if o.done or o.cancel_busy:
            return
        if o.create_pending or (o.t_unknown and not o.acked):
            o.cancel_wanted = True  # sent once the create is settled
            return
        o.cancel_busy = True  # from now: an amend asked in the same step sees the cancel in flight
        self._spawn(self._cancel(o))

    async def _cancel(self, o: _Order) -> None:
        o.cancel_busy = True
        absent = False  # an earlier incarnation's order the venue does not know, past the absence rule's time
        try:
            for _ in range(self.t.cancel_attempts):
                try:
                    info = await self._rest("cancel", self.ex.cancel_order, None, o.symbol, {"clientOrderId": o.cid})
                except Exception as exc:  # noqa: BLE001 - what the order is doing decides the answer
                    unknown = _unknown_outcome(exc)
                    if unknown:
                        self.counters.unknown += 1
                        self.log(f"cancel of {o.cid}: outcome unknown ({self._err(exc)}): querying the order")
                    not_found = False
                    try:
                        info = await self._query(o, getattr(exc, "retry_after_s", None) if unknown else None,
                                                 first_delay=None if unknown else 0.0)
                        not_found = info is None
                    except _Unknown:
                        if unknown:
                            continue  # cannot tell: send the cancel again
                        info = None
                    if info is not None:
                        self._apply_order(o, info)
                        if o.done or o.end is not None:
                            return  # it ended: that end is the answer
                        if unknown:
                            continue  # open: the cancel did not land, send it again
                    elif o.inherited and not_found:
                        wait = self._absent_after() - time.monotonic()
                        if wait > 0:  # the earlier incarnation's create may still reach the venue: ask again then
                            await asyncio.sleep(wait)
                            continue
                        absent = True
                    break  # refused (or unknown to the venue) and not ended
                else:
                    self._apply_order(o, info)
                    return
            if not o.done and o.end is None:
                if absent:
                    return self._reject(o, "never placed: an earlier incarnation's order the venue does not know, "
                                           "past the recvWindow")
                self._cancel_rejected(o, "the venue did not cancel it")
                if o.adopted or o.inherited:  # a cancel for an order this session never placed, unknown to the venue
                    self._retire(o)
        finally:
            o.cancel_busy = False

    def _amend_cmd(self, c: dict) -> None:
        o = self.orders.get(c["order_id"])
        send_ts = c["send_ts"]
        if not self.amends_in_place:
            target = o or self.ended.get(c["order_id"]) or self._unknown_order(c)
            if not self._no_amend_said:
                self._no_amend_said = True
                self.log(f"CMD_AMEND refused here (ANS_AMEND_REJECTED): {self.exchange_id}'s edit_order is not an "
                         "amend in place (a cancel-replace gives a new order id); further ones are only counted")
            return self._amend_rejected(target, "the venue cannot amend in place", send_ts, quiet=True)
        if o is None:
            ended = self.ended.get(c["order_id"])
            why = "the order has ended" if ended is not None else "the order is not known here"
            return self._amend_rejected(ended or self._unknown_order(c), why, send_ts)
        price, qty = c["price"], c["qty"]
        why = ""
        if self._stopping or not self._started:
            why = "the session is not running"
        elif o.done or o.end is not None:
            why = "the order has ended"
        elif o.create_pending or (o.t_unknown and not o.acked):
            why = "its create is still in flight"
        elif o.cancel_busy or o.cancel_wanted:
            why = "a cancel of it is in flight"
        elif o.amend is not None:
            why = "an amend of it is already in flight"
        elif o.venue_id is None:
            why = "its venue order id is not known yet"
        elif not (price > 0 and qty > 0 and math.isfinite(price) and math.isfinite(qty)):
            why = f"price {price} / quantity {qty} not positive"
        else:
            try:
                qty = float(self.ex.amount_to_precision(o.symbol, qty))
                price = float(self.ex.price_to_precision(o.symbol, price))
            except Exception as exc:  # noqa: BLE001 - ccxt says why (below the market's precision...)
                why = f"precision: {self._err(exc)}"
            else:
                filled = max(o.filled, o.venue_filled)
                if not (qty > 0 and price > 0):
                    why = "quantity or price rounds to 0 at the market's precision"
                elif qty <= filled + _eps(qty):
                    why = f"the new quantity {qty:.10g} is not above what is filled ({filled:.10g})"
        if why:
            return self._amend_rejected(o, why, send_ts)
        o.amend = _Amend(price, qty, send_ts)
        if _same(price, o.price) and _same(qty, o.qty):  # nothing changes at the market's precision: no request
            return self._amended(o, o.price, o.qty, 0)
        self._spawn(self._amend(o, o.amend))

    def _unknown_order(self, c: dict) -> _Order:
        """An order id this session does not know, only to be answered (with 0 for its price and quantity)."""
        o = self._new_order(c, "")
        o.cid, o.price, o.qty, o.done = str(c["order_id"]), 0.0, 0.0, True
        return o

    async def _amend(self, o: _Order, a: _Amend) -> None:
        import ccxt
        side = "buy" if o.side == BUY else "sell"
        # by the venue's order id (ccxt would send orderId=None without one) and the client order id: the venue
        # takes the order id when both come
        try:
            info = await self._rest("amend", self.ex.edit_order, o.venue_id, o.symbol, "limit", side, a.qty, a.price,
                                    {"origClientOrderId": o.cid})
        except Exception as exc:  # noqa: BLE001 - a refusal, "unknown order", or an unknown outcome
            if o.amend is not a or o.done:
                return  # settled meanwhile (the stream, a query, the order's end)
            if isinstance(exc, ccxt.OrderNotFound):
                a.refused = self._err(exc)
            elif not _unknown_outcome(exc):
                return self._amend_failed(o, self._err(exc))
            else:
                self.counters.unknown += 1
                self.log(f"amend of {o.cid}: outcome unknown ({self._err(exc)}): querying the order")
            a.t_failed = time.monotonic()
            self._settle_amend_soon(o, getattr(exc, "retry_after_s", None), 0.0 if a.refused else None)
            return
        if o.amend is a and not o.done:
            self._amend_news(o, info, answered=True)
        self._apply_order(o, info)

    def _settle_amend_soon(self, o: _Order, retry_after=None, first_delay: float | None = None) -> None:
        a = o.amend
        if a is None or a.settling or o.done:
            return
        a.settling = True
        self._spawn(self._settle_amend(o, a, retry_after, first_delay))

    async def _settle_amend(self, o: _Order, a: _Amend, retry_after, first_delay) -> None:
        """Settle an amend the venue answered "unknown order" or whose outcome is unknown, by queries (see the
        module's doc)."""
        import ccxt
        delay = self.t.first_query_s if first_delay is None else first_delay
        not_before = a.t_failed + self.t.recv_window_s + self.t.absent_margin_s  # an unknown one can land until then
        try:
            for _ in range(self.t.query_attempts):
                await asyncio.sleep(max(delay, retry_after or 0.0))
                delay = min(max(delay, self.t.first_query_s) * 2, self.t.max_query_delay_s)
                retry_after = None
                if o.amend is not a or o.done:
                    return
                sent = time.monotonic()
                try:
                    info = await self._rest("query", self.ex.fetch_order, None, o.symbol, {"clientOrderId": o.cid})
                except ccxt.OrderNotFound:
                    info = None
                    self.log(f"amend of {o.cid}: the venue does not know the order, which it had taken")
                except Exception as exc:  # noqa: BLE001 - retried
                    retry_after = getattr(exc, "retry_after_s", None)
                    self.last_error = self._err(exc)
                    continue
                if info is not None:
                    self._apply_order(o, info)
                if o.amend is not a or o.done:
                    return
                if a.refused:
                    return self._amend_failed(o, f"the venue does not have it open ({a.refused}) and a query shows "
                                                 "it as it was")
                if sent >= not_before:
                    return self._amend_failed(o, "not applied: a query past the amend's recvWindow shows the order "
                                                 "as it was")
                delay = max(delay, not_before - time.monotonic())
        finally:
            a.settling = False

    def _amend_news(self, o: _Order, info: dict, answered: bool = False) -> None:
        """What the venue says of an order with an amend in flight: the new price and quantity -> applied (also
        when the order ended since: its fills and end follow); ended with the old ones -> its end is the answer.
        ``answered``: the amend call's own answer (the venue took it: the order is what it says)."""
        a = o.amend
        exch_ts = _ns(info.get("lastUpdateTimestamp") or info.get("timestamp"))
        if a is None or o.done or exch_ts < o.amended_ts:
            return  # (older than the last amendment seen: a query answered late, from before it)
        price, amount = _f(info.get("price")), _f(info.get("amount"))
        ended = info.get("status") in ENDED
        if (_same(price, a.price) and _same(amount, a.qty)) or (answered and not ended and price > 0 and amount > 0):
            self._amended(o, price, amount, exch_ts)
        elif ended:
            self._amend_settled(o)  # (as _retire does once its end is reported)

    def _absent_after(self) -> float:
        """Monotonic time from which a query that does not find an earlier incarnation's order proves it never
        placed: that incarnation signed its requests before this session started, and the venue refuses a request
        older than the recvWindow."""
        return self._started_mono + self.t.recv_window_s + self.t.absent_margin_s

    # --- settling ---------------------------------------------------------------------------------------

    async def _query(self, o: _Order, retry_after, first_delay: float | None = None):
        """The order by its client order id: the venue's order, or None when it does not know it. Retried with
        backoff on failures; raises _Unknown when every attempt failed."""
        import ccxt
        delay = self.t.first_query_s if first_delay is None else first_delay
        for _ in range(self.t.query_attempts):
            await asyncio.sleep(max(delay, retry_after or 0.0))
            delay = min(max(delay, self.t.first_query_s) * 2, self.t.max_query_delay_s)
            try:
                return await self._rest("query", self.ex.fetch_order, None, o.symbol, {"clientOrderId": o.cid})
            except ccxt.OrderNotFound:
                return None
            except Exception as exc:  # noqa: BLE001 - retried
                retry_after = getattr(exc, "retry_after_s", None)
                self.last_error = self._err(exc)
        raise _Unknown(o.cid)

    def _resolve_soon(self, o: _Order, retry_after=None, first_delay: float | None = None) -> None:
        if o.resolving or o.done:
            return
        o.resolving = True
        self._spawn(self._resolve(o, retry_after, first_delay))

    async def _resolve(self, o: _Order, retry_after, first_delay) -> None:
        """Settle a create of unknown outcome: query until found, or confirmed absent (see the module's doc)."""
        import ccxt
        delay = self.t.first_query_s if first_delay is None else first_delay
        absent_at = o.t_unknown + self.t.recv_window_s + self.t.absent_margin_s
        try:
            for _ in range(self.t.query_attempts):
                await asyncio.sleep(max(delay, retry_after or 0.0))
                delay = min(max(delay, self.t.first_query_s) * 2, self.t.max_query_delay_s)
                retry_after = None
                if o.done or not o.t_unknown or o.acked:
                    return
                sent = time.monotonic()
                try:
                    info = await self._rest("query", self.ex.fetch_order, None, o.symbol, {"clientOrderId": o.cid})
                except ccxt.OrderNotFound:
                    if sent >= absent_at and not o.acked and not o.done:
                        self.counters.unknown_absent += 1
                        o.t_unknown = 0.0
                        self._reject(o, "never placed: not found by a query past the create's recvWindow")
                        return
                    continue
                except Exception as exc:  # noqa: BLE001 - retried
                    retry_after = getattr(exc, "retry_after_s", None)
                    self.last_error = self._err(exc)
                    continue
                self._apply_order(o, info)
                return
        finally:
            o.resolving = False

    def _apply_order(self, o: _Order, info: dict, at_entry: bool = False) -> None:
        """What the venue says of one of our orders (a create's, cancel's or query's answer, or a stream update):
        idempotent, so any of them may repeat or overtake another. ``at_entry``: the create's answer (the trades it
        lists happened at entry: taker fills, when the venue does not say)."""
        if o.done:
            return
        o.t_activity = time.monotonic()
        self._amend_news(o, info)
        amount = _f(info.get("amount"))
        if amount > 0 and (not o.acked or o.qty <= 0):
            o.qty = amount  # the quantity the venue took
        filled = _f(info.get("filled"))
        vid = None if info.get("id") is None else str(info.get("id"))
        if o.adopted:  # not placed by this session: what filled before it knew the order is reconciliation's
            o.adopted = False
            o.filled = o.venue_filled = filled
            o.notional = o.venue_cost = _f(info.get("cost"))
            o.trades.update(str(t.get("id")) for t in info.get("trades") or ())
            o.trades.update(str(t.get("id")) for t in self._parked.pop((o.symbol, vid), ()))
        if vid is not None and o.venue_id is None:
            o.venue_id = vid
            self.by_venue[(o.symbol, vid)] = o
            for trade in self._parked.pop((o.symbol, vid), ()):  # trades the stream brought before their order
                self._apply_trade(o, trade)
            if o.done:
                return
        status = info.get("status")
        exch_ts = _ns(info.get("lastUpdateTimestamp") or info.get("timestamp"))
        if status == "rejected" and not o.acked:
            return self._reject(o, "the venue rejected it", exch_ts=exch_ts)
        if not o.acked:
            self._ack(o, _ns(info.get("timestamp")))
        for trade in info.get("trades") or ():
            self._apply_trade(o, trade, at_entry)
            if o.done:
                return
        if filled > o.venue_filled:
            o.venue_filled, o.venue_cost = filled, _f(info.get("cost"))
        if status in ENDED:
            if o.end is None:
                o.end = (status, exch_ts)
            self._try_finish(o)
        elif o.venue_filled > o.filled + _eps(o.qty):
            self._catch_up_soon(o)  # fills the stream has not brought yet (or missed)
        if not o.done and o.cancel_wanted and not o.create_pending and not o.cancel_busy and o.end is None:
            o.cancel_wanted = False
            self._request_cancel(o)

    def _try_finish(self, o: _Order) -> None:
        """The venue ended the order: report its end once every fill it counts is reported."""
        if o.done or o.end is None:
            return
        if o.venue_filled > o.filled + _eps(o.qty):
            return self._catch_up_soon(o)
        status, exch_ts = o.end
        leaves = o.qty - o.filled
        if leaves > _eps(o.qty):
            send_ts = o.cancel_send_ts if o.cancel_send_ts else (o.send_ts if o.kind == INTENT_IOC else 0)
            self.counters.cancelled += 1
            self._answer(ANS_CANCELLED, o, price=o.price, qty=leaves, leaves=0.0, exch_ts=exch_ts, send_ts=send_ts)
        self._retire(o)

    def _catch_up_soon(self, o: _Order) -> None:
        if o.catching_up or o.done or o.venue_id is None:
            return
        o.catching_up = True
        self._spawn(self._catch_up(o))

    async def _catch_up(self, o: _Order) -> None:
        """The venue counts more filled than the fills reported: give the stream ``fill_grace_s`` to bring the
        trades, then fetch the order's trades; a quantity no trade accounts for becomes one synthetic fill."""
        delay = self.t.fill_grace_s
        try:
            for _ in range(self.t.query_attempts):
                await asyncio.sleep(delay)
                delay = min(max(delay, self.t.first_query_s) * 2, self.t.max_query_delay_s)
                if o.done or o.venue_filled <= o.filled + _eps(o.qty):
                    break
                try:
                    trades = await self._rest("trades", self.ex.fetch_my_trades, o.symbol, None, None,
                                              {"orderId": o.venue_id})
                except Exception as exc:  # noqa: BLE001 - retried
                    self.last_error = self._err(exc)
                    continue
                for trade in sorted(trades, key=lambda t: (t.get("timestamp") or 0, str(t.get("id")))):
                    if str(trade.get("order")) == o.venue_id:
                        self._apply_trade(o, trade)
                if o.done or o.venue_filled <= o.filled + _eps(o.qty):
                    break
            else:
                missing = o.venue_filled - o.filled
                if not o.done and missing > _eps(o.qty):
                    price = (o.venue_cost - o.notional) / missing if o.venue_cost > o.notional else o.price
                    self.counters.synthetic_fills += 1
                    self.log(f"order {o.cid}: the venue counts {missing:.10g} more filled than its trades show: "
                             f"reported as one fill at {price:.10g} (trade id 0)")
                    self._fill(o, price, missing, fee=0.0, liquidity=0, trade_id=0, exch_ts=0, send_ts=0)
        finally:
            o.catching_up = False
        self._try_finish(o)

    def _fill(self, o, price, qty, *, fee, liquidity, trade_id, exch_ts, send_ts) -> None:
        o.filled += qty
        o.notional += qty * price
        leaves = o.qty - o.filled
        if leaves <= _eps(o.qty):
            leaves = 0.0
        self.counters.fills += 1
        self._answer(ANS_FILL, o, price=price, qty=qty, leaves=leaves, fee=fee, liquidity=liquidity,
                     trade_id=trade_id, exch_ts=exch_ts, send_ts=send_ts)
        if leaves == 0.0 and not o.done:
            o.end = None
            self._retire(o)

    def _apply_trade(self, o: _Order, trade: dict, at_entry: bool = False) -> None:
        tid = str(trade.get("id"))
        if tid in o.trades:
            self.counters.duplicate_trades += 1
            return
        o.trades.add(tid)
        qty, price = _f(trade.get("amount")), _f(trade.get("price"))
        if qty <= 0:
            return
        exch_ts = _ns(trade.get("timestamp"))
        if o.done:  # the venue reports a trade of an order it had ended: say it, never drop it
            self.counters.late_fills += 1
            self.log(f"order {o.cid}: trade {tid} arrived after its end")
        elif not o.acked:
            self._ack(o, exch_ts)
        maker = trade.get("takerOrMaker")
        liquidity = 1 if maker == "maker" else -1 if maker == "taker" or at_entry else 0
        fee = self._fee_in_quote(trade, o)
        self._count_base_fee(trade, o)
        send_ts = o.send_ts if liquidity == -1 else 0
        if o.done:
            self.counters.fills += 1
            self._answer(ANS_FILL, o, price=price, qty=qty, leaves=0.0, fee=fee, liquidity=liquidity,
                         trade_id=trade_id_int(tid), exch_ts=exch_ts, send_ts=send_ts)
            return
        self._fill(o, price, qty, fee=fee, liquidity=liquidity, trade_id=trade_id_int(tid), exch_ts=exch_ts,
                   send_ts=send_ts)
        if not o.done and o.end is not None:
            self._try_finish(o)

    # --- fees -------------------------------------------------------------------------------------------

    def _count_base_fee(self, trade: dict, o: _Order) -> None:
        """A fee taken in the market's base currency changes the holdings the fills imply (spot reconciliation)."""
        base = (self.ex.markets.get(o.symbol) or {}).get("base")
        for fee in trade.get("fees") or ([trade["fee"]] if trade.get("fee") else []):
            if (fee or {}).get("currency") == base and base is not None:
                self.base_fees[base] = self.base_fees.get(base, 0.0) + _f(fee.get("cost"))

    def _fee_in_quote(self, trade: dict, o: _Order) -> float:
        market = self.ex.markets.get(o.symbol) or {}
        base, quote = market.get("base"), market.get("quote")
        fees = trade.get("fees") or ([trade["fee"]] if trade.get("fee") else [])
        total = 0.0
        price = _f(trade.get("price"))
        for fee in fees:
            cost, currency = _f((fee or {}).get("cost")), (fee or {}).get("currency")
            if cost == 0.0:
                continue
            if currency is None or currency == quote:
                total += cost
            elif currency == base:
                total += cost * price
            else:
                rate = self._rate(currency, quote)
                if rate is None:
                    self.counters.fees_unconverted += 1
                    self.log(f"order {o.cid}: trade {trade.get('id')}'s fee {cost!r} {currency} has no rate in "
                             f"{quote} yet: reported as 0")
                else:
                    total += cost * rate
        return total

    def _rate(self, currency: str, quote: str) -> float | None:
        rate, expiry = self.fee_rates.get(currency, (None, 0.0))
        if rate is None or time.monotonic() > expiry:
            if currency not in self._rates_busy and self._loop is not None and not self._stopping:
                self._spawn(self._fetch_rate(currency, quote))
        return rate

    async def _fetch_rate(self, currency: str, quote: str | None = None) -> None:
        quote = quote or next((self.ex.markets[s]["quote"] for s in self.symbols.values()), None)
        symbol = f"{currency}/{quote}"
        if symbol not in self.ex.markets or currency in self._rates_busy:
            return
        self._rates_busy.add(currency)
        try:
            ticker = await self._rest("ticker", self.ex.fetch_ticker, symbol)
            price = _f(ticker.get("last") or ticker.get("close"))
            if price > 0:
                self.fee_rates[currency] = (price, time.monotonic() + self.t.rate_max_age_s)
        except Exception as exc:  # noqa: BLE001 - the next fee in that currency asks again
            self.log(f"fee rate {symbol}: {self._err(exc)}")
        finally:
            self._rates_busy.discard(currency)

    # --- the user stream --------------------------------------------------------------------------------

    async def _watch(self, what: str) -> None:
        delay = self.t.reconnect_min_s
        watch = self.ex.watch_orders if what == "orders" else self.ex.watch_my_trades
        while not self._stopping:
            try:
                self._tap(self.ex)
                await watch()
                delay = self.t.reconnect_min_s
                self._scan()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the stream dropped (or refused): retried, then resynced
                self.counters.stream_errors += 1
                self.last_error = self._err(exc)
                if self._stream_up():
                    # an error of an earlier attempt, handed on by ccxt to the next watch: the stream is up
                    await asyncio.sleep(0)
                    continue
                self.stream_ready = False
                if not self._resync_pending and not self._stopping:
                    self._resync_pending = True
                    self.counters.stream_reconnects += 1
                    self.log(f"user stream ({what}): {self.last_error}; reconnecting")
                    self._spawn(self._resync_after_reconnect())
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.t.reconnect_max_s)

    def _connected(self) -> bool:
        """A websocket of the client is open (this session's ccxt client opens none but the user stream's)."""
        return any(not c.closed() for c in (getattr(self.ex, "clients", None) or {}).values())

    def _stream_up(self) -> bool:
        return self.stream_ready and self._connected()

    def _subscribing(self) -> bool:
        """A user-data subscription of ccxt's is under way on the client (its request sent or waiting for the
        dial, its answer not in): the subscription's flag is raised before the answer comes."""
        return any(str(h).startswith("authenticate") for c in (getattr(self.ex, "clients", None) or {}).values()
                   for h in list(getattr(c, "futures", None) or ()))

    async def _stream_ready(self) -> bool:
        """Wait until the user stream is subscribed (Binance: the subscription's answer; elsewhere a short wait for
        the watches to connect)."""
        market = self.ex.markets.get(next(iter(self.symbols.values()), ""), {}) if self.ex.markets else {}
        kind = "spot" if market.get("spot", True) else market.get("type", "spot")
        deadline = time.monotonic() + self.t.stream_ready_s
        open_since = 0.0  # monotonic: the websocket was first seen open with the subscription not done
        while not self._stopping:
            try:
                if self.exchange_id.startswith("binance") and kind == "spot":
                    # subscribes, or waits for a subscription under way. The call runs as a task of its own that is
                    # never cancelled (a subscription cancelled half-way leaves ccxt's state half-made): an attempt
                    # waits for it a short while, the next attempt waits for the same call
                    if self._auth is None or self._auth.done():
                        self._auth = asyncio.ensure_future(self.ex.authenticate({"type": "spot"}))
                        self._auth.add_done_callback(_retrieved)
                    await asyncio.wait_for(asyncio.shield(self._auth),
                                           max(0.05, min(0.5, deadline - time.monotonic())))
                    # it returns at once on a client that has the subscription's flag, even a dead one or one whose
                    # subscription is still under way: hence the checks after it
                    if self._connected() and self._subscribing():
                        await asyncio.sleep(0.05)
                        raise asyncio.TimeoutError()
                else:
                    await asyncio.sleep(min(0.5, self.t.stream_ready_s))
                if not self._connected():
                    raise ConnectionError("the user stream's websocket is not open")
                self.stream_ready = True
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                timed_out = isinstance(exc, asyncio.TimeoutError)
                if not timed_out:
                    self.last_error = self._err(exc)
                now = time.monotonic()
                if timed_out and self._connected():
                    open_since = open_since or now
                    if now - open_since >= max(self.t.request_s, 1.0):
                        # the websocket is open, yet the subscription has not completed in a request's time: ccxt
                        # can keep a refused one pending forever (a signed subscribe sent after its dial's backoff
                        # is refused as outside the recvWindow, and ccxt's error path then leaves it unsettled),
                        # and every later watch would wait on it. The stream's client starts afresh.
                        self.last_error = "the websocket is open but the subscription never completed"
                        await self._renew_stream()
                        open_since = 0.0
                else:
                    open_since = 0.0
                if now >= deadline:
                    self.log(f"user stream not subscribed after {self.t.stream_ready_s:g} s: {self.last_error}")
                    return False
                if not timed_out:
                    await asyncio.sleep(self.t.reconnect_min_s)
        return False

    async def _renew_stream(self) -> None:
        """Drop the client's websockets and everything ccxt keeps on them: their waiting watches fail (and retry:
        the watch loops), and the next subscribes on a new connection."""
        import ccxt
        self.counters.stream_renewals += 1
        self.log("user stream: the websocket is open but the subscription never completed: starting it afresh")
        error = ccxt.NetworkError("the user stream's websocket was renewed (not subscribed)")
        clients = getattr(self.ex, "clients", None) or {}
        for url, client in list(clients.items()):
            client.error = error       # a close of ours, not the server's
            client.reject(error)       # settles every future on it (a close would cancel them: the watches' too)
            if clients.get(url) is client:
                del clients[url]
            try:
                await client.close()
            except Exception as exc:  # noqa: BLE001 - the connection is forgotten either way
                self.log(f"closing a user stream websocket: {self._err(exc)}")

    async def _resync_after_reconnect(self) -> None:
        await asyncio.sleep(self.t.reconnect_min_s)
        while not self._stopping and not await self._stream_ready():
            await asyncio.sleep(self.t.reconnect_max_s)
        self._resync_pending = False
        if not self._stopping:
            n = await self.resync()
            self.log(f"user stream back: {n} live orders queried")

    def _stream_news(self) -> None:
        """ccxt's cache took an update (on the loop): scan once the message's handling is over."""
        if not self._scan_scheduled and self._loop is not None:
            self._scan_scheduled = True
            self._loop.call_soon(self._scan)

    def _scan(self) -> None:
        """The user stream's updates since the last scan, as ccxt's caches took them: trades first (an order's end
        waits for its trades), but an update that settles an amend before them (the fills after an amend count against
        the amended quantity)."""
        self._scan_scheduled = False
        for info in self._stream_orders:
            o = self.orders.get(client_ids.order_id(self.prefix, info.get("clientOrderId")))
            if o is not None and o.amend is not None:
                self._amend_news(o, info)
        for name, sink in (("trades", self._stream_trades), ("orders", self._stream_orders)):
            if not sink:
                continue
            items, seen = [], set()
            while sink:
                item = sink.popleft()
                if id(item) not in seen:  # an order updated twice since the last scan: its latest state, once
                    seen.add(id(item))
                    items.append(item)
            self.counters.stream_updates += len(items)
            for item in items:
                if name == "trades":
                    self._stream_trade(item)
                else:
                    self._stream_order(item)

    def _stream_order(self, info: dict) -> None:
        symbol, vid = info.get("symbol"), str(info.get("id"))
        oid = client_ids.order_id(self.prefix, info.get("clientOrderId"))
        if oid is None:
            self.counters.foreign_updates += 1
            self._foreign[(symbol, vid)] = None
            while len(self._foreign) > PARKED_KEPT:
                self._foreign.popitem(last=False)
            self._parked.pop((symbol, vid), None)
            return
        o = self.orders.get(oid) or self.ended.get(oid)
        if o is None:
            o = self._stray(oid, info)
        self._apply_order(o, info)

    def _stream_trade(self, trade: dict) -> None:
        key = (trade.get("symbol"), str(trade.get("order")))
        o = self.by_venue.get(key)
        if o is not None:
            self._apply_trade(o, trade)
            return
        if key in self._foreign:
            self.counters.foreign_updates += 1
            return
        self._parked.setdefault(key, []).append(trade)  # its order's update has not come yet
        self._parked.move_to_end(key)
        while len(self._parked) > PARKED_KEPT:
            self._parked.popitem(last=False)

    def _stray(self, oid: int, info: dict, adopted: bool = False, inherited: bool = False) -> _Order:
        """An order of ours this session did not place (a previous incarnation's): tracked, answered with slot -1."""
        symbol = info.get("symbol") or ""
        index = self.symbol_index.get(symbol)
        o = _Order(order_id=oid, slot=-1, key=instrument_key(self.venue, index) if index is not None else -1,
                   symbol=symbol, side=BUY if info.get("side") == "buy" else SELL, kind=INTENT_QUOTE,
                   price=_f(info.get("price")), qty=_f(info.get("amount")), cid=str(info.get("clientOrderId")),
                   acked=True, adopted=adopted, inherited=inherited)
        self.counters.stray_orders += 1
        self.log(f"order {o.cid} ({symbol}) is ours but was not placed by this session: answered with slot -1")
        self.orders[oid] = o
        return o

    # --- periodic work ----------------------------------------------------------------------------------

    async def _periodic(self, period: float, fn) -> None:
        while not self._stopping:
            await asyncio.sleep(period)
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - said, and the next period tries again
                self.counters.errors += 1
                self.last_error = self._err(exc)
                self.log(f"internal error: {self.last_error}")

    def _time_sync(self) -> None:
        async def measure():
            try:
                await self._rest("time", self.ex.load_time_difference)
            except Exception as exc:  # noqa: BLE001 - the last difference stays; said
                self.log(f"venue clock: {self._err(exc)}")
        self._spawn(measure())

    def _sweep(self) -> None:
        """Orders in doubt for longer than ``stale_after_s``: ask again (without a user stream: every live order)."""
        if not self.user_stream and not self._resync_busy and self.orders:
            self._spawn(self.resync())
        now = time.monotonic()
        for o in list(self.orders.values()):
            if o.done or o.create_pending or now - o.t_activity < self.t.stale_after_s:
                continue
            if o.t_unknown and not o.acked and not o.resolving:
                self.counters.sweeps += 1
                self._resolve_soon(o, first_delay=0.0)
            elif (o.end is not None or o.venue_filled > o.filled + _eps(o.qty)) and not o.catching_up:
                self.counters.sweeps += 1
                self._catch_up_soon(o)
            elif o.amend is not None and o.amend.t_failed and not o.amend.settling:
                self.counters.sweeps += 1
                self._settle_amend_soon(o, first_delay=0.0)

    async def resync(self) -> int:
        """Query every order of ours still open or in doubt (after the user stream reconnects; the gateway's
        reconciliation calls it too); returns how many were asked about."""
        import ccxt
        self.counters.resyncs += 1
        # (an order in doubt whose settling is under way is left to it: it keeps the Retry-After and the absence rule)
        live = [o for o in self.orders.values() if not o.done and not o.create_pending and not o.resolving]
        self._resync_busy = True

        async def one(o: _Order):
            sent = time.monotonic()
            try:
                info = await self._rest("query", self.ex.fetch_order, None, o.symbol, {"clientOrderId": o.cid})
            except ccxt.OrderNotFound:
                if o.t_unknown and not o.acked:
                    if sent >= o.t_unknown + self.t.recv_window_s + self.t.absent_margin_s and not o.done:
                        self.counters.unknown_absent += 1
                        o.t_unknown = 0.0
                        self._reject(o, "never placed: not found by a query past the create's recvWindow")
                    else:
                        self._resolve_soon(o)
                else:
                    self.log(f"resync: the venue does not know order {o.cid}, which it had taken")
                return
            except Exception as exc:  # noqa: BLE001 - the sweep asks again
                self.last_error = self._err(exc)
                return
            self._apply_order(o, info)

        try:
            await asyncio.gather(*(one(o) for o in live))
        finally:
            self._resync_busy = False
        return len(live)

    # --- the kill switch --------------------------------------------------------------------------------

    async def cancel_all(self) -> dict:
        """Cancel every open order of ours on the venue (every symbol, previous incarnations' too); others' orders
        are left alone. The orders this session knows go first; then the venue's list of open orders (a heavy
        request its rate limiter may hold back) brings the others. Orders whose create is still in flight are
        cancelled as soon as it settles. Returns counts: ``ended`` (cancelled, or found ended: filled meanwhile),
        ``failed`` (still open after the cancel's attempts), ``deferred`` (creates in flight), ``foreign`` (open
        orders not ours, left), ``listed`` (whether the venue's open-order list was had: when not, only the orders
        this session knows were cancelled)."""
        known = [o for o in self.orders.values() if not o.done]
        first = await self._cancel_each(known)
        listed = True
        try:
            open_orders = await self._rest("open-orders", self.ex.fetch_open_orders)
        except Exception as exc:  # noqa: BLE001 - the known ones are cancelled all the same
            listed, open_orders = False, []
            self.log(f"cancel_all: open orders not listed ({self._err(exc)}): only the known ones were cancelled")
        foreign, more, tried = 0, {}, {o.order_id for o in known}
        for info in open_orders:
            oid = client_ids.order_id(self.prefix, info.get("clientOrderId"))
            if oid is None:
                foreign += 1
            elif oid not in tried:  # (a known one still listed failed above, and is counted there)
                more[oid] = self._tracked(oid, info)
        second = await self._cancel_each(list(more.values()))
        result = {k: first[k] + second[k] for k in first}
        result.update(foreign=foreign, listed=listed)
        self.log(f"cancel_all: {result}")
        return result

    async def cancel_orders(self, orders, inherited: bool = False) -> dict:
        """Cancel these orders of ours (reconcile's ``cancel`` list: VenueOrder with an order id) and wait for the
        answers; returns ``ended`` / ``failed`` / ``deferred`` counts as cancel_all does. Orders not ours (no order
        id) are skipped: this session never cancels another's order. ``inherited``: they are execute's, placed by an
        earlier incarnation of this run's gateway (a restart): every trade of theirs is reported (slot -1: execute
        finds them by order id and drops the trades it had), not only their end."""
        targets = []
        for vo in orders:
            if vo.order_id is None or vo.order_id <= 0:
                continue
            targets.append(self._tracked(vo.order_id, {
                "symbol": vo.symbol, "side": "buy" if vo.side == BUY else "sell", "price": vo.price,
                "amount": vo.qty, "clientOrderId": client_ids.client_order_id(self.prefix, vo.order_id)}, inherited))
        return await self._cancel_each(targets)

    def _tracked(self, oid: int, info: dict, inherited: bool = False) -> _Order:
        """The order of ours ``info`` describes (open at the venue), tracked: this session's, or taken on
        (``inherited``: execute's, its trades all reported)."""
        o = self.orders.get(oid)
        if o is None:
            o = self.ended.get(oid)
            if o is not None:  # ended here but open there: the venue is the authority
                self.ended.pop(oid)
                o.done, o.end = False, None
                self.orders[oid] = o
            else:  # a previous incarnation's: what filled of it before is reconciliation's to report, unless inherited
                o = self._stray(oid, info, adopted=not inherited, inherited=inherited)
        return o

    async def _cancel_each(self, targets: list) -> dict:
        now_ns = self.clock_ns()
        jobs, busy = [], []
        for o in targets:
            if not o.cancel_send_ts:
                o.cancel_send_ts = now_ns
            if o.create_pending or (o.t_unknown and not o.acked):
                o.cancel_wanted = True
            elif o.cancel_busy:
                busy.append(o)  # execute's own cancel is under way: wait for it
            elif not o.done:
                o.cancel_busy = True
                jobs.append(self._cancel(o))
        await asyncio.gather(*jobs, return_exceptions=True)
        deadline = time.monotonic() + self.t.request_s * self.t.cancel_attempts
        while any(o.cancel_busy for o in busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        ended = sum(1 for o in targets if o.done or o.end is not None)
        deferred = sum(1 for o in targets if not (o.done or o.end is not None) and o.cancel_wanted)
        return dict(ended=ended, failed=len(targets) - ended - deferred, deferred=deferred)

    async def dead_man(self, ms: float) -> bool:
        """Arm or refresh the venue's own dead-man's switch: unless called again within ``ms``, the venue cancels
        every open order of this session's symbols by itself (the whole host may be dead); ``ms`` 0 disarms it.
        ccxt's ``cancel_all_orders_after`` where the venue has it; Binance futures: ``countdownCancelAll`` per
        symbol (USD-M fapi, COIN-M dapi). False when the venue has none (Binance spot; said once) or a call
        failed (said; the next refresh tries again)."""
        markets = [self.ex.markets[s] for s in self.symbols.values()]
        try:
            if self.ex.has.get("cancelAllOrdersAfter"):
                await self._rest("dead-man", self.ex.cancel_all_orders_after, int(ms))
            elif self.exchange_id.startswith("binance") and markets and all(m.get("contract") for m in markets):
                for m in markets:
                    call = (self.ex.fapiPrivatePostCountdownCancelAll if m.get("linear")
                            else self.ex.dapiPrivatePostCountdownCancelAll)
                    await self._rest("dead-man", call, {"symbol": m["id"], "countdownTime": int(ms)})
            else:
                if not self._dead_man_said:
                    self._dead_man_said = True
                    self.log("the venue has no dead-man's switch for these markets: orders stay open if the host "
                             "dies (the kill switch still cancels them while the gateway lives)")
                return False
        except Exception as exc:  # noqa: BLE001 - said; the next refresh tries again
            self.last_error = self._err(exc)
            self.log(f"dead-man's switch: {self.last_error}")
            return False
        self.counters.dead_man_refreshes += 1
        return True

    # --- reconciliation ---------------------------------------------------------------------------------

    def _venue_order(self, info: dict) -> VenueOrder:
        symbol = info.get("symbol") or ""
        index = self.symbol_index.get(symbol)
        return VenueOrder(venue_id=str(info.get("id")), client_id=str(info.get("clientOrderId") or ""),
                          order_id=client_ids.order_id(self.prefix, info.get("clientOrderId")), symbol=symbol,
                          key=instrument_key(self.venue, index) if index is not None else -1,
                          side=BUY if info.get("side") == "buy" else SELL, price=_f(info.get("price")),
                          qty=_f(info.get("amount")), filled=_f(info.get("filled")),
                          status=str(info.get("status")),
                          exch_ts=_ns(info.get("lastUpdateTimestamp") or info.get("timestamp")))

    def settled(self) -> bool:
        """Everything the venue may have booked for this account is known here: the user stream is up with no
        resync pending, and no order's create outcome is in doubt. Called on the session's loop only."""
        if not self._stream_up() or self._resync_pending:
            return False
        return not any(o.t_unknown and not o.done for o in self.orders.values())

    async def settled_balances(self) -> tuple[dict[str, dict], bool]:
        """``balances()``, and whether the session was settled before and after the request with no stream drop
        between (a holdings check must not judge balances that a fill the session has not heard of may explain)."""
        before, drops = self.settled(), self.counters.stream_reconnects
        balances = await self.balances()
        return balances, before and self.settled() and drops == self.counters.stream_reconnects

    async def balances(self) -> dict[str, dict]:
        """The account's balances, currency -> {"free", "used", "total"} (one request, the session's rate limit)."""
        balance = await self._rest("balance", self.ex.fetch_balance)
        return {c: {k: _f(row.get(k)) for k in ("free", "used", "total")} for c, row in balance.items()
                if isinstance(row, dict) and "total" in row and c not in ("info", "free", "used", "total")}

    async def snapshot(self, orders: dict[int, int] | None = None, since_ms: int | None = None) -> VenueSnapshot:
        """What the venue says of the account now: every open order (every symbol), the state of ``orders``
        ({execute order id: instrument key}, the ones execute thinks open: None for those the venue does not
        know), the trades of this venue's symbols since ``since_ms`` (the venue's default window when None),
        balances, and positions where the venue keeps them. A part that cannot be fetched is noted and the snapshot
        marked incomplete (reconciling from it must not arm trading)."""
        import ccxt
        snap = VenueSnapshot(venue=self.venue, taken_ns=self.clock_ns(),
                             symbols={instrument_key(self.venue, i): s for i, s in self.symbols.items()})

        def failed(what, exc):
            snap.complete = False
            snap.notes.append(f"{what}: {self._err(exc)}")

        try:
            for info in await self._rest("open-orders", self.ex.fetch_open_orders):
                snap.open_orders.append(self._venue_order(info))
        except Exception as exc:  # noqa: BLE001
            failed("open orders", exc)
        open_ids = {vo.order_id for vo in snap.open_orders if vo.order_id is not None}
        for vo in snap.open_orders:
            self._cid_of_venue_id[(vo.symbol, vo.venue_id)] = vo.client_id
        for oid, key in (orders or {}).items():
            if oid in open_ids:
                continue
            symbol = self.symbols.get(key_symbol(key)) if key_venue(key) == self.venue else None
            if symbol is None:
                snap.notes.append(f"order {oid}: key {key} is not this venue's")
                continue
            try:
                info = await self._rest("query", self.ex.fetch_order, None, symbol,
                                        {"clientOrderId": client_ids.client_order_id(self.prefix, oid)})
            except ccxt.OrderNotFound:
                snap.orders[oid] = None
                continue
            except Exception as exc:  # noqa: BLE001
                failed(f"order {oid}", exc)
                continue
            vo = self._venue_order(info)
            snap.orders[oid] = vo
            self._cid_of_venue_id[(vo.symbol, vo.venue_id)] = vo.client_id
        lookups = 0
        for index, symbol in sorted(self.symbols.items()):
            try:
                trades = await self._rest("trades", self.ex.fetch_my_trades, symbol, since_ms)
            except Exception as exc:  # noqa: BLE001
                failed(f"trades of {symbol}", exc)
                continue
            key = instrument_key(self.venue, index)
            for t in trades:
                vid = str(t.get("order"))
                cid = self._cid_of_venue_id.get((symbol, vid))
                if cid is None:
                    known = self.by_venue.get((symbol, vid))
                    if known is not None:
                        cid = known.cid
                    elif lookups < ID_LOOKUPS:
                        lookups += 1
                        try:
                            info = await self._rest("query", self.ex.fetch_order, vid, symbol)
                            cid = str(info.get("clientOrderId") or "")
                        except Exception as exc:  # noqa: BLE001
                            failed(f"order {vid} of trade {t.get('id')}", exc)
                    else:
                        snap.complete = False
                        snap.notes.append(f"trade {t.get('id')}: its order {vid} was not looked up")
                    if cid is not None:
                        self._cid_of_venue_id[(symbol, vid)] = cid
                o = _Order(order_id=0, slot=-1, key=key, symbol=symbol, side=0, kind=0, price=0.0, qty=0.0, cid="")
                maker = t.get("takerOrMaker")
                snap.trades.append(VenueTrade(
                    trade_id=trade_id_int(t.get("id")), venue_order_id=vid,
                    order_id=client_ids.order_id(self.prefix, cid), symbol=symbol, key=key,
                    side=BUY if t.get("side") == "buy" else SELL, price=_f(t.get("price")), qty=_f(t.get("amount")),
                    fee=self._fee_in_quote(t, o), liquidity=1 if maker == "maker" else -1 if maker == "taker" else 0,
                    exch_ts=_ns(t.get("timestamp"))))
        try:
            snap.balances = {c: row for c, row in (await self.balances()).items() if row["total"] or row["used"]}
        except Exception as exc:  # noqa: BLE001
            failed("balances", exc)
        contracts = [s for s in self.symbols.values() if self.ex.markets.get(s, {}).get("contract")]
        if contracts and self.ex.has.get("fetchPositions"):
            snap.has_positions = True
            try:
                for p in await self._rest("positions", self.ex.fetch_positions, contracts):
                    index = self.symbol_index.get(p.get("symbol"))
                    if index is None:
                        continue
                    size = _f(p.get("contracts")) * (_f(p.get("contractSize")) or 1.0)
                    sign = -1.0 if p.get("side") == "short" else 1.0
                    key = instrument_key(self.venue, index)
                    snap.positions[key] = snap.positions.get(key, 0.0) + sign * size
                    if _f(p.get("entryPrice")) > 0:
                        snap.position_prices[key] = _f(p.get("entryPrice"))
            except Exception as exc:  # noqa: BLE001
                failed("positions", exc)
        return snap

    def ack_latency_percentiles(self, qs=(50, 99)) -> dict:
        """Create -> ACK latency percentiles (ns) over the latest ``LATENCIES_KEPT`` acks."""
        if not self.ack_latencies_ns:
            return {q: None for q in qs}
        values = np.fromiter(self.ack_latencies_ns, np.int64)
        return {q: int(np.percentile(values, q)) for q in qs}


def _idle_credit_throttler(bucket: dict, loop):
    """ccxt's rate limiter (its async leaky bucket, same settings) crediting the time it was idle. ccxt's own counts
    refills only while a request waits in its queue: after a pause its tokens are where the last request left them
    (below zero), so every lone request waited cost x rateLimit for nothing (10 ms for a Binance spot order or
    cancel) and a heavy call's debt (an open-order listing: 16 tokens, 0.8 s) held back the next order however long
    ago it was (ccxt issue #25556). Bursts are limited exactly as before."""
    from ccxt.async_support.base.throttler import Throttler

    class IdleCredit(Throttler):
        idle_since_ms: float | None = None

        def __call__(self, cost=None):
            if not self.running and self.idle_since_ms is not None and self.config.get("algorithm") != "rollingWindow":
                idle = time.time() * 1000 - self.idle_since_ms
                c = self.config
                c["tokens"] = min(c["tokens"] + max(idle, 0.0) * c["refillRate"], max(c["tokens"], c["capacity"]))
                self.idle_since_ms = None
            return super().__call__(cost)

        async def looper(self):
            try:
                await super().looper()
            finally:
                self.idle_since_ms = time.time() * 1000

    return IdleCredit(bucket, loop)


def _tapped_cache(limit: int, sink: deque, news):
    """ccxt.pro's cache of orders or trades by symbol and id, which also appends every item it takes to ``sink`` and
    calls ``news()``."""
    from ccxt.async_support.base.ws.cache import ArrayCacheBySymbolById

    class Tapped(ArrayCacheBySymbolById):
        bot4_tapped = True

        def append(self, item):
            super().append(item)
            sink.append(item)
            news()

    return Tapped(limit)


def _retrieved(task: asyncio.Future) -> None:
    """A done callback that takes a background call's outcome (its failure was handled where it mattered)."""
    if not task.cancelled():
        task.exception()


def _retry_after_s(headers) -> float | None:
    for name, value in (headers or {}).items():
        if str(name).lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


__all__ = ["OrderSession", "Timeouts", "Counters", "trade_id_int"]
