"""The report's figures from a RunRecord: pure numpy (the delta books in prices.py aside), no I/O.

Conventions (also written into report.json under ``conventions``):
- Fills are reports with state ORD_PARTIAL or ORD_FILLED and qty > 0; a fill happens at its report's
  ``stage_ts`` when it is a venue's answer (``exch_ts`` set: when it arrived back), else ``origin_ts`` (the local
  receive time of the event it came from), ``stage_ts`` when that is 0.
  REP_FUNDING reports are funding payments of ``fee`` (positive paid) at the same time.
- Position and cash of each instrument come from its fills (cash -= side * qty * price + fee) and funding
  (cash -= fee); equity = initial equity + sum of cash + position * mark. A position with no mark yet is
  marked at its latest fill price.
- Equity is sampled every ``sample_interval_ns`` of event time from the first event, plus at every fill
  (and at the last event). Returns are simple returns of the fixed-interval samples only; Sharpe =
  mean / std (ddof 1) * sqrt(P) and Sortino = mean / sqrt(mean(min(r, 0)^2)) * sqrt(P), with P =
  365 days / interval (crypto trades every day); Calmar = mean * P / max drawdown (a fraction).
- Drawdown = 1 - equity / running peak, over every sample; its duration runs from the peak before the
  deepest point to the first sample back at that peak (or to the end, not recovered).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.report import prices as prices_mod
from pipeline.report.inputs import RunRecord
from stages import records

NS = 1_000_000_000
YEAR_NS = 365 * 86_400 * NS
DEFAULT_SAMPLE_INTERVAL_NS = NS            # 1 s of event time
DEFAULT_GAP_THRESHOLD_NS = 2 * NS          # a silence of an instrument longer than 2 s is a gap
MARKOUT_HORIZONS_NS = (100_000_000, NS, 10 * NS)
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
LATENCY_PERCENTILES = (0.0, 50.0, 90.0, 99.0, 99.9, 100.0)
MAX_GAPS_LISTED = 1000                     # per instrument; the count and total stay exact

STRATEGY_NAMES = records.STRATEGY_NAMES
LIQUIDITY_NAMES = {1: "maker", -1: "taker", 0: "unknown"}


def strategy_name(sid: int) -> str:
    return STRATEGY_NAMES.get(int(sid), f"strategy{int(sid)}")


@dataclass(frozen=True)
class Settings:
    sample_interval_ns: int = DEFAULT_SAMPLE_INTERVAL_NS
    gap_threshold_ns: int = DEFAULT_GAP_THRESHOLD_NS
    markout_horizons_ns: tuple = MARKOUT_HORIZONS_NS

    def __post_init__(self):
        if self.sample_interval_ns <= 0:
            raise ValueError(f"sample_interval_ns={self.sample_interval_ns} must be > 0 (e.g. 1 s = 1e9)")
        if self.gap_threshold_ns <= 0:
            raise ValueError(f"gap_threshold_ns={self.gap_threshold_ns} must be > 0 (e.g. 2 s = 2e9)")


@dataclass
class Analysis:
    """``summary`` is what report.json holds (before rounding); the arrays feed the figures."""
    summary: dict
    curve_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    curve_equity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    curve_drawdown: np.ndarray = field(default_factory=lambda: np.zeros(0))
    inventory: dict = field(default_factory=dict)   # name -> (ts, position) step series over the span
    markout_samples: dict = field(default_factory=dict)  # horizon label -> bps of every fill that has one
    latency_samples: dict = field(default_factory=dict)  # "order_entry" | "round_trip" -> µs


def _fills(reports: np.ndarray) -> np.ndarray:
    state = reports["state"]
    return reports[((state == records.ORD_PARTIAL) | (state == records.ORD_FILLED)) & (reports["qty"] > 0)]


def _when(rep: np.ndarray) -> np.ndarray:
    """When a report happened on the local clock: a venue's answer (exch_ts set) when it arrived (stage_ts; the
    order's origin can be long before a resting order fills), our own report at its origin event."""
    t = rep["origin_ts"].astype(np.int64)
    own = np.where(t > 0, t, rep["stage_ts"].astype(np.int64))
    return np.where(rep["exch_ts"] > 0, rep["stage_ts"].astype(np.int64), own)


def _sorted_by_time(rep: np.ndarray) -> np.ndarray:
    return rep[np.argsort(_when(rep), kind="stable")]


class _Ledger:
    """Per-instrument positions and cash as step functions of event time (cumulative over sorted events)."""

    def __init__(self, fills: np.ndarray, funding: np.ndarray, marks: dict):
        self.ids = sorted(set(prices_mod.instrument_ids(fills["venue"], fills["symbol"]).tolist())
                          | set(prices_mod.instrument_ids(funding["venue"], funding["symbol"]).tolist()))
        self.books = {}
        fid = prices_mod.instrument_ids(fills["venue"], fills["symbol"])
        gid = prices_mod.instrument_ids(funding["venue"], funding["symbol"])
        for iid in self.ids:
            f = fills[fid == iid]
            g = funding[gid == iid]
            signed = f["side"].astype(np.float64) * f["qty"]
            ev_t = np.concatenate([_when(f), _when(g)])
            d_pos = np.concatenate([signed, np.zeros(len(g))])
            d_cash = np.concatenate([-signed * f["price"] - f["fee"], -g["fee"]])
            px = np.concatenate([f["price"], np.full(len(g), np.nan)])
            order = np.argsort(ev_t, kind="stable")
            ev_t, d_pos, d_cash, px = ev_t[order], d_pos[order], d_cash[order], px[order]
            have = np.where(np.isfinite(px), np.arange(len(px)), -1)
            have = np.maximum.accumulate(have) if len(have) else have
            last_px = np.where(have >= 0, px[np.maximum(have, 0)], np.nan)  # the fallback mark
            self.books[iid] = (ev_t, np.cumsum(d_pos), np.cumsum(d_cash), last_px)
        self.marks = marks

    def position(self, iid, when):
        ev_t, pos, _, _ = self.books[iid]
        idx = np.searchsorted(ev_t, when, side="right") - 1
        return np.where(idx >= 0, pos[np.maximum(idx, 0)], 0.0)

    def value(self, iid, when):
        """cash + position * mark of the instrument at each time."""
        ev_t, pos, cash, last_px = self.books[iid]
        idx = np.searchsorted(ev_t, when, side="right") - 1
        ok = idx >= 0
        p = np.where(ok, pos[np.maximum(idx, 0)], 0.0)
        c = np.where(ok, cash[np.maximum(idx, 0)], 0.0)
        fallback = np.where(ok, last_px[np.maximum(idx, 0)], np.nan)
        mark = self.marks[iid].at(when) if iid in self.marks else np.full(np.shape(when), np.nan)
        mark = np.where(np.isfinite(mark), mark, fallback)
        return c + np.where(p != 0.0, p * np.nan_to_num(mark, nan=0.0), 0.0)


def _stats(values: np.ndarray) -> dict | None:
    if not len(values):
        return None
    return {"count": int(len(values)), "mean": float(np.mean(values)), "median": float(np.median(values))}


def _percentiles(values: np.ndarray) -> dict | None:
    if not len(values):
        return None
    out = {f"p{p:g}": float(np.percentile(values, p)) for p in LATENCY_PERCENTILES}
    out.update(count=int(len(values)), mean=float(np.mean(values)))
    return out


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray) -> dict:
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    total = cum[-1]
    out = {}
    for q in QUANTILES:
        i = int(np.searchsorted(cum, q * total - 1e-12 * total, side="left")) if q > 0 else int(np.argmax(w > 0))
        out[f"q{q * 100:g}"] = float(v[min(i, len(v) - 1)])
    return out


def _drawdown(ts: np.ndarray, equity: np.ndarray, notes: list) -> tuple[dict | None, np.ndarray]:
    if not len(equity):
        return None, np.zeros(0)
    peak = np.maximum.accumulate(equity)
    amount = peak - equity
    positive = bool(np.all(peak > 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(peak > 0, amount / peak, np.nan)
    if not positive:
        notes.append("equity was not positive throughout: drawdown fractions, Calmar and returns are undefined "
                     "where it was not; the deepest drawdown is chosen by amount")
    deepest = int(np.nanargmax(frac)) if positive else int(np.argmax(amount))
    if amount[deepest] <= 0:
        return ({"max_fraction": 0.0, "max_amount": 0.0, "peak_ts": None, "trough_ts": None, "recovery_ts": None,
                 "duration_s": 0.0, "recovered": True, "longest_underwater_s": 0.0}, frac)
    at_peak = np.nonzero(equity[:deepest + 1] >= peak[deepest])[0]
    start = int(at_peak[-1])
    back = np.nonzero(equity[deepest:] >= peak[deepest])[0]
    recovered = bool(len(back))
    end = deepest + int(back[0]) if recovered else len(equity) - 1
    # Longest time under water: between consecutive new peaks (or a last peak and the end).
    new_peak = np.nonzero(equity >= peak)[0]
    bounds = np.append(ts[new_peak], ts[-1])
    longest = int(np.max(np.diff(bounds))) if len(bounds) > 1 else 0
    return ({"max_fraction": float(frac[deepest]) if positive else None, "max_amount": float(amount[deepest]),
             "peak_ts": int(ts[start]), "trough_ts": int(ts[deepest]),
             "recovery_ts": int(ts[end]) if recovered else None,
             "duration_s": (int(ts[end]) - int(ts[start])) / NS, "recovered": recovered,
             "longest_underwater_s": longest / NS}, frac)


def _risk_adjusted(grid_equity: np.ndarray, settings: Settings, max_dd: float | None, notes: list) -> dict:
    periods = YEAR_NS / settings.sample_interval_ns
    out = {"returns": 0, "mean_return": None, "volatility": None, "sharpe": None, "sortino": None,
           "calmar": None, "annualised_return": None, "annualised_volatility": None}
    prev, nxt = grid_equity[:-1], grid_equity[1:]
    ok = prev > 0
    r = nxt[ok] / prev[ok] - 1.0
    out["returns"] = int(len(r))
    if len(r) < 2:
        notes.append(f"{len(r)} return(s) of the {settings.sample_interval_ns / NS:g} s samples: Sharpe, Sortino "
                     "and Calmar need at least 2 (a longer run or a shorter --sample-ms)")
        return out
    mean, std = float(np.mean(r)), float(np.std(r, ddof=1))
    out.update(mean_return=mean, volatility=std, annualised_return=mean * periods,
               annualised_volatility=std * np.sqrt(periods))
    if std > 0:
        out["sharpe"] = mean / std * np.sqrt(periods)
    else:
        notes.append("the sampled equity never changed (zero variance): Sharpe is undefined")
    downside = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    if downside > 0:
        out["sortino"] = mean / downside * np.sqrt(periods)
    else:
        notes.append("no sampled return was negative: Sortino is undefined")
    if max_dd:
        out["calmar"] = mean * periods / max_dd
    else:
        notes.append("no drawdown: Calmar is undefined")
    return out


def _orders(reports: np.ndarray, fills: np.ndarray, intents: np.ndarray) -> tuple[dict, list]:
    """Order counts overall and per strategy (from the reports: execute's own flatten orders have no intent)."""
    state = reports["state"]
    rejected = reports[state == records.ORD_REJECTED]
    placed = reports[(reports["order_id"] > 0) & (state != records.REP_FUNDING)]
    rows = []
    sids = sorted(set(reports["strategy"][state != records.REP_FUNDING].tolist()) | set(intents["strategy"].tolist()))
    for sid in sids:
        mine = placed[placed["strategy"] == sid]
        ids, first = np.unique(mine["order_id"], return_index=True)
        not_fill = mine[(mine["state"] != records.ORD_PARTIAL) & (mine["state"] != records.ORD_FILLED)]
        nf_ids, nf_first = np.unique(not_fill["order_id"], return_index=True)
        order_qty = dict(zip(nf_ids.tolist(), not_fill["qty"][nf_first].tolist()))
        f = fills[fills["strategy"] == sid]
        filled_by_id = {}
        for oid, q in zip(f["order_id"].tolist(), f["qty"].tolist()):
            filled_by_id[oid] = filled_by_id.get(oid, 0.0) + q
        rej = rejected[rejected["strategy"] == sid]
        early_rej = rej[rej["order_id"] == 0]
        sent = len(ids) + len(early_rej)
        accepted = len(set(mine["order_id"][mine["state"] == records.ORD_ACKED].tolist()) | set(filled_by_id))
        qty_sent = sum(order_qty.get(oid, filled_by_id.get(oid, 0.0)) for oid in ids.tolist()) + float(
            early_rej["qty"].sum())
        qty_filled = float(f["qty"].sum())
        rows.append({
            "strategy": int(sid), "name": strategy_name(sid),
            "intents": int(np.sum(intents["strategy"] == sid)),
            "orders_sent": int(sent), "orders_accepted": int(accepted), "orders_rejected": int(len(rej)),
            "orders_filled": int(len(filled_by_id)), "fills": int(len(f)),
            "fill_ratio": len(filled_by_id) / sent if sent else None,
            "qty_fill_ratio": qty_filled / qty_sent if qty_sent > 0 else None,
        })
    reasons = {}
    for code in rejected["reject_reason"].tolist():
        name = records.REJ_NAMES.get(int(code), f"reason{int(code)}")
        reasons[name] = reasons.get(name, 0) + 1
    sent = sum(r["orders_sent"] for r in rows)
    kinds = intents["kind"]
    totals = {
        "intents": int(len(intents)),
        "intents_ioc": int(np.sum(kinds == records.INTENT_IOC)),
        "intents_quote": int(np.sum(kinds == records.INTENT_QUOTE)),
        "intents_cancel_all": int(np.sum(kinds == records.INTENT_CANCEL_ALL)),
        "orders_sent": int(sent), "orders_accepted": int(sum(r["orders_accepted"] for r in rows)),
        "orders_rejected": int(len(rejected)), "rejects_by_reason": reasons,
        "cancels": int(np.sum(state == records.ORD_CANCELLED)),
        "fills": int(len(fills)), "maker_fills": int(np.sum(fills["liquidity"] > 0)),
        "taker_fills": int(np.sum(fills["liquidity"] < 0)),
        "order_to_fill_ratio": sent / len(fills) if len(fills) else None,
    }
    return totals, rows


def _markouts(fills: np.ndarray, prices: prices_mod.Prices, t_end: int, settings: Settings,
              samples: dict) -> dict | None:
    if not len(fills):
        return None
    fid = prices_mod.instrument_ids(fills["venue"], fills["symbol"])
    t = _when(fills)
    groups = {"all": np.ones(len(fills), bool)}
    by_strategy = {strategy_name(s): fills["strategy"] == s for s in sorted(set(fills["strategy"].tolist()))}
    by_liq = {LIQUIDITY_NAMES.get(int(v), str(int(v))): np.sign(fills["liquidity"]) == v
              for v in sorted(set(np.sign(fills["liquidity"]).tolist()))}
    by_both = {f"{s}/{lname}": sm & lm for s, sm in by_strategy.items() for lname, lm in by_liq.items()
               if np.any(sm & lm)}
    out = {"all": {}, "by_strategy": {k: {} for k in by_strategy}, "by_liquidity": {k: {} for k in by_liq},
           "by_strategy_liquidity": {k: {} for k in by_both}}
    for h in settings.markout_horizons_ns:
        label = f"{h // 1_000_000}ms"
        bps = np.full(len(fills), np.nan)
        for iid in np.unique(fid).tolist():
            mine = fid == iid
            mid = prices.mids.get(iid)
            if mid is None or not len(mid):
                continue
            when = t[mine] + h
            later = mid.at(when)
            later[when > t_end] = np.nan  # beyond the data: no mark-out rather than a stale one
            bps[mine] = fills["side"][mine] * (later - fills["price"][mine]) / fills["price"][mine] * 1e4
        have = np.isfinite(bps)
        samples[label] = bps[have]
        out["all"][label] = _stats(bps[groups["all"] & have])
        for name, m in by_strategy.items():
            out["by_strategy"][name][label] = _stats(bps[m & have])
        for name, m in by_liq.items():
            out["by_liquidity"][name][label] = _stats(bps[m & have])
        for name, m in by_both.items():
            out["by_strategy_liquidity"][name][label] = _stats(bps[m & have])
    return out


def _latency(reports: np.ndarray, samples: dict, notes: list) -> dict:
    acks = reports[reports["state"] == records.ORD_ACKED]
    entry = acks[(acks["send_ts"] > 0) & (acks["exch_ts"] > 0)]
    trip = acks[(acks["send_ts"] > 0) & (acks["stage_ts"] > 0)]
    samples["order_entry"] = (entry["exch_ts"] - entry["send_ts"]).astype(np.float64) / 1e3
    samples["round_trip"] = (trip["stage_ts"] - trip["send_ts"]).astype(np.float64) / 1e3
    if not len(entry):
        notes.append("no acknowledgement carries both a venue time (exch_ts) and a send time (send_ts): order "
                     "entry latency is unknown (a local-only venue stamps them 0)")
    if not len(trip):
        notes.append("no acknowledgement carries a send time (send_ts): round-trip latency is unknown")
    return {"unit": "us", "acks": int(len(acks)),
            "order_entry": _percentiles(samples["order_entry"]), "round_trip": _percentiles(samples["round_trip"]),
            "order_entry_negative": int(np.sum(samples["order_entry"] < 0))}


def _algo_label(parent_id: np.ndarray, algo: np.ndarray) -> np.ndarray:
    """A plain order's "none", an intent's routed split "route", else its algo's name (records.ALGO_NAMES)."""
    names = np.array([records.ALGO_NAMES.get(a, f"algo{a}") for a in range(256)], dtype=object)
    return np.where(parent_id == 0, "none", np.where(algo == records.ALGO_NONE, "route", names[algo]))


def _mids_at(prices: prices_mod.Prices, venue: np.ndarray, symbol: np.ndarray, when: np.ndarray) -> np.ndarray:
    iid = prices_mod.instrument_ids(venue, symbol)
    out = np.full(len(iid), np.nan)
    for i in np.unique(iid).tolist():
        mine = iid == i
        if i in prices.mids and len(prices.mids[i]):
            out[mine] = prices.mids[i].at(when[mine])
    return out


def _slippage(reports: np.ndarray, fills: np.ndarray, intents: np.ndarray, prices: prices_mod.Prices) -> list:
    """Cost against the arrival mid per strategy and algo: side * (average fill price - mid) / mid in bps (positive
    = cost), weighted by filled notional. A parent is an intent's whole order (an algo's or a routed split's
    children, by EXEC_REPORT.parent_id; a plain order is its own parent), its arrival mid its instrument's at the
    intent's origin_ts; a child's is its venue's mid when it was sent (its NEW report's stage_ts)."""
    new = reports[(reports["state"] == records.ORD_NEW) & (reports["order_id"] > 0)]
    if not len(new):
        return []
    ids, at = np.unique(fills["order_id"], return_inverse=True)
    qty_by_id, notional_by_id = np.bincount(at, fills["qty"]), np.bincount(at, fills["qty"] * fills["price"])
    pos = np.minimum(np.searchsorted(ids, new["order_id"]), max(len(ids) - 1, 0))
    has = (ids[pos] == new["order_id"]) if len(ids) else np.zeros(len(new), bool)
    qty, notional = np.where(has, qty_by_id[pos] if len(ids) else 0.0, 0.0), np.where(
        has, notional_by_id[pos] if len(ids) else 0.0, 0.0)
    side = new["side"].astype(np.float64)
    child_mid = _mids_at(prices, new["venue"], new["symbol"], new["stage_ts"].astype(np.int64))
    # the parent's arrival: its intent (the latest one with those low 32 bits of intent_id), a plain order's own
    parent = new["parent_id"].astype(np.int64)
    arrive_ts, arrive_venue, arrive_symbol = new["origin_ts"].astype(np.int64), new["venue"], new["symbol"]
    if np.any(parent > 0) and len(intents):
        low = intents["intent_id"].astype(np.int64) & 0xFFFFFFFF
        order = np.argsort(low, kind="stable")
        j = np.clip(np.searchsorted(low[order], parent, side="right") - 1, 0, len(low) - 1)
        found = (parent > 0) & (low[order][j] == parent)
        it = intents[order][j]
        arrive_ts = np.where(found, it["origin_ts"], arrive_ts)
        arrive_venue, arrive_symbol = np.where(found, it["venue"], arrive_venue), np.where(found, it["symbol"],
                                                                                            arrive_symbol)
    parent_mid = _mids_at(prices, arrive_venue, arrive_symbol, arrive_ts)
    key = np.where(parent > 0, parent, -new["order_id"].astype(np.int64))  # a plain order: its own parent
    label = _algo_label(parent, new["algo"].astype(np.int64))
    names = np.array([strategy_name(sid) for sid in new["strategy"].tolist()], dtype=object)
    rows = []
    for name, algo in sorted(set(zip(names.tolist(), label.tolist()))):
        mine = (names == name) & (label == algo)
        filled = mine & (qty > 0)
        kids = filled & np.isfinite(child_mid)
        child_bps = side[kids] * (notional[kids] / qty[kids] - child_mid[kids]) / child_mid[kids] * 1e4
        keys, inv = np.unique(key[filled], return_inverse=True)
        p_qty, p_notional = np.bincount(inv, qty[filled]), np.bincount(inv, notional[filled])
        first = np.unique(inv, return_index=True)[1]
        p_mid, p_side = parent_mid[filled][first], side[filled][first]
        ok = np.isfinite(p_mid)
        parent_bps = p_side[ok] * (p_notional[ok] / p_qty[ok] - p_mid[ok]) / p_mid[ok] * 1e4
        rows.append({"strategy": name, "algo": algo, "parents": int(len(np.unique(key[mine]))),
                     "parents_filled": int(len(keys)), "children": int(mine.sum()),
                     "filled_qty": float(qty[mine].sum()), "filled_notional": float(notional[mine].sum()),
                     "arrival_cost_bps": float(np.average(parent_bps, weights=p_notional[ok])) if ok.any() else None,
                     "child_cost_bps": float(np.average(child_bps, weights=notional[kids])) if kids.any() else None})
    return rows


def _gaps(prices: prices_mod.Prices, settings: Settings, universe: dict | None) -> list:
    out = []
    for iid in np.unique(prices.ids).tolist():
        t = prices.times[(prices.ids == iid) & prices.valid]
        if len(t) < 2:
            out.append({"instrument": prices_mod.instrument_name(iid, universe), "count": 0, "total_s": 0.0,
                        "longest_s": 0.0, "gaps": []})
            continue
        d = np.diff(t)
        where = np.nonzero(d > settings.gap_threshold_ns)[0]
        listed = [{"from_ts": int(t[i]), "to_ts": int(t[i + 1]), "duration_s": int(d[i]) / NS}
                  for i in where[:MAX_GAPS_LISTED].tolist()]
        out.append({"instrument": prices_mod.instrument_name(iid, universe), "count": int(len(where)),
                    "total_s": int(d[where].sum()) / NS, "longest_s": int(d.max()) / NS if len(where) else 0.0,
                    "gaps": listed, "listed": len(listed)})
    return out


def analyse(run: RunRecord, settings: Settings = Settings()) -> Analysis:
    notes: list[str] = []
    universe = run.meta.get("universe") if isinstance(run.meta, dict) else None
    prices = prices_mod.build(run.market, run.quarantine)
    reports = run.reports
    fills = _sorted_by_time(_fills(reports))
    funding = _sorted_by_time(reports[reports["state"] == records.REP_FUNDING])
    valid_t = prices.times[prices.valid]
    event_t = np.concatenate([valid_t, _when(fills), _when(funding)])
    if not len(event_t):
        notes.append("no accepted market event and no fill: the run has no time span")
    t0 = int(event_t.min()) if len(event_t) else 0
    t_end = int(event_t.max()) if len(event_t) else 0
    e0 = run.initial_equity
    if e0 <= 0:
        notes.append(f"initial equity {e0:g} is not positive: returns and turnover are undefined")

    ledger = _Ledger(fills, funding, prices.marks)
    step = settings.sample_interval_ns
    grid = t0 + step * np.arange((t_end - t0) // step + 1, dtype=np.int64) if len(event_t) else np.zeros(0, np.int64)
    curve_ts = np.unique(np.concatenate([grid, _when(fills), [t_end] if len(event_t) else []]).astype(np.int64))

    def equity_at(when):
        total = np.full(len(when), e0)
        for iid in ledger.ids:
            total += ledger.value(iid, when)
        return total

    curve_eq = equity_at(curve_ts)
    grid_eq = equity_at(grid)
    dd, dd_frac = _drawdown(curve_ts, curve_eq, notes)
    max_dd = dd["max_fraction"] if dd else None
    risk = _risk_adjusted(grid_eq, settings, max_dd, notes)

    # PnL by instrument and by strategy (a strategy's own fills, marked at the end; funding is per instrument).
    end = np.array([t_end], np.int64)
    fid = prices_mod.instrument_ids(fills["venue"], fills["symbol"])
    gid = prices_mod.instrument_ids(funding["venue"], funding["symbol"])
    by_instrument, unmarked = [], []
    final_mark = {}
    for iid in ledger.ids:
        mark = prices.marks[iid].at(end)[0] if iid in prices.marks else np.nan
        if not np.isfinite(mark):
            mine = fills[fid == iid]
            mark = float(mine["price"][-1]) if len(mine) else np.nan
            if len(mine):
                unmarked.append(prices_mod.instrument_name(iid, universe))
        final_mark[iid] = mark
    if unmarked:
        notes.append(f"no market price for {', '.join(unmarked)}: positions marked at their last fill price")

    def pnl_of(f: np.ndarray, g: np.ndarray, iid) -> dict:
        signed = f["side"].astype(np.float64) * f["qty"]
        pos = float(signed.sum())
        mark = final_mark.get(iid, np.nan)
        gross = float(-(signed * f["price"]).sum()) + (pos * mark if pos != 0.0 else 0.0)
        fee = f["fee"]
        fund = float(g["fee"].sum())
        return {"gross": gross, "fees_paid": float(fee[fee > 0].sum()), "rebates": float(-fee[fee < 0].sum()),
                "fees_net": float(fee.sum()), "funding_paid": fund, "net": gross - float(fee.sum()) - fund,
                "position": pos, "fills": int(len(f)), "traded_notional": float((f["qty"] * f["price"]).sum())}

    for iid in ledger.ids:
        row = pnl_of(fills[fid == iid], funding[gid == iid], iid)
        key = prices_mod.instrument_key_of(iid)
        row.update(instrument=prices_mod.instrument_name(iid, universe), key=key,
                   final_mark=final_mark[iid], mark_source=prices.mark_source.get(iid, "none"))
        by_instrument.append(row)
    by_strategy = []
    no_funding = funding[:0]
    for sid in sorted(set(fills["strategy"].tolist())):
        rows = [pnl_of(fills[(fills["strategy"] == sid) & (fid == iid)], no_funding, iid) for iid in ledger.ids]
        total = {k: float(sum(r[k] for r in rows)) for k in ("gross", "fees_paid", "rebates", "fees_net", "net",
                                                               "traded_notional")}
        total.update(strategy=int(sid), name=strategy_name(sid), fills=int(sum(r["fills"] for r in rows)))
        by_strategy.append(total)
    if len(funding):
        by_strategy.append({"strategy": None, "name": "funding (not attributed to a strategy)", "gross": 0.0,
                            "fees_paid": 0.0, "rebates": 0.0, "fees_net": 0.0, "traded_notional": 0.0, "fills": 0,
                            "net": -float(funding["fee"].sum())})

    fee = fills["fee"]
    gross = float(sum(r["gross"] for r in by_instrument))
    fees_net, funding_paid = float(fee.sum()), float(funding["fee"].sum())
    net = gross - fees_net - funding_paid
    traded = float((fills["qty"] * fills["price"]).sum())
    pnl = {"initial_equity": e0, "final_equity": e0 + net, "gross": gross, "net": net,
           "fees_paid": float(fee[fee > 0].sum()), "rebates": float(-fee[fee < 0].sum()), "fees_net": fees_net,
           "funding_paid": funding_paid, "funding_payments": int(len(funding)),
           "return": net / e0 if e0 > 0 else None}

    totals, strategies = _orders(reports, fills, run.intents)
    totals["traded_notional"] = traded
    totals["turnover"] = traded / e0 if e0 > 0 else None
    if not len(fills):
        notes.append("no fills: mark-outs, attribution by strategy and inventory are empty")
    if len(reports) and not np.any((reports["state"] != records.ORD_REJECTED) & (reports["state"] != 0)):
        notes.append("every execution report is a rejection")

    inventory, inv_series = [], {}
    for iid in ledger.ids:
        ev_t = ledger.books[iid][0]
        cuts = np.unique(np.concatenate([[t0], ev_t[(ev_t >= t0) & (ev_t <= t_end)], [t_end]]).astype(np.int64))
        pos = ledger.position(iid, cuts)
        name = prices_mod.instrument_name(iid, universe)
        inv_series[name] = (cuts, pos)
        weights = np.diff(cuts).astype(np.float64)
        row = {"instrument": name}
        if len(weights) and weights.sum() > 0:
            held = pos[:-1]
            row.update(_weighted_quantiles(held, weights))
            row.update(mean=float(np.average(held, weights=weights)),
                       mean_abs=float(np.average(np.abs(held), weights=weights)),
                       max_abs=float(np.max(np.abs(pos))), flat_fraction=float(weights[held == 0].sum() / weights.sum()))
        else:
            row.update({f"q{q * 100:g}": None for q in QUANTILES}, mean=None, mean_abs=None,
                       max_abs=float(np.max(np.abs(pos))) if len(pos) else 0.0, flat_fraction=None)
            notes.append(f"{name}: the run spans no time, so its inventory has no time-weighted distribution")
        inventory.append(row)

    markout_samples, latency_samples = {}, {}
    markouts = _markouts(fills, prices, t_end, settings, markout_samples)
    latency = _latency(reports, latency_samples, notes)
    gaps = _gaps(prices, settings, universe)
    if any(g["count"] for g in gaps):
        notes.append(f"data gaps: {sum(g['count'] for g in gaps)} silences longer than "
                     f"{settings.gap_threshold_ns / NS:g} s (listed under gaps); the figures span them as they are")
    n_market = int(len(run.market))
    summary = {
        "span": {"first_ts": t0 if len(event_t) else None, "last_ts": t_end if len(event_t) else None,
                 "duration_s": (t_end - t0) / NS, "market_events": n_market,
                 "accepted_events": int(prices.valid.sum()), "refused_events": n_market - int(prices.valid.sum()),
                 "equity_samples": int(len(grid)), "curve_points": int(len(curve_ts))},
        "instruments": [{"instrument": prices_mod.instrument_name(i, universe), "key": prices_mod.instrument_key_of(i),
                         "mark_source": prices.mark_source[i], "marks": int(len(prices.marks[i])),
                         "mids": int(len(prices.mids[i]))} for i in sorted(prices.marks)],
        "pnl": pnl, "risk_adjusted": risk, "drawdown": dd, "trading": totals, "strategies": strategies,
        "attribution": {"by_instrument": by_instrument, "by_strategy": by_strategy},
        "inventory": inventory, "markouts": markouts, "latency": latency,
        "slippage": _slippage(reports, fills, run.intents, prices),
        "gaps": {"threshold_s": settings.gap_threshold_ns / NS, "by_instrument": gaps},
        "notes": notes,
    }
    return Analysis(summary, curve_ts, curve_eq, np.nan_to_num(dd_frac, nan=0.0), inv_series, markout_samples,
                    latency_samples)


def conventions(settings: Settings) -> dict:
    interval_s = settings.sample_interval_ns / NS
    return {
        "time_axis": "event time: running maximum of market events' origin_ts (local receive time, ns)",
        "fill_time": "a venue's answer (exch_ts set): its stage_ts, when it arrived back; else origin_ts (the event "
                     "it came from), stage_ts when 0",
        "marks": "EV_MARK price where the instrument has one, else the mid of EV_BOOK/EV_BBO (bid_px[0], ask_px[0]), "
                 "else the mid of the L2 book built from EV_BOOK_DELTA while synced; events validation refused "
                 "are not used; a position without a price is marked at its last fill",
        "equity_sampling": f"every {interval_s:g} s of event time from the first event, plus at every fill "
                           "and the last event",
        "sample_interval_s": interval_s,
        "returns": "simple returns of the fixed-interval equity samples",
        "periods_per_year": YEAR_NS / settings.sample_interval_ns,
        "annualisation": f"365 days a year (crypto): sqrt(periods_per_year) for Sharpe and Sortino, "
                         f"periods_per_year = 365 * 86400 / {interval_s:g}",
        "sharpe": "mean(r) / std(r, ddof=1) * sqrt(periods_per_year), risk-free rate 0",
        "sortino": "mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(periods_per_year), target 0",
        "calmar": "mean(r) * periods_per_year / max drawdown fraction",
        "drawdown": "1 - equity / running peak over every curve point; duration from the peak before the deepest "
                    "point to the first point back at that peak, or to the end when not recovered",
        "pnl": "gross = trading PnL marked at the end before fees and funding; net = gross - fees_net - funding_paid; "
               "fees_paid = positive fees, rebates = negative fees (received)",
        "turnover": "traded notional (sum of qty * price of fills) / initial equity",
        "order_to_fill_ratio": "orders sent (distinct order ids, plus rejections before an id) / fill reports",
        "fill_ratio": "per strategy: orders with at least one fill / orders sent; qty_fill_ratio = filled qty / "
                      "qty sent",
        "inventory": "time-weighted quantiles of each instrument's position (base units) over the run's span",
        "markouts": "side * (mid at fill time + horizon - fill price) / fill price, bps (positive = the market "
                    "moved in the fill's favour; negative = adverse selection), unweighted per fill; a horizon "
                    "past the data's end is not counted",
        "markout_horizons_ms": [h // 1_000_000 for h in settings.markout_horizons_ns],
        "latency": "acknowledgements only: order entry = exch_ts - send_ts, round trip = stage_ts - send_ts, "
                   "microseconds; a zero time is unknown and not counted",
        "gap_threshold_s": settings.gap_threshold_ns / NS,
        "gaps": "per instrument: consecutive accepted events further apart in event time than the threshold",
        "floats": "rounded to 12 significant digits; NaN and infinity are null",
        "attribution_by_strategy": "each strategy's own fills marked at the end mark; funding is per instrument only",
        "slippage": "per strategy and algo (none: plain orders; route: an intent's split across venues; twap, pov, "
                    "iceberg): side * (average fill price - arrival mid) / arrival mid, bps, positive = cost, "
                    "weighted by filled notional; arrival_cost_bps per parent (an intent's whole order; its mid at "
                    "the intent's origin_ts on the intent's venue), child_cost_bps per child order (its venue's mid "
                    "when it was sent)",
    }
