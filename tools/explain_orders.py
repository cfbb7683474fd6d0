"""Explain orders from a journal: each order or rejection next to the risk inputs that sized it.

    bot4 risk explain JOURNAL [--limit N] [--rejected] [--config RUN.toml]

Intents carry the risk decision's reasons (``records.RISK_NAMES``), the fractional Kelly target, the side's
budget, the GARCH horizon sigma, heat and drawdown; execution reports carry what the venue (or the gate)
made of them. An intent is matched to the first later acknowledgement or rejection with the same origin,
instrument, side, price and quantity (execute answers intents in order, one answer each).

A rejection carries its reason code, not the limit's value; with the run's config (``--config``) a
rejection by a quantity, notional or position limit also names the limit that applied to its symbol
(``execute.max_order_qty_by_symbol BTC-USDT=2.5``, or the global key).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict, deque

import numpy as np

from pipeline.store.journal import JournalReader
from stages import records


def reason_names(bits: int) -> str:
    names = [name for bit, name in sorted(records.RISK_NAMES.items()) if bits & bit]
    return ", ".join(names) if names else "-"


def explain(intents: np.ndarray, reports: np.ndarray) -> list[tuple[np.void, np.void]]:
    """(intent, report) for every order acknowledged or rejected, in report order: a plain order's own intent; a
    routed or algo child's parent intent (EXEC_REPORT.parent_id, the low 32 bits of its intent_id)."""
    waiting = defaultdict(deque)
    parents = {}
    for i in range(len(intents)):
        it = intents[i]
        waiting[(int(it["origin_seq"]), int(it["venue"]), int(it["symbol"]), int(it["side"]), float(it["price"]),
                 float(it["qty"]))].append(i)
        parents[int(it["intent_id"]) & 0xFFFFFFFF] = i
    answered = reports[(reports["state"] == records.ORD_ACKED) | (reports["state"] == records.ORD_REJECTED)]
    out = []
    for r in answered:
        if r["parent_id"]:
            if int(r["parent_id"]) in parents:
                out.append((intents[parents[int(r["parent_id"])]], r))
            continue
        key = (int(r["origin_seq"]), int(r["venue"]), int(r["symbol"]), int(r["side"]), float(r["price"]),
               float(r["qty"]))
        if waiting[key]:
            out.append((intents[waiting[key].popleft()], r))
    return out


# the gate limit behind each per-instrument rejection reason (pipeline.config.GATE_LIMITS)
LIMIT_OF_REASON = {records.REJ_MAX_QTY: "max_order_qty", records.REJ_MAX_NOTIONAL: "max_order_usd",
                   records.REJ_POSITION_LIMIT: "max_position_usd"}


def limit_applied(report: np.void, config) -> str:
    """The config key and value of the limit that rejected ``report``; "" if none or no config."""
    limit = LIMIT_OF_REASON.get(int(report["reject_reason"]))
    if config is None or limit is None or int(report["symbol"]) >= len(config.feed.symbols):
        return ""
    symbol = config.feed.symbols[int(report["symbol"])]
    value, key = config.execute.gate_limit(limit, symbol)
    return f"{key} {symbol}={value:g}" if key.endswith("_by_symbol") else f"{key}={value:g}"


def why(intent: np.void) -> str:
    """The allocator's regime and the strategy's own decision value, for intents of the regime mode."""
    code = int(intent["regime"])
    if code == 0:
        return ""
    name = records.REGIME_NAMES[code - 1] if code <= len(records.REGIME_NAMES) else "?"
    return f" (regime {name}, signal {intent['signal']:+.4g})"


def line(intent: np.void, report: np.void, config=None) -> str:
    side = "buy" if intent["side"] == records.BUY else "sell"
    if report["state"] == records.ORD_REJECTED:
        applied = limit_applied(report, config)
        outcome = (f"REJECTED ({records.REJ_NAMES.get(int(report['reject_reason']), '?')}"
                   f"{'; limit ' + applied if applied else ''})")
    else:
        outcome = f"order {int(report['order_id'])}"
    return (f"{int(intent['origin_ts'])} {outcome}: {side} {intent['qty']:.6g} @ {intent['price']:.8g} "
            f"venue {int(intent['venue'])} symbol {int(intent['symbol'])} strategy "
            f"{records.STRATEGY_NAMES.get(int(intent['strategy']), int(intent['strategy']))}{why(intent)} | "
            f"budget {intent['budget']:.6g} kelly f {intent['kelly_f']:+.4f} sigma(h) {intent['horizon_sigma_bps']:.1f} "
            f"bps heat {intent['heat']:.4f} drawdown {intent['drawdown']:.2%} | sized by: "
            f"{reason_names(int(intent['risk_reasons']))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bot4 risk explain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("journal", help="journal directory with intent and exec streams")
    parser.add_argument("--limit", type=int, default=50, help="at most this many lines (0 = all)")
    parser.add_argument("--rejected", action="store_true", help="only rejections")
    parser.add_argument("--config", help="the run's TOML config: name the gate limit behind each rejection")
    args = parser.parse_args(argv)
    config = None
    if args.config:
        from pipeline.config import ConfigError, load
        try:
            config = load(args.config)
        except ConfigError as exc:
            print(f"bot4 risk explain: config error: {exc}", file=sys.stderr)
            return 2
    intents = JournalReader(args.journal, "intent", records.ORDER_INTENT).read_all()
    reports = JournalReader(args.journal, "exec", records.EXEC_REPORT).read_all()
    pairs = explain(intents, reports)
    if args.rejected:
        pairs = [(i, r) for i, r in pairs if r["state"] == records.ORD_REJECTED]
    for intent, report in pairs[:args.limit or None]:
        print(line(intent, report, config))
    print(f"{len(pairs):,} {'rejected' if args.rejected else 'answered'} intents of {len(intents):,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
