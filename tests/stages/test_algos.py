"""Execution algorithms in execute, on the event clock: TWAP slices at their times and sizes, POV children as a share
of the traded volume under a cap, an iceberg showing one part at a time; a kill, a cancel-all and a gate that keeps
refusing stop a parent. In fused mode the same runs give the same reports twice, and a routing block that never
fires leaves every order as it was."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.hosting.fused import run_fused
from shm.control import G_TRADING_ENABLED
from stages.records import (ALGO_ICEBERG, ALGO_NONE, ALGO_POV, ALGO_TWAP, BUY, INTENT_CANCEL_ALL, INTENT_QUOTE, ORD_ACKED,
                            ORD_CANCELLED, ORD_FILLED, ORD_NEW, ORD_PARTIAL, ORD_PENDING_CANCEL, ORD_REJECTED,
                            REJ_BAD_QTY, REJ_MAX_QTY)
from tests.conftest import ROOT, signal_config
from tests.stages.desk import MS, T0, Desk, algos, book, intent, trade


def books_every(desk, first_ms, last_ms, step_ms, seq, **kw):
    for ms in range(first_ms, last_ms + 1, step_ms):
        desk.step(market=[book(T0 + ms * MS, seq, **kw)])
        seq += 1
    return seq


def children(desk, parent_id):
    r = desk.all_reports()
    return r[(r["parent_id"] == parent_id) & (r["state"] == ORD_NEW)]


def test_twap_sends_each_slice_at_the_first_event_past_its_time():
    desk = Desk()
    desk.step(market=[book(T0, 1, size=10.0)])
    desk.step([intent(T0 + MS, 2, BUY, 101.0, 4.0, intent_id=9, algo=ALGO_TWAP, horizon_ms=100.0, param=4)])
    books_every(desk, 10, 120, 10, 3, size=10.0)
    new = children(desk, 9)
    # slices due at 1, 26, 51 and 76 ms; the events come every 10 ms
    assert list((new["stage_ts"] - T0) // MS) == [1, 30, 60, 80]
    assert list(new["qty"]) == [1.0] * 4 and np.all(new["algo"] == ALGO_TWAP)
    assert np.all(desk.all_reports()["parent_id"] == 9)
    p = desk.parents[0]
    assert p["state"] == algos.FREE and p["filled"] == 4.0 and p["notional"] == 4 * 100.5 and p["n_children"] == 4


def test_a_twap_slice_that_fills_short_is_made_up_by_the_later_ones():
    desk = Desk()
    desk.step(market=[book(T0, 1, size=0.6)])  # 0.6 shown at the limit
    desk.step([intent(T0 + MS, 2, BUY, 100.5, 4.0, intent_id=9, algo=ALGO_TWAP, horizon_ms=30.0, param=3)])
    books_every(desk, 11, 31, 10, 3, size=0.6)
    assert list(children(desk, 9)["qty"]) == pytest.approx([4 / 3, (4 - 0.6) / 2, 4 - 1.2])
    assert desk.parents[0]["filled"] == pytest.approx(1.8) and desk.parents[0]["state"] == algos.FREE


def test_pov_takes_its_share_of_the_volume_traded_since_it_started_at_most_max_child():
    desk = Desk()
    desk.step(market=[book(T0, 1, size=10.0), book(T0, 2, venue=1, size=10.0)])
    desk.step([intent(T0 + MS, 3, BUY, 101.0, 10.0, intent_id=5, algo=ALGO_POV, horizon_ms=1000.0, param=0.25,
                      max_child=2.0)])
    desk.step(market=[trade(T0 + 20 * MS, 4, size=4.0)])              # 25% of 4: 1
    desk.step(market=[trade(T0 + 40 * MS, 5, venue=1, size=100.0)])   # another venue's: not its volume
    desk.step(market=[trade(T0 + 60 * MS, 6, size=20.0)])             # of 24: 6 -> 5 short, 2 at a time
    seq = books_every(desk, 70, 90, 10, 7, size=10.0)                 # no trade: no child
    desk.step(market=[trade(T0 + 100 * MS, seq, size=1.0)])           # of 25: 6.25 -> 3.25 short: 2
    desk.step(market=[trade(T0 + 120 * MS, seq + 1, size=1.0)])       # of 26: 6.5 -> 1.5 short
    seq += 2
    assert list(children(desk, 5)["qty"]) == [1.0, 2.0, 2.0, 1.5]
    p = desk.parents[0]
    assert p["volume"] == 26.0 and p["filled"] == 6.5 and p["state"] == algos.WORKING
    books_every(desk, 1002, 1002, 1, seq, size=10.0)  # past its deadline
    desk.step(market=[trade(T0 + 1100 * MS, seq + 1, size=100.0)])
    assert len(children(desk, 5)) == 4 and desk.parents[0]["state"] == algos.FREE


def test_a_routed_pov_counts_the_volume_of_every_venue():
    desk = Desk()
    desk.step(market=[book(T0, 1, size=10.0), book(T0, 2, venue=1, size=10.0)])
    desk.step([intent(T0 + MS, 3, BUY, 101.0, 10.0, intent_id=5, algo=ALGO_POV, horizon_ms=1000.0, param=0.5,
                      route=1)])
    desk.step(market=[trade(T0 + 20 * MS, 4, venue=1, size=4.0)])
    assert desk.parents[0]["volume"] == 4.0 and list(children(desk, 5)["qty"]) == [2.0]


def test_an_iceberg_shows_one_part_at_a_time_and_the_next_once_it_filled():
    desk = Desk()
    desk.step(market=[book(T0, 1)])  # bid 100.0, ask 100.5
    desk.step([intent(T0 + MS, 2, BUY, 100.0, 2.5, intent_id=3, algo=ALGO_ICEBERG, param=1.0)])
    for k in range(4):  # sells through our bid fill the part shown
        desk.step(market=[trade(T0 + (20 + 20 * k) * MS, 3 + k, price=99.5, size=5.0)])
    r = desk.all_reports()
    assert list(children(desk, 3)["qty"]) == [1.0, 1.0, 0.5]
    mine = r[r["parent_id"] == 3]
    open_parts = np.cumsum((mine["state"] == ORD_NEW).astype(int) - (mine["state"] == ORD_FILLED).astype(int))
    assert open_parts.max() == 1  # never two parts shown at once
    assert np.all(mine[mine["state"] == ORD_FILLED]["liquidity"] == 1)  # it rests: maker fills
    assert desk.parents[0]["state"] == algos.FREE and desk.parents[0]["filled"] == 2.5


def test_an_iceberg_takes_its_shown_part_down_at_its_deadline():
    desk = Desk()
    desk.step(market=[book(T0, 1)])
    desk.step([intent(T0 + MS, 2, BUY, 100.0, 3.0, intent_id=3, algo=ALGO_ICEBERG, horizon_ms=50.0, param=1.0)])
    desk.step(market=[book(T0 + 60 * MS, 3)])
    assert list(desk.all_reports()["state"]) == [ORD_NEW, ORD_ACKED, ORD_PENDING_CANCEL, ORD_CANCELLED]
    assert desk.parents[0]["state"] == algos.FREE and desk.parents[0]["filled"] == 0.0


@pytest.mark.parametrize("stop", ["kill", "cancel_all"])
def test_a_kill_or_a_cancel_all_stops_every_parent(stop):
    desk = Desk()
    desk.step(market=[book(T0, 1, size=10.0)])
    desk.step([intent(T0 + MS, 2, BUY, 101.0, 4.0, intent_id=9, algo=ALGO_TWAP, horizon_ms=100.0, param=4)])
    if stop == "kill":
        desk.ctl[G_TRADING_ENABLED] = 0
        desk.step(market=[book(T0 + 10 * MS, 3, size=10.0)])
    else:
        desk.step([intent(T0 + 10 * MS, 3, 0, 0.0, 0.0, intent_id=10, kind=INTENT_CANCEL_ALL)])
    books_every(desk, 20, 120, 10, 4, size=10.0)
    assert len(children(desk, 9)) == 1 and desk.parents[0]["state"] == algos.FREE


def test_a_parent_whose_children_the_gate_keeps_refusing_gives_up():
    desk = Desk(max_order_qty=1.0)
    desk.step(market=[book(T0, 1, size=10.0)])
    desk.step([intent(T0 + MS, 2, BUY, 101.0, 10.0, intent_id=9, algo=ALGO_TWAP, horizon_ms=50.0, param=5)])
    books_every(desk, 10, 100, 10, 3, size=10.0)
    r = desk.all_reports()
    assert len(r) == algos.MAX_REJECTS and np.all(r["state"] == ORD_REJECTED)
    assert np.all(r["reject_reason"] == REJ_MAX_QTY) and np.all(r["parent_id"] == 9) and np.all(r["algo"] == ALGO_TWAP)
    assert desk.parents[0]["state"] == algos.FREE and desk.counters()["children_refused"] == algos.MAX_REJECTS


def test_an_algo_that_could_not_finish_or_on_a_quote_is_refused():
    desk = Desk()
    desk.step(market=[book(T0, 1)])
    r = desk.step([intent(T0 + MS, 2, BUY, 101.0, 1.0, intent_id=4, algo=ALGO_TWAP, param=0.0),
                   intent(T0 + MS, 2, BUY, 101.0, 1.0, intent_id=5, algo=ALGO_POV, param=1.5),
                   intent(T0 + MS, 2, BUY, 99.0, 1.0, intent_id=6, algo=ALGO_ICEBERG, param=1.0, kind=INTENT_QUOTE)])
    assert np.all(r["state"] == ORD_REJECTED) and np.all(r["reject_reason"] == REJ_BAD_QTY)
    assert list(r["parent_id"]) == [4, 5, 0] and desk.counters()["parents"] == 0


def test_the_config_works_takers_above_a_notional_with_its_algo():
    desk = Desk(routing={"algo": "twap", "algo_above_usd": 150.0, "twap_slices": 2, "twap_horizon_ms": 20.0})
    desk.step(market=[book(T0, 1, size=10.0)])
    r = desk.step([intent(T0 + MS, 2, BUY, 101.0, 2.0, intent_id=1), intent(T0 + MS, 2, BUY, 101.0, 0.9, intent_id=2)])
    new = r[r["state"] == ORD_NEW]
    assert list(new["parent_id"]) == [1, 0] and list(new["qty"]) == [1.0, 0.9] and list(new["algo"]) == [ALGO_TWAP, 0]
    desk.step(market=[book(T0 + 15 * MS, 3, size=10.0)])
    assert list(children(desk, 1)["qty"]) == [1.0, 1.0]


def test_explain_pairs_each_child_with_its_parent_intent():
    from tools import explain_orders
    desk = Desk()
    desk.step(market=[book(T0, 1, size=10.0)])
    parent = intent(T0 + MS, 2, BUY, 101.0, 4.0, intent_id=9, algo=ALGO_TWAP, horizon_ms=100.0, param=4)
    desk.step([parent])
    books_every(desk, 10, 120, 10, 3, size=10.0)
    pairs = explain_orders.explain(np.array([parent]), desk.all_reports())
    assert len(pairs) == 4
    assert all(i["intent_id"] == 9 and r["parent_id"] == 9 and r["state"] == ORD_ACKED for i, r in pairs)


# --- fused mode ---------------------------------------------------------------------------------------------------

ALGO_RUNS = {
    "twap-routed": ({"algo": "twap", "algo_above_usd": 500.0, "twap_slices": 4, "twap_horizon_ms": 60.0,
                     "route_takers": True}, ALGO_TWAP),
    "pov": ({"algo": "pov", "algo_above_usd": 500.0, "pov_share": 0.2, "pov_max_child_usd": 800.0,
             "pov_horizon_ms": 200.0}, ALGO_POV),
    "iceberg": ({"algo": "iceberg", "algo_above_usd": 500.0, "iceberg_display_usd": 700.0,
                 "iceberg_horizon_ms": 200.0}, ALGO_ICEBERG),
}


@pytest.fixture(scope="module", params=list(ALGO_RUNS))
def algo_runs(request):
    routing, algo = ALGO_RUNS[request.param]
    config = signal_config(routing=routing)
    return request.param, algo, run_fused(config, 20_000, span_ns=2_000_000), run_fused(config, 20_000,
                                                                                        span_ns=2_000_000)


def test_fused_runs_with_an_algo_give_the_same_reports_twice(algo_runs):
    name, algo, first, second = algo_runs
    assert first.reports.tobytes() == second.reports.tobytes()
    kids = first.reports[first.reports["parent_id"] != 0]
    routed_too = {ALGO_NONE} if ALGO_RUNS[name][0].get("route_takers") else set()  # takers under the notional
    assert len(kids[kids["state"] == ORD_NEW]) > 20 and set(kids["algo"].tolist()) == {algo} | routed_too


def test_fused_algo_children_have_their_sizes_and_times(algo_runs):
    name, algo, run, _ = algo_runs
    reports, intents = run.reports, run.intents
    by_id = {int(i["intent_id"]): i for i in intents}
    checked = 0
    for pid in np.unique(reports["parent_id"][reports["parent_id"] != 0]).tolist():
        parent = by_id[pid]
        mine = reports[reports["parent_id"] == pid]
        new = mine[mine["state"] == ORD_NEW]
        sent = mine[(mine["state"] == ORD_NEW) | ((mine["state"] == ORD_REJECTED) & (mine["order_id"] == 0))]
        fills = mine[np.isin(mine["state"], [ORD_PARTIAL, ORD_FILLED]) & (mine["qty"] > 0)]
        assert fills["qty"].sum() <= parent["qty"] * (1 + 1e-9)
        if not len(new):
            continue
        checked += 1
        if mine["algo"][0] == ALGO_NONE:  # a taker under the notional, routed: split at once, all of it
            assert len(np.unique(sent["stage_ts"])) == 1 and sent["qty"].sum() == pytest.approx(parent["qty"])
        elif algo == ALGO_TWAP:  # a slice may be split across venues: one time, several children
            times, at = np.unique(sent["stage_ts"], return_inverse=True)
            slices = np.bincount(at, weights=sent["qty"])  # what each slice sent or had refused
            assert len(times) <= 4 and times[0] == parent["origin_ts"]  # the first at once
            assert slices[0] == pytest.approx(parent["qty"] / 4)
            assert np.all(times - times[0] >= np.arange(len(times)) * 15 * MS)  # slice k is due 15k ms in
        elif algo == ALGO_POV:
            assert np.all(new["qty"] <= 800.0 / parent["price"] * (1 + 1e-9))
        else:
            assert np.all(new["qty"] <= 700.0 / parent["price"] * (1 + 1e-9))
            ends = np.isin(mine["state"], [ORD_FILLED, ORD_CANCELLED, ORD_REJECTED]) & (mine["order_id"] > 0)
            assert np.cumsum((mine["state"] == ORD_NEW).astype(int) - ends.astype(int)).max() == 1
    assert checked > 10


def test_a_routing_block_that_never_fires_leaves_every_order_as_it_was():
    plain = run_fused(signal_config(), 20_000, span_ns=2_000_000)
    armed = run_fused(signal_config(routing={"algo": "twap", "algo_above_usd": 1e12}), 20_000, span_ns=2_000_000)
    assert len(plain.orders()) > 100
    assert np.all(plain.reports["parent_id"] == 0) and np.all(plain.reports["algo"] == 0)
    assert plain.reports.tobytes() == armed.reports.tobytes()


def test_a_routed_twap_run_gives_the_same_orders_without_jit():
    """The router and the algos interpreted (NUMBA_DISABLE_JIT=1) reproduce the compiled run exactly."""
    routing = ALGO_RUNS["twap-routed"][0]
    code = ("import hashlib; from tests.conftest import signal_config; from pipeline.hosting.fused import run_fused;"
            f"r = run_fused(signal_config(rings={{'batch': 64}}, routing={routing!r}), 1500, span_ns=1_000_000);"
            "print(hashlib.sha256(r.reports.tobytes()).hexdigest(), int((r.reports['parent_id'] != 0).sum()))")
    compiled = run_fused(signal_config(rings={"batch": 64}, routing=routing), 1500, span_ns=1_000_000)
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, NUMBA_DISABLE_JIT="1"), cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    digest, children = out.stdout.split()
    assert int(children) == int((compiled.reports["parent_id"] != 0).sum()) > 20
    assert digest == hashlib.sha256(compiled.reports.tobytes()).hexdigest()
