"""Writing an order intent: every strategy kernel fills one the same way, with the risk inputs of the prediction
that caused it, so any order can be explained from its intent alone."""
from numba import njit

from stages.records import BUY, INTENT_IOC


@njit(cache=True)
def write_intent(o, p, intent_ids, kind, side, price, qty, strategy, now_ns, kelly_f=0.0, extra_reasons=0,
                 regime=0, signal=0.0):
    """Intent ``o`` answering prediction ``p``, carrying its risk inputs, the regime the allocator saw (1 +
    REGIME_*, 0: none) and the strategy's decision value (its module states the unit)."""
    intent_ids[0] += 1
    o["risk_reasons"] = p["reasons"] | extra_reasons
    o["kelly_f"] = kelly_f
    o["budget"] = p["buy_budget"] if side == BUY else p["sell_budget"]
    o["horizon_sigma_bps"] = p["horizon_sigma_bps"]
    o["heat"] = p["heat"]
    o["drawdown"] = p["drawdown"]
    o["origin_ts"] = p["origin_ts"]
    o["origin_seq"] = p["origin_seq"]
    o["stage_ts"] = now_ns
    o["intent_id"] = intent_ids[0]
    o["venue"] = p["venue"]
    o["symbol"] = p["symbol"]
    o["kind"] = kind
    o["side"] = side
    o["strategy"] = strategy
    o["price"] = price
    o["qty"] = qty
    o["regime"] = regime
    o["signal"] = signal


@njit(cache=True)
def take_toward(out, n_out, p, intent_ids, target, held, min_qty, budget_buy, budget_sell, strategy, now_ns,
                regime, signal, kelly_f=0.0):
    """One IOC at the touch that moves the strategy's own position ``held`` toward ``target`` (base units,
    signed), capped by risk's budget on that side; nothing when the step is below ``min_qty``. Returns the
    intents written so far."""
    step = target - held
    if abs(step) < min_qty:
        return n_out
    side = BUY if step > 0.0 else -BUY
    reducing = held * step < 0.0 and abs(step) <= abs(held) + 1e-12
    qty = abs(step) if reducing else min(abs(step), budget_buy if side == BUY else budget_sell)
    if qty < min_qty:
        return n_out
    price = p["ask"] if side == BUY else p["bid"]
    write_intent(out[n_out], p, intent_ids, INTENT_IOC, side, price, qty, strategy, now_ns, kelly_f, 0, regime,
                 signal)
    return n_out + 1
