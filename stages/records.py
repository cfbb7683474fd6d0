"""Record layouts, declared once: one numpy structured dtype per stage boundary.

Every record is ``align=True`` and a multiple of 64 bytes (checked at import), and carries the
originating market event's receive time (``origin_ts``, ns) and feed sequence (``origin_seq``) as its
first two fields (a market event's are its own) so each
stage's and the whole chain's latency can be measured. ``_ts`` fields are CLOCK_REALTIME ns (in fused mode
the synthetic clock); prices and sizes are float64 in quote/base units.
"""
import numpy as np

from shm.segment import layout_hash

RECORDS_VERSION = 6  # 6: PREDICTION gained size_scale
                     # 5: PREDICTION gained confidence and members_alive; 4: ORDER_INTENT gained route and the algo fields; EXEC_REPORT and ORDER gained the parent order
                     # 3: the event's trade fields ride to strategy; ORDER_INTENT gained regime and signal
                     # 2: EXEC_REPORT gained exch_ts and send_ts; REP_FUNDING; REJ_VENUE
BOOK_LEVELS = 5
N_FEATURES = 28

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
EV_UNPARSABLE = 15 # an input line the source's parser refused: carries no market data; validate quarantines it

# MarketEvent.flags (bits)
F_SNAPSHOT = 1     # a delta that belongs to a full-depth snapshot (a fresh book starts here)
                   # (on an EV_BOOK view of a venue's L2 book: the first view after that book was synced)
F_LAST = 2         # the last record decoded from one venue message
F_UNSYNCED = 4     # the source cannot vouch for the book yet (deltas before any snapshot)
# Synthetic events only: bits 3-4 hold 1 + the feed's true regime of the symbol (REGIME_*), 0 elsewhere. For
# evaluating the regime detector from a journal; no stage reads it.
F_SIM_REGIME_SHIFT = 3
F_SIM_REGIME_MASK = 3 << F_SIM_REGIME_SHIFT

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
    # Clock-based features below: exponential weights 0.5 ** (age / half-life) by event time (origin_ts);
    # the suffix is the half-life. See stages/feature.py for each definition.
    "mid",                 # (bid + ask) / 2, quote units
    "microprice",          # (bid * ask_sz + ask * bid_sz) / (bid_sz + ask_sz), quote units
    "imbalance_10",        # ten-level size imbalance in [-1, 1] (as deep as the book view goes)
    "ofi_1s",              # order-flow imbalance (Cont, Kukanov & Stoikov 2014), normalised to [-1, 1]
    "ofi_10s",
    "tfi_1s",              # trade-flow imbalance: signed / total traded volume, [-1, 1]
    "tfi_10s",
    "rvol_1s_bps",         # realised volatility: sqrt of the weighted sum of squared mid returns
    "rvol_10s_bps",
    "rvol_60s_bps",
    "mom_1s_bps",          # mid against its time-weighted EWMA
    "mom_10s_bps",
    "mom_60s_bps",
    "vwap_dev_10s_bps",    # mid against the time-weighted VWAP of trades
    "vwap_dev_60s_bps",
    "basis_bps",           # mid against the mean mid of the same symbol on the other venues
    "funding_rate_bps",    # the latest funding rate
    "time_to_funding_s",   # seconds to the next funding time (0 when unknown)
    "liq_intensity_60s",   # liquidations per second (exponential kernel)
    "liq_notional_60s",    # liquidated notional per second, quote units
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
    ("side", np.int8),           # the event's own trade or liquidation (aggressor side, price, size); 0 for books
    ("price", np.float64),
    ("size", np.float64),
])

# RiskDecision.reasons bit flags: why the size budget was reduced
RISK_POSITION_LIMIT = 1
RISK_NOTIONAL_LIMIT = 2
RISK_VOLATILITY = 4
RISK_NO_MARKET = 8
RISK_DRAWDOWN = 16       # soft drawdown: size halved
RISK_HEAT = 32           # portfolio heat: no new risk above the limit
RISK_GROSS_LIMIT = 64    # gross notional (sum of |positions|) limit
RISK_LIQUIDATION = 128   # distance to the liquidation price below the configured multiple of volatility
RISK_KELLY = 256         # strategy: order sized by fractional Kelly below the budget
RISK_NAMES = {RISK_POSITION_LIMIT: "position limit", RISK_NOTIONAL_LIMIT: "order notional limit",
              RISK_VOLATILITY: "volatility", RISK_NO_MARKET: "no market", RISK_DRAWDOWN: "soft drawdown",
              RISK_HEAT: "portfolio heat", RISK_GROSS_LIMIT: "gross limit", RISK_LIQUIDATION: "liquidation distance",
              RISK_KELLY: "fractional Kelly"}

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
    ("equity", np.float64),      # quote currency, marked to the latest mids
    ("drawdown", np.float64),    # from peak equity, a fraction
    ("heat", np.float64),        # portfolio risk to stop over equity, before this decision
    ("garch_sigma_bps", np.float64),    # GARCH(1,1) next-bar volatility
    ("horizon_sigma_bps", np.float64),  # GARCH volatility of the risk horizon's return
    ("reduce_qty", np.float64),  # signed quantity risk wants traded now to restore the liquidation distance
    ("kind", np.uint8),          # the market event's, and its trade fields (FEATURE_VECTOR), carried to strategy
    ("side", np.int8),
    ("price", np.float64),
    ("size", np.float64),
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
    ("equity", np.float64),      # the risk decision's inputs, carried so every order can be explained
    ("drawdown", np.float64),
    ("heat", np.float64),
    ("garch_sigma_bps", np.float64),
    ("horizon_sigma_bps", np.float64),
    ("reduce_qty", np.float64),
    ("kind", np.uint8),          # the market event's and its trade fields (side, price, size; 0 for books)
    ("side", np.int8),
    ("price", np.float64),
    ("size", np.float64),
    ("values", np.float64, (N_FEATURES,)),  # the features, for the strategies' own signals
    ("confidence", np.float64),  # the ensemble's agreement in [0, 1] (stages.ensemble.combine); 1 for a single model
    ("members_alive", np.uint8), # members that answered for this batch; 0 = no view (prob_up 0.5)
    ("size_scale", np.float64),  # the sizer's multiple of the signal strategy's order sizes (0: none); 1 without one
])

# OrderIntent.kind
INTENT_IOC = 1      # take liquidity now; unfilled remainder is cancelled
INTENT_QUOTE = 2    # rest a quote; replaces this strategy's previous quote on that side
INTENT_CANCEL_ALL = 3

# strategy ids
STRAT_DIRECTIONAL = 1
STRAT_QUOTER = 2
STRAT_FLATTEN = 3     # execute's own reduce-only orders after a kill
STRAT_RISK_REDUCE = 4 # reduce-only orders the risk stage asks for (liquidation distance)
STRAT_MOMENTUM = 5    # stages.strategies.momentum: trend-following taker (trending regime)
STRAT_MEAN_REVERSION = 6  # stages.strategies.mean_reversion: fades deviations from fair value (range-bound)
STRAT_MARKET_MAKING = 7   # stages.strategies.market_making: Avellaneda-Stoikov quotes
STRAT_ARBITRAGE = 8   # stages.strategies.arbitrage: the same instrument across two venues, both legs
STRATEGY_NAMES = {STRAT_DIRECTIONAL: "directional", STRAT_QUOTER: "quoter", STRAT_FLATTEN: "flatten",
                  STRAT_RISK_REDUCE: "risk_reduce", STRAT_MOMENTUM: "momentum", STRAT_MEAN_REVERSION: "mean_reversion",
                  STRAT_MARKET_MAKING: "market_making", STRAT_ARBITRAGE: "arbitrage"}  # report keys

# Market regimes: the synthetic feed's true one (MARKET_EVENT.flags, F_SIM_REGIME_*) and the regime detector's
REGIME_TRENDING, REGIME_RANGE, REGIME_VOLATILE = range(3)
REGIME_NAMES = ("trending", "range-bound", "volatile")

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
    ("risk_reasons", np.uint32),  # the risk decision's RISK_* bits (+ RISK_KELLY): why the size is what it is
    ("kelly_f", np.float64),      # fractional Kelly target (position notional over equity, signed)
    ("budget", np.float64),       # the risk budget on this side (base units)
    ("horizon_sigma_bps", np.float64),
    ("heat", np.float64),
    ("drawdown", np.float64),
    ("regime", np.uint8),         # 1 + the regime (REGIME_*) the allocator saw; 0: the strategy has none
    ("signal", np.float64),       # the strategy's decision value (its module says the unit: bps of edge, z-score)
    # How execute works a taker (INTENT_IOC) intent (stages.routing); all 0: one order on the named venue, as before.
    ("route", np.uint8),          # ROUTE_*: ROUTE_ANY lets the router split it across the venues listing the symbol
    ("algo", np.uint8),           # ALGO_*: work it as a parent order whose children pass the gate one by one
    ("algo_horizon_ms", np.float64),  # TWAP: the span of its slices; POV, iceberg: the deadline (0 = none)
    ("algo_param", np.float64),   # TWAP: slices; POV: share of the traded volume, (0, 1]; iceberg: shown qty (base)
    ("algo_max_child", np.float64),  # POV: the largest child (base units; 0 = no cap)
])

# OrderIntent.route
ROUTE_NAMED = 0     # the intent's own venue only
ROUTE_ANY = 1       # any venue that lists the symbol: the smart order router picks and splits
# OrderIntent.algo, and ExecReport.algo of a child order (with parent_id 0 on a plain order)
ALGO_NONE, ALGO_TWAP, ALGO_POV, ALGO_ICEBERG = range(4)
ALGO_NAMES = {ALGO_NONE: "none", ALGO_TWAP: "twap", ALGO_POV: "pov", ALGO_ICEBERG: "iceberg"}

# Order.state and ExecReport.state
ORD_NEW, ORD_ACKED, ORD_PARTIAL, ORD_FILLED, ORD_CANCELLED, ORD_REJECTED = range(1, 7)
# Not an order state: an ExecReport with this state is a funding payment on a perpetual position (order_id 0,
# price = funding rate, qty = position it was paid on, fee = amount paid in quote currency, negative = received).
REP_FUNDING = 7
ORD_PENDING_CANCEL = 8  # a cancel was sent; the order is open (and can fill) until the venue answers
# A live venue's amend in place: sent (price, qty: the ones asked for), applied (price, qty: the order's now), refused
# (price, qty: the order's, unchanged). The order stays open (and can fill) throughout.
ORD_PENDING_AMEND, ORD_AMENDED, ORD_AMEND_REJECTED = 9, 10, 11
ORDER_STATE_NAMES = {ORD_NEW: "new", ORD_ACKED: "acknowledged", ORD_PARTIAL: "partially filled",
                     ORD_FILLED: "filled", ORD_CANCELLED: "cancelled", ORD_REJECTED: "rejected",
                     REP_FUNDING: "funding payment", ORD_PENDING_CANCEL: "pending cancel",
                     ORD_PENDING_AMEND: "pending amend", ORD_AMENDED: "amended", ORD_AMEND_REJECTED: "amend rejected"}

# ExecReport.reject_reason
REJ_TRADING_DISABLED = 1
REJ_TOO_MANY_ORDERS = 2
REJ_BAD_QTY = 3
REJ_NO_MARKET = 4
REJ_MAX_QTY = 5          # order quantity above the per-order maximum
REJ_MAX_NOTIONAL = 6     # order notional above the per-order maximum
REJ_PRICE_COLLAR = 7     # limit price too far from the reference (mid) price
REJ_RATE_LIMIT = 8       # order rate above the token bucket
REJ_DUPLICATE = 9        # the same order (instrument, side, price, qty) is open or was just sent
REJ_POSITION_LIMIT = 10  # the position after a full fill (with open orders on that side) would exceed the limit
REJ_VENUE = 11           # the venue refused it (post-only that would cross, or the latency model says rejected)
REJ_GATEWAY = 12         # a live venue's gateway is not taking commands (its ring is full: it is behind or down)
REJ_NAMES = {REJ_TRADING_DISABLED: "trading disabled", REJ_TOO_MANY_ORDERS: "too many open orders",
             REJ_BAD_QTY: "bad quantity or price", REJ_NO_MARKET: "no market", REJ_MAX_QTY: "max order quantity",
             REJ_MAX_NOTIONAL: "max order notional", REJ_PRICE_COLLAR: "price collar", REJ_RATE_LIMIT: "rate limit",
             REJ_DUPLICATE: "duplicate order", REJ_POSITION_LIMIT: "position limit after fill",
             REJ_VENUE: "venue rejected", REJ_GATEWAY: "venue gateway unavailable"}

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
    ("send_ts", np.int64),       # local time the order was sent to the venue
    ("cancel_ts", np.int64),     # local time a cancel was sent; 0 = none in flight
    ("cancel_after_ts", np.int64),  # a live venue refused its cancel: not asked again before this local time
    ("cancel_rejects", np.int32),   # cancels a live venue refused for this order
    ("amend_price", np.float64),    # an amend in flight (live venues): the price and total quantity asked for
    ("amend_qty", np.float64),
    ("parent", np.int32),        # 1 + its parent's row in execute's parent table (stages.routing); 0 = none
    ("algo", np.uint8),          # the parent's ALGO_*
])

EXEC_REPORT = _padded([
    ("origin_ts", np.int64),
    ("origin_seq", np.int64),
    ("stage_ts", np.int64),      # local time the report was produced (a venue answer: when it arrived back)
    ("exch_ts", np.int64),       # venue time the venue acted (ack, fill, cancel, funding); 0 = local only
    ("send_ts", np.int64),       # local time the order (or the cancel this answers) was sent; 0 = none
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
    ("parent_id", np.uint32),    # a child order's parent: the low 32 bits of the parent intent's intent_id; 0 = none
    ("algo", np.uint8),          # the parent's ALGO_* (ALGO_NONE with a parent_id: a routed split)
])

# A live venue: execute's commands to the venue's gateway process (pipeline.venues) and the gateway's answers, one
# ring each way per live venue. The client order id at the venue is derived from ``order_id`` (pipeline.venues
# .client_ids), so a query by it finds the order after a timeout or a restart. The gateway only speaks the
# venue's protocol: the order's state lives in execute (stages.order_state).
# CMD_AMEND: the open order's new limit price and new TOTAL quantity (filled part included), in place: same ids
CMD_NEW, CMD_CANCEL, CMD_AMEND = 1, 2, 3
VENUE_COMMAND = _padded([
    ("origin_ts", np.int64),
    ("origin_seq", np.int64),
    ("send_ts", np.int64),       # local time execute sent it
    ("order_id", np.int64),      # execute's id of the order (a cancel: the order to cancel)
    ("slot", np.int64),          # execute's order slot, echoed in every answer
    ("key", np.int64),           # instrument key (stages.universe)
    ("kind", np.uint8),          # CMD_*
    ("order_kind", np.uint8),    # INTENT_IOC | INTENT_QUOTE
    ("side", np.int8),
    ("price", np.float64),
    ("qty", np.float64),
])

# VENUE_ANSWER.kind: the venue model's answer codes (stages.venue.exchange R_*), so execute takes both alike
# (only live venues amend: ANS_AMENDED carries the order's price and total quantity now; ANS_AMEND_REJECTED its old)
ANS_ACK, ANS_FILL, ANS_CANCELLED, ANS_REJECTED, ANS_CANCEL_REJECTED, ANS_FUNDING, ANS_AMENDED, ANS_AMEND_REJECTED = \
    range(1, 9)
VENUE_ANSWER = _padded([
    ("arrive_ts", np.int64),     # local time the gateway had the answer
    ("exch_ts", np.int64),       # venue time of what it reports
    ("send_ts", np.int64),       # the command's send_ts (0 when the answer came unasked: a stream update)
    ("order_id", np.int64),
    ("slot", np.int64),          # -1: the gateway does not know it (an order of a previous incarnation)
    ("key", np.int64),
    ("side", np.int64),
    ("kind", np.int64),          # ANS_*
    ("liquidity", np.int64),     # fills: +1 maker, -1 taker
    ("trade_id", np.int64),      # fills: the venue's trade id (a repeated one is ignored); else 0
    ("price", np.float64),       # fill price, or the order's
    ("qty", np.float64),         # fill quantity
    ("leaves", np.float64),      # quantity still open after this answer
    ("fee", np.float64),         # quote currency
])

# What one execute step consumed, journalled by a live run so a replay calls the kernel exactly as the run did:
# the step's intents are the next n_intents of the intent stream, its market events the next n_market events
# validate forwarded (validate over the market stream), its reports the next n_reports of the exec stream.
EXECUTE_STEP = _padded([
    ("origin_ts", np.int64),       # the step's last market event's (0: none), so spans read like every stream's
    ("origin_seq", np.int64),      # its feed sequence: checks the replay's market alignment
    ("now_ns", np.int64),          # the now the step was called with
    ("first_intent_id", np.int64),  # its first intent's id (0: none): checks the intent alignment
    ("n_intents", np.int32),
    ("n_market", np.int32),
    ("n_reports", np.int32),
    ("enabled", np.uint8),         # trading_enabled read just before the step
    ("enabled_after", np.uint8),   # and just after it: they differ when the gate moved during the step
])

ALL = {
    "market_event": MARKET_EVENT, "feature_vector": FEATURE_VECTOR, "risk_decision": RISK_DECISION,
    "prediction": PREDICTION, "order_intent": ORDER_INTENT, "order": ORDER, "exec_report": EXEC_REPORT,
    "execute_step": EXECUTE_STEP, "venue_command": VENUE_COMMAND, "venue_answer": VENUE_ANSWER,
}
for _name, _dtype in ALL.items():
    assert _dtype.itemsize % 64 == 0, f"record {_name} is {_dtype.itemsize} bytes, not a multiple of 64"

FEATURE_SCHEMA_VERSION = 3  # bump when a feature's definition changes under the same name (3: basis_bps ignores stale venues)
FEATURE_DTYPES = ("float64",) * N_FEATURES  # one per name; the vector's ``values`` field
FEATURE_SCHEMA_HASH = layout_hash("features", FEATURE_SCHEMA_VERSION, FEATURE_NAMES, FEATURE_DTYPES) & 0xFFFF_FFFF
