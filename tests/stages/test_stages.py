"""Kernels on crafted inputs: quarantine reasons, the paper venue, the trading gate, the feed's pacing."""
import math

import numpy as np
import pytest

from pipeline import kill_reasons
from shm import control as cb
from stages import execute, feature, feed, records, risk, strategy, validate
from stages.records import (BUY, EV_BOOK, EV_TRADE, INTENT_IOC, INTENT_QUOTE, ORD_ACKED, ORD_CANCELLED, ORD_NEW, ORD_PENDING_CANCEL, ORD_FILLED,
                            ORD_PARTIAL, ORD_REJECTED, SELL)
from tests.conftest import instant_venue, kernel_params


def book(venue=0, symbol=0, seq=1, bid=100.0, ask=100.5, size=2.0, tick=0.5):
    ev = np.zeros(1, records.MARKET_EVENT)[0]
    ev["kind"], ev["venue"], ev["symbol"], ev["venue_seq"], ev["origin_seq"] = EV_BOOK, venue, symbol, seq, seq
    ev["origin_ts"] = ev["exch_ts"] = 1_000_000_000 + seq
    for j in range(records.BOOK_LEVELS):
        ev["bid_px"][j], ev["ask_px"][j] = bid - j * tick, ask + j * tick
        ev["bid_sz"][j] = ev["ask_sz"][j] = size
    return ev


def trade(venue=0, symbol=0, seq=1, price=100.0, size=1.0, side=SELL):
    ev = np.zeros(1, records.MARKET_EVENT)[0]
    ev["kind"], ev["venue"], ev["symbol"], ev["venue_seq"], ev["origin_seq"] = EV_TRADE, venue, symbol, seq, seq
    ev["price"], ev["size"], ev["side"] = price, size, side
    ev["origin_ts"] = ev["exch_ts"] = 1_000_000_000 + seq
    return ev


def run_validate(events, **params):
    events = np.array(events, dtype=records.MARKET_EVENT)
    out = np.zeros(len(events), records.MARKET_EVENT)
    stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
    state = validate.make_state()
    params = kernel_params("validate", **{"n_venues": 2, "n_symbols": 3, "ticks": (), "lots": (), **params})
    n = validate.step(events, len(events), events[:0], 0, state, params, None, stats, out, 0)
    return out[:n], stats, state


def _with(ev, **changes):
    ev = ev.copy()
    for key, value in changes.items():
        if "." in key:
            field, j = key.split(".")
            ev[field][int(j)] = value
        else:
            ev[key] = value
    return ev


@pytest.mark.parametrize("reason,bad", [
    (validate.R_UNKNOWN_INSTRUMENT, lambda: _with(book(seq=2), venue=3)),
    (validate.R_NAN, lambda: _with(book(seq=2), **{"ask_px.2": math.nan})),
    (validate.R_NAN, lambda: _with(trade(seq=2), size=math.nan)),
    (validate.R_NONPOSITIVE_PRICE, lambda: _with(book(seq=2), **{"bid_px.4": 0.0})),
    (validate.R_NONPOSITIVE_PRICE, lambda: _with(trade(seq=2), price=-1.0)),
    (validate.R_NONPOSITIVE_SIZE, lambda: _with(book(seq=2), **{"bid_sz.0": 0.0})),
    (validate.R_NONPOSITIVE_SIZE, lambda: _with(trade(seq=2), size=0.0)),
    (validate.R_CROSSED_BOOK, lambda: book(seq=2, bid=101.0, ask=100.0)),
    (validate.R_CROSSED_BOOK, lambda: book(seq=2, bid=100.0, ask=100.0)),  # locked
    (validate.R_OUT_OF_ORDER, lambda: book(seq=1)),
    (validate.R_BAD_KIND, lambda: _with(book(seq=2), kind=9)),
    (validate.R_STALE, lambda: _with(book(seq=2), exch_ts=1, origin_ts=6_000_000_002)),
    (validate.R_FUTURE, lambda: _with(book(seq=2), exch_ts=9_000_000_000, origin_ts=1_000_000_002)),
    (validate.R_OUTLIER, lambda: book(seq=2, bid=150.0, ask=150.5)),
    (validate.R_OFF_GRID, lambda: book(seq=2, bid=100.2, ask=100.7)),
    (validate.R_OFF_GRID, lambda: _with(trade(seq=2), size=0.37)),
    (validate.R_NONPOSITIVE_SIZE, lambda: _with(trade(seq=2, price=100.0), kind=records.EV_LIQUIDATION, size=0.0)),
    (validate.R_NAN, lambda: _with(trade(seq=2), kind=records.EV_FUNDING, price=math.nan)),
    (validate.R_NONPOSITIVE_PRICE, lambda: _with(trade(seq=2), kind=records.EV_MARK, price=0.0)),
    (validate.R_CROSSED_BOOK, lambda: _with(book(seq=2, bid=101.0, ask=100.0), kind=records.EV_BBO)),
])
def test_each_bad_event_is_quarantined_with_its_reason_and_counted(reason, bad):
    out, stats, state = run_validate([book(seq=1), bad(), book(seq=3)], ticks=[0.5], lots=[0.1])
    assert list(out["venue_seq"]) == [1, 3]
    assert stats[validate.ST_QUARANTINED] == 1
    assert stats[1 + reason] == 1
    assert state[2][0]["reason"] == reason


def test_a_constant_venue_clock_skew_is_learned_but_a_jump_is_not():
    skewed = [_with(book(seq=s), exch_ts=book(seq=s)["origin_ts"] + 1_270_000_000) for s in range(1, 6)]
    jump = _with(book(seq=6), exch_ts=book(seq=6)["origin_ts"] + 4_000_000_000)
    out, stats, _ = run_validate(skewed + [jump])
    assert list(out["venue_seq"]) == [1, 2, 3, 4, 5] and stats[1 + validate.R_FUTURE] == 1


def test_each_sequence_space_is_checked_on_its_own():
    delta = lambda seq, price=100.0, size=1.0: _with(trade(seq=seq, price=price, size=size),  # noqa: E731
                                                      kind=records.EV_BOOK_DELTA, side=1)
    bbo = lambda seq: _with(book(seq=seq), kind=records.EV_BBO)  # noqa: E731
    events = [book(seq=10), delta(500), delta(500, 99.5, 0.0), bbo(700), trade(seq=11), delta(499), bbo(700),
              delta(501), bbo(701)]
    out, stats, _ = run_validate(events)
    assert list(out["venue_seq"]) == [10, 500, 500, 700, 11, 501, 701]  # a delta may repeat its message id
    assert stats[1 + validate.R_OUT_OF_ORDER] == 2 and stats[validate.ST_GAPS] == 0


def test_a_view_of_a_venue_l2_book_is_checked_against_its_update_ids_not_the_trade_ids():
    view = lambda seq: _with(book(seq=seq), first_seq=seq)  # noqa: E731  (the live ccxt source's EV_BOOK)
    events = [view(50_000), trade(seq=3_700), view(50_007), trade(seq=3_701), view(50_006)]
    out, stats, _ = run_validate(events)
    assert list(out["venue_seq"]) == [50_000, 3_700, 50_007, 3_701]
    assert stats[1 + validate.R_OUT_OF_ORDER] == 1 and stats[validate.ST_GAPS] == 0


def test_funding_marks_and_liquidations_pass_when_sane():
    events = [_with(trade(seq=0), kind=records.EV_FUNDING, price=0.0001, aux=1e18),
              _with(trade(seq=0), kind=records.EV_MARK, price=100.1, aux=100.0),
              _with(trade(seq=0, side=1), kind=records.EV_LIQUIDATION)]
    out, stats, _ = run_validate(events)
    assert len(out) == 3 and stats[validate.ST_QUARANTINED] == 0


def test_sequence_gaps_are_counted_and_forwarded():
    out, stats, _ = run_validate([book(seq=1), book(seq=5)])
    assert len(out) == 2 and stats[validate.ST_GAPS] == 1


def test_feature_values_match_a_plain_computation():
    ev = book(bid=100.0, ask=101.0)
    ev["bid_sz"][0], ev["ask_sz"][0] = 3.0, 1.0
    row = np.zeros(feature.KEY_COLUMNS)
    feature.update(ev, row, feature.make_params())
    mid = 100.5
    assert row[feature.F_SPREAD_BPS] == pytest.approx(1.0 / mid * 1e4)
    micro = (100.0 * 1.0 + 101.0 * 3.0) / 4.0
    assert row[feature.F_MICRO_DEV_BPS] == pytest.approx((micro - mid) / mid * 1e4)
    assert row[feature.F_IMBALANCE_1] == pytest.approx(0.5)
    assert row[feature.F_IMBALANCE_5] == pytest.approx((11.0 - 9.0) / 20.0)
    feature.update(book(bid=101.0, ask=102.0), row, feature.make_params())
    assert row[feature.F_RET_1_BPS] == pytest.approx((101.5 / 100.5 - 1) * 1e4)
    feature.update(trade(side=BUY), row, feature.make_params())
    assert 0 < row[feature.F_TRADE_FLOW] <= 1


class Venue:
    """The execute kernel with its state, driven record by record."""

    def __init__(self, max_open=64, **venue):
        self.state = execute.make_state()
        self.params = kernel_params("execute", venue=instant_venue(**venue), event_clock=False, max_open_orders=max_open,
                                    flatten=True, price_collar_bps=500.0)  # books here are 50 bps wide
        self.ctl = np.zeros(cb.GLOBAL_WORDS, np.int64)
        self.ctl[cb.G_TRADING_ENABLED] = 1
        self.stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
        self.out = np.zeros(execute.out_capacity(16), records.EXEC_REPORT)

    def send(self, intents=(), market=(), now_ns=2_000_000_000):  # the wall clock: after every event here
        intents = np.array(list(intents), records.ORDER_INTENT)
        market = np.array(list(market), records.MARKET_EVENT)
        n = execute.step(intents, len(intents), market, len(market), self.state, self.params, self.ctl,
                         self.stats, self.out, now_ns)
        return self.out[:n].copy()


def intent(kind, side, price, qty, venue=0, symbol=0, intent_id=1):
    it = np.zeros(1, records.ORDER_INTENT)[0]
    it["kind"], it["side"], it["price"], it["qty"], it["intent_id"] = kind, side, price, qty, intent_id
    it["venue"], it["symbol"], it["origin_ts"], it["strategy"] = venue, symbol, 5, records.STRAT_DIRECTIONAL
    return it


def test_ioc_fills_level_by_level_at_the_book_and_cancels_the_rest():
    v = Venue()
    v.send(market=[book(size=1.0)])  # asks 100.5, 101.0, ...
    reports = v.send([intent(INTENT_IOC, BUY, 101.0, 2.5)])
    assert list(reports["state"]) == [ORD_NEW, ORD_ACKED, ORD_PARTIAL, ORD_PARTIAL, ORD_CANCELLED]
    fills = reports[reports["liquidity"] != 0]
    assert list(fills["price"]) == [100.5, 101.0]
    assert list(fills["qty"]) == [1.0, 1.0]
    assert fills["fee"][0] == pytest.approx(100.5 * 5e-4)
    assert reports[-1]["leaves"] == pytest.approx(0.5)
    assert fills["position"][-1] == 2.0


def test_resting_quote_fills_as_maker_when_a_trade_goes_through_it():
    v = Venue(queue_model="front")  # first in its level's queue: a trade at its price fills it
    v.send(market=[book()])
    acked = v.send([intent(INTENT_QUOTE, BUY, 99.0, 1.0)])
    assert list(acked["state"]) == [ORD_NEW, ORD_ACKED]
    assert len(v.send(market=[trade(seq=2, price=99.5, size=5.0)])) == 0  # above our bid: no fill
    reports = v.send(market=[trade(seq=3, price=99.0, size=0.4)])
    assert reports[0]["state"] == ORD_PARTIAL and reports[0]["liquidity"] == 1 and reports[0]["qty"] == 0.4
    reports = v.send(market=[trade(seq=4, price=98.0, size=5.0)])
    assert reports[0]["state"] == ORD_FILLED and reports[0]["qty"] == pytest.approx(0.6)
    assert v.stats[execute.ST_OPEN] == 0


def test_a_new_quote_replaces_the_old_one_on_the_same_side():
    v = Venue()
    v.send(market=[book()])
    first = v.send([intent(INTENT_QUOTE, SELL, 102.0, 1.0)])
    reports = v.send([intent(INTENT_QUOTE, SELL, 103.0, 1.0, intent_id=2)])
    # the new one passed the gate, then the old one was asked to cancel
    assert list(reports["state"]) == [ORD_PENDING_CANCEL, ORD_NEW, ORD_CANCELLED, ORD_ACKED]
    assert reports[0]["order_id"] == reports[2]["order_id"] == first[0]["order_id"]
    assert reports[3]["order_id"] == reports[1]["order_id"] != first[0]["order_id"]
    assert v.stats[execute.ST_OPEN] == 1


def test_trading_disabled_cancels_every_open_order_and_rejects_new_intents():
    v = Venue()
    v.send(market=[book(symbol=0), book(symbol=1)])
    v.send([intent(INTENT_QUOTE, BUY, 99.0, 1.0), intent(INTENT_QUOTE, SELL, 102.0, 1.0, symbol=1)])
    assert v.stats[execute.ST_OPEN] == 2
    cb.disable_trading(v.ctl, kill_reasons.KILL_OPERATOR, -1, 1)
    reports = v.send()  # no input at all: the gate is polled anyway
    assert sorted(reports["state"]) == [ORD_PENDING_CANCEL, ORD_PENDING_CANCEL]
    reports = v.send()  # the venue's answers
    assert sorted(reports["state"]) == [ORD_CANCELLED, ORD_CANCELLED]
    reports = v.send([intent(INTENT_IOC, BUY, 101.0, 1.0)])
    assert list(reports["state"]) == [ORD_REJECTED]
    assert reports[0]["reject_reason"] == records.REJ_TRADING_DISABLED
    assert v.stats[execute.ST_ORDERS] == 2


def test_open_order_limit_rejects_with_a_reason():
    v = Venue(max_open=1)
    v.send(market=[book(symbol=0), book(symbol=1)])
    v.send([intent(INTENT_QUOTE, BUY, 99.0, 1.0)])
    reports = v.send([intent(INTENT_QUOTE, BUY, 99.0, 1.0, symbol=1)])
    assert reports[0]["state"] == ORD_REJECTED and reports[0]["reject_reason"] == records.REJ_TOO_MANY_ORDERS


def test_risk_budget_shrinks_with_position_and_volatility():
    f = np.zeros(2, records.FEATURE_VECTOR)
    f["bid"], f["ask"], f["schema_hash"] = 99.0, 101.0, records.FEATURE_SCHEMA_HASH
    f["values"][1, feature.F_RVOL_BPS] = 8.0
    state = risk.make_state()
    state[0][0] = 450.0 / 100.0  # long $450 (bought at 100: no drawdown)
    state[1][0] = -450.0
    out = np.zeros(2, records.RISK_DECISION)
    params = kernel_params("risk", max_position_usd=500.0, max_order_usd=100.0, vol_ref_bps=2.0)
    risk.step(f, 2, np.zeros(0, records.EXEC_REPORT), 0, state, params, None, np.zeros(16, np.int64), out, 0)
    assert out[0]["buy_budget"] == pytest.approx(0.5) and out[0]["sell_budget"] == pytest.approx(1.0)
    assert out[0]["reasons"] & records.RISK_POSITION_LIMIT
    assert out[1]["sell_budget"] == pytest.approx(0.25)  # $100 * 2/8
    assert out[1]["reasons"] & records.RISK_VOLATILITY


def test_strategy_takes_on_a_strong_prediction_and_quotes_both_sides():
    p = np.zeros(1, records.PREDICTION)
    p["bid"], p["ask"], p["prob_up"], p["buy_budget"], p["sell_budget"] = 99.0, 101.0, 0.8, 10.0, 10.0
    p["size_scale"] = 1.0
    p["equity"] = 1e6  # Kelly target 0.25 * (0.8 - 0.2) * 1e6 = $150,000: the budget binds
    ctl = np.zeros(cb.GLOBAL_WORDS, np.int64)
    ctl[cb.G_TRADING_ENABLED] = 1
    out = np.zeros(strategy.out_capacity(1), records.ORDER_INTENT)
    params = kernel_params("strategy", mode="signal", threshold=0.1, take_usd=1000.0, quote_usd=500.0, half_spread_bps=4.0,
                           requote_bps=2.0, skew_bps=2.0, cooldown_ms=50.0, quoting=True, max_position_usd=50_000.0)
    n = strategy.step(p, 1, np.zeros(0, records.EXEC_REPORT), 0, strategy.make_state(), params, ctl,
                      np.zeros(16, np.int64), out, 0)
    kinds = list(zip(out["kind"][:n], out["side"][:n]))
    assert kinds == [(INTENT_IOC, BUY), (INTENT_QUOTE, BUY), (INTENT_QUOTE, SELL)]
    assert out[0]["price"] == 101.0 and out[0]["qty"] == pytest.approx(10.0)


def test_strategy_orders_scale_with_the_sizers_size_scale_and_none_at_zero():
    def orders(scale, state=None):
        p = np.zeros(1, records.PREDICTION)
        p["bid"], p["ask"], p["prob_up"], p["buy_budget"], p["sell_budget"] = 99.0, 101.0, 0.8, 100.0, 100.0
        p["equity"], p["size_scale"] = 1e6, scale
        ctl = np.zeros(cb.GLOBAL_WORDS, np.int64)
        ctl[cb.G_TRADING_ENABLED] = 1
        out = np.zeros(strategy.out_capacity(1), records.ORDER_INTENT)
        params = kernel_params("strategy", mode="signal", threshold=0.1, take_usd=1000.0, quote_usd=500.0,
                               half_spread_bps=4.0, requote_bps=2.0, skew_bps=2.0, cooldown_ms=50.0, quoting=True,
                               max_position_usd=50_000.0)
        n = strategy.step(p, 1, np.zeros(0, records.EXEC_REPORT), 0, state or strategy.make_state(), params, ctl,
                          np.zeros(16, np.int64), out, 0)
        return out[:n]
    full, half, none = orders(1.0), orders(0.5), orders(0.0)
    assert list(zip(full["kind"], full["side"])) == [(INTENT_IOC, BUY), (INTENT_QUOTE, BUY), (INTENT_QUOTE, SELL)]
    assert full["qty"][0] == pytest.approx(1000.0 / 100.0) and full["qty"][1] == pytest.approx(500.0 / 100.0)
    assert list(zip(half["kind"], half["side"])) == list(zip(full["kind"], full["side"]))
    np.testing.assert_allclose(half["qty"], 0.5 * full["qty"], rtol=1e-15)
    assert len(none) == 0  # scale 0: no take and no quote
    quoting = strategy.make_state()
    orders(1.0, quoting)
    cancels = orders(0.0, quoting)  # the sizer turned flat: the live quotes go (the take is in its cooldown)
    assert list(zip(cancels["kind"], cancels["side"], cancels["qty"])) == [(INTENT_QUOTE, BUY, 0.0),
                                                                          (INTENT_QUOTE, SELL, 0.0)]


def test_feed_is_paced_by_its_clock_and_reproducible():
    def emit(seed, horizon_ns, burstiness=0.5):
        state = feed.make_state(seed)
        params = kernel_params("feed", rate_eps=1000.0, max_events=0, n_venues=2, n_symbols=3, bad_rate=0.0,
                               sim_clock=False, batch=256, mean_gap_ns=feed.DEFAULT_MEAN_GAP_NS, burstiness=burstiness)
        out = np.zeros(256, records.MARKET_EVENT)
        stats = np.zeros(16, np.int64)
        assert feed.step(out, 0, out, 0, state, params, None, stats, out, 1) == 0  # starts the clock
        chunks = []
        for now in range(1 + 1_000_000, 1 + horizon_ns + 1, 1_000_000):  # a step every ms
            n = feed.step(out, 0, out, 0, state, params, None, stats, out, now)
            chunks.append(out[:n].copy())
            assert (out[:n]["origin_ts"] == now).all()  # live: stamped when emitted
        return np.concatenate(chunks)
    for burstiness in (0.0, 0.5):
        assert 1600 <= len(emit(1, 2_000_000_000, burstiness)) <= 2400  # 1000 events/s on average for 2 s
    a, b = emit(3, 200_000_000), emit(3, 200_000_000)
    assert a.tobytes() == b.tobytes()
    assert list(a["origin_seq"]) == list(range(1, len(a) + 1))


def _synthetic(n_events, seed=7, **params):
    state = feed.make_state(seed)
    p = kernel_params("feed", rate_eps=0.0, max_events=n_events, n_venues=2, n_symbols=3, bad_rate=0.0, sim_clock=True,
                      batch=256, mean_gap_ns=feed.DEFAULT_MEAN_GAP_NS, **params)
    out = np.zeros(256, records.MARKET_EVENT)
    stats = np.zeros(16, np.int64)
    chunks = []
    while (n := feed.step(out, 0, out, 0, state, p, None, stats, out, 0)) > 0:
        chunks.append(out[:n].copy())
    return np.concatenate(chunks), stats


def test_synthetic_market_has_regimes_funding_marks_and_liquidations_and_all_of_it_validates():
    events, stats = _synthetic(300_000, regime_mean_s=5.0)
    kinds = np.bincount(events["kind"], minlength=8)
    assert kinds[records.EV_FUNDING] == stats[feed.ST_FUNDINGS] > 50  # ~1 a second per (venue, symbol)
    assert kinds[records.EV_MARK] == stats[feed.ST_MARKS] > 50
    assert kinds[records.EV_LIQUIDATION] == stats[feed.ST_LIQUIDATIONS] > 20
    assert stats[feed.ST_REGIME_SWITCHES] >= 5
    funding = events[events["kind"] == records.EV_FUNDING]
    assert (np.abs(funding["price"]) <= 0.0075).all() and (funding["aux"] > funding["origin_ts"]).all()
    assert (funding["aux"] % feed.FUNDING_PERIOD_NS == 0).all()
    valid, vstats, _ = run_validate(events[:40_000], ticks=[0.1, 0.01, 0.001], lots=[0.0001, 0.001, 0.01])
    assert vstats[validate.ST_QUARANTINED] == 0 and len(valid) == 40_000


def test_synthetic_arrivals_are_bursty_at_the_configured_mean_rate():
    def dispersion(burstiness):
        events, _ = _synthetic(200_000, burstiness=burstiness)
        counts = np.bincount(events["origin_ts"] // 100_000_000)[:-1]  # 100 ms windows
        return np.diff(events["origin_ts"]).mean(), counts.var() / counts.mean()
    gap_poisson, poisson = dispersion(0.0)
    gap_hawkes, hawkes = dispersion(0.5)
    assert 0.9e5 < gap_poisson < 1.1e5 and 0.9e5 < gap_hawkes < 1.1e5  # mean gap = 100 us either way
    assert poisson < 1.5 and hawkes > 2.0  # a Hawkes process clusters: variance-to-mean 1/(1-n)^2 = 4


def _volatile_book_mids(live, n_events):
    """(origin_ts, key, mid) of the book events of a market held volatile (no regime switch): fused on the
    synthetic clock at the default 10,000 events/s, or live at max rate, stamped with a wall clock that moves
    1 us per event, 256 events a step sharing its time (as a feed stage at ~1 M events/s stamps them)."""
    state = feed.make_state(5)
    state[2][:, feed.Y_REGIME] = feed.REGIME_VOLATILE
    p = kernel_params("feed", rate_eps=0.0, max_events=n_events, n_venues=2, n_symbols=3, bad_rate=0.0,
                      sim_clock=not live, batch=256, mean_gap_ns=feed.DEFAULT_MEAN_GAP_NS, regime_mean_s=1e9)
    out = np.zeros(256, records.MARKET_EVENT)
    stats = np.zeros(16, np.int64)
    now, kept = 1_000_000_000, []
    while (n := feed.step(out, 0, out, 0, state, p, None, stats, out, now)) > 0:
        books = out[:n][out[:n]["kind"] == EV_BOOK]
        kept.append((books["origin_ts"], books["venue"] * 8 + books["symbol"],
                     (books["bid_px"][:, 0] + books["ask_px"][:, 0]) / 2))
        now += 256_000
    assert stats[feed.ST_REGIME_SWITCHES] == 0
    return [np.concatenate(column) for column in zip(*kept)]


def _rms_return_bps(ts, key, mid, window_ns):
    returns = []
    for k in np.unique(key):
        t, m = ts[key == k], mid[key == k]
        last = np.r_[np.nonzero(np.diff(t // window_ns))[0], len(t) - 1]  # each window's last book
        returns.append(np.diff(np.log(m[last])) * 1e4)
    return float(np.sqrt(np.mean(np.concatenate(returns) ** 2)))


def test_synthetic_prices_move_per_second_of_their_clock_not_per_event():
    fused = _rms_return_bps(*_volatile_book_mids(False, 300_000), 100_000_000)  # 30 s of market
    max_rate = _rms_return_bps(*_volatile_book_mids(True, 3_000_000), 100_000_000)  # 3 s of wall time
    # per event the max-rate run would move sqrt(100) x as much per 100 ms (it did, before shocks scaled
    # with time); the book pressure, an AR(1) in event time, drifts less of the time at max rate (~0.8 x)
    assert 25.0 < fused < 70.0
    assert 0.5 < max_rate / fused < 1.3


@pytest.mark.parametrize("flatten", [True, False])
def test_a_kill_flattens_positions_reduce_only_unless_cancel_only(flatten):
    v = Venue()
    v.params = kernel_params("execute", venue=instant_venue(), event_clock=False, max_open_orders=64, flatten=flatten,
                             flatten_collar_bps=50.0, price_collar_bps=500.0)
    v.send(market=[book(size=1.0)])
    v.send([intent(INTENT_IOC, BUY, 101.0, 1.5)])  # long 1.5
    assert v.state[5][0] == pytest.approx(1.5)
    cb.disable_trading(v.ctl, kill_reasons.KILL_SWITCH_PRESSED, -1, 1)
    reports = v.send(market=[book(seq=2, size=1.0)])  # bids 100.0, 99.5, ... one unit each
    if not flatten:
        assert len(reports) == 0 and v.state[5][0] == pytest.approx(1.5)
        return
    flat = reports[reports["strategy"] == records.STRAT_FLATTEN]
    fills = flat[flat["liquidity"] != 0]
    assert list(fills["side"]) == [SELL, SELL] and list(fills["price"]) == [100.0, 99.5]
    assert fills["qty"].sum() == pytest.approx(1.5)  # never more than the position
    assert v.state[5][0] == pytest.approx(0.0)
    assert len(v.send(market=[book(seq=3)])) == 0  # flat: nothing more to do


def test_risk_publishes_equity_and_halves_size_beyond_the_soft_drawdown():
    state = risk.make_state()
    params = kernel_params("risk", max_position_usd=1e9, max_order_usd=1000.0, vol_ref_bps=100.0, capital_usd=10_000.0,
                           soft_drawdown_pct=15.0)
    stats = np.zeros(16, np.int64)
    fill = np.zeros(1, records.EXEC_REPORT)
    fill["state"], fill["liquidity"], fill["side"], fill["qty"], fill["price"], fill["position"] = \
        ORD_FILLED, -1, BUY, 100.0, 100.0, 100.0  # long 100 at 100 = $10,000
    f = np.zeros(1, records.FEATURE_VECTOR)
    f["schema_hash"] = records.FEATURE_SCHEMA_HASH
    out = np.zeros(1, records.RISK_DECISION)

    def mark(mid):
        f["bid"], f["ask"] = mid - 0.01, mid + 0.01
        risk.step(f, 1, fill, 0, state, params, None, stats, out, 0)

    risk.step(f[:0], 0, fill, 1, state, params, None, stats, out, 0)
    mark(100.0)
    assert stats[risk.ST_EQUITY_CENTS] == 1_000_000 and stats[risk.ST_DRAWDOWN_BPS] == 0
    assert out[0]["buy_budget"] * 100.0 == pytest.approx(1000.0)
    mark(90.0)  # -$1,000 = 10% below peak
    assert stats[risk.ST_DRAWDOWN_BPS] == 1000 and not out[0]["reasons"] & records.RISK_DRAWDOWN
    mark(84.0)  # 16% below peak: size halved
    assert out[0]["reasons"] & records.RISK_DRAWDOWN
    assert out[0]["buy_budget"] * 84.0 == pytest.approx(500.0)


def test_a_bbo_feeds_features_and_the_paper_venue_as_a_one_level_book():
    bbo = _with(book(bid=100.0, ask=100.5, size=2.0), kind=records.EV_BBO)
    for j in range(1, records.BOOK_LEVELS):
        bbo["bid_px"][j] = bbo["ask_px"][j] = bbo["bid_sz"][j] = bbo["ask_sz"][j] = 0.0
    row = np.zeros(feature.KEY_COLUMNS)
    assert feature.update(bbo, row, feature.make_params())
    assert row[feature.F_SPREAD_BPS] == pytest.approx(0.5 / 100.25 * 1e4) and row[feature.F_IMBALANCE_5] == 0.0
    v = Venue()
    v.send(market=[bbo])
    reports = v.send([intent(INTENT_IOC, BUY, 101.0, 3.0)])
    fills = reports[reports["liquidity"] != 0]
    assert list(fills["price"]) == [100.5] and list(fills["qty"]) == [2.0]  # only the one level exists


def test_l2_deltas_from_a_real_capture_build_the_book_that_feeds_features():
    from pathlib import Path

    from pipeline.sources import SymbolTable, parse_file
    from stages import book
    capture = Path(__file__).resolve().parents[1] / "data" / "binance-ws-capture" / "spot_ethusdt_20240808.gz"
    events = parse_file(str(capture), SymbolTable(venues=["spot"], symbols=["ETH-USDT"]), venue="spot").records
    deltas = events[events["kind"] == records.EV_BOOK_DELTA]
    state, stats = feature.make_state(), np.zeros(16, np.int64)
    out = np.zeros(len(deltas), records.FEATURE_VECTOR)
    feature.step(deltas, len(deltas), deltas[:0], 0, state, feature.make_params(), None, stats, out, 0)
    assert stats[feature.ST_BOOKS_BUILT] > 1000  # one per synced message
    bid, bid_sz, ask, ask_sz = book.best(state[1], 0)
    assert out[-1]["bid"] == bid and out[-1]["ask"] == ask and out[-1]["bid_sz"] == bid_sz
    assert 0 < out[-1]["values"][feature.F_SPREAD_BPS] < 5  # ETH's spread is about 0.04 bps of 2,500
