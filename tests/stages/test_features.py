"""Feature kernels against plain numpy/pandas computations on the sample data (tests/data), and invariants."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.sources import SymbolTable, merge, parse_file
from stages import feature, records
from stages.records import BUY, EV_BBO, EV_BOOK, EV_FUNDING, EV_LIQUIDATION, EV_TRADE, F_LAST, SELL

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURES = DATA / "binance-ws-capture"
NAMES = records.FEATURE_NAMES


def run_kernel(events, batch=256, state=None):
    """The feature kernel over ``events`` in batches (as a stage host calls it); returns the vectors."""
    state = feature.make_state() if state is None else state
    params, stats = feature.make_params(), np.zeros(16, np.int64)
    out = np.zeros(len(events), records.FEATURE_VECTOR)
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        feature.step(chunk, len(chunk), chunk[:0], 0, state, params, None, stats, out[start:], 0)
    return out


def col(out, name):
    return out["values"][:, NAMES.index(name)]


def close(got, want, rtol=1e-9, atol=1e-9):
    np.testing.assert_allclose(got, np.asarray(want, float), rtol=rtol, atol=atol)


def ewm_mean(values, ts_ns, half_life_s):
    """pandas' time-weighted EWMA: weights 0.5 ** (age / half-life) over the given events."""
    ts_ns = np.asarray(ts_ns, np.int64)
    # from the first event: pandas takes time deltas through float64, which cannot hold epoch ns exactly
    times = pd.to_datetime(ts_ns - ts_ns[0], unit="ns")
    return pd.Series(np.asarray(values, float)).ewm(halflife=pd.Timedelta(seconds=half_life_s), times=times).mean()


def decayed_sum_at(eval_ts, ts, x, half_life_s):
    """sum over events i with ts_i <= t of 0.5 ** ((t - ts_i) / h) * x_i, for each t in eval_ts (direct)."""
    out = np.zeros(len(eval_ts))
    for start in range(0, len(eval_ts), 512):
        t = np.asarray(eval_ts[start:start + 512], np.int64)[:, None]
        age = (t - np.asarray(ts, np.int64)[None, :]).astype(float)
        w = np.where(age >= 0, 0.5 ** (np.maximum(age, 0) / (half_life_s * 1e9)), 0.0)
        out[start:start + 512] = w @ np.asarray(x, float)
    return out


def as_of(index, values, n):
    """Values known at rows ``index`` carried forward to every row 0..n-1 (0 before the first)."""
    s = pd.Series(np.nan, index=range(n))
    s.iloc[np.asarray(index)] = np.asarray(values, float)
    return s.ffill().fillna(0.0).to_numpy()


@pytest.fixture(scope="module")
def spot_btc():
    """The first 8,000 BBO and trade events of the spot BTCUSDT capture (book state is in each event)."""
    events = parse_file(str(CAPTURES / "spot_btcusdt_20240808.gz"),
                        SymbolTable(venues=["spot"], symbols=["BTC-USDT"]), venue="spot").records
    return events[(events["kind"] == EV_BBO) | (events["kind"] == EV_TRADE)][:8000].copy()


def test_book_features_match_pandas_on_tardis_top_25_snapshots():
    path = DATA / "nautilus-samples" / "binance-futures_book_snapshot_25_BTCUSDT.csv"
    events = parse_file(str(path), SymbolTable(venues=["binance-futures"], symbols=["BTCUSDT"])).records
    out = run_kernel(events)[(events["flags"] & F_LAST) != 0]  # one vector per complete snapshot
    df = pd.read_csv(path)
    assert len(out) == len(df) == 10
    bid, ask = df["bids[0].price"].to_numpy(), df["asks[0].price"].to_numpy()
    bsz, asz = df["bids[0].amount"].to_numpy(), df["asks[0].amount"].to_numpy()
    mid = (bid + ask) / 2
    close(col(out, "mid"), mid)
    close(col(out, "spread_bps"), (ask - bid) / mid * 1e4)
    micro = (bid * asz + ask * bsz) / (bsz + asz)
    close(col(out, "microprice"), micro)
    close(col(out, "microprice_dev_bps"), (micro - mid) / mid * 1e4)
    for depth in (1, 5, 10):
        b = df[[f"bids[{j}].amount" for j in range(depth)]].sum(axis=1)
        a = df[[f"asks[{j}].amount" for j in range(depth)]].sum(axis=1)
        close(col(out, f"imbalance_{depth}"), (b - a) / (b + a))
    # Cont, Kukanov & Stoikov: e_n from consecutive best levels
    pb, pa, pbs, pas = np.roll(bid, 1), np.roll(ask, 1), np.roll(bsz, 1), np.roll(asz, 1)
    e = (bid >= pb) * bsz - (bid <= pb) * pbs - (ask <= pa) * asz + (ask >= pa) * pas
    e[0] = 0.0
    ts = out["origin_ts"]
    for h in (1, 10):
        want = (ewm_mean(e, ts, h) / ewm_mean(np.abs(e), ts, h)).fillna(0.0)
        close(col(out, f"ofi_{h}s"), want)
    ret = np.concatenate([[0.0], (mid[1:] / mid[:-1] - 1) * 1e4])
    close(col(out, "ret_1_bps"), ret)
    for h in (1, 10, 60):
        close(col(out, f"rvol_{h}s_bps"), np.sqrt(decayed_sum_at(ts, ts, ret ** 2, h)))
        close(col(out, f"mom_{h}s_bps"), (mid / ewm_mean(mid, ts, h) - 1) * 1e4, atol=1e-7)


def test_trade_and_clock_features_match_pandas_on_a_binance_capture(spot_btc):
    ev = spot_btc
    out = run_kernel(ev)
    n = len(ev)
    ts = ev["origin_ts"]
    books = np.flatnonzero(ev["kind"] == EV_BBO)
    trades = np.flatnonzero(ev["kind"] == EV_TRADE)
    assert len(books) > 3000 and len(trades) > 1000
    bid, ask = ev["bid_px"][books, 0], ev["ask_px"][books, 0]
    bsz, asz = ev["bid_sz"][books, 0], ev["ask_sz"][books, 0]
    mid = (bid + ask) / 2
    close(col(out, "mid"), as_of(books, mid, n))
    close(col(out, "spread_bps"), as_of(books, (ask - bid) / mid * 1e4, n))
    close(col(out, "imbalance_1"), as_of(books, (bsz - asz) / (bsz + asz), n))

    pb, pa, pbs, pas = np.roll(bid, 1), np.roll(ask, 1), np.roll(bsz, 1), np.roll(asz, 1)
    e = (bid >= pb) * bsz - (bid <= pb) * pbs - (ask <= pa) * asz + (ask >= pa) * pas
    e[0] = 0.0
    ret = np.concatenate([[0.0], (mid[1:] / mid[:-1] - 1) * 1e4])
    side, px, qty = ev["side"][trades].astype(float), ev["price"][trades], ev["size"][trades]
    for h in (1, 10):
        ofi = (ewm_mean(e, ts[books], h) / ewm_mean(np.abs(e), ts[books], h)).fillna(0.0)
        close(col(out, f"ofi_{h}s"), as_of(books, ofi, n))
        tfi = ewm_mean(side * qty, ts[trades], h) / ewm_mean(qty, ts[trades], h)
        close(col(out, f"tfi_{h}s"), as_of(trades, tfi, n))
    for h in (1, 10, 60):
        close(col(out, f"rvol_{h}s_bps"), np.sqrt(decayed_sum_at(ts, ts[books], ret ** 2, h)), rtol=1e-8)
        close(col(out, f"mom_{h}s_bps"), as_of(books, (mid / ewm_mean(mid, ts[books], h) - 1) * 1e4, n), atol=1e-7)
    mid_now = as_of(books, mid, n)
    for h in (10, 60):
        vwap = as_of(trades, ewm_mean(px * qty, ts[trades], h) / ewm_mean(qty, ts[trades], h), n)
        want = np.where((vwap > 0) & (mid_now > 0), (mid_now / np.where(vwap > 0, vwap, 1) - 1) * 1e4, 0.0)
        close(col(out, f"vwap_dev_{h}s_bps"), want, atol=1e-7)


def test_cross_venue_basis_matches_the_other_venues_mid_on_overlapping_captures():
    table = SymbolTable(venues=["spot", "usdm"], symbols=["BTC-USDT"])
    parsed = [parse_file(str(CAPTURES / f"{v}_btcusdt_20240808.gz"), table, venue=v) for v in ("spot", "usdm")]
    ev = merge(parsed)
    ev = ev[ev["kind"] == EV_BBO][:20000].copy()
    out = run_kernel(ev)
    mid = (ev["bid_px"][:, 0] + ev["ask_px"][:, 0]) / 2
    ts = ev["origin_ts"].astype(np.int64)
    df = pd.DataFrame({"venue": ev["venue"], "mid": mid, "ts": ts})
    per_venue = df.pivot(columns="venue", values="mid").ffill()  # each venue's latest mid at every row
    seen = df.pivot(columns="venue", values="ts").ffill()        # and when it was set
    mine = np.where(df["venue"] == 0, per_venue[0], per_venue[1])
    other = np.where(df["venue"] == 0, per_venue[1], per_venue[0])
    other_ts = np.where(df["venue"] == 0, seen[1], seen[0])
    fresh = np.isfinite(other) & (other_ts >= ts - feature.BASIS_MAX_AGE_NS)
    want = np.where(fresh, (mine / np.where(fresh, other, 1.0) - 1) * 1e4, 0.0)
    assert (ev["venue"] == 0).sum() > 1000 and (ev["venue"] == 1).sum() > 1000
    assert np.abs(want).max() > 1.0  # a real basis between spot and the perpetual
    close(col(out, "basis_bps"), want)


def test_a_venue_whose_book_stopped_moving_leaves_the_basis_after_its_max_age():
    s = 1_000_000_000
    t0 = 1_700_000_000 * s
    bbo = lambda ts, venue, mid: _event(EV_BBO, ts, venue=venue, bid_px=np.r_[mid - 0.5, np.zeros(4)],  # noqa: E731
                                        ask_px=np.r_[mid + 0.5, np.zeros(4)], bid_sz=np.r_[1.0, np.zeros(4)],
                                        ask_sz=np.r_[1.0, np.zeros(4)])
    events = [bbo(t0, 1, 100.0)]  # venue 1 quotes once, then its feed stalls
    events += [bbo(t0 + i * s // 4, 0, 101.0) for i in range(1, 9)]  # venue 0 every 250 ms for 2 s
    events.append(bbo(t0 + 3 * s, 1, 100.0))  # venue 1 is back
    events.append(bbo(t0 + 3 * s + 1, 0, 101.0))
    out = run_kernel(np.array(events, records.MARKET_EVENT))
    basis = col(out, "basis_bps")
    age_s = np.array([(e["origin_ts"] - t0) / s for e in events])
    want_live = (101.0 / 100.0 - 1) * 1e4
    on_venue_0 = np.array([e["venue"] == 0 for e in events])
    close(basis[on_venue_0 & (age_s <= 1.0)], want_live)
    assert np.all(basis[on_venue_0 & (age_s > 1.0) & (age_s < 3.0)] == 0.0)  # stale: left out, no other venue
    close(basis[-1:], [want_live])  # fresh again
    close(basis[-2:-1], [-want_live * 100.0 / 101.0])  # venue 1 against venue 0's 101 (set 1 s ago: still fresh)


def _event(kind, ts, venue=0, symbol=0, **fields):
    ev = np.zeros(1, records.MARKET_EVENT)[0]
    ev["kind"], ev["origin_ts"], ev["exch_ts"], ev["venue"], ev["symbol"] = kind, ts, ts, venue, symbol
    for name, value in fields.items():
        ev[name] = value
    return ev


def test_funding_rate_and_time_to_funding_follow_a_recorded_funding_history():
    history = json.loads((DATA / "freqtrade-samples" / "XRP_USDT-8h-funding_rate.json").read_text())
    times_ms = np.array([row[0] for row in history], np.int64)
    rates = np.array([row[1] for row in history])
    skew_ns = 1_270_000_000  # the venue's clock runs ahead of the receive clock
    events = []
    for i in range(len(history) - 1):
        settled = times_ms[i] * 1_000_000
        events.append(_event(EV_FUNDING, settled + 5_000_000, price=rates[i], aux=float(times_ms[i + 1] * 1_000_000),
                             exch_ts=settled + skew_ns))
        events.append(_event(EV_TRADE, settled + 3_600_000_000_000, price=1.0, size=1.0, side=BUY))
    out = run_kernel(np.array(events, records.MARKET_EVENT))
    close(col(out, "funding_rate_bps")[0::2], rates[:-1] * 1e4, rtol=1e-12)
    close(col(out, "funding_rate_bps")[1::2], rates[:-1] * 1e4, rtol=1e-12)
    # At the funding event the venue's own clock says next - exch_ts; an hour later (receive clock) the
    # trade sees that minus the receive time elapsed since the funding event (3600 s - 5 ms).
    to_next = (times_ms[1:] - times_ms[:-1]) * 1e-3 - skew_ns * 1e-9
    close(col(out, "time_to_funding_s")[0::2], to_next, rtol=1e-12, atol=1e-6)
    close(col(out, "time_to_funding_s")[1::2], to_next - 3600.0 + 0.005, rtol=1e-12, atol=1e-6)
    assert -22 < col(out, "funding_rate_bps").min() < 0 < col(out, "funding_rate_bps").max()


def test_liquidation_intensity_is_an_exponential_kernel_estimate():
    rng = np.random.default_rng(5)
    ts = 1_700_000_000_000_000_000 + np.cumsum(rng.integers(1, 20_000_000_000, 200))
    px, qty = 100 + rng.random(200), rng.random(200)
    is_liq = rng.random(200) < 0.4
    events = np.array([_event(EV_LIQUIDATION if liq else EV_TRADE, t, price=p, size=q, side=SELL)
                       for t, p, q, liq in zip(ts, px, qty, is_liq)], records.MARKET_EVENT)
    out = run_kernel(events)
    k = math.log(2) / 60.0
    close(col(out, "liq_intensity_60s"), decayed_sum_at(ts, ts[is_liq], np.ones(is_liq.sum()), 60) * k)
    close(col(out, "liq_notional_60s"), decayed_sum_at(ts, ts[is_liq], (px * qty)[is_liq], 60) * k)


def test_a_built_l2_book_feeds_ten_levels_to_imbalance_10():
    from stages import book
    events = parse_file(str(CAPTURES / "spot_ethusdt_20240808.gz"),
                        SymbolTable(venues=["spot"], symbols=["ETH-USDT"]), venue="spot").records
    deltas = events[events["kind"] == records.EV_BOOK_DELTA]
    state = feature.make_state()
    out = run_kernel(deltas, state=state)
    top = np.zeros((4, 10))
    assert book.top(state[1], 0, 10, top[0], top[1], top[2], top[3]) == 10
    b, a = top[1].sum(), top[3].sum()
    assert col(out, "imbalance_10")[-1] == pytest.approx((b - a) / (b + a), rel=1e-12)
    assert not np.allclose(col(out, "imbalance_10"), col(out, "imbalance_5"))


# Property tests: random streams of books, BBOs, trades, liquidations and funding on 2 venues x 2 symbols.

@st.composite
def streams(draw):
    n = draw(st.integers(1, 60))
    ts = 1_000_000_000
    events = []
    for _ in range(n):
        ts += draw(st.integers(-1_000_000, 5_000_000_000))  # receive times may step back a little
        kind = draw(st.sampled_from([EV_BOOK, EV_BBO, EV_TRADE, EV_LIQUIDATION, EV_FUNDING]))
        ev = _event(kind, ts, venue=draw(st.integers(0, 1)), symbol=draw(st.integers(0, 1)))
        price = draw(st.floats(1.0, 1e5))
        if kind in (EV_BOOK, EV_BBO):
            levels = records.BOOK_LEVELS if kind == EV_BOOK else 1
            gaps = draw(st.lists(st.floats(1e-6, 0.05), min_size=2 * levels, max_size=2 * levels))
            sizes = draw(st.lists(st.floats(1e-9, 1e6), min_size=2 * levels, max_size=2 * levels))
            bid, ask = price, price * (1 + gaps[0])
            for j in range(levels):
                ev["bid_px"][j], ev["ask_px"][j] = bid, ask
                ev["bid_sz"][j], ev["ask_sz"][j] = sizes[2 * j], sizes[2 * j + 1]
                bid, ask = bid * (1 - gaps[2 * j + 1] / 10), ask * (1 + gaps[2 * j] / 10)
        elif kind == EV_FUNDING:
            ev["price"] = draw(st.floats(-0.01, 0.01))
            ev["aux"] = float(ts + draw(st.integers(-10**10, 3 * 10**13)))
        else:
            ev["price"], ev["size"], ev["side"] = price, draw(st.floats(1e-9, 1e6)), draw(st.sampled_from([BUY, SELL]))
        events.append(ev)
    return np.array(events, records.MARKET_EVENT)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.integers(1, 64))
def test_invariants_hold_and_batching_changes_nothing(events, batch):
    out = run_kernel(events, batch=len(events))
    assert np.isfinite(out["values"]).all()
    for name in ("imbalance_1", "imbalance_5", "imbalance_10", "ofi_1s", "ofi_10s", "tfi_1s", "tfi_10s", "trade_flow"):
        v = col(out, name)
        assert ((v >= -1.0) & (v <= 1.0)).all(), name
    for name in ("rvol_bps", "rvol_1s_bps", "rvol_10s_bps", "rvol_60s_bps", "liq_intensity_60s", "liq_notional_60s",
                 "time_to_funding_s"):
        assert (col(out, name) >= 0.0).all(), name
    has_book = np.isfinite(out["bid"])
    assert (col(out, "spread_bps")[has_book] >= 0.0).all()
    micro = col(out, "microprice")[has_book]
    assert ((micro >= out["bid"][has_book] * (1 - 1e-12)) & (micro <= out["ask"][has_book] * (1 + 1e-12))).all()
    assert (out["schema_hash"] == records.FEATURE_SCHEMA_HASH).all()
    again = run_kernel(events, batch=batch)
    assert again.tobytes() == out.tobytes()


def test_a_bbo_on_a_synced_l2_book_sits_on_top_of_the_books_deeper_levels():
    from stages import book
    events = parse_file(str(CAPTURES / "spot_btcusdt_20240808.gz"),
                        SymbolTable(venues=["spot"], symbols=["BTC-USDT"]), venue="spot").records[:60000].copy()
    out = run_kernel(events)
    books, deep = book.make_books(), np.zeros((4, 10))
    checked = 0
    for i, ev in enumerate(events):
        book.apply(books, ev)
        if ev["kind"] != EV_BBO or not book.is_synced(books, 0) or book.top(books, 0, 10, *deep) == 0:
            continue
        bid, ask = ev["bid_px"][0], ev["ask_px"][0]
        bids = [ev["bid_sz"][0]] + [s for p, s in zip(deep[0], deep[1]) if p < bid]
        asks = [ev["ask_sz"][0]] + [s for p, s in zip(deep[2], deep[3]) if p > ask]
        b, a = sum(bids[:10]), sum(asks[:10])
        assert out["values"][i, NAMES.index("imbalance_10")] == pytest.approx((b - a) / (b + a), rel=1e-12, abs=1e-15)
        b, a = sum(bids[:5]), sum(asks[:5])
        assert out["values"][i, NAMES.index("imbalance_5")] == pytest.approx((b - a) / (b + a), rel=1e-12, abs=1e-15)
        assert out["bid"][i] == bid and out["ask"][i] == ask
        checked += 1
    assert checked > 10_000
    assert book.counters(books, 0)["bbo_mismatched"] == 0
