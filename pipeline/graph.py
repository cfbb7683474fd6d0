"""The pipeline graph: which rings exist, who produces and consumes each, and each stage's kernel.

    feed -> validate -> feature -> risk -> inference -> strategy -> execute
                 \\__________________________________________________/^  (market events for the paper venue)
    execute -> risk, execute -> strategy                               (execution reports, feedback)
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass, replace
from types import ModuleType

import numpy as np

from pipeline import streams
from pipeline.config import AMENDS_IN_PLACE, GATE_LIMITS, REGIME_KEYS, AllocatorConfig, Config, ConfigError
from pipeline.plan import RunPlan
from pipeline.registry import STAGE_NAMES
from stages import execute, feature, feed, fixed_quote, records, risk, routing, strategy, validate
from stages.universe import instrument_key
from stages.venue import exchange


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
    step_tap: str | None = None  # execute's second tap: one EXECUTE_STEP per step (what it consumed, in order)


# Taps in journal-stream order; validate's tap carries its quarantined events, the others their output.
TAP_STREAMS = {s.tap: s.name for s in streams.STREAMS}


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
        specs += [RingSpec(s.tap, s.dtype, taps) for s in streams.STREAMS]
    used = {name for s in stages(config) for name in (s.in_a, s.in_b, s.tap, s.step_tap, *s.outs) if name}
    gateways = [spec for venue in live_venues(config) for spec in gateway_rings(config, venue)]
    return {s.name: s for s in specs if s.name in used} | {s.name: s for s in gateways}


def live_venues(config: Config) -> list[int]:
    """Indices of the venues whose orders go to the venue itself (gateway.live_venues), in feed.venues order."""
    if config.run.mode == "record":
        return []
    return [i for i, name in enumerate(config.feed.venues) if name in config.gateway.live_venues]


def amend_venues(config: Config) -> list[int]:
    """Live venues whose quotes are amended in place (gateway.amend_quotes, and the venue keeps the order through
    an amend: pipeline.config.AMENDS_IN_PLACE)."""
    if not config.gateway.amend_quotes:
        return []
    exchanges = config.gateway.exchange_ids(config.feed)
    return [i for i in live_venues(config) if exchanges.get(config.feed.venues[i]) in AMENDS_IN_PLACE]


def gateway_rings(config: Config, venue: int) -> tuple[RingSpec, RingSpec]:
    """(execute -> gateway commands, gateway -> execute answers) of live venue ``venue``: the port is its index."""
    g = config.gateway
    return (RingSpec(f"execute.gateway.{venue}", records.VENUE_COMMAND, g.command_capacity),
            RingSpec(f"gateway.execute.{venue}", records.VENUE_ANSWER, g.answer_capacity))


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
              records.EXEC_REPORT, True, "execute.journal", "execute.steps"),
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


def module(stage: str, config: Config) -> ModuleType:
    """The kernel module of ``stage`` in this run: strategy.kind picks the strategy stage's."""
    if stage == "strategy" and config.strategy.kind == "fixed_quote":
        return fixed_quote
    return MODULES[stage]


def out_capacity(stage: str, batch: int) -> int:
    module = MODULES.get(stage)
    return module.out_capacity(batch) if module is not None and hasattr(module, "out_capacity") else batch


def gate_limits_by_key(config: Config, limit: str) -> dict[int, float]:
    """execute.<limit>_by_symbol as {instrument key: value}: a symbol's limit holds on every venue."""
    symbols = config.feed.symbols
    return {instrument_key(venue, symbols.index(symbol)): value
            for symbol, value in config.execute.limits_by_symbol(limit).items()
            for venue in range(len(config.feed.venues))}


def kernel_arguments(stage: str, config: Config, live: bool) -> dict:
    """The keyword arguments of a stage's ``make_params``, from the (plan's) config: the config holds every
    default; ``make_params`` has none of its own for what the config sets. No file is read."""
    n_venues, n_symbols = len(config.feed.venues), len(config.feed.symbols)
    if stage == "feed":
        f = config.feed
        # Unpaced (fused, or a live run at max rate) the synthetic clock still runs at the configured rate, so
        # fused mode replays the market a paced live run of the same config sees.
        return dict(rate_eps=f.rate_eps if live else 0.0, max_events=f.max_events, n_venues=n_venues,
                    n_symbols=n_symbols, bad_rate=f.malformed_rate, sim_clock=not live,
                    mean_gap_ns=1e9 / f.rate_eps if f.rate_eps > 0 else feed.DEFAULT_MEAN_GAP_NS,
                    batch=config.rings.batch, trade_prob=f.trade_prob, stall_after=f.stall_after_events,
                    crash_after=f.crash_after_events, crash_bps=f.crash_bps_per_event,
                    burstiness=f.burstiness, burst_decay_ms=f.burst_decay_ms,
                    regime_mean_s=f.regime_mean_s, info_interval_ms=f.info_interval_ms,
                    liquidation_prob=f.liquidation_prob, trend_bps_per_s=f.trend_bps_per_s)
    if stage == "validate":
        v = config.validate
        ticks = lots = ()
        if config.feed.source == "synthetic":  # a replay's grids are the venue's, not known here
            chosen = _synthetic_symbols(config)
            ticks, lots = [s[2] for s in chosen], [s[3] for s in chosen]
        return dict(n_venues=n_venues, n_symbols=n_symbols, max_stale_ms=v.max_stale_ms,
                    max_future_ms=v.max_future_ms, max_jump_pct=v.max_jump_pct, ticks=ticks,
                    lots=lots)
    if stage == "feature":
        return {}
    if stage == "risk":
        r = config.risk
        return dict(max_position_usd=r.max_position_usd, max_order_usd=r.max_order_usd,
                    vol_ref_bps=r.vol_ref_bps, capital_usd=r.capital_usd,
                    soft_drawdown_pct=r.soft_drawdown_pct, bar_s=r.bar_s, horizon_bars=r.horizon_bars,
                    cov_halflife_bars=r.cov_halflife_bars, cov_min_bars=r.cov_min_bars,
                    max_gross_usd=r.max_gross_usd, max_leverage=r.max_leverage,
                    heat_limit=r.heat_limit, heat_stop_sigmas=r.heat_stop_sigmas,
                    maintenance_margin_pct=r.maintenance_margin_pct,
                    liq_distance_sigmas=r.liq_distance_sigmas)
    if stage == "strategy" and config.strategy.kind == "fixed_quote":
        if live:
            # the live hosts compile the signal strategy's step for the strategy slot (hosting.duty_cycle.STEPS)
            raise ConfigError('strategy.kind="fixed_quote" is invalid for a live run: the fixed quoter runs in '
                              'fused mode and backtests only; use strategy.kind="signal"')
        s = config.strategy
        return dict(interval_ms=s.fixed_interval_ms, distance_ticks=s.fixed_distance_ticks, qty=s.fixed_qty,
                    max_position=s.fixed_max_position, reference=s.fixed_reference, ticks_by_key=_ticks_by_key(config))
    if stage == "strategy":
        s, r = config.strategy, config.risk
        regime_mode = {}
        if s.kind == "regime":
            regime_mode = dict(mode="regime", bar_s=r.bar_s, taker_fee_bps_by_venue=_taker_fees(config),
                               ticks_by_key=_ticks_by_key(config), blocks=strategy_blocks(config))
        return dict(threshold=s.threshold, take_usd=s.take_usd, quote_usd=s.quote_usd,
                    half_spread_bps=s.half_spread_bps, requote_bps=s.requote_bps,
                    skew_bps=s.skew_bps, cooldown_ms=s.cooldown_ms, quoting=s.quoting,
                    max_position_usd=r.max_position_usd, kelly_fraction=r.kelly_fraction,
                    kelly_payoff_ratio=r.kelly_payoff_ratio, kelly_form=r.kelly_form, **regime_mode)
    if stage == "execute":
        if not live and config.gateway.live_venues:
            raise ConfigError(f"gateway.live_venues={list(config.gateway.live_venues)!r} is invalid here: a fused run "
                              "or a backtest trades against the venue model; clear it (live venues are for "
                              "bot4 run --live)")
        e = config.execute
        by_key = {limit: gate_limits_by_key(config, limit) for limit in GATE_LIMITS}
        # a run that is not live is a backtest (fused mode): its driver hands the venue the market ahead
        return dict(venue=venue_params(config, live, lookahead=not live), event_clock=not live,
                    routing=routing.make_params(**dataclasses.asdict(config.routing)),
                    max_open_orders=e.max_open_orders, flatten=e.on_kill == "flatten",
                    flatten_collar_bps=e.flatten_collar_bps, flatten_retry_ms=e.flatten_retry_ms,
                    flatten_min_usd=e.flatten_min_usd,
                    max_order_qty=e.max_order_qty, max_order_usd=e.max_order_usd,
                    price_collar_bps=e.price_collar_bps, max_orders_per_s=e.max_orders_per_s,
                    order_burst=e.order_burst, duplicate_window_ms=e.duplicate_window_ms,
                    max_position_usd=e.max_position_usd,
                    max_order_qty_by_key=by_key["max_order_qty"],
                    max_order_usd_by_key=by_key["max_order_usd"],
                    max_position_usd_by_key=by_key["max_position_usd"])
    raise KeyError(f"stage {stage!r} has no numba kernel")


def _ticks_by_key(config: Config) -> dict[int, float]:
    """{instrument key: tick}: the synthetic feed's grid, then strategy.fixed_tick_by_symbol (a replay's grid is
    the venue's, not the synthetic table's: there only the config's entries count)."""
    synthetic = _synthetic_symbols(config) if config.feed.source == "synthetic" else []
    ticks = {**{e[0]: e[2] for e in synthetic}, **config.strategy.ticks_by_symbol()}
    return {instrument_key(venue, config.feed.symbols.index(symbol)): tick
            for symbol, tick in ticks.items() if symbol in config.feed.symbols
            for venue in range(len(config.feed.venues))}


def _taker_fees(config: Config) -> dict[int, float]:
    by_name = config.venue.fees_by_venue("taker_fee_bps_by_venue")
    return {i: by_name.get(name, config.venue.taker_fee_bps) for i, name in enumerate(config.feed.venues)}


def allocator_weights(a: AllocatorConfig) -> np.ndarray:
    """weights[regime, strategy] (records.REGIME_* rows, allocator S_* columns) of the config's allocator section."""
    from stages.strategies import allocator
    weights = np.zeros((allocator.N_REGIMES, allocator.N_STRATEGIES))
    for row, key in enumerate(REGIME_KEYS):
        for name, w in a.values(key).items():
            weights[row, allocator.STRATEGY_KEYS.index(name)] = w
    return weights


def strategy_blocks(config: Config) -> dict[str, np.ndarray]:
    """The regime mode's params of each part (stages.strategies), from their config sections."""
    from stages.strategies import allocator, arbitrage, market_making, mean_reversion, momentum, regime
    a = config.allocator
    weights = allocator_weights(a)
    per = {key: [a.values(key)[name] for name in allocator.STRATEGY_KEYS]
           for key in ("max_position_usd", "orders_per_s", "burst", "loss_limit_usd")}
    sections = {"regime": (regime, config.regime), "momentum": (momentum, config.momentum),
                "mean_reversion": (mean_reversion, config.mean_reversion),
                "market_making": (market_making, config.market_making), "arbitrage": (arbitrage, config.arbitrage)}
    blocks = {name: module.make_params(**dataclasses.asdict(section)) for name, (module, section) in sections.items()}
    blocks["allocator"] = allocator.make_params(weights=weights, **per)
    return blocks


def venue_params(config: Config, live: bool, lookahead: bool) -> np.ndarray:
    """The venue model's params (stages.venue.exchange): ``lookahead`` when a backtest driver hands the venue its
    market ahead of the local pipeline."""
    v, names = config.venue, list(config.feed.venues)
    fees = {}
    for side in ("maker", "taker"):
        by_name = v.fees_by_venue(f"{side}_fee_bps_by_venue")
        fees[side] = {i: by_name.get(name, getattr(v, f"{side}_fee_bps")) for i, name in enumerate(names)}
    offset_auto = v.clock_offset == "auto" and config.feed.source != "synthetic"
    lots = v.lots_by_symbol()
    lot_by_key = {instrument_key(venue, s): lots[name] for venue in range(len(names))
                  for s, name in enumerate(config.feed.symbols) if name in lots}
    return exchange.make_params(entry_latency_ms=v.entry_latency_ms, response_latency_ms=v.response_latency_ms,
                                queue_model=v.queue_model, queue_power=v.queue_power, partial_fills=v.partial_fills,
                                funding=v.funding, hold_ms=v.hold_ms, lookahead=lookahead,
                                offset_auto=offset_auto, maker_fee_bps=fees["maker"], taker_fee_bps=fees["taker"],
                                lot_by_key=lot_by_key)


def kernel_params(stage: str, config: Config, live: bool) -> np.ndarray:
    """The params of a numba-hosted stage, built by keyword from the (plan's) config."""
    return module(stage, config).make_params(**kernel_arguments(stage, config, live))


def _synthetic_symbols(config: Config) -> list[tuple]:
    """The synthetic market's entries (name, price, tick, lot, ...) of the run's symbols, in its order."""
    table = {s[0]: s for s in feed.DEFAULT_SYMBOLS}
    return [table[name] for name in config.feed.symbols if name in table]


def initial_state(stage: str, plan: RunPlan):
    """A stage's state at the start of a run that has no shared-memory tables (fused mode, a backtest, the
    warm-up). A live feature or risk stage builds its state over the run's tables instead (stage host)."""
    if stage == "feed":
        return feed.make_state(plan.config.feed.seed, _synthetic_symbols(plan.config))
    if stage == "validate":
        return validate.make_state(plan.config.rings.batch)
    if stage == "risk":
        return risk.make_state(plan.garch_table)
    if stage == "execute":
        return execute.make_state(exchange.make_state(latency_table=plan.latency_table))
    return module(stage, plan.config).make_state()


def kernel(stage: str, plan: RunPlan, live: bool):
    """(step, params, state) of a numba-hosted stage."""
    return module(stage, plan.config).step, kernel_params(stage, plan.config, live), initial_state(stage, plan)
