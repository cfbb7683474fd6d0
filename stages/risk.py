"""Risk stage: a size budget per feature vector, with the inputs and the reasons that shaped it.

Positions follow the execute stage's reports (its view is authoritative). Mids are cut into bars by event
time (``origin_ts``, ``bar_ns``); on each closed bar every instrument's GARCH(1,1) variance is updated and
an EWMA covariance of the bar returns across instruments is updated (``stages.garch``, ``stages.heat``).
GARCH parameters refitted while the run goes on (``bot4 risk fit-garch --publish``) are taken at the next
bar boundary (:func:`apply_published`).
The budget on each side is the per-order notional (halved beyond the soft drawdown, scaled down by the
feature stage's per-event volatility above its reference), capped by:

- the per-instrument position limit,
- the gross limit (sum of |position notional|, at most ``max_leverage`` times equity),
- portfolio heat: stop_sigmas * the portfolio's horizon sigma over equity stays within ``heat_limit``,
- the liquidation guard (leveraged perpetuals, cross margin): the account's equity over maintenance margin,
  as a price move of this instrument, stays above ``liq_sigmas`` horizon sigmas; when it does not, the
  decision also asks for the reducing quantity (``reduce_qty``).

Every reduction sets a reason bit; the decision carries sigma, heat, drawdown and equity, so an order can be
explained afterwards. Fractional Kelly is applied where the model's probability is known (strategy), on
top of these budgets. The hard drawdown stop is the watchdog's, from the equity figures published here.
"""

import math

import numpy as np
from numba import njit

from shm import seqlock
from shm.atomics import load_acquire
from stages import garch, heat
from stages.counters import Counters
from stages.feature import F_RVOL_BPS
from stages.records import (FEATURE_SCHEMA_HASH, N_FEATURES, ORD_FILLED, ORD_PARTIAL, RISK_DRAWDOWN, RISK_GROSS_LIMIT,
                            RISK_HEAT, RISK_LIQUIDATION, RISK_NO_MARKET, RISK_NOTIONAL_LIMIT, RISK_POSITION_LIMIT,
                            RISK_VOLATILITY)
from stages.universe import MAX_KEYS, instrument_key

(P_MAX_POSITION_USD, P_MAX_ORDER_USD, P_VOL_REF_BPS, P_CAPITAL_USD, P_SOFT_DRAWDOWN, P_BAR_NS, P_HORIZON_BARS,
 P_COV_LAMBDA, P_COV_MIN_BARS, P_MAX_GROSS_USD, P_MAX_LEVERAGE, P_HEAT_LIMIT, P_HEAT_STOP_SIGMAS, P_MMR,
 P_LIQ_SIGMAS) = range(15)

_COUNTERS = Counters()  # the stage's custom counters in slot-word order; STATS labels them
ST_DECISIONS = _COUNTERS.add("decisions")
ST_FILLS = _COUNTERS.add("fills_seen")
ST_SCHEMA = _COUNTERS.add("schema_mismatch")
ST_NO_MARKET = _COUNTERS.add("no_market")
ST_POSITION_LIMITED = _COUNTERS.add("position_limited")
ST_VOL_SCALED = _COUNTERS.add("vol_scaled")
ST_EQUITY_CENTS = _COUNTERS.add("equity_cents")
ST_PEAK_CENTS = _COUNTERS.add("peak_equity_cents")
ST_DRAWDOWN_BPS = _COUNTERS.add("drawdown_bps")
ST_DRAWDOWN_HALVED = _COUNTERS.add("drawdown_halved")
ST_BARS = _COUNTERS.add("bars")
ST_HEAT_BPS = _COUNTERS.add("heat_bps")
ST_HEAT_LIMITED = _COUNTERS.add("heat_limited")
ST_GROSS_LIMITED = _COUNTERS.add("gross_limited")
ST_LIQ_LIMITED = _COUNTERS.add("liquidation_limited")
ST_GROSS_USD = _COUNTERS.add("gross_usd")
ST_GARCH_VERSION = _COUNTERS.add("garch_version")
ST_GARCH_REFUSED = _COUNTERS.add("garch_rows_refused")
STATS = _COUNTERS.labels

# per-instrument columns of the GARCH table
(G_OMEGA, G_ALPHA, G_BETA, G_H, G_PREV_CLOSE, G_BARS, G_HORIZON_VAR, G_ROOM_BUY, G_ROOM_SELL, G_REDUCE_USD,
 G_BOUND_BUY, G_BOUND_SELL) = range(12)
G_COLUMNS = 12
BOUND_GROSS, BOUND_HEAT, BOUND_LIQ = 1, 2, 3   # G_BOUND_*: which portfolio cap is the side's room

I_BAR, I_COV_BARS, I_GARCH_SEQ = range(3)
PUBLISHED_READ_TRIES = 16  # a publisher mid-write: keep the parameters until the next bar, never wait


def make_params(*, max_position_usd: float, max_order_usd: float, vol_ref_bps: float, capital_usd: float,
                soft_drawdown_pct: float, bar_s: float, horizon_bars: int, cov_halflife_bars: float, cov_min_bars: int,
                max_gross_usd: float, max_leverage: float, heat_limit: float, heat_stop_sigmas: float,
                maintenance_margin_pct: float, liq_distance_sigmas: float) -> np.ndarray:
    """Every default is the config's (pipeline.config.RiskConfig); pipeline.graph passes them all by name."""
    cov_lambda = 0.5 ** (1.0 / cov_halflife_bars)
    return np.array([max_position_usd, max_order_usd, vol_ref_bps, capital_usd, soft_drawdown_pct / 100.0,
                     round(bar_s * 1e9), float(horizon_bars), cov_lambda, float(cov_min_bars), max_gross_usd,
                     max_leverage, heat_limit, heat_stop_sigmas, maintenance_margin_pct / 100.0,
                     liq_distance_sigmas, 0.0])


def garch_table(omega_alpha_beta: np.ndarray) -> np.ndarray:
    """The per-instrument GARCH table from (MAX_KEYS, 3) parameters, variances started at the unconditional level."""
    table = np.zeros((MAX_KEYS, G_COLUMNS))
    table[:, G_OMEGA:G_BETA + 1] = omega_alpha_beta
    persistence = table[:, G_ALPHA] + table[:, G_BETA]
    table[:, G_H] = table[:, G_OMEGA] / (1.0 - persistence)
    return table


def make_state(omega_alpha_beta: np.ndarray | None = None, published: tuple | None = None):
    """(positions, cash per instrument, last mid per instrument, [peak equity], GARCH table, EWMA covariance
    of bar returns (bps^2), [bar, covariance bars, published sequence applied], scratch, (published seqlock
    sequences, records, read buffer)). Without parameters: the shipped default fit. ``published`` is a live
    run's GARCH table (``pipeline.store.garch_store``); without it, a local one nobody publishes to."""
    if omega_alpha_beta is None:
        default = garch.params_for(garch.load_params(garch.DEFAULT_PARAMS_PATH, 1.0), garch.DEFAULT_KEY)
        omega_alpha_beta = np.tile(default, (MAX_KEYS, 1))
    seqs, records = published if published is not None else seqlock.local_table(garch.PUBLISHED_GARCH, 1)
    return (np.zeros(MAX_KEYS), np.zeros(MAX_KEYS), np.zeros(MAX_KEYS), np.zeros(1), garch_table(omega_alpha_beta),
            np.zeros((MAX_KEYS, MAX_KEYS)), np.array([-1, 0, 0], np.int64), np.zeros((4, MAX_KEYS)),
            (seqs, records, np.zeros(1, garch.PUBLISHED_GARCH)))


@njit(cache=True)
def apply_published(published, table, ints, stats):
    """Take parameters published since the last look (a refit, or a restarted stage catching up). Called at bar
    boundaries only, so one bar's variance update uses one parameter set; the conditional variance carries
    on, except that an instrument with no bar yet starts at the new unconditional level. A row that is not
    covariance-stationary keeps the old parameters and is counted."""
    seqs, records, dst = published
    sequence = seqlock.read(seqs, records, 0, dst, 0, PUBLISHED_READ_TRIES)
    if sequence < 0:
        return
    p = dst[0]["params"]
    for k in range(MAX_KEYS):
        omega, alpha, beta = p[k, 0], p[k, 1], p[k, 2]
        if not (omega > 0.0 and alpha >= 0.0 and beta >= 0.0 and alpha + beta < 1.0):
            stats[ST_GARCH_REFUSED] += 1
            continue
        table[k, G_OMEGA] = omega
        table[k, G_ALPHA] = alpha
        table[k, G_BETA] = beta
        if table[k, G_BARS] == 0.0:
            table[k, G_H] = omega / (1.0 - alpha - beta)
    ints[I_GARCH_SEQ] = sequence
    stats[ST_GARCH_VERSION] = sequence // 2


@njit(cache=True)
def absorb_reports(reports, n, positions, cash, stats):
    for i in range(n):
        r = reports[i]
        if (r["state"] == ORD_PARTIAL or r["state"] == ORD_FILLED) and r["liquidity"] != 0:
            k = instrument_key(r["venue"], r["symbol"])
            positions[k] = r["position"]
            cash[k] -= r["side"] * r["qty"] * r["price"] + r["fee"]
            stats[ST_FILLS] += 1


@njit(cache=True)
def mark_equity(positions, cash, mids, peak, capital, stats):
    """Equity marked to the latest mids; drawdown from the running peak (the watchdog's hard stop reads it)."""
    equity = capital
    for k in range(positions.shape[0]):
        equity += cash[k] + positions[k] * mids[k]
    if equity > peak[0]:
        peak[0] = equity
    drawdown = 1.0 - equity / peak[0] if peak[0] > 0.0 else 0.0
    stats[ST_EQUITY_CENTS] = int(round(equity * 100.0))
    stats[ST_PEAK_CENTS] = int(round(peak[0] * 100.0))
    stats[ST_DRAWDOWN_BPS] = int(round(drawdown * 1e4))
    return equity, drawdown


@njit(cache=True)
def close_bars(to_bar, mids, table, cov, ints, scratch, params, stats, published):
    """Close every bar before ``to_bar``: GARCH variances and the EWMA covariance see each instrument's
    close-to-close return (bps); bars without events return 0 (closed form, however many were skipped)."""
    if load_acquire(published[0], 0) != ints[I_GARCH_SEQ]:
        apply_published(published, table, ints, stats)
    if ints[I_BAR] < 0:
        ints[I_BAR] = to_bar
        return
    returns = scratch[0]
    active = scratch[1]
    n_active = 0
    for k in range(MAX_KEYS):
        returns[k] = 0.0
        active[k] = 0.0
        if mids[k] > 0.0:
            prev = table[k, G_PREV_CLOSE]
            if prev > 0.0:
                returns[k] = 1e4 * math.log(mids[k] / prev)
                table[k, G_H] = garch.update(table[k, G_H], returns[k], table[k, G_OMEGA], table[k, G_ALPHA],
                                             table[k, G_BETA])
                table[k, G_BARS] += 1.0
                active[k] = 1.0
                n_active += 1
            table[k, G_PREV_CLOSE] = mids[k]
    lam = params[P_COV_LAMBDA]
    if n_active > 0:
        heat.ewma_cov_update(cov, returns, active, lam)
        ints[I_COV_BARS] += 1
    stats[ST_BARS] += 1
    empty = to_bar - ints[I_BAR] - 1
    if empty > 0:
        for k in range(MAX_KEYS):
            if table[k, G_PREV_CLOSE] > 0.0:
                beta = table[k, G_BETA]
                decay = beta ** empty
                table[k, G_H] = table[k, G_OMEGA] * (1.0 - decay) / (1.0 - beta) + decay * table[k, G_H] \
                    if beta != 1.0 else table[k, G_H] + empty * table[k, G_OMEGA]
                table[k, G_BARS] += empty
        decay = lam ** empty
        for i in range(MAX_KEYS):
            for j in range(MAX_KEYS):
                cov[i, j] *= decay
        ints[I_COV_BARS] += empty
        stats[ST_BARS] += empty
    ints[I_BAR] = to_bar


@njit(cache=True)
def portfolio_limits(positions, mids, table, cov, ints, scratch, params, equity, stats):
    """Per instrument: horizon variance, and the room (USD) each side has under the gross, heat and liquidation
    limits, with which of them bound it. Returns the portfolio heat."""
    w = scratch[2]
    sigma = scratch[3]
    horizon = int(params[P_HORIZON_BARS])
    gross = 0.0
    for k in range(MAX_KEYS):
        w[k] = positions[k] * mids[k]
        gross += abs(w[k])
        table[k, G_HORIZON_VAR] = garch.horizon_variance(table[k, G_H], table[k, G_OMEGA], table[k, G_ALPHA],
                                                         table[k, G_BETA], horizon)
        sigma[k] = math.sqrt(table[k, G_HORIZON_VAR]) * 1e-4 if mids[k] > 0.0 else 0.0
    # Correlations count only once every instrument held has cov_min_bars returns in the covariance.
    min_bars = params[P_COV_MIN_BARS]
    warm = ints[I_COV_BARS] >= min_bars
    for k in range(MAX_KEYS):
        if w[k] != 0.0 and table[k, G_BARS] < min_bars:
            warm = False
    stop = params[P_HEAT_STOP_SIGMAS]
    limit = params[P_HEAT_LIMIT]
    portfolio_heat = heat.heat(w, sigma, cov, warm, stop, equity)
    gross_limit = min(params[P_MAX_GROSS_USD], params[P_MAX_LEVERAGE] * max(equity, 0.0))
    mmr = params[P_MMR]
    liq_sigmas = params[P_LIQ_SIGMAS]
    for k in range(MAX_KEYS):
        if not (mids[k] > 0.0):
            continue
        others = gross - abs(w[k])
        table[k, G_REDUCE_USD] = 0.0
        for side in range(2):
            s = 1.0 if side == 0 else -1.0
            room = heat.abs_room(w[k], s, others, 1.0, gross_limit)
            bound = BOUND_GROSS
            by_heat = heat.room(w, k, s, sigma, cov, warm and table[k, G_BARS] >= min_bars, stop, equity, limit)
            if by_heat < room:
                room = by_heat
                bound = BOUND_HEAT
            if liq_sigmas > 0.0:
                # cross margin: equity - mmr * gross must cover liq_sigmas of this instrument's move
                per_unit = mmr + liq_sigmas * sigma[k] * (1.0 + mmr)
                by_liq = heat.abs_room(w[k], s, mmr * others, per_unit, max(equity, 0.0))
                if by_liq < room:
                    room = by_liq
                    bound = BOUND_LIQ
                allowed = (max(equity, 0.0) - mmr * others) / per_unit
                if abs(w[k]) > allowed:
                    table[k, G_REDUCE_USD] = abs(w[k]) - max(allowed, 0.0)
            table[k, G_ROOM_BUY + side] = room
            table[k, G_BOUND_BUY + side] = bound
    stats[ST_HEAT_BPS] = int(round(min(portfolio_heat, 1e6) * 1e4))
    stats[ST_GROSS_USD] = int(gross)
    return portfolio_heat


@njit(cache=True)
def _reason_of(bound):
    if bound == BOUND_HEAT:
        return RISK_HEAT
    if bound == BOUND_LIQ:
        return RISK_LIQUIDATION
    return RISK_GROSS_LIMIT


@njit(cache=True)
def step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    positions, cash, mids, peak, table, cov, ints, scratch, published = state
    absorb_reports(in_b, n_b, positions, cash, stats)
    max_pos = params[P_MAX_POSITION_USD]
    max_order = params[P_MAX_ORDER_USD]
    vol_ref = params[P_VOL_REF_BPS]
    bar_ns = int(params[P_BAR_NS])
    for i in range(n_a):
        f = in_a[i]
        bar = f["origin_ts"] // bar_ns
        if bar > ints[I_BAR]:
            close_bars(bar, mids, table, cov, ints, scratch, params, stats, published)
        key = instrument_key(f["venue"], f["symbol"])
        if f["ask"] > f["bid"] > 0.0:
            mids[key] = 0.5 * (f["bid"] + f["ask"])
    equity, drawdown = mark_equity(positions, cash, mids, peak, params[P_CAPITAL_USD], stats)
    portfolio_heat = portfolio_limits(positions, mids, table, cov, ints, scratch, params, equity, stats)
    halve = drawdown >= params[P_SOFT_DRAWDOWN]
    for i in range(n_a):
        f = in_a[i]
        d = out[i]
        key = instrument_key(f["venue"], f["symbol"])
        d["origin_ts"] = f["origin_ts"]
        d["origin_seq"] = f["origin_seq"]
        d["stage_ts"] = now_ns
        d["venue"] = f["venue"]
        d["symbol"] = f["symbol"]
        d["bid"] = f["bid"]
        d["ask"] = f["ask"]
        for j in range(N_FEATURES):
            d["values"][j] = f["values"][j]
        position = positions[key]
        d["position"] = position
        sigma = f["values"][F_RVOL_BPS]
        d["sigma_bps"] = sigma
        d["equity"] = equity
        d["drawdown"] = drawdown
        d["heat"] = portfolio_heat
        d["garch_sigma_bps"] = math.sqrt(table[key, G_H])
        d["horizon_sigma_bps"] = math.sqrt(table[key, G_HORIZON_VAR])
        d["reduce_qty"] = 0.0
        d["kind"], d["side"], d["price"], d["size"] = f["kind"], f["side"], f["price"], f["size"]
        reasons = 0
        mid = 0.5 * (f["bid"] + f["ask"])
        if f["schema_hash"] != FEATURE_SCHEMA_HASH or not (mid > 0.0):
            reasons |= RISK_NO_MARKET
            stats[ST_NO_MARKET if f["schema_hash"] == FEATURE_SCHEMA_HASH else ST_SCHEMA] += 1
            d["buy_budget"] = 0.0
            d["sell_budget"] = 0.0
            d["reasons"] = reasons
            continue
        order_usd = max_order
        reasons |= RISK_NOTIONAL_LIMIT
        if halve:
            order_usd *= 0.5
            reasons |= RISK_DRAWDOWN
            stats[ST_DRAWDOWN_HALVED] += 1
        if sigma > vol_ref:
            order_usd *= vol_ref / sigma
            reasons |= RISK_VOLATILITY
            stats[ST_VOL_SCALED] += 1
        room_buy = max(0.0, max_pos - position * mid)
        room_sell = max(0.0, max_pos + position * mid)
        if room_buy < order_usd or room_sell < order_usd:
            reasons |= RISK_POSITION_LIMIT
            stats[ST_POSITION_LIMITED] += 1
        # Portfolio caps (this batch's marks): a cap is a reason only where it binds below the other limits.
        cap_buy = table[key, G_ROOM_BUY]
        cap_sell = table[key, G_ROOM_SELL]
        if cap_buy < min(order_usd, room_buy):
            reasons |= _reason_of(int(table[key, G_BOUND_BUY]))
        if cap_sell < min(order_usd, room_sell):
            reasons |= _reason_of(int(table[key, G_BOUND_SELL]))
        if table[key, G_REDUCE_USD] > 0.0 and position != 0.0:
            reasons |= RISK_LIQUIDATION
            d["reduce_qty"] = -math.copysign(min(table[key, G_REDUCE_USD] / mid, abs(position)), position)
        if reasons & RISK_HEAT:
            stats[ST_HEAT_LIMITED] += 1
        if reasons & RISK_GROSS_LIMIT:
            stats[ST_GROSS_LIMITED] += 1
        if reasons & RISK_LIQUIDATION:
            stats[ST_LIQ_LIMITED] += 1
        d["buy_budget"] = min(order_usd, room_buy, cap_buy) / mid
        d["sell_budget"] = min(order_usd, room_sell, cap_sell) / mid
        d["reasons"] = reasons
    stats[ST_DECISIONS] += n_a
    return n_a
