"""Record layouts, declared once: one numpy structured dtype per stage boundary.

Every record is ``align=True`` and a multiple of 64 bytes (checked at import), and carries the
originating market event's receive time (``origin_ts``, ns) and feed sequence (``origin_seq``) as its
first two fields (a market event's are its own) so each
stage's and the whole chain's latency can be measured. ``_ts`` fields are CLOCK_REALTIME ns (in fused mode
the synthetic clock); prices and sizes are float64 in quote/base units.
"""
import numpy as np

from shm.segment import layout_hash

RECORDS_VERSION = 1
BOOK_LEVELS = 5
N_FEATURES = 8

def _padded(fields: list) -> np.dtype:
    """An aligned dtype with named alignment pads and a trailing ``reserved`` field up to a multiple of 64 bytes."""
    aligned = np.dtype(fields, align=True)
    explicit, offset = [], 0
    for name, *rest in fields:
        field_offset = aligned.fields[name][1]
        if field_offset > offset:  # alignment gap: a named pad, so every byte of a record is defined
            explicit.append((f"_pad{offset}", np.uint8, (field_offset - offset,)))
        explicit.append((name, *rest))
        offset = field_offset + aligned.fields[name][0].itemsize
    reserved = -offset % 64
    if reserved < 8:
        reserved += 64  # always keep room to grow
    return np.dtype(explicit + [("reserved", np.uint8, (reserved,))], align=True)


# MarketEvent.kind
EV_BOOK = 1        # book view: BOOK_LEVELS levels per side (synthetic feed; or a top-N snapshot)
EV_TRADE = 2       # a trade: price, size, side (+1 buyer-initiated, -1 seller-initiated)
EV_BOOK_DELTA = 3  # one L2 level: side, price, size (0 = level removed); first_seq..venue_seq of its message
EV_BBO = 4         # best bid/offer: bid_px[0], bid_sz[0], ask_px[0], ask_sz[0]
EV_FUNDING = 5     # price = funding rate, aux = next funding time (ns)
EV_LIQUIDATION = 6 # side (of the liquidated order), price, size
EV_MARK = 7        # price = mark price, aux = index price

# MarketEvent.flags (bits)
F_SNAPSHOT = 1     # a delta that belongs to a full-depth snapshot (a fresh book starts here)
                   # (on an EV_BOOK view of a venue's L2 book: the first view after that book was synced)
F_LAST = 2         # the last record decoded from one venue message
F_UNSYNCED = 4     # the source cannot vouch for the book yet (deltas before any snapshot)

# Sides
BUY = 1
SELL = -1

MARKET_EVENT = _padded([
    ("origin_ts", np.int64),     # receive time: the origin of this and every downstream record
    ("origin_seq", np.int64),    # feed sequence, dense from 1 across all venues and symbols
    ("exch_ts", np.int64),       # venue time
    ("venue_seq", np.int64),     # the venue's own sequence for (venue, symbol)
    ("kind", np.uint8),
    ("side", np.int8),
    ("venue", np.uint16),
    ("symbol", np.uint16),
    ("reason", np.uint16),       # quarantine reason (0 = valid)
    ("flags", np.uint8),         # F_* bits
    ("price", np.float64),       # trade / delta / liquidation price, funding rate, mark price
    ("size", np.float64),        # trade / delta / liquidation size
    ("first_seq", np.int64),     # the venue's first sequence of the message (Binance U); 0 if none
    ("prev_seq", np.int64),      # the venue's previous final sequence (Binance futures pu); 0 if none
    ("aux", np.float64),         # kind-specific: next funding time (ns), index price
    ("bid_px", np.float64, (BOOK_LEVELS,)),
    ("bid_sz", np.float64, (BOOK_LEVELS,)),
    ("ask_px", np.float64, (BOOK_LEVELS,)),
    ("ask_sz", np.float64, (BOOK_LEVELS,)),
])

FEATURE_NAMES = (
    "spread_bps",          # (ask - bid) / mid
    "microprice_dev_bps",  # size-weighted microprice minus mid
    "imbalance_1",         # top-of-book size imbalance in [-1, 1]
    "imbalance_5",         # five-level size imbalance in [-1, 1]
    "ret_1_bps",           # mid return since the previous event of this (venue, symbol)
    "momentum_bps",        # EWMA of mid returns (half-life ~10 events)
    "rvol_bps",            # EWMA realised volatility of mid returns (half-life ~50 events)
    "trade_flow",          # EWMA signed trade-volume imbalance in [-1, 1]
)
assert len(FEATURE_NAMES) == N_FEATURES

FEATURE_VECTOR = _padded([
    ("origin_ts", np.int64),
    ("origin_seq", np.int64),
    ("stage_ts", np.int64),      # when the feature stage produced it
    ("venue", np.uint16),
    ("symbol", np.uint16),
    ("kind", np.uint8),          # the market event kind that caused it
    ("schema_hash", np.uint32),  # FEATURE_SCHEMA_HASH; downstream refuses a mismatch
    ("bid", np.float64),
    ("ask", np.float64),
    ("bid_sz", np.float64),
    ("ask_sz", np.float64),
    ("values", np.float64, (N_FEATURES,)),
])

# RiskDecision.reasons bit flags: why the size budget was reduced
RISK_POSITION_LIMIT = 1
RISK_NOTIONAL_LIMIT = 2
RISK_VOLATILITY = 4
RISK_NO_MARKET = 8
RISK_DRAWDOWN = 16       # soft drawdown: size halved

RISK_DECISION = _padded([
    ("origin_ts", np.int64),
    ("origin_seq", np.int64),
    ("stage_ts", np.int64),
    ("venue", np.uint16),
    ("symbol", np.uint16),
    ("reasons", np.uint32),
    ("bid", np.float64),
    ("ask", np.float64),
    ("position", np.float64),    # base units, signed
    ("buy_budget", np.float64),  # max additional long size allowed now
    ("sell_budget", np.float64), # max additional short size allowed now
    ("sigma_bps", np.float64),   # volatility used for the budget
    ("values", np.float64, (N_FEATURES,)),  # the features, carried for inference
])

PREDICTION = _padded([
    ("origin_ts", np.int64),
    ("origin_seq", np.int64),
    ("stage_ts", np.int64),
    ("venue", np.uint16),
    ("symbol", np.uint16),
    ("reasons", np.uint32),
    ("bid", np.float64),
    ("ask", np.float64),
    ("position", np.float64),
    ("buy_budget", np.float64),
    ("sell_budget", np.float64),
    ("sigma_bps", np.float64),
    ("prob_up", np.float64),     # model probability that the mid rises over the label horizon
])

# OrderIntent.kind
INTENT_IOC = 1      # take liquidity now; unfilled remainder is cancelled
INTENT_QUOTE = 2    # rest a quote; replaces this strategy's previous quote on that side
INTENT_CANCEL_ALL = 3

# strategy ids
STRAT_DIRECTIONAL = 1
STRAT_QUOTER = 2
STRAT_FLATTEN = 3     # execute's own reduce-only orders after a kill

ORDER_INTENT = _padded([
    ("origin_ts", np.int64),
    ("origin_seq", np.int64),
    ("stage_ts", np.int64),
    ("intent_id", np.int64),
    ("venue", np.uint16),
    ("symbol", np.uint16),
    ("kind", np.uint8),
    ("side", np.int8),
    ("strategy", np.uint8),
    ("price", np.float64),
    ("qty", np.float64),
])

# Order.state and ExecReport.state
ORD_NEW, ORD_ACKED, ORD_PARTIAL, ORD_FILLED, ORD_CANCELLED, ORD_REJECTED = range(1, 7)
ORDER_STATE_NAMES = {ORD_NEW: "new", ORD_ACKED: "acknowledged", ORD_PARTIAL: "partially filled",
                     ORD_FILLED: "filled", ORD_CANCELLED: "cancelled", ORD_REJECTED: "rejected"}

# ExecReport.reject_reason
REJ_TRADING_DISABLED = 1
REJ_TOO_MANY_ORDERS = 2
REJ_BAD_QTY = 3
REJ_NO_MARKET = 4

ORDER = _padded([
    ("order_id", np.int64),
    ("intent_id", np.int64),
    ("origin_ts", np.int64),
    ("origin_seq", np.int64),
    ("created_ts", np.int64),
    ("venue", np.uint16),
    ("symbol", np.uint16),
    ("side", np.int8),
    ("kind", np.uint8),
    ("state", np.uint8),
    ("strategy", np.uint8),
    ("price", np.float64),
    ("qty", np.float64),
    ("filled", np.float64),
])

EXEC_REPORT = _padded([
    ("origin_ts", np.int64),
    ("origin_seq", np.int64),
    ("stage_ts", np.int64),
    ("order_id", np.int64),
    ("venue", np.uint16),
    ("symbol", np.uint16),
    ("side", np.int8),
    ("state", np.uint8),         # the order's state after this report
    ("liquidity", np.int8),      # fills: +1 maker, -1 taker
    ("strategy", np.uint8),
    ("reject_reason", np.uint16),
    ("price", np.float64),       # order price (new/acked/cancelled) or fill price
    ("qty", np.float64),         # order qty or fill qty
    ("leaves", np.float64),      # quantity still open
    ("fee", np.float64),         # quote currency
    ("position", np.float64),    # position of (venue, symbol) after this report
])

ALL = {
    "market_event": MARKET_EVENT, "feature_vector": FEATURE_VECTOR, "risk_decision": RISK_DECISION,
    "prediction": PREDICTION, "order_intent": ORDER_INTENT, "order": ORDER, "exec_report": EXEC_REPORT,
}
for _name, _dtype in ALL.items():
    assert _dtype.itemsize % 64 == 0, f"record {_name} is {_dtype.itemsize} bytes, not a multiple of 64"

FEATURE_SCHEMA_HASH = layout_hash("features", FEATURE_NAMES) & 0xFFFF_FFFF
