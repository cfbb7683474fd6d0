"""Fuzzing the validator (and the feature stage behind it): no input crashes a stage, every event is either
forwarded or quarantined and counted, and what is forwarded satisfies the rules it was checked against."""
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shm import control as cb
from stages import feature, records, validate
from stages.records import (BOOK_LEVELS, EV_BBO, EV_BOOK, EV_BOOK_DELTA, EV_FUNDING, EV_LIQUIDATION, EV_MARK, EV_TRADE,
                            MARKET_EVENT)
from tests.conftest import kernel_params

N_VENUES, N_SYMBOLS = 2, 3
PARAMS = kernel_params("validate", n_venues=N_VENUES, n_symbols=N_SYMBOLS, ticks=[0.5, 0.01, 0.0],
                       lots=[0.1, 0.0, 0.001])
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

awkward_floats = st.one_of(
    st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1e-300, 1e300, -1.0, 5e-324]),
    st.floats(min_value=-10.0, max_value=200.0, allow_nan=False),
    st.floats(min_value=99.0, max_value=101.0, allow_nan=False).map(lambda x: round(x * 2) / 2),  # on the grid
)
kinds = st.sampled_from([EV_BOOK, EV_TRADE, EV_BOOK_DELTA, EV_BBO, EV_FUNDING, EV_LIQUIDATION, EV_MARK, 0, 8, 255])


@st.composite
def market_event(draw):
    ev = np.zeros(1, MARKET_EVENT)[0]
    ev["kind"] = draw(kinds)
    ev["venue"] = draw(st.sampled_from([0, 1, 2, 65535]))
    ev["symbol"] = draw(st.sampled_from([0, 1, 2, 3, 65535]))
    ev["side"] = draw(st.sampled_from([-1, 0, 1, 127]))
    ev["flags"] = draw(st.integers(0, 255))
    ev["venue_seq"] = draw(st.sampled_from([0, 1, 2, 3, 10, -5, 2**62]))
    ev["origin_ts"] = draw(st.sampled_from([0, 1_000_000_000, 2_000_000_000, 10**19 // 10]))
    ev["exch_ts"] = draw(st.sampled_from([0, -1, 1_000_000_000, 1_500_000_000, 9_000_000_000]))
    ev["price"] = draw(awkward_floats)
    ev["size"] = draw(awkward_floats)
    ev["aux"] = draw(awkward_floats)
    base = draw(st.floats(min_value=50.0, max_value=150.0, allow_nan=False))
    for j in range(BOOK_LEVELS):
        ev["bid_px"][j] = draw(st.one_of(st.just(base - j * 0.5), awkward_floats))
        ev["ask_px"][j] = draw(st.one_of(st.just(base + 0.5 + j * 0.5), awkward_floats))
        ev["bid_sz"][j] = draw(awkward_floats)
        ev["ask_sz"][j] = draw(awkward_floats)
    return ev


def _numbered(evs):
    events = np.array(evs, dtype=MARKET_EVENT)
    events["origin_seq"] = np.arange(1, len(events) + 1)
    return events


def _run(events):
    out = np.zeros(len(events), MARKET_EVENT)
    stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
    state = validate.make_state()
    n = validate.step(events, len(events), events[:0], 0, state, PARAMS, None, stats, out, 0)
    return out[:n], stats, state


def _finite(*values):
    return all(math.isfinite(v) for v in values)


def _assert_forwarded_is_sane(ev):
    assert ev["venue"] < N_VENUES and ev["symbol"] < N_SYMBOLS and ev["reason"] == 0
    kind = int(ev["kind"])
    if kind == EV_BOOK:
        levels = [*ev["bid_px"], *ev["ask_px"], *ev["bid_sz"], *ev["ask_sz"]]
        assert _finite(*levels) and min(levels) > 0.0 and ev["bid_px"][0] < ev["ask_px"][0]
    elif kind in (EV_TRADE, EV_LIQUIDATION):
        assert _finite(ev["price"], ev["size"]) and ev["price"] > 0.0 and ev["size"] > 0.0
    elif kind == EV_BOOK_DELTA:
        assert _finite(ev["price"], ev["size"]) and ev["price"] > 0.0 and ev["size"] >= 0.0
    elif kind == EV_BBO:
        top = (ev["bid_px"][0], ev["ask_px"][0], ev["bid_sz"][0], ev["ask_sz"][0])
        assert _finite(*top) and top[0] > 0.0 and top[2] >= 0.0 and top[3] >= 0.0 and top[0] < top[1]
    elif kind == EV_FUNDING:
        assert _finite(ev["price"], ev["aux"])
    elif kind == EV_MARK:
        assert _finite(ev["price"], ev["aux"]) and ev["price"] > 0.0
    else:
        raise AssertionError(f"forwarded an unknown kind {kind}")


def _assert_accounted(events, out, stats, state):
    quarantined = int(stats[validate.ST_QUARANTINED])
    assert len(out) + quarantined == len(events)
    assert int(stats[validate.ST_FORWARDED]) == len(out)
    assert sum(int(stats[validate.ST_REASON_BASE + code - 1]) for code in validate.REASONS) == quarantined
    refused = np.zeros(len(events), MARKET_EVENT)
    n, missed = validate.take_quarantined(state, refused)
    assert (n, missed) == (quarantined, 0)
    assert set(refused[:n]["reason"]) <= set(validate.REASON_NAMES)
    # forwarded and refused together are the input, in order
    merged = np.sort(np.concatenate([out["origin_seq"], refused[:n]["origin_seq"]]))
    assert list(merged) == sorted(events["origin_seq"])


@given(st.lists(market_event(), min_size=1, max_size=40))
@SETTINGS
def test_any_event_is_forwarded_sane_or_quarantined_with_a_counted_reason(evs):
    events = _numbered(evs)
    out, stats, state = _run(events)
    for ev in out:
        _assert_forwarded_is_sane(ev)
    _assert_accounted(events, out, stats, state)
    # sequences never go back within a space, per instrument, among what was forwarded
    for space_kinds, strict in (((EV_BOOK, EV_TRADE), True), ((EV_BBO,), True), ((EV_BOOK_DELTA,), False)):
        for key in {(int(e["venue"]), int(e["symbol"])) for e in out}:
            seqs = [int(e["venue_seq"]) for e in out if (int(e["venue"]), int(e["symbol"])) == key
                    and e["kind"] in space_kinds and e["venue_seq"] > 0]
            assert all((b > a) if strict else (b >= a) for a, b in zip(seqs, seqs[1:])), seqs


@given(st.binary(min_size=MARKET_EVENT.itemsize, max_size=MARKET_EVENT.itemsize * 12))
@SETTINGS
def test_raw_bytes_never_crash_the_validator(raw):
    n = len(raw) // MARKET_EVENT.itemsize
    events = np.frombuffer(raw[:n * MARKET_EVENT.itemsize], MARKET_EVENT).copy()
    out, stats, state = _run(events)
    for ev in out:
        _assert_forwarded_is_sane(ev)
    quarantined = int(stats[validate.ST_QUARANTINED])
    assert len(out) + quarantined == n


@given(st.lists(market_event(), min_size=1, max_size=40))
@SETTINGS
def test_whatever_validation_forwards_the_feature_stage_digests(evs):
    valid, _, _ = _run(_numbered(evs))
    state = feature.make_state()
    out = np.zeros(max(1, len(valid)), records.FEATURE_VECTOR)
    stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
    n = feature.step(valid, len(valid), valid[:0], 0, state, feature.make_params(), None, stats, out, 0)
    assert n == len(valid)
    assert (out[:n]["schema_hash"] == records.FEATURE_SCHEMA_HASH).all()
