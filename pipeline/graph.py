"""The pipeline graph: which rings exist, who produces and consumes each, and each stage's kernel.

    feed -> validate -> feature -> risk -> inference -> strategy -> execute
                 \\__________________________________________________/^  (market events for the paper venue)
    execute -> risk, execute -> strategy                               (execution reports, feedback)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from types import ModuleType

import numpy as np

from pipeline.config import GATE_LIMITS, Config
from pipeline.registry import STAGE_NAMES
from stages import execute, feature, feed, records, risk, strategy, validate
from stages.universe import instrument_key


@dataclass(frozen=True)
class RingSpec:
    name: str            # producer.consumer[.port]
    dtype: np.dtype
    capacity: int


@dataclass(frozen=True)
class StageSpec:
    name: str
    index: int           # slot in the control block
    in_a: str | None     # primary input ring
    in_b: str | None     # secondary input ring (feedback or a second stream)
    outs: tuple[str, ...]
    out_dtype: np.dtype
    always_step: bool    # step even without input (the feed paces itself; execute polls the trading gate)
    tap: str | None = None  # side tap to the journal: never blocks, counts what it drops


# The ccxt feed host's counters, after the feed kernel's own (pipeline.sources.ccxt_feed writes them).
CCXT_FEED_STATS = ("ccxt_resyncs", "ccxt_reconnects", "ccxt_errors", "ccxt_queue_full")
WATCHDOG_INDEX = len(STAGE_NAMES)  # control-block slots follow topology.PROCESSES
# Taps in journal-stream order; validate's tap carries its quarantined events, the others their output.
TAP_STREAMS = {"feed.journal": "market", "strategy.journal": "intent", "execute.journal": "exec",
               "validate.journal": "quarantine"}


def rings(config: Config) -> dict[str, RingSpec]:
    cap, reports = config.rings.capacity, config.rings.report_capacity
    specs = [
        RingSpec("feed.validate", records.MARKET_EVENT, cap),
        RingSpec("validate.feature", records.MARKET_EVENT, cap),
        RingSpec("validate.execute", records.MARKET_EVENT, cap),
        RingSpec("feature.risk", records.FEATURE_VECTOR, cap),
        RingSpec("risk.inference", records.RISK_DECISION, cap),
        RingSpec("inference.strategy", records.PREDICTION, cap),
        RingSpec("strategy.execute", records.ORDER_INTENT, cap),
        RingSpec("execute.risk", records.EXEC_REPORT, reports),
        RingSpec("execute.strategy", records.EXEC_REPORT, reports),
    ]
    if config.journal.dir:
        taps = config.journal.tap_capacity
        specs += [RingSpec("feed.journal", records.MARKET_EVENT, taps),
                  RingSpec("strategy.journal", records.ORDER_INTENT, taps),
                  RingSpec("execute.journal", records.EXEC_REPORT, taps),
                  RingSpec("validate.journal", records.MARKET_EVENT, taps)]
    used = {name for s in stages(config) for name in (s.in_a, s.in_b, s.tap, *s.outs) if name}
    return {s.name: s for s in specs if s.name in used}


STAGES = (
    StageSpec("feed", 0, None, None, ("feed.validate",), records.MARKET_EVENT, True, "feed.journal"),
    StageSpec("validate", 1, "feed.validate", None, ("validate.feature", "validate.execute"), records.MARKET_EVENT, False,
              "validate.journal"),
    StageSpec("feature", 2, "validate.feature", None, ("feature.risk",), records.FEATURE_VECTOR, False),
    StageSpec("risk", 3, "feature.risk", "execute.risk", ("risk.inference",), records.RISK_DECISION, False),
    StageSpec("inference", 4, "risk.inference", None, ("inference.strategy",), records.PREDICTION, False),
    StageSpec("strategy", 5, "inference.strategy", "execute.strategy", ("strategy.execute",), records.ORDER_INTENT,
              False, "strategy.journal"),
    StageSpec("execute", 6, "strategy.execute", "validate.execute", ("execute.risk", "execute.strategy"),
              records.EXEC_REPORT, True, "execute.journal"),
)
BY_NAME = {s.name: s for s in STAGES}
assert tuple(s.name for s in STAGES) == STAGE_NAMES
# Record mode: the market comes in, is validated and journalled (market and quarantine taps); nothing trades.
RECORD_STAGES = (BY_NAME["feed"], replace(BY_NAME["validate"], outs=()))


def stages(config: Config) -> tuple[StageSpec, ...]:
    """The stages this run hosts, in pipeline order."""
    return RECORD_STAGES if config.run.mode == "record" else STAGES


def stage(config: Config, name: str) -> StageSpec:
    return next(s for s in stages(config) if s.name == name)

MODULES: dict[str, ModuleType] = {"feed": feed, "validate": validate, "feature": feature, "risk": risk,
                                  "strategy": strategy, "execute": execute}


def out_capacity(stage: str, batch: int) -> int:
    module = MODULES.get(stage)
    return module.out_capacity(batch) if module is not None and hasattr(module, "out_capacity") else batch


def garch_parameters(config: Config) -> np.ndarray:
    """(MAX_KEYS, 3) omega, alpha, beta per instrument key from the configured (or shipped) fit."""
    from stages.garch import DEFAULT_PARAMS_PATH, key_table, load_params
    return key_table(load_params(config.risk.garch_params or DEFAULT_PARAMS_PATH, config.risk.bar_s),
                     list(config.feed.symbols))


def gate_limits_by_key(config: Config, limit: str) -> dict[int, float]:
    """execute.<limit>_by_symbol as {instrument key: value}: a symbol's limit holds on every venue."""
    symbols = config.feed.symbols
    return {instrument_key(venue, symbols.index(symbol)): value
            for symbol, value in config.execute.limits_by_symbol(limit).items()
            for venue in range(len(config.feed.venues))}


def kernel(stage: str, config: Config, live: bool):
    """(step, params, state) for a numba-hosted stage, built from the typed config."""
    n_venues, n_symbols = len(config.feed.venues), len(config.feed.symbols)
    if stage == "feed":
        f = config.feed
        symbols = [s for s in feed.DEFAULT_SYMBOLS if s[0] in config.feed.symbols]
        symbols.sort(key=lambda s: config.feed.symbols.index(s[0]))
        # Unpaced (fused, or a live run at max rate) the synthetic clock still runs at the configured rate, so
        # fused mode replays the market a paced live run of the same config sees.
        mean_gap_ns = 1e9 / f.rate_eps if f.rate_eps > 0 else feed.DEFAULT_MEAN_GAP_NS
        params = feed.make_params(config.feed.rate_eps if live else 0.0, config.feed.max_events, n_venues,
                                  n_symbols, config.feed.malformed_rate, sim_clock=not live, mean_gap_ns=mean_gap_ns,
                                  batch=config.rings.batch, trade_prob=config.feed.trade_prob,
                                  stall_after=config.feed.stall_after_events,
                                  crash_after=config.feed.crash_after_events,
                                  crash_bps=config.feed.crash_bps_per_event, burstiness=f.burstiness,
                                  burst_decay_ms=f.burst_decay_ms, regime_mean_s=f.regime_mean_s,
                                  info_interval_ms=f.info_interval_ms, liquidation_prob=f.liquidation_prob,
                                  trend_bps_per_s=f.trend_bps_per_s)
        return feed.step, params, feed.make_state(config.feed.seed, symbols)
    if stage == "validate":
        v = config.validate
        ticks = lots = ()
        if config.feed.source == "synthetic":  # a replay's grids are the venue's, not known here
            symbols = {s[0]: s for s in feed.DEFAULT_SYMBOLS}
            chosen = [symbols[name] for name in config.feed.symbols]
            ticks, lots = [s[2] for s in chosen], [s[3] for s in chosen]
        params = validate.make_params(n_venues, n_symbols, v.max_stale_ms, v.max_future_ms, v.max_jump_pct,
                                      ticks=ticks, lots=lots)
        return validate.step, params, validate.make_state(config.rings.batch)
    if stage == "feature":
        return feature.step, feature.make_params(), feature.make_state()
    if stage == "risk":
        r = config.risk
        params = risk.make_params(r.max_position_usd, r.max_order_usd, r.vol_ref_bps, r.capital_usd,
                                  r.soft_drawdown_pct, r.bar_s, r.horizon_bars, r.cov_halflife_bars, r.cov_min_bars,
                                  r.max_gross_usd, r.max_leverage, r.heat_limit, r.heat_stop_sigmas,
                                  r.maintenance_margin_pct, r.liq_distance_sigmas)
        return risk.step, params, risk.make_state(garch_parameters(config))
    if stage == "strategy":
        s = config.strategy
        params = strategy.make_params(s.threshold, s.take_usd, s.quote_usd, s.half_spread_bps, s.requote_bps,
                                      s.skew_bps, s.cooldown_ms, s.quoting, config.risk.max_position_usd,
                                      config.risk.kelly_fraction, config.risk.kelly_payoff_ratio,
                                      config.risk.kelly_form)
        return strategy.step, params, strategy.make_state()
    if stage == "execute":
        e = config.execute
        by_key = {limit: gate_limits_by_key(config, limit) for limit in GATE_LIMITS}
        params = execute.make_params(e.maker_fee_bps, e.taker_fee_bps, e.max_open_orders, e.on_kill == "flatten",
                                     e.flatten_collar_bps, e.flatten_retry_ms, e.max_order_qty, e.max_order_usd,
                                     e.price_collar_bps, e.max_orders_per_s, e.order_burst, e.duplicate_window_ms,
                                     e.max_position_usd, max_order_qty_by_key=by_key["max_order_qty"],
                                     max_order_usd_by_key=by_key["max_order_usd"],
                                     max_position_usd_by_key=by_key["max_position_usd"])
        return execute.step, params, execute.make_state()
    raise KeyError(f"stage {stage!r} has no numba kernel")
