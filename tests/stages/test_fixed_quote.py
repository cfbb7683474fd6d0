"""The fixed quoter (the hftbacktest peer check's strategy) in-process: interval boundaries of event time, tick
rounding, requotes only on a changed price, the position limit, and its selection by strategy.kind."""
import numpy as np
import pytest

from pipeline import config, graph
from pipeline.plan import resolve
from shm import control as cb
from stages import fixed_quote, records, strategy
from stages.records import BUY, INTENT_QUOTE, ORD_CANCELLED, ORD_FILLED, ORD_PARTIAL, SELL, STRAT_QUOTER

MS = 1_000_000
TICK = 0.1


class Quoter:
    def __init__(self, interval_ms=100.0, distance_ticks=2.0, qty=0.003, max_position=0.006):
        self.params = fixed_quote.make_params(interval_ms=interval_ms, distance_ticks=distance_ticks, qty=qty,
                                              max_position=max_position, ticks_by_key={0: TICK})
        self.state = fixed_quote.make_state()
        self.ctl = np.zeros(cb.GLOBAL_WORDS, np.int64)
        self.ctl[cb.G_TRADING_ENABLED] = 1
        self.stats = np.zeros(16, np.int64)

    def step(self, predictions, reports=()):
        p = np.zeros(len(predictions), records.PREDICTION)
        for i, (ts, bid, ask) in enumerate(predictions):
            p[i]["origin_ts"], p[i]["bid"], p[i]["ask"] = ts, bid, ask
        r = np.zeros(len(reports), records.EXEC_REPORT)
        for i, fields in enumerate(reports):
            for name, value in fields.items():
                r[i][name] = value
        out = np.zeros(fixed_quote.out_capacity(max(len(p), 1)), records.ORDER_INTENT)
        n = fixed_quote.step(p, len(p), r, len(r), self.state, self.params, self.ctl, self.stats, out, 0)
        assert (out["kind"][:n] == INTENT_QUOTE).all() and (out["strategy"][:n] == STRAT_QUOTER).all()
        return [(int(o["origin_ts"]), int(o["side"]), round(float(o["price"]), 6), float(o["qty"])) for o in out[:n]]


def test_quotes_at_the_first_event_at_or_past_each_boundary_only():
    q = Quoter()
    assert q.step([(1_050 * MS, 100.0, 100.1)]) == []           # before the first boundary (1100 ms)
    first = q.step([(1_100 * MS, 100.0, 100.1)])                 # exactly on it
    assert [(t, s) for t, s, _, _ in first] == [(1_100 * MS, BUY), (1_100 * MS, SELL)]
    assert q.step([(1_150 * MS, 100.5, 100.6)]) == []           # same interval: no decision however the mid moved
    moved = q.step([(1_230 * MS, 100.5, 100.6), (1_260 * MS, 101.0, 101.1)])
    assert [t for t, _, _, _ in moved] == [1_230 * MS, 1_230 * MS]  # the first event past 1200 decides, not 1260
    assert q.step([(1_299 * MS, 102.0, 102.1)]) == []           # the next boundary is 1300, not 1230 + 100
    assert q.stats[fixed_quote.ST_DECISIONS] == 2


def test_prices_are_floor_and_ceil_of_mid_minus_plus_distance_on_the_tick_grid():
    q = Quoter(distance_ticks=2.0)
    out = q.step([(0, 100.0, 100.1)])  # mid 100.05: bid floor(99.85) = 99.8, ask ceil(100.25) = 100.3
    assert [(s, p) for _, s, p, _ in out] == [(BUY, 99.8), (SELL, 100.3)]
    q = Quoter(distance_ticks=0.0)
    out = q.step([(0, 100.0, 100.2)])  # mid 100.1 exactly on the grid: bid and ask both 100.1, no tick pushed away
    assert [(s, p) for _, s, p, _ in out] == [(BUY, 100.1), (SELL, 100.1)]
    assert all(qty == 0.003 for _, _, _, qty in out)


def test_a_side_is_requoted_only_when_its_price_changes_or_it_has_no_live_quote():
    q = Quoter(distance_ticks=2.0)
    q.step([(0, 100.0, 100.1)])                                   # 99.8 / 100.3
    assert q.step([(100 * MS, 100.0, 100.1)]) == []              # unchanged
    out = q.step([(200 * MS, 100.1, 100.2)])                     # mid 100.15: bid 99.9, ask 100.4
    assert [(s, p) for _, s, p, _ in out] == [(BUY, 99.9), (SELL, 100.4)]
    out = q.step([(300 * MS, 100.1, 100.3)])                     # mid 100.2: bid 100.0, ask unchanged 100.4
    assert [(s, p) for _, s, p, _ in out] == [(BUY, 100.0)]
    # the replaced ask's cancel (old price) frees nothing; the live ask's fill frees the ask side
    old_cancel = dict(strategy=STRAT_QUOTER, state=ORD_CANCELLED, side=SELL, price=100.3)
    assert q.step([(400 * MS, 100.1, 100.3)], [old_cancel]) == []
    fill = dict(strategy=STRAT_QUOTER, state=ORD_FILLED, side=SELL, price=100.4, qty=0.003, liquidity=1,
                position=-0.003)
    assert q.step([(500 * MS, 100.1, 100.3)], [fill]) == [(500 * MS, SELL, 100.4, 0.003)]


def test_past_the_position_limit_a_side_is_cancelled_and_not_quoted_until_back_inside():
    q = Quoter(distance_ticks=2.0, max_position=0.006)
    q.step([(0, 100.0, 100.1)])
    part = dict(strategy=STRAT_QUOTER, state=ORD_PARTIAL, side=BUY, price=99.8, qty=0.003, liquidity=1,
                position=0.006)
    out = q.step([(100 * MS, 100.0, 100.1)], [part])
    assert out == [(100 * MS, BUY, 0.0, 0.0)]                    # position 0.006 is not < 0.006: cancel the bid
    assert q.stats[fixed_quote.ST_QUOTE_CANCELS] == 1
    assert q.step([(200 * MS, 100.1, 100.2)]) == [(200 * MS, SELL, 100.4, 0.003)]  # asks still follow the mid
    sold = dict(strategy=STRAT_QUOTER, state=ORD_PARTIAL, side=SELL, price=100.4, qty=0.001, liquidity=1,
                position=0.005)
    assert q.step([(300 * MS, 100.1, 100.2)], [sold]) == [(300 * MS, BUY, 99.9, 0.003)]


def test_no_market_keeps_the_boundary_due_and_trading_disabled_quotes_nothing():
    q = Quoter()
    assert q.step([(0, 0.0, 100.1)]) == []
    assert len(q.step([(10 * MS, 100.0, 100.1)])) == 2           # the next event with a market decides
    q = Quoter()
    q.ctl[cb.G_TRADING_ENABLED] = 0
    assert q.step([(0, 100.0, 100.1)]) == []
    assert q.stats[fixed_quote.ST_DISABLED] == 1


def test_an_instrument_without_a_tick_is_not_quoted():
    q = Quoter()
    q.params[fixed_quote.P_TICKS] = 0.0
    assert q.step([(0, 100.0, 100.1)]) == []
    assert q.stats[fixed_quote.ST_NO_TICK] == 1


def test_strategy_kind_picks_the_kernel_and_its_ticks():
    fixed = config.from_dict({"strategy": {"kind": "fixed_quote", "fixed_tick_by_symbol": ["ETH-USDT=0.05"]}})
    step, params, state = graph.kernel("strategy", resolve(fixed), live=False)
    assert step is fixed_quote.step
    eth = graph.instrument_key(1, fixed.feed.symbols.index("ETH-USDT"))
    btc = graph.instrument_key(0, fixed.feed.symbols.index("BTC-USDT"))
    assert params[fixed_quote.P_TICKS + eth] == 0.05 and params[fixed_quote.P_TICKS + btc] == 0.1  # synthetic grid
    assert graph.kernel("strategy", resolve(config.Config()), live=False)[0] is strategy.step
    with pytest.raises(config.ConfigError, match="live run"):
        graph.kernel_params("strategy", fixed, live=True)


@pytest.mark.parametrize("strategy_keys, message", [
    ({"kind": "fixed"}, "strategy.kind='fixed' is invalid"),
    ({"fixed_tick_by_symbol": ["BTC-USDT=x"]}, "strategy.fixed_tick_by_symbol"),
    ({"fixed_tick_by_symbol": ["DOGE-USDT=0.1"]}, "not one of feed.symbols"),
    ({"fixed_qty": 0.0}, "strategy.fixed_qty"),
])
def test_bad_fixed_quote_keys_are_config_errors_naming_the_key(strategy_keys, message):
    with pytest.raises(config.ConfigError, match=message):
        config.from_dict({"strategy": strategy_keys})


def test_a_replay_symbol_needs_its_tick_for_the_fixed_quoter(tmp_path):
    capture = tmp_path / "c.gz"
    capture.write_bytes(b"")
    replay = {"source": "replay", "files": [f"venue_a={capture}"], "venues": ["venue_a"], "symbols": ["BTCUSDT"]}
    with pytest.raises(config.ConfigError, match='give "BTCUSDT=TICK"'):
        config.from_dict({"feed": replay, "strategy": {"kind": "fixed_quote"}})
    ok = config.from_dict({"feed": replay, "strategy": {"kind": "fixed_quote", "fixed_tick_by_symbol": ["BTCUSDT=0.1"]}})
    assert ok.strategy.ticks_by_symbol() == {"BTCUSDT": 0.1}
