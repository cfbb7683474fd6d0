"""Typed, frozen run configuration loaded from TOML; every error names the key and the fix.

Unknown keys are rejected (with the closest known key suggested); units are in the key names.
The embedded defaults run a synthetic market against the paper venue with no database.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import stat
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from pipeline.redact import has_password, mask
from pipeline.registry import BY_NAME as PROCESS_BY_NAME
from pipeline.registry import KERNEL, STAGE_NAMES

IDLE_CHOICES = ("auto", "busy_spin", "yielding", "sleeping", "blocking")
THREADING_CHOICES = ("auto", "dedicated", "shared")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and how to fix it (passwords masked)."""

    def __init__(self, message: str):
        super().__init__(mask(str(message)))


INT64_MAX = 2 ** 63 - 1


@dataclass(frozen=True)
class Range:
    """The finite interval a numeric key must lie in; every int and float key of every section has one."""
    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value: float) -> bool:
        return (math.isfinite(value) and (value > self.lo if self.lo_open else value >= self.lo)
                and (value < self.hi if self.hi_open else value <= self.hi))

    def __str__(self) -> str:
        def text(v):
            return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"
        return f"{'(' if self.lo_open else '['}{text(self.lo)}, {text(self.hi)}{')' if self.hi_open else ']'}"


def _positive(hi: float) -> Range:
    return Range(0, hi, lo_open=True)


def _fraction() -> Range:
    return Range(0, 1, hi_open=True)


DAY_MS = 86_400_000
MONEY_USD = _positive(1e12)   # money limits: positive and finite; 1e12 leaves room for any real book
BPS = _positive(10_000)
EVENTS = Range(0, 10 ** 15)
RECORDS = 2 ** 24             # ring and tap capacities: 16 Mi records per ring is far past any use

# RANGES[section][key]: every int and float key lies in its range (inf and nan are refused before the
# section's own check, which may say more: powers of two, 0 meaning off; the range is checked after it).
# A numeric key added without a range fails the tests.
RANGES: dict[str, dict[str, Range]] = {
    "run": {"duration_s": Range(0, 366 * 86_400), "status_interval_s": Range(0, 86_400),
            "ready_timeout_s": _positive(3_600), "max_restarts": Range(0, 100), "arm_grace_s": Range(0, 600),
            "flatten_timeout_s": Range(0, 600)},
    "feed": {"replay_speed": Range(0, 1e6), "seed": Range(0, INT64_MAX), "rate_eps": Range(0, 1e8),
             "max_events": EVENTS, "malformed_rate": _fraction(), "trade_prob": _fraction(),
             "stall_after_events": EVENTS, "crash_after_events": EVENTS,
             "crash_bps_per_event": Range(0, 100, hi_open=True), "burstiness": Range(0, 0.95),
             "burst_decay_ms": _positive(DAY_MS), "regime_mean_s": _positive(366 * 86_400),
             "info_interval_ms": _positive(DAY_MS), "liquidation_prob": Range(0, 0.33),
             "trend_bps_per_s": Range(0, 1000), "ccxt_reconnect_min_ms": Range(0, 600_000),
             "ccxt_reconnect_max_ms": Range(0, 600_000)},
    "validate": {"max_stale_ms": _positive(DAY_MS), "max_future_ms": _positive(DAY_MS),
                 "max_jump_pct": _positive(1000)},
    "risk": {"max_position_usd": MONEY_USD, "max_order_usd": MONEY_USD, "vol_ref_bps": BPS, "capital_usd": MONEY_USD,
             "soft_drawdown_pct": Range(0, 100, True, True), "bar_s": _positive(86_400),
             "horizon_bars": Range(1, 10 ** 7), "cov_halflife_bars": _positive(10 ** 7),
             "cov_min_bars": Range(0, 10 ** 7), "max_gross_usd": MONEY_USD, "max_leverage": _positive(1000),
             "heat_limit": _positive(10), "heat_stop_sigmas": _positive(100),
             "maintenance_margin_pct": Range(0, 100, hi_open=True), "liq_distance_sigmas": Range(0, 100),
             "kelly_fraction": _positive(1), "kelly_payoff_ratio": _positive(1000)},
    "strategy": {"threshold": Range(0, 0.5, True, True), "take_usd": MONEY_USD, "cooldown_ms": Range(0, DAY_MS),
                 "quote_usd": MONEY_USD, "half_spread_bps": BPS, "requote_bps": BPS, "skew_bps": Range(0, 10_000),
                 "fixed_interval_ms": _positive(DAY_MS), "fixed_distance_ticks": Range(0, 1e6),
                 "fixed_qty": _positive(1e12), "fixed_max_position": _positive(1e12)},
    "regime": {"sample_ms": _positive(DAY_MS), "fast_half_life": _positive(1e6), "baseline_samples": Range(1, 1e9),
               "range_vr": _positive(100), "volatile_dev": Range(-100, 100), "hysteresis": Range(0, 10),
               "min_dwell_ms": Range(0, DAY_MS), "warmup_samples": Range(1, 10 ** 9), "volatile_weight": Range(0, 1)},
    "allocator": {},
    "momentum": {"w_10s": Range(-100, 100), "w_60s": Range(-100, 100), "w_model": Range(-100, 100),
                 "beta": Range(0, 10), "entry_bps": Range(-100, 1000), "exit_bps": Range(0, 1000),
                 "slippage_bps": Range(0, 1000), "kelly_fraction": _positive(1), "min_trade_usd": MONEY_USD,
                 "cooldown_ms": Range(0, DAY_MS)},
    "mean_reversion": {"entry_z": _positive(100), "exit_z": Range(0, 100), "stop_z": _positive(1000),
                       "reversion": Range(0, 1), "min_edge_bps": Range(-100, 1000), "slippage_bps": Range(0, 1000),
                       "order_usd": MONEY_USD, "cooldown_ms": Range(0, DAY_MS), "min_trade_usd": MONEY_USD},
    "market_making": {"gamma": _positive(1000), "q_max": _positive(1e6), "k_default": _positive(1000),
                      "interval_ms": _positive(DAY_MS), "requote_ticks": Range(0, 1e6), "vol_widen": Range(0, 10),
                      "vol_slow_s": _positive(86_400), "quote_usd": MONEY_USD, "fit_half_life_s": _positive(86_400),
                      "fit_min_count": _positive(1e9), "fit_min_points": Range(2, 64)},
    "arbitrage": {"entry_bps": Range(-100, 1000), "exit_bps": Range(-100, 1000), "slippage_bps": Range(0, 1000),
                  "order_usd": MONEY_USD, "max_age_ms": _positive(DAY_MS), "leg_timeout_ms": _positive(DAY_MS),
                  "max_hold_s": _positive(86_400 * 30), "expected_hold_s": Range(0, 86_400 * 30),
                  "min_trade_usd": MONEY_USD},
    "venue": {"maker_fee_bps": Range(-100, 1000), "taker_fee_bps": Range(-100, 1000),  # negative: a rebate
              "entry_latency_ms": Range(0, 60_000), "response_latency_ms": Range(0, 60_000),
              "queue_power": _positive(100), "hold_ms": Range(0, 60_000)},
    "execute": {"max_open_orders": Range(1, 256), "flatten_collar_bps": BPS, "flatten_retry_ms": _positive(60_000),
                "flatten_min_usd": Range(0, 1_000), "max_order_qty": _positive(1e12), "max_order_usd": MONEY_USD,
                "price_collar_bps": BPS,
                "max_orders_per_s": _positive(1e9), "order_burst": Range(1, 10 ** 9),
                "duplicate_window_ms": Range(0, DAY_MS), "max_position_usd": MONEY_USD},
    "gateway": {"request_timeout_ms": _positive(600_000), "query_interval_ms": _positive(600_000),
                "in_flight_query_ms": Range(0, 600_000), "position_tolerance": Range(0, 1e12),
                "dead_man_ms": Range(0, 3_600_000), "holdings_check_s": Range(0, 3_600),
                "command_capacity": Range(16, RECORDS),
                "answer_capacity": Range(16, RECORDS)},
    "routing": {"latency_bps_per_ms": Range(0, 1000), "latency_ewma_alpha": Range(0, 1, lo_open=True),
                "health_bps": Range(0, 10_000), "health_halflife_ms": _positive(DAY_MS), "health_max": _positive(1e6),
                "ack_timeout_ms": _positive(600_000), "min_child_usd": Range(0, 1e12), "algo_above_usd": MONEY_USD,
                "twap_slices": Range(1, 10_000), "twap_horizon_ms": Range(0, DAY_MS), "pov_share": Range(0, 1, True),
                "pov_max_child_usd": Range(0, 1e12), "pov_horizon_ms": Range(0, DAY_MS),
                "iceberg_display_usd": MONEY_USD, "iceberg_horizon_ms": Range(0, DAY_MS)},
    "watchdog": {"period_ms": _positive(100), "heartbeat_stale_ms": Range(10, 600_000),
                 "feed_stale_ms": Range(0, DAY_MS), "hard_drawdown_pct": Range(0, 100, True, True),
                 "ring_blocked_ms": Range(10, 3_600_000), "max_error_fraction": _positive(1),
                 "clock_backwards_ms": Range(0, 3_600_000), "min_error_events": Range(1, 10 ** 9),
                 "error_window_s": Range(0.1, 3600)},
    "backtest": {"sample_ms": _positive(DAY_MS), "gap_s": _positive(86_400), "feedback_ms": Range(0, DAY_MS)},
    "journal": {"fsync_interval_ms": _positive(3_600_000), "rotate_mb": _positive(1_048_576),
                "tap_capacity": Range(16, RECORDS)},
    "recorder": {},
    "metrics": {"port": Range(0, 65_535)},
    "killswitch": {"baudrate": Range(50, 10_000_000), "heartbeat_timeout_ms": Range(10, 10_000),
                   "reconnect_min_ms": _positive(600_000), "reconnect_max_ms": _positive(600_000)},
    "topology": {"spin_cycles": Range(0, 1_000_000), "yield_cycles": Range(0, 1_000_000),
                 "min_sleep_us": Range(1, 100_000), "max_sleep_us": Range(1, 100_000), "nice": Range(-20, 19),
                 "realtime_priority": Range(0, 99)},
    "inference": {"min_confidence": Range(-1, 1), "member_timeout_us": Range(0, 1e6),
                  "member_max_failures": Range(1, 1e9), "standby_timeout_s": Range(1, 3600)},
    "rings": {"capacity": Range(16, RECORDS), "report_capacity": Range(16, RECORDS), "batch": Range(1, RECORDS)},
}


# The unit a key's name ends with ("units are in the key names"); a key whose name does not say it declares it.
UNIT_SUFFIXES = (("_bps_per_s", "bps/s"), ("_bps_per_ms", "bps/ms"), ("_bps_per_event", "bps/event"),
                 ("_eps", "events/s"), ("_ms", "ms"), ("_us", "µs"), ("_s", "s"), ("_bps", "bps"), ("_pct", "%"),
                 ("_usd", "USD"), ("_mb", "MB"), ("_bars", "bars"), ("_sigmas", "sigmas"), ("_ticks", "ticks"),
                 ("_samples", "samples"), ("_events", "events"), ("_cycles", "cycles"), ("_capacity", "records"))


def option(default, doc: str, unit: str = ""):
    """A config key: its default, one line of doc (``bot4 config defaults`` prints both), and its unit when its
    name does not end with one (UNIT_SUFFIXES)."""
    return field(default=default, metadata={"doc": doc, "unit": unit})


def unit_of(key: dataclasses.Field) -> str:
    """The unit of a config key: declared, else its name's suffix; "" for a key without one (a name, a flag)."""
    return key.metadata.get("unit") or next((u for suffix, u in UNIT_SUFFIXES if key.name.endswith(suffix)), "")


def _check_ranges(section: object, path: str, finite_only: bool = False) -> None:
    hints = get_type_hints(type(section))
    for f in dataclasses.fields(section):
        kind = hints[f.name]
        if kind not in (int, float):
            continue
        value = getattr(section, f.name)
        bounds = RANGES.get(path, {}).get(f.name, Range(-INT64_MAX, INT64_MAX))  # undeclared: at least finite
        if finite_only and math.isfinite(value):
            continue
        what = "a whole number" if kind is int else "a finite number"
        _require(bounds.contains(value), f"{path}.{f.name}", value, f"use {what} in {bounds}")


@dataclass(frozen=True)
class RunConfig:
    """The run as a whole: its name, how long, start-up and stop."""
    name: str = option("main", "the run's name: shared-memory names are /bot4.<name>.*")
    duration_s: float = option(0.0, "how long to run; 0 = until Ctrl-C / SIGTERM")
    status_interval_s: float = option(1.0, "a status line every this often; 0 = none")
    status_table: bool = option(False, "each status interval: the whole stage table (bot4 status) instead of one "
                                       "line")
    ready_timeout_s: float = option(120.0,
                                    "start-up fails when a process is not ready this long after the kernels compiled")
    restart: str = option("never", "a dead stage: never (stop the run) | restart (respawn, stay disarmed)")
    max_restarts: int = option(3, "restarts of dead stages per run, with run.restart = 'restart'", unit="restarts")
    arm_at_start: bool = option(True, "arm after start-up self-checks pass (else wait for killswitch arm)")
    arm_grace_s: float = option(3.0, "start-up: keep asking to arm this long (the switch's first frames)")
    mode: str = option("trade", "trade: the whole pipeline | record: feed, validate, journal, recorder only")
    flatten_timeout_s: float = option(5.0,
                                      "on a stop or trip: execute and its market data run until flat, at most this")

    def check(self):
        _require(self.restart in ("never", "restart"), "run.restart", self.restart, "use 'never' or 'restart'")
        _require(self.mode in ("trade", "record"), "run.mode", self.mode, "use 'trade' or 'record'")
        _require(0 <= self.max_restarts <= 100, "run.max_restarts", self.max_restarts, "use 0..100")
        _require(self.name.replace("-", "").replace("_", "").isalnum() and len(self.name) <= 40, "run.name",
                 self.name, "use letters, digits, '-' or '_' (at most 40)")
        _require(self.duration_s >= 0, "run.duration_s", self.duration_s, "use 0 (run until stopped) or more")
        _require(self.status_interval_s >= 0, "run.status_interval_s", self.status_interval_s, "use 0 or more")
        _require(self.ready_timeout_s > 0, "run.ready_timeout_s", self.ready_timeout_s, "use a positive number")
        _require(math.isfinite(self.flatten_timeout_s) and 0 <= self.flatten_timeout_s <= 600,
                 "run.flatten_timeout_s", self.flatten_timeout_s, "use 0..600 seconds (0 = do not wait for the flatten)")


@dataclass(frozen=True)
class FeedConfig:
    """The market: synthetic, a replay of recorded files, or live through ccxt."""
    source: str = option("synthetic", "synthetic | replay | ccxt (live through ccxt.pro websockets)")
    files: tuple = option((), 'replay: "VENUE=PATH" per file (venue: one of feed.venues); any supported format')
    replay_speed: float = option(1.0, "replay: 1 = as recorded, N = N times faster, 0 = as fast as possible", unit="x")
    seed: int = option(7, "seed of the synthetic market (the same seed, the same market)")
    rate_eps: float = option(10_000.0, "events per second; 0 = as fast as the pipeline takes them")
    max_events: int = option(0, "stop after this many feed events; 0 = unlimited")
    venues: tuple = option(("venue_a", "venue_b"),
                           "the venues' names (synthetic: any; replay and ccxt: the names the files and exchanges "
                           "map to)")
    symbols: tuple = option(("BTC-USDT", "ETH-USDT", "SOL-USDT"),
                            "the symbols traded on every venue (synthetic: from BTC-USDT, ETH-USDT, SOL-USDT)")
    malformed_rate: float = option(0.001,
                                   "fraction of deliberately malformed events (exercises "
                                   "quarantine)", unit="fraction")
    trade_prob: float = option(0.2,
                               "synthetic: chance that an event is a trade (else a book update)", unit="probability")
    stall_after_events: int = option(0, "chaos: go silent (heartbeat on) after this many events; 0 = never")
    crash_after_events: int = option(0,
                                     "scripted crash: from this event on every mid steps down by "
                                     "crash_bps_per_event; 0 = never")
    crash_bps_per_event: float = option(0.0,
                                        "scripted crash: how far every mid steps down per event past "
                                        "crash_after_events")
    burstiness: float = option(0.5,
                               "Hawkes branching ratio of arrivals: 0 = Poisson, up to 0.95 = very "
                               "bursty", unit="ratio")
    burst_decay_ms: float = option(20.0, "how fast a burst's excitation fades (synthetic clock)")
    regime_mean_s: float = option(30.0, "mean time a symbol stays trending / range-bound / volatile")
    info_interval_ms: float = option(1000.0, "mean time between a (venue, symbol)'s funding and mark events")
    liquidation_prob: float = option(0.2,
                                     "chance that a move beyond 3 sigma liquidates someone (x3 "
                                     "when volatile)", unit="probability")
    trend_bps_per_s: float = option(5.0, "drift of the trending regime (synthetic clock)")
    ccxt_exchanges: tuple = option((), 'ccxt: "VENUE=EXCHANGE" for each of feed.venues (binance, binanceusdm, ...)')
    ccxt_symbols: tuple = option((), 'ccxt: "VENUE:SYMBOL=CCXT_SYMBOL"; default: the market with a matching id')
    ccxt_rest_urls: tuple = option((), "ccxt: \"VENUE=http://HOST:PORT\" replaces the venue's REST origin (paths kept)")
    ccxt_ws_urls: tuple = option((),
                                 "ccxt: \"VENUE=ws://HOST:PORT\" replaces the venue's websocket origin (paths kept)")
    ccxt_trades: bool = option(True, "ccxt: watch trades as well as books")
    ccxt_funding: bool = option(True, "ccxt: watch mark price and funding on swaps whose ccxt class can")
    ccxt_reconnect_min_ms: float = option(100.0,
                                          "ccxt: first retry after a failed watch, doubled per failure up to "
                                          "ccxt_reconnect_max_ms")
    ccxt_reconnect_max_ms: float = option(10_000.0, "ccxt: the longest wait between retries of a failed watch")

    def check(self):
        _require(self.stall_after_events >= 0, "feed.stall_after_events", self.stall_after_events, "use 0 or more")
        _require(self.crash_after_events >= 0, "feed.crash_after_events", self.crash_after_events, "use 0 or more")
        _require(0 <= self.crash_bps_per_event < 100, "feed.crash_bps_per_event", self.crash_bps_per_event,
                 "use 0..100")
        from stages.feed import DEFAULT_SYMBOLS
        from stages.universe import MAX_SYMBOLS, MAX_VENUES
        _require(self.source in ("synthetic", "replay", "ccxt"), "feed.source", self.source,
                 "use 'synthetic', 'replay' or 'ccxt'")
        if self.source == "ccxt":
            _check_ccxt_feed(self)
        if self.source == "replay":
            _require(bool(self.files), "feed.files", self.files, 'give at least one "VENUE=PATH"')
            for entry in self.files:
                venue, _, path = str(entry).partition("=")
                _require(venue in self.venues and bool(path), "feed.files", entry,
                         f'use "VENUE=PATH" with VENUE one of feed.venues {list(self.venues)}')
                _require(Path(path).is_file(), "feed.files", entry, f"{path} does not exist")
        _require(self.replay_speed >= 0, "feed.replay_speed", self.replay_speed, "use 0 (max) or a positive factor")
        _require(self.rate_eps >= 0, "feed.rate_eps", self.rate_eps, "use 0 (max rate) or a positive rate")
        _require(self.max_events >= 0, "feed.max_events", self.max_events, "use 0 (unlimited) or more")
        _require(1 <= len(self.venues) <= MAX_VENUES, "feed.venues", self.venues, f"give 1 to {MAX_VENUES} venues")
        known = [s[0] for s in DEFAULT_SYMBOLS]
        _require(1 <= len(self.symbols) <= MAX_SYMBOLS
                 and (self.source != "synthetic" or all(s in known for s in self.symbols)),
                 "feed.symbols", self.symbols, f"choose from {known} (any names for a replay or ccxt)")
        from stages.garch import SYMBOL_NAME_BYTES  # the run publishes its symbol names with its GARCH table
        _require(all(0 < len(s.encode()) <= SYMBOL_NAME_BYTES for s in self.symbols), "feed.symbols", self.symbols,
                 f"name each symbol in 1 to {SYMBOL_NAME_BYTES} bytes")
        _require(0 <= self.malformed_rate < 1, "feed.malformed_rate", self.malformed_rate, "use a fraction in [0, 1)")
        _require(0 <= self.trade_prob < 1, "feed.trade_prob", self.trade_prob, "use a fraction in [0, 1)")
        _require(0 <= self.burstiness <= 0.95, "feed.burstiness", self.burstiness,
                 "use 0 (Poisson arrivals) .. 0.95 (a branching ratio near 1 never settles)")
        _require(self.burst_decay_ms > 0, "feed.burst_decay_ms", self.burst_decay_ms, "use a positive time")
        _require(self.regime_mean_s > 0, "feed.regime_mean_s", self.regime_mean_s, "use a positive time")
        _require(0 <= self.trend_bps_per_s <= 1000, "feed.trend_bps_per_s", self.trend_bps_per_s, "use 0..1000")
        _require(self.info_interval_ms > 0, "feed.info_interval_ms", self.info_interval_ms, "use a positive time")
        _require(0 <= self.liquidation_prob <= 0.33, "feed.liquidation_prob", self.liquidation_prob,
                 "use a probability in [0, 0.33] (it is tripled in the volatile regime)")


@dataclass(frozen=True)
class ValidateConfig:
    """What validation quarantines (stages.validate)."""
    max_stale_ms: float = option(5000.0, "receive time this far behind the venue's time: quarantined")
    max_future_ms: float = option(1000.0, "venue time this far ahead of the receive time: quarantined")
    max_jump_pct: float = option(10.0, "a price this far from the instrument's last accepted one: quarantined")

    def check(self):
        for key in ("max_stale_ms", "max_future_ms", "max_jump_pct"):
            _require(getattr(self, key) > 0, f"validate.{key}", getattr(self, key), "use a positive number")


@dataclass(frozen=True)
class RiskConfig:
    """The risk stage (stages.risk): equity, limits, GARCH volatility, heat and Kelly sizing."""
    max_position_usd: float = option(50_000.0, "largest position notional per instrument the risk budget allows")
    max_order_usd: float = option(5_000.0, "largest order notional the risk budget allows")
    vol_ref_bps: float = option(2.0, "per-event volatility above which order size is scaled down")
    capital_usd: float = option(100_000.0, "starting equity")
    soft_drawdown_pct: float = option(15.0, "from peak equity: order size halved beyond this")
    garch_params: str = option("", 'GARCH(1,1) fit per symbol (bot4 risk fit-garch); "" = the shipped file')
    bar_s: float = option(1.0, "GARCH bars, cut by event time; must match the fit")
    horizon_bars: int = option(3600, "risk horizon for heat, the liquidation guard and continuous Kelly")
    cov_halflife_bars: float = option(300.0, "EWMA covariance of bar returns across instruments")
    cov_min_bars: int = option(100, "before this many bars heat assumes the worst correlation")
    max_gross_usd: float = option(150_000.0, "sum of |position notional|")
    max_leverage: float = option(3.0, "gross notional at most this times equity", unit="x equity")
    heat_limit: float = option(0.25,
                               "heat_stop_sigmas * portfolio horizon sigma / equity: no "
                               "new risk above", unit="fraction of equity")
    heat_stop_sigmas: float = option(2.0, "heat counts a loss of this many portfolio horizon sigmas")
    maintenance_margin_pct: float = option(0.5, "venue maintenance margin (cross margin, perpetuals)")
    liq_distance_sigmas: float = option(3.0, "keep liquidation this many horizon sigmas away; 0 = guard off (spot)")
    kelly_fraction: float = option(0.25, "fraction of full Kelly", unit="fraction")
    kelly_form: str = option("binary", "binary: c*(p - q/b) from prob_up | continuous: c*mu/sigma^2")
    kelly_payoff_ratio: float = option(1.0, "binary form: win/loss ratio b", unit="ratio")

    def check(self):
        for key in ("max_position_usd", "max_order_usd", "vol_ref_bps", "capital_usd"):
            _require(getattr(self, key) > 0, f"risk.{key}", getattr(self, key), "use a positive number")
        _require(0 < self.soft_drawdown_pct < 100, "risk.soft_drawdown_pct", self.soft_drawdown_pct, "use (0, 100)")
        for key in ("bar_s", "cov_halflife_bars", "max_gross_usd", "max_leverage", "heat_stop_sigmas",
                    "kelly_payoff_ratio"):
            _require(getattr(self, key) > 0, f"risk.{key}", getattr(self, key), "use a positive number")
        _require(self.horizon_bars >= 1, "risk.horizon_bars", self.horizon_bars, "use 1 or more")
        _require(self.cov_min_bars >= 0, "risk.cov_min_bars", self.cov_min_bars, "use 0 or more")
        _require(0 < self.heat_limit <= 10, "risk.heat_limit", self.heat_limit, "use (0, 10]; 0.25 is usual")
        _require(0 <= self.maintenance_margin_pct < 100, "risk.maintenance_margin_pct", self.maintenance_margin_pct,
                 "use [0, 100)")
        _require(self.liq_distance_sigmas >= 0, "risk.liq_distance_sigmas", self.liq_distance_sigmas,
                 "use 0 (off) or more")
        _require(0 < self.kelly_fraction <= 1, "risk.kelly_fraction", self.kelly_fraction, "use (0, 1]; 0.25 is usual")
        _require(self.kelly_form in ("binary", "continuous"), "risk.kelly_form", self.kelly_form,
                 "use 'binary' or 'continuous'")
        # The fit itself is read once, when the run is planned (pipeline.plan.resolve): a check reads no file.


@dataclass(frozen=True)
class InferenceConfig:
    """The model the inference stage runs (onnxruntime)."""
    model: str = option("", 'path to an .onnx file with its .json metadata; "" = the shipped model')
    ensemble: str = option("", 'an ensemble version dir (models/ensemble/<version>) or its ensemble.json, run '
                               'instead of inference.model; "" = none')
    sizer: str = option("", 'a qvalue member (models/qnet/<version>) whose argmax sizes the signal strategy\'s '
                            'orders (PREDICTION.size_scale), instead of the ensemble\'s "sizer"; "" = the '
                            'ensemble\'s, else none (size_scale 1)')
    min_confidence: float = option(-1.0, "below it the ensemble has no view (prob_up 0.5); -1 = the ensemble's own "
                                         "min_confidence", unit="probability")
    member_timeout_us: float = option(2_000.0, "a member slower than this in a batch has no vote in it (live runs; "
                                               "fused mode and backtests never time out); 0 = no budget")
    member_max_failures: int = option(100, "a member that fails or is late this many batches in a row is disabled",
                                      unit="batches")
    swap: str = option("standby", "how a published model set replaces the one in use: standby (a second inference "
                                  "process loads it and takes the stage over at a batch boundary) | in_process "
                                  "(loaded between batches by the serving process: batches wait for its steps)")
    standby_timeout_s: float = option(120.0, "a standby that has not taken over by then is stopped and the "
                                             "publication refused", unit="s")
    fuse_members: bool = option(True, "run an ensemble's members as one composed ONNX graph (one session run per "
                                      "batch, answers bit for bit the members' own); false = a session run per member")

    def check(self):
        if self.model:
            _require(Path(self.model).is_file(), "inference.model", self.model, "give an existing .onnx file")
        if self.ensemble:
            _require(Path(self.ensemble).exists(), "inference.ensemble", self.ensemble,
                     "give an ensemble version dir holding ensemble.json, or \"\" for inference.model alone")
        if self.sizer:
            _require(Path(self.sizer).exists(), "inference.sizer", self.sizer,
                     "give a qvalue member's version dir (models/qnet/<version>) or its .onnx, or \"\" for none")
        _require(self.min_confidence == -1.0 or 0 <= self.min_confidence <= 1, "inference.min_confidence",
                 self.min_confidence, "use -1 (the ensemble's own) or a probability in [0, 1]")
        _require(self.swap in ("standby", "in_process"), "inference.swap", self.swap, "use standby or in_process")


@dataclass(frozen=True)
class StrategyConfig:
    """Which strategy decides (kind), and the signal and fixed_quote strategies' own keys."""
    threshold: float = option(0.1, "signal strategy: take when |prob_up - 0.5| exceeds this", unit="probability")
    take_usd: float = option(2_000.0, "signal strategy: notional of a take (IOC)")
    cooldown_ms: float = option(50.0, "signal strategy: event time between takes per instrument")
    quoting: bool = option(True, "signal strategy: also quote both sides around the mid")
    quote_usd: float = option(1_000.0, "signal strategy: notional of each quote")
    half_spread_bps: float = option(4.0, "signal strategy: quotes this far from the mid")
    requote_bps: float = option(2.0, "signal strategy: requote when the wanted price moved this far")
    skew_bps: float = option(2.0, "signal strategy: quote skew at a full position")
    kind: str = option("regime",
                       "regime: stages.strategies, allocated by regime | signal: the model's taker and quoter | "
                       "fixed_quote: stages.fixed_quote")
    # fixed_quote (the hftbacktest peer check's strategy): every fixed_interval_ms of event time, quote
    # fixed_qty at floor/ceil((mid -/+ fixed_distance_ticks * tick) / tick) * tick, one side off past the limit
    fixed_interval_ms: float = option(100.0, "fixed_quote: requote every this much event time")
    fixed_distance_ticks: float = option(1.0, "fixed_quote: quote at floor/ceil((mid -/+ this * tick) / tick) * tick")
    fixed_qty: float = option(0.0029999,
                              "fixed_quote: quote size (a hair under 3 BTC lots: see "
                              "bench/hftbacktest_peer.py)", unit="base units")
    fixed_max_position: float = option(0.02,
                                       "fixed_quote: bids only while position < this, asks while "
                                       "> -this", unit="base units")
    fixed_tick_by_symbol: tuple = option((), "\"SYMBOL=TICK\"; a synthetic symbol defaults to the feed's grid")
    fixed_reference: str = option("mid",
                                  "fixed_quote: mid (around the mid) | touch (fixed_distance_ticks behind the best "
                                  "bid/ask)")

    def check(self):
        _require(self.fixed_reference in ("mid", "touch"), "strategy.fixed_reference", self.fixed_reference,
                 "use 'mid' or 'touch'")
        _require(self.kind in ("signal", "regime", "fixed_quote"), "strategy.kind", self.kind,
                 "use 'signal' (the model's taker and quoter), 'regime' (the strategies allocated by regime: "
                 "[allocator], [momentum], [mean_reversion], [market_making], [arbitrage]) or 'fixed_quote' "
                 "(the fixed quoter of the peer check)")
        self.ticks_by_symbol()
        _require(0 < self.threshold < 0.5, "strategy.threshold", self.threshold, "use a value in (0, 0.5)")
        for key in ("take_usd", "quote_usd", "half_spread_bps", "requote_bps"):
            _require(getattr(self, key) > 0, f"strategy.{key}", getattr(self, key), "use a positive number")
        _require(self.cooldown_ms >= 0, "strategy.cooldown_ms", self.cooldown_ms, "use 0 or more")
        _require(self.skew_bps >= 0, "strategy.skew_bps", self.skew_bps, "use 0 or more")


    def ticks_by_symbol(self) -> dict[str, float]:
        """{symbol: tick} of ``strategy.fixed_tick_by_symbol``."""
        return named_values("strategy.fixed_tick_by_symbol", self.fixed_tick_by_symbol, lambda v: 0 < v < 1e6,
                            'use "SYMBOL=TICK" with a positive tick size, e.g. "BTC-USDT=0.1"')

    def check_symbols(self, symbols: tuple, synthetic: tuple) -> None:
        """A fixed quoter knows the tick of each of ``symbols`` (feed.symbols): an entry or the synthetic grid
        (``synthetic``: the symbols the synthetic feed defines)."""
        ticks = self.ticks_by_symbol()
        for symbol in ticks:
            _require(symbol in symbols, "strategy.fixed_tick_by_symbol", self.fixed_tick_by_symbol,
                     f"{symbol!r} is not one of feed.symbols {list(symbols)}; add it there or drop the entry")
        if self.kind == "fixed_quote":
            for symbol in symbols:
                _require(symbol in ticks or symbol in synthetic, "strategy.fixed_tick_by_symbol",
                         self.fixed_tick_by_symbol,
                         f'give "{symbol}=TICK" (strategy.kind = "fixed_quote" quotes on each symbol\'s grid)')


STRATEGY_KEYS = ("momentum", "mean_reversion", "market_making", "arbitrage")  # stages.strategies.allocator order
REGIME_KEYS = ("trending", "range_bound", "volatile")  # records.REGIME_* order: the allocator's weight rows


def _by_strategy(key: str, entries, ok, fix: str) -> dict[str, float]:
    found = named_values(key, entries, ok, fix)
    for name in found:
        _require(name in STRATEGY_KEYS, key, entries, f"{name!r} is not a strategy; use {', '.join(STRATEGY_KEYS)}")
    return found


@dataclass(frozen=True)
class RegimeConfig:
    """The regime detector (stages.strategies.regime); defaults tuned on synthetic seeds 1-5 only."""
    sample_ms: float = option(100.0, "the mid sampled every this much event time")
    fast_half_life: float = option(10.0, "the EWMA of sampled squared returns", unit="samples")
    baseline_samples: float = option(3000.0, "the calm level's averaging length")
    range_vr: float = option(0.6, "variance ratio below this: range-bound", unit="ratio")
    volatile_dev: float = option(0.5,
                                 "ln variance above the calm level by more than this: volatile", unit="ln variance")
    hysteresis: float = option(0.1,
                               "each boundary widened by this on the side of the current regime", unit="ln variance")
    min_dwell_ms: float = option(200.0, "a new regime must hold this long")
    warmup_samples: int = option(30, "samples before the detector names a regime")
    volatile_weight: float = option(0.03,
                                    "how fast volatile samples move the calm level, relative to "
                                    "trending ones", unit="ratio")

    def check(self):
        pass


@dataclass(frozen=True)
class AllocatorConfig:
    """Which strategies run in which regime ("STRATEGY=WEIGHT", 0 or absent = off) and each one's own limits.

    The seed's switch is momentum when trending, mean reversion and market making when range-bound, market making
    when volatile, arbitrage everywhere. None earned its costs on the tuning seeds (synthetic seeds 1-10, 2
    minutes each, venue model defaults): market making and arbitrage lost in every seed of 1-5, market making
    before fees too (its quotes are picked off on a book redrawn at every event); momentum netted +$62 a seed on
    average with a standard deviation of $2,200 (no edge the seeds can tell from zero); mean reversion barely
    traded. So the defaults allocate nothing and the pipeline sends no orders (it says so at start); turn a
    strategy on here (e.g. trending = ["momentum=1"]) or in a running pipeline with ``bot4 allocator weights``."""
    trending: tuple = option((),
                             '"STRATEGY=WEIGHT" of the strategies that run when trending (weight 0..10; none = off)')
    range_bound: tuple = option((), '"STRATEGY=WEIGHT" of the strategies that run when range-bound')
    volatile: tuple = option((), '"STRATEGY=WEIGHT" of the strategies that run when volatile')
    max_position_usd: tuple = option(("momentum=20000", "mean_reversion=10000", "market_making=10000",
                                      "arbitrage=20000"), "\"STRATEGY=USD\": each strategy's own position limit")
    orders_per_s: tuple = option(("momentum=5", "mean_reversion=5", "market_making=40", "arbitrage=10"),
                                 "\"STRATEGY=RATE\": each strategy's order rate (event time)", unit="orders/s")
    burst: tuple = option(("momentum=10", "mean_reversion=10", "market_making=80", "arbitrage=20"),
                          "\"STRATEGY=ORDERS\": each strategy's order burst (token bucket depth)", unit="orders")
    loss_limit_usd: tuple = option(("momentum=2000", "mean_reversion=2000", "market_making=2000", "arbitrage=2000"),
                                   '"STRATEGY=USD": a strategy that lost this much stops opening (0 = no limit)')

    def values(self, key: str) -> dict[str, float]:
        """{strategy: value} of one key; a weight list names only strategies with a weight, limits every one."""
        if key in REGIME_KEYS:
            return _by_strategy(f"allocator.{key}", getattr(self, key), lambda v: 0 <= v <= 10,
                                'use "STRATEGY=WEIGHT" with a weight in [0, 10], e.g. "momentum=1"')
        found = _by_strategy(f"allocator.{key}", getattr(self, key), lambda v: v >= 0,
                             'use "STRATEGY=VALUE" with a value >= 0 (0 = no limit for loss_limit_usd)')
        missing = [name for name in STRATEGY_KEYS if name not in found]
        _require(not missing, f"allocator.{key}", getattr(self, key), f"give every strategy a value; missing {missing}")
        return found

    def check(self):
        for key in (*REGIME_KEYS, "max_position_usd", "orders_per_s", "burst", "loss_limit_usd"):
            self.values(key)

    def allocated(self) -> list[str]:
        """The strategies with a weight above 0 in some regime (STRATEGY_KEYS order)."""
        on = {name for key in REGIME_KEYS for name, w in self.values(key).items() if w > 0}
        return [name for name in STRATEGY_KEYS if name in on]


NOTHING_ALLOCATED = ("no strategy is allocated in any regime (allocator.trending, range_bound and volatile are all "
                     "off by default: none earned its costs on the tuning seeds, see README), so nothing trades; "
                     'turn one on in the config ([allocator] trending = ["momentum=1"]) or, in a running pipeline, '
                     "with bot4 allocator weights --trending momentum=1")


def allocation_note(config) -> str:
    """What to tell the operator at start about the strategies that will trade ("" when some will)."""
    if config.strategy.kind == "regime" and not config.allocator.allocated():
        return NOTHING_ALLOCATED
    return ""


@dataclass(frozen=True)
class MomentumConfig:
    """stages.strategies.momentum: the signal's weights, its expected move per bps, entry/exit bands, sizing."""
    w_10s: float = option(0.5, "weight of the mid against its 10 s EWMA in the signal", unit="bps/bps")
    w_60s: float = option(0.5, "weight of the mid against its 60 s EWMA in the signal", unit="bps/bps")
    w_model: float = option(0.0, "weight of the model's lean (2p - 1) x horizon sigma in the signal", unit="bps/bps")
    beta: float = option(0.5, "expected move over the horizon per bps of signal", unit="bps/bps")
    entry_bps: float = option(1.0, "net edge (after a round trip's costs) to enter")
    exit_bps: float = option(2.0, "hold while the signal keeps its sign and stays above this")
    slippage_bps: float = option(1.0, "slippage margin counted in a round trip's costs")
    kelly_fraction: float = option(0.25, "fraction of full Kelly", unit="fraction")
    min_trade_usd: float = option(200.0, "no order smaller than this")
    cooldown_ms: float = option(1000.0, "event time between orders per instrument")

    def check(self):
        pass


@dataclass(frozen=True)
class MeanReversionConfig:
    """stages.strategies.mean_reversion: deviation of the mid from its 60 s EWMA in units of its volatility."""
    entry_z: float = option(2.0, "enter when the deviation exceeds this", unit="sigmas")
    exit_z: float = option(0.5, "exit when the deviation is back within this", unit="sigmas")
    stop_z: float = option(4.0, "stop out when the deviation exceeds this", unit="sigmas")
    reversion: float = option(0.5, "the share of the deviation expected back", unit="fraction")
    min_edge_bps: float = option(0.5, "expected reversion net of a round trip's costs, to enter")
    slippage_bps: float = option(1.0, "slippage margin counted in a round trip's costs")
    order_usd: float = option(2000.0, "notional of an entry")
    cooldown_ms: float = option(1000.0, "event time between orders per instrument")
    min_trade_usd: float = option(100.0, "no order smaller than this")

    def check(self):
        _require(self.exit_z < self.entry_z < self.stop_z, "mean_reversion.entry_z",
                 (self.exit_z, self.entry_z, self.stop_z), "use exit_z < entry_z < stop_z")


@dataclass(frozen=True)
class MarketMakingConfig:
    """stages.strategies.market_making: Avellaneda-Stoikov quotes in ticks, re-decided every interval_ms."""
    gamma: float = option(0.1, "risk aversion, per tick", unit="1/tick")
    q_max: float = option(5.0, "inventory bound, in quote sizes", unit="quote sizes")
    k_default: float = option(0.5, "arrival decay per tick until the online fit has enough points", unit="1/tick")
    interval_ms: float = option(100.0, "quotes re-decided every this much time (the real-time loop)")
    requote_ticks: float = option(1.0, "requote when the wanted price moved this far")
    vol_widen: float = option(1.0, "spread x (sigma / slow sigma) ** vol_widen when volatility rose", unit="exponent")
    vol_slow_s: float = option(60.0, "the slow volatility's averaging time")
    quote_usd: float = option(1000.0, "notional of each quote")
    fit_half_life_s: float = option(60.0, "the online arrival fit forgets trades with this half-life")
    fit_min_count: float = option(5.0,
                                  "a distance enters the arrival fit with at least this many "
                                  "(decayed) trades", unit="trades")
    fit_min_points: int = option(3, "the arrival fit needs this many distances, else k_default", unit="points")

    def check(self):
        pass


@dataclass(frozen=True)
class ArbitrageConfig:
    """stages.strategies.arbitrage: the same symbol on two venues, both legs as takers."""
    entry_bps: float = option(1.0, "after both taker fees, slippage and carry")
    exit_bps: float = option(1.0, "unwind when the way back costs at most this")
    slippage_bps: float = option(1.0, "per leg")
    order_usd: float = option(2000.0, "notional of each leg")
    max_age_ms: float = option(50.0, "the other venue's quote at most this old")
    leg_timeout_ms: float = option(500.0, "a residual leg older than this is closed")
    max_hold_s: float = option(300.0, "a position held longer is unwound")
    expected_hold_s: float = option(60.0, "for the funding carry")
    min_trade_usd: float = option(100.0, "no order smaller than this")

    def check(self):
        pass


GATE_LIMITS = ("max_order_qty", "max_order_usd", "max_position_usd")  # each with an execute.<limit>_by_symbol


@dataclass(frozen=True)
class ExecuteConfig:
    """The execute stage: the venue, open orders, the pre-trade gate and what a kill does."""
    venue: str = option("paper", "the venue model of [venue] (only 'paper')")
    max_open_orders: int = option(64, "open orders at once; past it new orders are rejected", unit="orders")
    on_kill: str = option("flatten", "flatten (cancel all, then close positions reduce-only) | cancel_only")
    flatten_collar_bps: float = option(50.0, "flatten orders cross the touch by at most this")
    flatten_retry_ms: float = option(100.0, "a flatten order not filled is replaced after this long")
    flatten_min_usd: float = option(1.0, "a position worth less than this at the mid is dust: flatten leaves it (a "
                                         "venue refuses orders that small; fills' float sums leave crumbs like 1e-16)")
    max_order_qty: float = option(1_000.0, "pre-trade gate: base units per order", unit="base units")
    max_order_usd: float = option(25_000.0, "pre-trade gate: notional per order at the reference price")
    price_collar_bps: float = option(100.0, "limit price at most this far from the mid")
    max_orders_per_s: float = option(5_000.0, "token bucket refill rate (event time)", unit="orders/s")
    order_burst: int = option(1_000, "token bucket depth", unit="orders")
    duplicate_window_ms: float = option(10.0, "the same order again within this is a duplicate")
    max_position_usd: float = option(75_000.0, "per instrument, after a full fill of this and the side's open orders")
    # Per-symbol gate limits, "SYMBOL=VALUE" with SYMBOL one of feed.symbols (on every venue); a symbol
    # without an entry gets the global key above. Base units differ per symbol, so max_order_qty needs them most.
    max_order_qty_by_symbol: tuple = option((),
                                            '"SYMBOL=QTY" per-symbol max_order_qty (base units differ per symbol), '
                                            'e.g. ["BTC-USDT=2.5"]')
    max_order_usd_by_symbol: tuple = option((), '"SYMBOL=USD" per-symbol max_order_usd, e.g. ["SOL-USDT=10000"]')
    max_position_usd_by_symbol: tuple = option((), '"SYMBOL=USD" per-symbol max_position_usd, e.g. ["BTC-USDT=100000"]')

    def check(self):
        for key in ("max_order_qty", "max_order_usd", "price_collar_bps", "max_orders_per_s", "max_position_usd"):
            _require(getattr(self, key) > 0, f"execute.{key}", getattr(self, key), "use a positive number")
        for limit in GATE_LIMITS:
            self.limits_by_symbol(limit)
        _require(self.order_burst >= 1, "execute.order_burst", self.order_burst, "use 1 or more")
        _require(self.duplicate_window_ms >= 0, "execute.duplicate_window_ms", self.duplicate_window_ms,
                 "use 0 (open orders only) or more")
        _require(self.on_kill in ("flatten", "cancel_only"), "execute.on_kill", self.on_kill,
                 "use 'flatten' or 'cancel_only'")
        _require(self.flatten_collar_bps > 0, "execute.flatten_collar_bps", self.flatten_collar_bps, "use > 0")
        _require(self.flatten_retry_ms > 0, "execute.flatten_retry_ms", self.flatten_retry_ms, "use > 0")
        _require(self.venue == "paper", "execute.venue", self.venue, "only 'paper' is available in this version")
        _require(1 <= self.max_open_orders <= 256, "execute.max_open_orders", self.max_open_orders, "use 1..256")

    def check_symbols(self, symbols: tuple) -> None:
        """Every per-symbol limit names one of ``symbols`` (feed.symbols; Config.check passes them)."""
        for limit in GATE_LIMITS:
            key = f"execute.{limit}_by_symbol"
            for entry in getattr(self, f"{limit}_by_symbol"):
                symbol = str(entry).partition("=")[0].strip()
                _require(symbol in symbols, key, entry,
                         f"{symbol!r} is not one of feed.symbols {list(symbols)}; add it there or drop the entry")

    def limits_by_symbol(self, limit: str) -> dict[str, float]:
        """{symbol: value} of ``execute.<limit>_by_symbol`` (``limit`` one of GATE_LIMITS)."""
        key = f"execute.{limit}_by_symbol"
        unit, example = ("base units", "2.5") if limit == "max_order_qty" else ("USD", "50000")
        found: dict[str, float] = {}
        for entry in getattr(self, f"{limit}_by_symbol"):
            symbol, sep, text = (part.strip() for part in str(entry).partition("="))
            _require(bool(sep) and bool(symbol), key, entry, f'use "SYMBOL=VALUE" ({unit}), e.g. "BTC-USDT={example}"')
            try:
                value = float(text)
            except ValueError:
                value = float("nan")
            _require(RANGES["execute"][limit].contains(value), key, entry,
                     f'give a positive, finite number ({unit}) in {RANGES["execute"][limit]} after "=", '
                     f'e.g. "{symbol}={example}"')
            _require(symbol not in found, key, entry, f"{symbol} has two entries; keep one")
            found[symbol] = value
        return found

    def gate_limit(self, limit: str, symbol: str) -> tuple[float, str]:
        """The value of gate limit ``limit`` (one of GATE_LIMITS) for ``symbol``, and the key it comes from."""
        by_symbol = self.limits_by_symbol(limit)
        if symbol in by_symbol:
            return by_symbol[symbol], f"execute.{limit}_by_symbol"
        return getattr(self, limit), f"execute.{limit}"


ALGO_CHOICES = ("none", "twap", "pov", "iceberg")  # stages.records.ALGO_NAMES


@dataclass(frozen=True)
class RoutingConfig:
    """Smart order routing and execution algorithms (stages.routing) for taker (IOC) intents. The defaults route
    nothing and wrap nothing: every intent is one order on its own venue unless it asks for more itself
    (ORDER_INTENT.route, .algo)."""
    route_takers: bool = option(False, "every taker intent may be split across the venues that list its symbol")
    latency_bps_per_ms: float = option(0.5, "a venue's measured ack latency costs this much per ms in the ranking")
    latency_ewma_alpha: float = option(0.1, "weight of each new ack in a venue's latency average", unit="fraction")
    health_bps: float = option(5.0, "each recent venue reject or late ack costs this much in the ranking")
    health_halflife_ms: float = option(30_000.0, "a venue's failures count half after this much event time")
    health_max: float = option(3.0, "a venue with this many recent failures (decayed) is left out", unit="failures")
    ack_timeout_ms: float = option(1_000.0, "an ack later than this counts as a timeout (a failure)")
    min_child_usd: float = option(10.0, "a smaller routed share goes to the best venue; a smaller POV child waits")
    algo: str = option("none", "none | twap | pov | iceberg: works every taker intent above algo_above_usd")
    algo_above_usd: float = option(25_000.0, "notional (qty x limit price) above which `algo` takes an intent")
    twap_slices: int = option(10, "a TWAP parent is sent in this many slices", unit="slices")
    twap_horizon_ms: float = option(10_000.0, "the first slice at once, the last at (slices - 1) / slices of this")
    pov_share: float = option(0.1,
                              "POV: share of the volume traded in the symbol since the parent "
                              "started", unit="fraction")
    pov_max_child_usd: float = option(5_000.0, "POV: the largest child; 0 = no cap")
    pov_horizon_ms: float = option(60_000.0, "POV: the deadline; 0 = none")
    iceberg_display_usd: float = option(2_000.0, "iceberg: the part shown at a time")
    iceberg_horizon_ms: float = option(60_000.0, "iceberg: the deadline (the shown part is cancelled); 0 = none")

    def check(self):
        _require(self.algo in ALGO_CHOICES, "routing.algo", self.algo, f"use one of {', '.join(ALGO_CHOICES)}")
        _require(0 < self.pov_share <= 1, "routing.pov_share", self.pov_share,
                 "use a share of the traded volume in (0, 1], e.g. 0.1")
        _require(1 <= self.twap_slices <= 10_000, "routing.twap_slices", self.twap_slices, "use 1..10000")


QUEUE_MODELS = ("front", "risk_averse", "power", "power2", "power3", "log", "log2")  # stages.venue.queue


@dataclass(frozen=True)
class VenueConfig:
    """The venue model (stages.venue): the paper venue of a live run and the venue of a backtest."""
    entry_latency_ms: float = option(2.0, "order or cancel, sent to matched")
    response_latency_ms: float = option(2.0, "venue acted to its answer back")
    latency_file: str = option("",
                               "measured rows (request_ns, venue_ns, response_ns), CSV or .npy, instead of the "
                               "constants; venue time <= 0 = rejected")
    queue_model: str = option("risk_averse",
                              "front (no queue: trade-through) | risk_averse | power | power2 | power3 | log | log2")
    queue_power: float = option(3.0, "n of the power models", unit="exponent")
    partial_fills: bool = option(True, "false: a resting order fills whole or not at all (hftbacktest's no-partial)")
    funding: bool = option(True, "perpetual positions pay or receive funding at each funding time")
    hold_ms: float = option(20.0, "live paper run: longest an order waits for its venue's next market event")
    clock_offset: str = option("auto", "auto: synthetic 0, recordings and live min(receive - venue time) | fixed: 0")
    maker_fee_bps: float = option(1.0, "maker fee; negative = rebate")
    taker_fee_bps: float = option(5.0, "taker fee; negative = rebate")
    maker_fee_bps_by_venue: tuple = option((), '"VENUE=BPS" with VENUE one of feed.venues, e.g. ["binance=-0.5"]')
    taker_fee_bps_by_venue: tuple = option((), '"VENUE=BPS" with VENUE one of feed.venues, e.g. ["binance=4"]')
    lot_by_symbol: tuple = option((), "\"SYMBOL=LOT\": queue fills come in whole lots (as a venue's do); none = exact")

    def check(self):
        _require(self.queue_model in QUEUE_MODELS, "venue.queue_model", self.queue_model,
                 f"use one of {', '.join(QUEUE_MODELS)}")
        _require(self.clock_offset in ("auto", "fixed"), "venue.clock_offset", self.clock_offset,
                 "use 'auto' or 'fixed' (venue time is receive time)")
        if self.latency_file:
            _require(Path(self.latency_file).is_file(), "venue.latency_file", self.latency_file,
                     "give an existing CSV or .npy file of (request_ns, venue_ns, response_ns) rows, or \"\"")
        for key in ("maker_fee_bps_by_venue", "taker_fee_bps_by_venue"):
            self.fees_by_venue(key)
        self.lots_by_symbol()

    def lots_by_symbol(self) -> dict[str, float]:
        return named_values("venue.lot_by_symbol", self.lot_by_symbol, lambda v: v > 0,
                            'use "SYMBOL=LOT" with a positive lot in base units, e.g. "BTCUSDT=0.001"')

    def fees_by_venue(self, key: str) -> dict[str, float]:
        """{venue name: bps} of ``venue.<key>``."""
        fees = RANGES["venue"]["maker_fee_bps"]
        return named_values(f"venue.{key}", getattr(self, key), fees.contains,
                            f'use "VENUE=BPS" with BPS in {fees} (negative = rebate)')

    def check_venues(self, venues: tuple, symbols: tuple) -> None:
        for key in ("maker_fee_bps_by_venue", "taker_fee_bps_by_venue"):
            for name in self.fees_by_venue(key):
                _require(name in venues, f"venue.{key}", name, f"use one of feed.venues {list(venues)}")
        for name in self.lots_by_symbol():
            _require(name in symbols, "venue.lot_by_symbol", name, f"use one of feed.symbols {list(symbols)}")


# ccxt exchange ids with a countdown cancel-all (Binance futures' countdownCancelAll), and those whose edit_order
# amends an open order in place, keeping its ids (Binance futures' PUT order; Binance spot's cancelReplace is a
# new order)
COUNTDOWN_CANCEL_ALL = ("binanceusdm", "binancecoinm")
AMENDS_IN_PLACE = ("binanceusdm", "binancecoinm")


@dataclass(frozen=True)
class GatewayConfig:
    """Live venues (pipeline.venues): which of feed.venues send their orders to the venue itself, through the gateway
    process and ccxt; the others stay on the paper venue. A run with live venues needs ``bot4 run --live``. Keys
    and secrets never go here: BOT4_<VENUE>_API_KEY / BOT4_<VENUE>_API_SECRET in the environment, or
    ``credentials_file`` (readable by its owner only)."""
    live_venues: tuple = option((), "names of feed.venues whose orders go to the venue (real money unless sandbox)")
    exchanges: tuple = option((), '"VENUE=EXCHANGE" ccxt.pro ids; default: feed.ccxt_exchanges')
    symbols: tuple = option((), '"VENUE:SYMBOL=CCXT_SYMBOL"; default: feed.ccxt_symbols, else the matching market')
    rest_urls: tuple = option((), '"VENUE=http://HOST:PORT" replaces the REST origin; default: feed.ccxt_rest_urls')
    ws_urls: tuple = option((), "the same for websockets; default: feed.ccxt_ws_urls")
    sandbox: bool = option(False, "ccxt's sandbox mode: the venue's testnet")
    credentials_file: str = option("", 'TOML of [VENUE] api_key / api_secret, mode 0600; "" = the environment')
    request_timeout_ms: float = option(5_000.0, "no answer by then: the command's outcome is unknown (never resent)")
    query_interval_ms: float = option(2_000.0, "orders in flight longer than in_flight_query_ms are queried this often")
    in_flight_query_ms: float = option(5_000.0, "an order in flight longer than this is queried at the venue")
    position_tolerance: float = option(1e-9,
                                       "base units: a venue position this small is no mismatch at "
                                       "start-up", unit="base units")
    dead_man_ms: float = option(0.0, "the venue's countdown cancel-all, refreshed while armed (0 = off)")
    holdings_check_s: float = option(5.0, "spot venues: every this often each base currency's balance is checked "
                                          "against the start's plus the run's fills; a difference seen twice with no "
                                          "fill between disables trading (0 = off)")
    amend_quotes: bool = option(True, "a quote's new price or size amends the working quote in place where the venue "
                                      "keeps the order through an amend (Binance futures); else new quote, then cancel")
    command_capacity: int = option(1_024, "execute -> gateway ring, per live venue (a power of two)", unit="records")
    answer_capacity: int = option(4_096, "gateway -> execute ring, per live venue (a power of two)", unit="records")

    def check(self):
        for key in ("command_capacity", "answer_capacity"):
            value = getattr(self, key)
            _require(value >= 16 and value & (value - 1) == 0, f"gateway.{key}", value, "use a power of two >= 16")
        _require(len(set(self.live_venues)) == len(self.live_venues), "gateway.live_venues", self.live_venues,
                 "name each venue once")
        if self.credentials_file:
            _require(Path(self.credentials_file).is_file(), "gateway.credentials_file", self.credentials_file,
                     "give an existing TOML file (mode 0600), or \"\" for the environment")

    def check_venues(self, feed: "FeedConfig") -> None:
        for name in self.live_venues:
            _require(name in feed.venues, "gateway.live_venues", name, f"use one of feed.venues {list(feed.venues)}")
        if not self.live_venues:
            return
        import ccxt.pro
        exchanges = self.exchange_ids(feed)
        for name in self.live_venues:
            _require(name in exchanges, "gateway.exchanges", self.exchanges or feed.ccxt_exchanges,
                     f'give "{name}=EXCHANGE" (a ccxt.pro id such as binance or binanceusdm) here or in '
                     "feed.ccxt_exchanges")
            _require(exchanges[name] in ccxt.pro.exchanges, "gateway.exchanges", exchanges[name],
                     f"{exchanges[name]!r} is not a ccxt.pro exchange id (e.g. binance, binanceusdm)")
            _require(not self.dead_man_ms or exchanges[name] in COUNTDOWN_CANCEL_ALL,
                     "gateway.dead_man_ms", self.dead_man_ms,
                     f"{name} ({exchanges[name]}) has no countdown cancel-all: use 0, or Binance futures")

    def _pairs(self, own: tuple, fallback: tuple) -> dict:
        return _venue_pairs(own or fallback)

    def exchange_ids(self, feed: "FeedConfig") -> dict:
        return self._pairs(self.exchanges, feed.ccxt_exchanges)

    def rest_url_of(self, feed: "FeedConfig") -> dict:
        return self._pairs(self.rest_urls, feed.ccxt_rest_urls)

    def ws_url_of(self, feed: "FeedConfig") -> dict:
        return self._pairs(self.ws_urls, feed.ccxt_ws_urls)

    def symbol_map(self, feed: "FeedConfig") -> tuple:
        return self.symbols or feed.ccxt_symbols


@dataclass(frozen=True)
class WatchdogConfig:
    """The watchdog's trip conditions and where its alerts go."""
    period_ms: float = option(1.0, "the watchdog checks everything this often")
    heartbeat_stale_ms: float = option(500.0, "a process whose heartbeat is older than this trips trading")
    feed_stale_ms: float = option(2000.0, "no valid market event for this long trips (0 = off)")
    hard_drawdown_pct: float = option(20.0, "from peak equity (the risk stage's figures)")
    ring_blocked_ms: float = option(2000.0, "a hot-path producer blocked on a full ring this long trips")
    max_error_fraction: float = option(0.05,
                                       "quarantined / received over the last error_window_s above "
                                       "this trips", unit="fraction")
    min_error_events: int = option(500, "the error-rate guard waits for this many received events in its window")
    error_window_s: float = option(10.0, "the sliding window of the error-rate guard")
    clock_backwards_ms: float = option(1.0, "the wall clock stepping back more than this trips")
    alert_endpoint: str = option("auto", 'zmq PUB endpoint for alerts; auto = ipc in the temp dir; "" = off')
    alert_command: str = option("", "run on every trip (shell words; BOT4_* variables describe it)")

    def check(self):
        _require(0 < self.period_ms <= 100, "watchdog.period_ms", self.period_ms, "use (0, 100]")
        _require(self.heartbeat_stale_ms >= 10, "watchdog.heartbeat_stale_ms", self.heartbeat_stale_ms,
                 "use at least 10 ms")
        _require(self.feed_stale_ms == 0 or self.feed_stale_ms >= 10, "watchdog.feed_stale_ms", self.feed_stale_ms,
                 "use 0 (off) or at least 10 ms")
        _require(0 < self.hard_drawdown_pct < 100, "watchdog.hard_drawdown_pct", self.hard_drawdown_pct,
                 "use (0, 100)")
        _require(self.ring_blocked_ms >= 10, "watchdog.ring_blocked_ms", self.ring_blocked_ms, "use at least 10 ms")
        _require(0 < self.max_error_fraction <= 1, "watchdog.max_error_fraction", self.max_error_fraction,
                 "use (0, 1]")
        _require(self.min_error_events >= 1, "watchdog.min_error_events", self.min_error_events, "use at least 1")
        _require(0.1 <= self.error_window_s <= 3600, "watchdog.error_window_s", self.error_window_s,
                 "use [0.1, 3600] seconds")
        _require(self.clock_backwards_ms >= 0, "watchdog.clock_backwards_ms", self.clock_backwards_ms, "use >= 0")

    def check_endpoint(self, run: str) -> None:
        """An ipc endpoint's path (auto: in the temp dir, named after the run) can be bound without deleting
        anything: libzmq's bind unlinks whatever file is there."""
        endpoint = alert_endpoint_for(run, self.alert_endpoint)
        if endpoint.startswith("ipc://"):
            problem = ipc_file_problem(endpoint[len("ipc://"):])
            _require(not problem, "watchdog.alert_endpoint", self.alert_endpoint,
                     f"{problem}; choose another path ('auto' is $TMPDIR/bot4.<run.name>.alerts) or another run.name")


def alert_endpoint_for(run: str, configured: str) -> str:
    if configured == "auto":
        return f"ipc://{tempfile.gettempdir()}/bot4.{run}.alerts"
    return configured


def ipc_file_problem(path: str) -> str:
    """Why binding an ipc socket at ``path`` would destroy something or fail ("" if it would not)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        directory = os.path.dirname(path) or "."
        return "" if os.path.isdir(directory) else f"its directory {directory} does not exist"
    if not stat.S_ISSOCK(st.st_mode):
        return f"{path} exists and is not a socket (binding would delete it)"
    if st.st_uid != os.geteuid():
        return f"{path} belongs to uid {st.st_uid}, not to this user"
    return ""


def utc_ns(text: str, key: str) -> int:
    """ns since the epoch of an ISO-8601 time (UTC unless it says otherwise), or a ConfigError naming ``key``."""
    import datetime
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{key}={text!r} is invalid: use an ISO-8601 time, e.g. 2024-08-08T23:55:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1_000


@dataclass(frozen=True)
class BacktestConfig:
    """``bot4 backtest``: its data is [feed] (synthetic, or feed.files) unless ``journal`` names a journal."""
    journal: str = option("", "a journal directory whose market stream is the data")
    start: str = option("", 'UTC ISO-8601: events received before are left out ("" = from the start)')
    end: str = option("", 'events received at or after are left out ("" = to the end)')
    feedback_ms: float = option(5.0,
                                "local stages step over at most this much event time at once (a fill's report waits "
                                "this long at most); 0 = batches")
    sample_ms: float = option(1000.0, "the report's equity samples (Sharpe, Sortino on their returns)")
    gap_s: float = option(2.0, "the report lists market silences longer than this per instrument")

    def check(self):
        if self.journal:
            _require(Path(self.journal).is_dir(), "backtest.journal", self.journal,
                     "give an existing journal directory (bot4 run/record/fused --journal), or \"\" to use [feed]")
        bounds = [utc_ns(getattr(self, k), f"backtest.{k}") for k in ("start", "end") if getattr(self, k)]
        if len(bounds) == 2:
            _require(bounds[0] < bounds[1], "backtest.end", self.end, f"give a time after backtest.start={self.start}")

    def range_ns(self) -> tuple[int | None, int | None]:
        return (utc_ns(self.start, "backtest.start") if self.start else None,
                utc_ns(self.end, "backtest.end") if self.end else None)


@dataclass(frozen=True)
class JournalConfig:
    """The journal: market events, intents and reports recorded to disk."""
    dir: str = option("", 'record market events, intents and reports here; "" = no journal')
    fsync: str = option("interval", "never | interval | every_batch (pipeline.store.journal.FsyncPolicy)")
    fsync_interval_ms: float = option(100.0, "journal.fsync = 'interval': fsync this often")
    rotate_mb: float = option(256.0, "start a new segment file past this size")
    tap_capacity: int = option(65536, "records per tap ring; a journal that falls behind counts what it missed")

    def check(self):
        _require(self.fsync in ("never", "interval", "every_batch"), "journal.fsync", self.fsync,
                 "use 'never', 'interval' or 'every_batch'")
        _require(self.fsync_interval_ms > 0, "journal.fsync_interval_ms", self.fsync_interval_ms, "use > 0")
        _require(self.rotate_mb > 0, "journal.rotate_mb", self.rotate_mb, "use > 0")
        _require(self.tap_capacity >= 16 and self.tap_capacity & (self.tap_capacity - 1) == 0,
                 "journal.tap_capacity", self.tap_capacity, "use a power of two >= 16")


@dataclass(frozen=True)
class RecorderConfig:
    """The recorder: the journal copied into PostgreSQL."""
    dsn: str = option("", 'PostgreSQL DSN; "" = no database. Needs journal.dir: it copies the journal')

    def check(self):
        pass


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint of bot4 run (pipeline.exporter)."""
    port: int = option(0, "bot4 run serves Prometheus metrics on this TCP port; 0 = no endpoint", unit="port")
    host: str = option("127.0.0.1", "the address it listens on (0.0.0.0: every interface)")

    def check(self):
        _require(bool(self.host.strip()), "metrics.host", self.host,
                 "give an address to listen on, e.g. 127.0.0.1 (this host only) or 0.0.0.0 (every interface)")


@dataclass(frozen=True)
class KillSwitchConfig:
    """The hardware kill switch on a serial line."""
    mode: str = option("none", "none | line | heartbeat")
    port: str = option("", "serial device (/dev/ttyUSB0) or pyserial URL (loop://)")
    baudrate: int = option(115200, "serial line speed", unit="baud")
    line: str = option("cts", "line mode: cts | dsr | cd | ri")
    active_low: bool = option(False, "line mode: armed when the line reads low")
    heartbeat_timeout_ms: float = option(250.0, "heartbeat mode: silence past this trips")
    reconnect_min_ms: float = option(50.0,
                                     "first retry after the serial device failed, doubled per failure up to "
                                     "reconnect_max_ms")
    reconnect_max_ms: float = option(2000.0, "the longest wait between retries of the serial device")

    def check(self):
        _require(self.mode in ("none", "line", "heartbeat"), "killswitch.mode", self.mode,
                 "use 'none' (no hardware switch), 'line' or 'heartbeat'")
        if self.mode != "none":
            _require(bool(self.port), "killswitch.port", self.port, "give the serial device or a pyserial URL")
        _require(self.line in ("cts", "dsr", "cd", "ri"), "killswitch.line", self.line, "use cts, dsr, cd or ri")
        _require(self.baudrate > 0, "killswitch.baudrate", self.baudrate, "use a positive baud rate")
        _require(10 <= self.heartbeat_timeout_ms <= 10_000, "killswitch.heartbeat_timeout_ms",
                 self.heartbeat_timeout_ms, "use 10..10000 ms")
        _require(0 < self.reconnect_min_ms <= self.reconnect_max_ms, "killswitch.reconnect_min_ms",
                 (self.reconnect_min_ms, self.reconnect_max_ms), "use 0 < reconnect_min_ms <= reconnect_max_ms")


@dataclass(frozen=True)
class TopologyConfig:
    """How stages map to processes and cores, and how they idle."""
    mode: str = option("auto", "auto | dedicated (a core per process) | shared (processes share cores)")
    idle: str = option("auto", "auto | busy_spin | yielding | sleeping | blocking")
    cores: tuple = option((),
                          "explicit cores, one per stage in STAGE_NAMES order, then watchdog, journal, recorder (and "
                          "gateway)")
    spin_cycles: int = option(5, "empty duty cycles spun before yielding/sleeping/blocking (~0.5 us)")
    yield_cycles: int = option(1000, "sleeping/blocking: yields before the first sleep or block")
    min_sleep_us: int = option(50, "sleeping idle: the first sleep, doubled while idle up to max_sleep_us")
    max_sleep_us: int = option(1000, "sleeping idle: the longest sleep")
    nice: int = option(0, "niceness for stage processes (negative needs privileges)", unit="niceness")
    realtime_priority: int = option(0, "SCHED_FIFO priority for stages with a dedicated core; 0 = off", unit="priority")
    threading: str = option("auto",
                            "auto (dedicated until measured figures favour shared) | dedicated (a process per stage) "
                            "| shared (a process per group; stages in no group, and inference, keep their own)")
    groups: tuple = option(("feed,validate,feature,risk", "strategy,execute"),
                           "shared threading: consecutive njit stages hosted by one process, chained without a ring")

    def check(self):
        _require(self.threading in THREADING_CHOICES, "topology.threading", self.threading,
                 f"use one of {THREADING_CHOICES}")
        _check_groups(self.groups)
        _require(not (self.threading == "shared" and self.idle == "blocking"), "topology.idle", self.idle,
                 "use yielding or sleeping with topology.threading = 'shared' (a group has no one semaphore to "
                 "block on), or topology.threading = 'dedicated'")
        _require(self.mode in ("auto", "dedicated", "shared"), "topology.mode", self.mode,
                 "use 'auto', 'dedicated' or 'shared'")
        _require(self.idle in IDLE_CHOICES, "topology.idle", self.idle, f"use one of {IDLE_CHOICES}")
        if self.cores:
            _require(len(self.cores) in (len(STAGE_NAMES) + 3, len(STAGE_NAMES) + 4), "topology.cores", self.cores,
                     f"give {len(STAGE_NAMES) + 3} cores: {', '.join(STAGE_NAMES)}, watchdog, journal, recorder "
                     "(and a fourth for the gateway of live venues, else it shares execute's)")
            _require(all(isinstance(c, int) and not isinstance(c, bool) for c in self.cores), "topology.cores",
                     self.cores, "give each core as a whole number")
            allowed = usable_cores()
            _require(all(c in allowed for c in self.cores), "topology.cores", self.cores,
                     f"use cores this process may run on (os.sched_getaffinity): {sorted(allowed)}")
        _require(0 <= self.spin_cycles <= 1_000_000, "topology.spin_cycles", self.spin_cycles, "use 0..1000000")
        _require(0 <= self.yield_cycles <= 1_000_000, "topology.yield_cycles", self.yield_cycles, "use 0..1000000")
        _require(1 <= self.min_sleep_us <= self.max_sleep_us <= 100_000, "topology.min_sleep_us",
                 (self.min_sleep_us, self.max_sleep_us), "use 1 <= min_sleep_us <= max_sleep_us <= 100000")
        _require(-20 <= self.nice <= 19, "topology.nice", self.nice, "use -20..19")
        _require(0 <= self.realtime_priority <= 99, "topology.realtime_priority", self.realtime_priority,
                 "use 0 (off) .. 99")


def _check_groups(groups: tuple) -> None:
    seen = set()
    for entry in groups:
        names = str(entry).split(",") if isinstance(entry, str) else []
        positions = [STAGE_NAMES.index(n) for n in names if n in STAGE_NAMES]
        _require(len(names) >= 2 and len(positions) == len(names)
                 and positions == list(range(positions[0], positions[0] + len(names))), "topology.groups", entry,
                 f'give two or more neighbouring stages in pipeline order, comma-separated ({",".join(STAGE_NAMES)})')
        python_side = [n for n in names if PROCESS_BY_NAME[n].host != KERNEL]
        _require(not python_side, "topology.groups", entry,
                 f"leave {','.join(python_side)} out (not an njit kernel: it keeps its own process)")
        _require(not seen & set(names), "topology.groups", entry, "put each stage in one group at most")
        seen |= set(names)


# The cores the first Bot4 process may use, for topology.cores checks in processes it starts pinned to fewer.
os.environ.setdefault("BOT4_USABLE_CORES", ",".join(str(c) for c in sorted(os.sched_getaffinity(0))))


def usable_cores() -> set[int]:
    """Cores the supervisor may pin processes to (its affinity when it started)."""
    return {int(c) for c in os.environ["BOT4_USABLE_CORES"].split(",")}


@dataclass(frozen=True)
class RingsConfig:
    """The shared-memory rings between stages."""
    capacity: int = option(4096, "records per hot-path ring (a power of two)", unit="records")
    report_capacity: int = option(65536,
                                  "records per execution-report feedback ring: large so the feedback "
                                  "loop never deadlocks", unit="records")
    batch: int = option(256, "max records a stage takes per cycle", unit="records")

    def check(self):
        for key in ("capacity", "report_capacity"):
            value = getattr(self, key)
            _require(value >= 16 and value & (value - 1) == 0, f"rings.{key}", value, "use a power of two >= 16")
        _require(1 <= self.batch <= self.capacity, "rings.batch", self.batch, "use 1..rings.capacity")


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    allocator: AllocatorConfig = field(default_factory=AllocatorConfig)
    momentum: MomentumConfig = field(default_factory=MomentumConfig)
    mean_reversion: MeanReversionConfig = field(default_factory=MeanReversionConfig)
    market_making: MarketMakingConfig = field(default_factory=MarketMakingConfig)
    arbitrage: ArbitrageConfig = field(default_factory=ArbitrageConfig)
    execute: ExecuteConfig = field(default_factory=ExecuteConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    venue: VenueConfig = field(default_factory=VenueConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    killswitch: KillSwitchConfig = field(default_factory=KillSwitchConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    recorder: RecorderConfig = field(default_factory=RecorderConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    rings: RingsConfig = field(default_factory=RingsConfig)

    def check(self) -> "Config":
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            _check_ranges(section, f.name, finite_only=True)  # inf and nan first: no check below sees them
            section.check()  # its own fixes ("0 = off", powers of two) come before the generic range
            _check_ranges(section, f.name)
        self.execute.check_symbols(self.feed.symbols)
        self.venue.check_venues(self.feed.venues, self.feed.symbols)
        self.gateway.check_venues(self.feed)
        from stages.feed import DEFAULT_SYMBOLS
        synthetic = tuple(s[0] for s in DEFAULT_SYMBOLS) if self.feed.source == "synthetic" else ()
        self.strategy.check_symbols(self.feed.symbols, synthetic)
        self.watchdog.check_endpoint(self.run.name)
        _require(not self.recorder.dsn or bool(self.journal.dir), "recorder.dsn", self.recorder.dsn,
                 "also set journal.dir (or --journal): the recorder copies the journal into the database")
        _require(self.run.mode != "record" or bool(self.journal.dir), "run.mode", self.run.mode,
                 "record mode writes a journal: set journal.dir (or --journal)")
        return self

    def with_overrides(self, **sections: dict) -> "Config":
        """A copy with ``section={key: value}`` overrides applied and validated."""
        return from_dict(merge_overrides(to_dict(self), sections))


def _check_ccxt_feed(feed) -> None:
    """feed.ccxt_* keys of a FeedConfig with source = "ccxt"."""
    import ccxt.pro

    exchanges = _venue_pairs(feed.ccxt_exchanges)
    for entry in feed.ccxt_exchanges:
        venue, sep, exchange = str(entry).partition("=")
        _require(bool(sep) and venue in feed.venues, "feed.ccxt_exchanges", entry,
                 f'use "VENUE=EXCHANGE" with VENUE one of feed.venues {list(feed.venues)}')
        _require(exchange in ccxt.pro.exchanges, "feed.ccxt_exchanges", entry,
                 f"{exchange!r} is not a ccxt.pro exchange id (e.g. binance, binanceusdm, binancecoinm)")
    for venue in feed.venues:
        _require(venue in exchanges, "feed.ccxt_exchanges", feed.ccxt_exchanges,
                 f'give "{venue}=EXCHANGE" for venue {venue!r} (every venue of feed.venues needs one)')
    for key, schemes in (("ccxt_rest_urls", ("http", "https")), ("ccxt_ws_urls", ("ws", "wss"))):
        for entry in getattr(feed, key):
            venue, sep, url = str(entry).partition("=")
            parts = urlsplit(url)
            _require(bool(sep) and venue in feed.venues and parts.scheme in schemes and bool(parts.netloc),
                     f"feed.{key}", entry, f'use "VENUE={schemes[0]}://HOST:PORT" with VENUE one of feed.venues')
    for entry in feed.ccxt_symbols:
        left, sep, market = str(entry).partition("=")
        venue, colon, symbol = left.partition(":")
        _require(bool(sep and colon and market) and venue in feed.venues and symbol in feed.symbols,
                 "feed.ccxt_symbols", entry, 'use "VENUE:SYMBOL=CCXT_SYMBOL" with a venue and symbol of the feed')
    _require(0 < feed.ccxt_reconnect_min_ms <= feed.ccxt_reconnect_max_ms, "feed.ccxt_reconnect_min_ms",
             (feed.ccxt_reconnect_min_ms, feed.ccxt_reconnect_max_ms),
             "use 0 < ccxt_reconnect_min_ms <= ccxt_reconnect_max_ms")


def named_values(key: str, entries, ok, fix: str) -> dict[str, float]:
    """{name: value} of ``"NAME=VALUE"`` entries of config key ``key``: each value a finite number ``ok`` accepts,
    each name once; a ConfigError naming the key and saying ``fix`` otherwise."""
    found: dict[str, float] = {}
    for entry in entries:
        name, sep, text = (part.strip() for part in str(entry).partition("="))
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        _require(bool(sep and name) and math.isfinite(value) and ok(value), key, entry, fix)
        _require(name not in found, key, entry, f"{name} has two entries; keep one")
        found[name] = value
    return found


def _venue_pairs(entries) -> dict:
    return dict(str(e).split("=", 1) for e in entries if "=" in str(e))


def _require(ok: bool, key: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {fix}")


def _coerce(key: str, value: Any, kind: type) -> Any:
    import datetime
    if kind is str and isinstance(value, (datetime.date, datetime.time)):  # TOML's own (unquoted) times
        return value.isoformat()
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    if kind is tuple and isinstance(value, str):  # a command line's --set allocator.trending=momentum=1,arbitrage=1
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is invalid: use true or false")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r} is invalid: expected a {kind.__name__}")
    return value


def _section(cls: type, path: str, data: Any):
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a table ([{path}]), got {data!r}")
    hints = get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{path}.{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"unknown key '{path}.{key}'{hint}")
        values[key] = _coerce(f"{path}.{key}", value, hints[key] if isinstance(hints[key], type) else tuple)
    return cls(**values)


def from_dict(data: dict) -> Config:
    sections = {f.name: f for f in dataclasses.fields(Config)}
    built = {}
    for name, value in data.items():
        if name not in sections:
            close = difflib.get_close_matches(name, list(sections), n=1)
            hint = f"; did you mean [{close[0]}]?" if close else f"; known sections: {', '.join(sections)}"
            raise ConfigError(f"unknown section [{name}]{hint}")
        built[name] = _section(get_type_hints(Config)[name], name, value)
    return Config(**built).check()


def to_dict(config: Config) -> dict:
    return {f.name: dataclasses.asdict(getattr(config, f.name)) for f in dataclasses.fields(config)}


def merge_overrides(base: dict, overrides: dict) -> dict:
    """``base`` ({section: {key: value}}) with ``overrides`` applied key by key."""
    merged = {k: dict(v) for k, v in base.items()}
    for section, values in overrides.items():
        merged.setdefault(section, {}).update(values)
    return merged


def parse_setting(text: str) -> tuple[str, str, Any]:
    """``SECTION.KEY=VALUE`` (a command line's --set) as (section, key, value): the value read as a TOML value
    (1.5, true, "x", [1, 2]) when it is one, else as a string; a ConfigError when it is not of that shape."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not (sep and dot and section and key):
        raise ConfigError(f"{text!r} is not a setting: use SECTION.KEY=VALUE, e.g. venue.queue_model=power3")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def settings_overrides(texts) -> dict:
    """{section: {key: value}} of several --set texts (the last of a key wins)."""
    overrides: dict = {}
    for text in texts:
        section, key, value = parse_setting(text)
        overrides.setdefault(section, {})[key] = value
    return overrides


def load(path: str | Path | None, overrides: dict | None = None) -> Config:
    """The config of ``path`` (defaults if None) with ``{section: {key: value}}`` overrides (command-line
    flags) applied before it is checked: a file that needs a flag to be whole (record mode and --journal) loads."""
    if path is None:
        return from_dict(merge_overrides(to_dict(Config()), overrides or {}))
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass an existing TOML file or omit --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    recorder = data.get("recorder")
    dsn = recorder.get("dsn") if isinstance(recorder, dict) else None
    if isinstance(dsn, str) and has_password(dsn):
        # libpq's own rule for ~/.pgpass: a file holding a password is readable by its owner only.
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"config file {path} holds a password in recorder.dsn and others can read it "
                              f"(mode {mode:o}): chmod 600 {path}, or take the password out of the DSN and put "
                              "it in ~/.pgpass (PGPASSFILE) or PGPASSWORD")
    if overrides:
        if not all(isinstance(value, dict) for value in data.values()):
            return from_dict(data)  # a section that is not a table: its own error
        data = merge_overrides(data, overrides)
    return from_dict(data)
