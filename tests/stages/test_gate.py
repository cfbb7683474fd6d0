"""The pre-trade gate in execute: every rejection reason produced, reported with its code, counted, and
never turned into an order."""
import numpy as np
import pytest

from pipeline import graph, kill_reasons
from pipeline.config import Config, ConfigError, from_dict
from shm import control as cb
from stages import execute, records
from stages.records import BUY, EV_BOOK, INTENT_IOC, INTENT_QUOTE, ORD_NEW, ORD_REJECTED, SELL
from stages.universe import MAX_KEYS, instrument_key
from tests.conftest import instant_venue, kernel_params

MS = 1_000_000


def book(bid=100.0, ask=100.5, size=5.0, tick=0.5, seq=1, symbol=0, venue=0):
    ev = np.zeros(1, records.MARKET_EVENT)[0]
    ev["kind"], ev["origin_seq"], ev["venue_seq"], ev["origin_ts"] = EV_BOOK, seq, seq, seq
    ev["venue"], ev["symbol"] = venue, symbol
    for j in range(records.BOOK_LEVELS):
        ev["bid_px"][j], ev["ask_px"][j] = bid - j * tick, ask + j * tick
        ev["bid_sz"][j] = ev["ask_sz"][j] = size
    return ev


def intent(kind, side, price, qty, intent_id=1, symbol=0, venue=0):
    it = np.zeros(1, records.ORDER_INTENT)[0]
    it["kind"], it["side"], it["price"], it["qty"], it["intent_id"] = kind, side, price, qty, intent_id
    it["venue"], it["symbol"] = venue, symbol
    it["strategy"] = records.STRAT_DIRECTIONAL
    return it


class Gate:
    def __init__(self, **limits):
        self.state = execute.make_state()
        self.params = kernel_params("execute", venue=instant_venue(), event_clock=False, max_open_orders=64, **limits)
        self.ctl = np.zeros(cb.GLOBAL_WORDS, np.int64)
        self.ctl[cb.G_TRADING_ENABLED] = 1
        self.stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
        self.out = np.zeros(execute.out_capacity(16), records.EXEC_REPORT)
        self.send(market=[book()])

    def send(self, intents=(), market=(), now_ns=1_000 * MS):
        intents = np.array(list(intents), records.ORDER_INTENT)
        market = np.array(list(market), records.MARKET_EVENT)
        n = execute.step(intents, len(intents), market, len(market), self.state, self.params, self.ctl,
                         self.stats, self.out, now_ns)
        return self.out[:n].copy()

    def rejected(self, reason):
        return int(self.stats[execute.ST_REJ_BASE + reason - 1])

    @property
    def position(self):
        return self.state[5][0]


def assert_rejected(gate, reports, reason):
    """One report, a rejection with ``reason``; no order was acknowledged for it; the reason's counter moved."""
    assert len(reports) == 1
    r = reports[0]
    assert r["state"] == ORD_REJECTED and r["reject_reason"] == reason and r["order_id"] == 0
    assert gate.rejected(reason) >= 1


def test_the_stats_name_one_counter_per_rejection_reason():
    names = execute.STATS[execute.ST_REJ_BASE:]
    assert len(names) == len(records.REJ_NAMES) and len(execute.STATS) <= cb.CUSTOM_WORDS
    assert names[records.REJ_PRICE_COLLAR - 1] == "rej_price_collar"


def test_max_order_quantity():
    g = Gate(max_order_qty=2.0)
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, 2.5)]), records.REJ_MAX_QTY)
    assert g.send([intent(INTENT_IOC, BUY, 100.5, 2.0)])[0]["state"] == ORD_NEW
    assert g.stats[execute.ST_ORDERS] == 1 and g.stats[execute.ST_REJECTS] == 1


def test_max_order_notional():
    g = Gate(max_order_usd=150.0)
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, 1.5)]), records.REJ_MAX_NOTIONAL)  # $150.75
    assert g.send([intent(INTENT_IOC, BUY, 100.5, 1.4)])[0]["state"] == ORD_NEW
    assert g.position == pytest.approx(1.4)


def acked(reports):
    return len(reports) >= 1 and reports[0]["state"] == ORD_NEW


# Venue 0: symbol 0 and symbol 2 have limits of their own, symbol 3 has none (the global limit applies).
# All three see the same book, so the same order differs only in the instrument it is for.
def per_symbol_gate(**limits):
    g = Gate(**limits)
    g.send(market=[book(symbol=2), book(symbol=3)])
    return g


def test_a_per_symbol_quantity_limit_rejects_on_one_symbol_while_a_larger_one_passes_the_same_quantity():
    g = per_symbol_gate(max_order_qty=3.0, max_order_qty_by_key={0: 2.0, 2: 10.0})
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, 2.5)]), records.REJ_MAX_QTY)
    assert acked(g.send([intent(INTENT_IOC, BUY, 100.5, 2.5, symbol=2)]))
    assert acked(g.send([intent(INTENT_IOC, BUY, 100.5, 2.5, symbol=3)]))  # global 3.0
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, 3.5, symbol=3)]), records.REJ_MAX_QTY)
    assert g.rejected(records.REJ_MAX_QTY) == 2 and g.stats[execute.ST_ORDERS] == 2


def test_a_per_symbol_notional_limit_rejects_on_one_symbol_while_a_larger_one_passes_the_same_order():
    g = per_symbol_gate(max_order_usd=200.0, max_order_usd_by_key={0: 150.0, 2: 1_000.0})
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, 1.5)]), records.REJ_MAX_NOTIONAL)  # $150.75
    assert acked(g.send([intent(INTENT_IOC, BUY, 100.5, 1.5, symbol=2)]))
    assert acked(g.send([intent(INTENT_IOC, BUY, 100.5, 1.5, symbol=3)]))  # global $200
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, 2.5, symbol=3)]), records.REJ_MAX_NOTIONAL)
    assert g.rejected(records.REJ_MAX_NOTIONAL) == 2


def test_a_per_symbol_position_limit_rejects_on_one_symbol_while_a_larger_one_passes_the_same_orders():
    g = per_symbol_gate(max_position_usd=250.0, max_position_usd_by_key={0: 150.0, 2: 1_000.0},
                        duplicate_window_ms=0.0)  # the same IOC again is the point here
    for symbol in (0, 2, 3):
        assert acked(g.send([intent(INTENT_IOC, BUY, 100.5, 1.0, symbol=symbol)]))  # long $100.25
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, 1.0)]), records.REJ_POSITION_LIMIT)
    assert acked(g.send([intent(INTENT_IOC, BUY, 100.5, 1.0, symbol=2)]))  # long $200.50, within $1,000
    assert acked(g.send([intent(INTENT_IOC, BUY, 100.5, 1.0, symbol=3)]))  # long $200.50, within the global $250
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, 1.0, symbol=3)]), records.REJ_POSITION_LIMIT)
    assert acked(g.send([intent(INTENT_IOC, SELL, 100.0, 0.5)]))  # reductions still pass on symbol 0
    assert g.rejected(records.REJ_POSITION_LIMIT) == 2


def test_a_per_symbol_limit_is_for_its_venue_and_symbol_only():
    key = instrument_key(1, 0)
    params = kernel_params("execute", max_order_qty=3.0, max_order_usd=200.0, max_position_usd=250.0,
                           max_order_qty_by_key={key: 2.0}, max_position_usd_by_key={key: 9.0})
    assert execute.gate_limits(params, key) == (2.0, 200.0, 9.0)
    g = Gate(max_order_qty=3.0, max_order_qty_by_key={key: 2.0})
    g.send(market=[book(venue=1)])
    assert acked(g.send([intent(INTENT_IOC, BUY, 100.5, 2.5)]))
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, 2.5, venue=1)]), records.REJ_MAX_QTY)
    assert execute.gate_limits(params, 0) == (3.0, 200.0, 250.0)
    assert execute.gate_limits(params, MAX_KEYS - 1) == (3.0, 200.0, 250.0)
    with pytest.raises(ValueError, match="instrument key=32"):
        kernel_params("execute", max_order_qty_by_key={MAX_KEYS: 2.0})


@pytest.mark.parametrize("side,price", [(BUY, 101.0), (SELL, 99.5), (BUY, 99.5)])
def test_price_collar_around_the_mid(side, price):
    g = Gate(price_collar_bps=50.0)  # mid 100.25: 50 bps = 0.50
    assert_rejected(g, g.send([intent(INTENT_QUOTE, side, price, 1.0)]), records.REJ_PRICE_COLLAR)
    assert g.send([intent(INTENT_QUOTE, side, 100.25 - side * 0.5, 1.0)])[0]["state"] == ORD_NEW


def test_order_rate_token_bucket_refills_in_event_time_and_rejections_spend_no_token():
    g = Gate(max_orders_per_s=10.0, order_burst=2, max_order_qty=5.0)
    t = 1_000 * MS
    assert g.send([intent(INTENT_IOC, BUY, 100.5, 0.1)], now_ns=t)[0]["state"] == ORD_NEW
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, 9.0)], now_ns=t), records.REJ_MAX_QTY)
    assert g.send([intent(INTENT_IOC, BUY, 100.5, 0.2)], now_ns=t)[0]["state"] == ORD_NEW
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, 0.3)], now_ns=t + 50 * MS), records.REJ_RATE_LIMIT)
    assert g.send([intent(INTENT_IOC, BUY, 100.5, 0.3)], now_ns=t + 100 * MS)[0]["state"] == ORD_NEW
    assert g.rejected(records.REJ_RATE_LIMIT) == 1 and g.stats[execute.ST_ORDERS] == 3


def test_duplicates_an_identical_ioc_within_the_window_or_an_identical_open_order():
    g = Gate(duplicate_window_ms=10.0)
    t = 1_000 * MS
    assert g.send([intent(INTENT_IOC, BUY, 100.5, 0.5)], now_ns=t)[0]["state"] == ORD_NEW
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, 0.5)], now_ns=t + 9 * MS), records.REJ_DUPLICATE)
    assert g.send([intent(INTENT_IOC, BUY, 100.5, 0.6)], now_ns=t + 9 * MS)[0]["state"] == ORD_NEW  # other qty
    assert g.send([intent(INTENT_IOC, BUY, 100.5, 0.5)], now_ns=t + 10 * MS)[0]["state"] == ORD_NEW
    assert g.send([intent(INTENT_QUOTE, SELL, 101.0, 1.0)], now_ns=t + 20 * MS)[0]["state"] == ORD_NEW
    # an IOC identical to the resting quote (same side, price and open quantity)
    assert_rejected(g, g.send([intent(INTENT_IOC, SELL, 101.0, 1.0)], now_ns=t + 40 * MS), records.REJ_DUPLICATE)
    assert g.rejected(records.REJ_DUPLICATE) == 2


def test_position_limit_after_a_full_fill_counts_open_orders_and_always_lets_reductions_through():
    g = Gate(max_position_usd=250.0)  # mid 100.25: 2.49 units
    assert g.send([intent(INTENT_IOC, BUY, 100.5, 1.0)])[0]["state"] == ORD_NEW
    assert g.send([intent(INTENT_QUOTE, BUY, 99.5, 1.0)])[0]["state"] == ORD_NEW  # long 1 + 1 open = 2
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, 0.5, intent_id=3)]), records.REJ_POSITION_LIMIT)
    assert g.position == pytest.approx(1.0)
    assert g.send([intent(INTENT_IOC, SELL, 100.0, 0.5)])[0]["state"] == ORD_NEW  # reduces: passes
    g2 = Gate(max_position_usd=50.0)
    g2.state[5][0] = 3.0  # already long beyond the limit (e.g. limit lowered): selling still passes
    assert g2.send([intent(INTENT_IOC, SELL, 100.0, 1.0)])[0]["state"] == ORD_NEW
    assert_rejected(g2, g2.send([intent(INTENT_IOC, SELL, 100.0, 5.0)]), records.REJ_POSITION_LIMIT)  # flips to -3


def test_trading_disabled_is_a_counted_rejection_and_the_other_reasons_stay_counted():
    g = Gate()
    cb.disable_trading(g.ctl, kill_reasons.KILL_OPERATOR, -1, 1)
    reports = g.send([intent(INTENT_IOC, BUY, 100.5, 0.5)])
    assert list(reports["reject_reason"]) == [records.REJ_TRADING_DISABLED]
    assert g.rejected(records.REJ_TRADING_DISABLED) == 1 == g.stats[execute.ST_DISABLED_REJECTS]
    assert g.stats[execute.ST_ORDERS] == 0


def test_bad_quantity_and_no_market_are_counted_under_their_codes():
    g = Gate()
    assert_rejected(g, g.send([intent(INTENT_IOC, BUY, 100.5, -1.0)]), records.REJ_BAD_QTY)
    it = intent(INTENT_IOC, BUY, 100.5, 1.0)
    it["symbol"] = 1
    assert_rejected(g, g.send([it]), records.REJ_NO_MARKET)
    total = sum(g.stats[execute.ST_REJ_BASE:execute.ST_REJ_BASE + len(records.REJ_NAMES)])
    assert total == g.stats[execute.ST_REJECTS] == 2


def test_per_symbol_limits_from_the_config_reach_every_venue_of_that_symbol_and_no_other_symbol():
    config = Config().with_overrides(execute={"max_order_qty": 100.0, "max_order_qty_by_symbol": ["SOL-USDT=500"],
                                              "max_order_usd_by_symbol": ["BTC-USDT=9000"],
                                              "max_position_usd_by_symbol": ["ETH-USDT=1000", "BTC-USDT=2e5"]})
    params = graph.kernel_params("execute", config, live=False)
    btc, eth, sol = (config.feed.symbols.index(s) for s in ("BTC-USDT", "ETH-USDT", "SOL-USDT"))
    for venue in range(len(config.feed.venues)):
        assert execute.gate_limits(params, instrument_key(venue, btc)) == (100.0, 9_000.0, 200_000.0)
        assert execute.gate_limits(params, instrument_key(venue, eth)) == (100.0, 25_000.0, 1_000.0)
        assert execute.gate_limits(params, instrument_key(venue, sol)) == (500.0, 25_000.0, 75_000.0)
    assert config.execute.gate_limit("max_order_qty", "SOL-USDT") == (500.0, "execute.max_order_qty_by_symbol")
    assert config.execute.gate_limit("max_order_qty", "BTC-USDT") == (100.0, "execute.max_order_qty")


def test_no_per_symbol_entries_gives_every_instrument_the_global_limits():
    params = graph.kernel_params("execute", Config(), live=False)
    e = Config().execute
    assert all(execute.gate_limits(params, k) == (e.max_order_qty, e.max_order_usd, e.max_position_usd)
               for k in range(MAX_KEYS))


@pytest.mark.parametrize("key,entries,message", [
    ("max_order_qty_by_symbol", ["BTC-USDT"],
     "execute.max_order_qty_by_symbol='BTC-USDT' is invalid: use \"SYMBOL=VALUE\" (base units)"),
    ("max_order_qty_by_symbol", ["=2"], "execute.max_order_qty_by_symbol='=2' is invalid: use \"SYMBOL=VALUE\""),
    ("max_order_usd_by_symbol", ["BTC-USDT=lots"],
     "execute.max_order_usd_by_symbol='BTC-USDT=lots' is invalid: give a positive, finite number (USD)"),
    ("max_order_qty_by_symbol", ["SOL-USDT=0"], "execute.max_order_qty_by_symbol='SOL-USDT=0' is invalid: give a"),
    ("max_position_usd_by_symbol", ["SOL-USDT=-5"], "execute.max_position_usd_by_symbol='SOL-USDT=-5' is invalid"),
    ("max_position_usd_by_symbol", ["SOL-USDT=inf"], "execute.max_position_usd_by_symbol='SOL-USDT=inf' is invalid"),
    ("max_order_qty_by_symbol", ["BTC-USDT=1", "ETH-USDT=2", "BTC-USDT=3"],
     "execute.max_order_qty_by_symbol='BTC-USDT=3' is invalid: BTC-USDT has two entries; keep one"),
    ("max_order_usd_by_symbol", ["DOGE-USDT=1000"],
     "execute.max_order_usd_by_symbol='DOGE-USDT=1000' is invalid: 'DOGE-USDT' is not one of feed.symbols "
     "['BTC-USDT', 'ETH-USDT', 'SOL-USDT']; add it there or drop the entry"),
])
def test_a_bad_per_symbol_limit_is_a_config_error_naming_the_key_and_the_fix(key, entries, message):
    with pytest.raises(ConfigError) as err:
        from_dict({"execute": {key: entries}})
    assert message in str(err.value)


def test_a_per_symbol_limit_is_checked_against_the_configured_symbols_not_the_shipped_ones():
    config = from_dict({"feed": {"symbols": ["ETH-USDT"]}, "execute": {"max_order_qty_by_symbol": ["ETH-USDT=40"]}})
    assert config.execute.limits_by_symbol("max_order_qty") == {"ETH-USDT": 40.0}
    with pytest.raises(ConfigError, match="'BTC-USDT' is not one of feed.symbols \\['ETH-USDT'\\]"):
        from_dict({"feed": {"symbols": ["ETH-USDT"]}, "execute": {"max_order_qty_by_symbol": ["BTC-USDT=1"]}})


def test_explain_names_the_limit_that_rejected_an_order_given_the_runs_config():
    from tools import explain_orders
    config = Config().with_overrides(execute={"max_order_qty_by_symbol": ["SOL-USDT=500"]})
    sol = config.feed.symbols.index("SOL-USDT")
    it = intent(INTENT_IOC, BUY, 150.0, 600.0, symbol=sol, venue=1)
    report = np.zeros(1, records.EXEC_REPORT)[0]
    report["state"], report["reject_reason"], report["venue"], report["symbol"] = (ORD_REJECTED, records.REJ_MAX_QTY,
                                                                                   1, sol)
    assert "REJECTED (max order quantity; limit execute.max_order_qty_by_symbol SOL-USDT=500)" in \
        explain_orders.line(it, report, config)
    report["symbol"] = config.feed.symbols.index("BTC-USDT")
    assert "REJECTED (max order quantity; limit execute.max_order_qty=1000)" in explain_orders.line(it, report, config)
    report["reject_reason"] = records.REJ_POSITION_LIMIT
    explained = explain_orders.line(it, report, config)
    assert "(position limit after fill; limit execute.max_position_usd=75000)" in explained
    assert "REJECTED (position limit after fill):" in explain_orders.line(it, report)  # no config: the code alone
    report["reject_reason"] = records.REJ_PRICE_COLLAR
    assert "REJECTED (price collar):" in explain_orders.line(it, report, config)
