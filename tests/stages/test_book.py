"""Order books (stages.book): ladder operations, snapshot runs, sequence checks and resync, crossed and full
ladders, top-N views; the kernels without JIT; every record of real Binance captures, checked against the
venue's own bookTicker and a dict-based reference book; hypothesis: random deltas match the reference."""
import bisect
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from pipeline.sources import SymbolTable, parse_binance_ws
from stages import book
from stages.book import (ASK, BID, C_BAD, C_BBO_MATCHED, C_BBO_MISMATCHED, C_CROSSED, C_OVERFLOW, C_RECENTRED, C_RESETS,
                         C_SNAPSHOTS, C_STALE, C_SYNC_LOST, C_TRIMMED, C_VIEWS, CROSSED, IGNORED, OK, OVERFLOW,
                         RESYNC_NEEDED, S_LAST_SEQ, S_LO, S_N, apply, best, is_synced, key_of, make_books, reset, top)
from stages.records import (BOOK_LEVELS, BUY, EV_BBO, EV_BOOK, EV_BOOK_DELTA, EV_TRADE, F_LAST, F_SNAPSHOT, F_UNSYNCED,
                            MARKET_EVENT, SELL)
from stages.universe import MAX_SYMBOLS, instrument_key

ROOT = Path(__file__).resolve().parents[2]
WS = Path(__file__).resolve().parents[1] / "data" / "binance-ws-capture"
TABLE = SymbolTable(venues=["binance", ("binance-usdm", "binance-futures")], symbols=["BTC-USDT", "ETH-USDT"])
CAPTURES = {"spot_ethusdt_20240808.gz": "binance", "usdm_btcusdt_20240808.gz": "binance-usdm"}


def delta(side, price, size, seq=0, first=0, prev=0, flags=F_LAST, venue=0, symbol=0):
    ev = np.zeros((), MARKET_EVENT)
    ev["kind"], ev["side"], ev["price"], ev["size"], ev["flags"] = EV_BOOK_DELTA, side, price, size, flags
    ev["venue_seq"], ev["first_seq"], ev["prev_seq"], ev["venue"], ev["symbol"] = seq, first, prev, venue, symbol
    return ev[()]


def snapshot(bids, asks, last_id, folded_to=None, key=(0, 0)):
    """An F_SNAPSHOT run as the Binance parser writes it: bids then asks, F_LAST on the last record."""
    levels = [(BUY, p, q) for p, q in bids] + [(SELL, p, q) for p, q in asks]
    return [delta(s, p, q, seq=folded_to or last_id, first=last_id, venue=key[0], symbol=key[1],
                  flags=F_SNAPSHOT | (F_LAST if i == len(levels) - 1 else 0)) for i, (s, p, q) in enumerate(levels)]


def message(levels, first, seq, prev=0, flags=0):
    """One venue diff message: records sharing first_seq/venue_seq, F_LAST on the last."""
    return [delta(s, p, q, seq=seq, first=first, prev=prev, flags=flags | (F_LAST if i == len(levels) - 1 else 0))
            for i, (s, p, q) in enumerate(levels)]


def bbo(bid, bid_sz, ask, ask_sz, seq):
    ev = np.zeros((), MARKET_EVENT)
    ev["kind"], ev["venue_seq"] = EV_BBO, seq
    ev["bid_px"][0], ev["bid_sz"][0], ev["ask_px"][0], ev["ask_sz"][0] = bid, bid_sz, ask, ask_sz
    return ev[()]


def view(bids, asks, seq):
    ev = np.zeros((), MARKET_EVENT)
    ev["kind"], ev["venue_seq"] = EV_BOOK, seq
    for j, (p, q) in enumerate(bids):
        ev["bid_px"][j], ev["bid_sz"][j] = p, q
    for j, (p, q) in enumerate(asks):
        ev["ask_px"][j], ev["ask_sz"][j] = p, q
    return ev[()]


def run(books, events):
    return [apply(books, ev) for ev in events]


def ladder(books, key, side):
    """The side's levels, best first, read straight from the arrays."""
    lo, n = books.state[key, S_LO + side], books.state[key, S_N + side]
    return list(zip(books.px[key, side, lo:lo + n].tolist(), books.sz[key, side, lo:lo + n].tolist()))


def test_levels_are_kept_best_first_on_both_sides():
    books = make_books()
    run(books, [delta(BUY, 100.0, 1.0), delta(BUY, 102.0, 2.0), delta(BUY, 101.0, 3.0),
                delta(SELL, 105.0, 1.0), delta(SELL, 103.0, 2.0), delta(SELL, 104.0, 3.0)])
    assert ladder(books, 0, BID) == [(102.0, 2.0), (101.0, 3.0), (100.0, 1.0)]
    assert ladder(books, 0, ASK) == [(103.0, 2.0), (104.0, 3.0), (105.0, 1.0)]
    assert best(books, 0) == (102.0, 2.0, 103.0, 2.0)


def test_an_existing_level_is_updated_in_place_and_size_zero_removes_it():
    books = make_books()
    run(books, [delta(BUY, 100.0, 1.0), delta(BUY, 99.0, 1.0), delta(BUY, 98.0, 1.0)])
    assert apply(books, delta(BUY, 99.0, 7.5)) == RESYNC_NEEDED  # applied; no snapshot yet, so unsynced
    assert ladder(books, 0, BID) == [(100.0, 1.0), (99.0, 7.5), (98.0, 1.0)]
    run(books, [delta(BUY, 99.0, 0.0), delta(BUY, 100.0, 0.0)])
    assert ladder(books, 0, BID) == [(98.0, 1.0)]
    apply(books, delta(BUY, 50.0, 0.0))  # removing a level the book never had: venues do send these
    assert ladder(books, 0, BID) == [(98.0, 1.0)]


def test_top_fills_n_levels_best_first_and_pads_the_thinner_side():
    books = make_books()
    run(books, snapshot([(100.0, 1.0), (99.0, 2.0), (98.0, 3.0)], [(101.0, 4.0)], last_id=10))
    out = [np.full(4, -1.0) for _ in range(4)]
    assert top(books, 0, 4, *out) == 1  # both sides complete down to one level
    assert out[0][:3].tolist() == [100.0, 99.0, 98.0] and np.isnan(out[0][3])
    assert out[1].tolist() == [1.0, 2.0, 3.0, 0.0]
    assert out[2][0] == 101.0 and np.isnan(out[2][1:]).all() and out[3].tolist() == [4.0, 0.0, 0.0, 0.0]
    assert top(books, 0, 2, *out) == 1 and out[0][:2].tolist() == [100.0, 99.0]
    assert top(books, 99, 2, *out) == 0 and np.isnan(out[0][:2]).all()  # a key with no book


def test_a_full_ladder_drops_its_worst_level():
    books = make_books(max_levels=3)
    assert run(books, [delta(SELL, p, 1.0) for p in (10.0, 11.0, 12.0)]) == [RESYNC_NEEDED] * 3
    run(books, snapshot([], [(10.0, 1.0), (11.0, 1.0), (12.0, 1.0)], last_id=5))
    assert apply(books, delta(SELL, 9.5, 2.0, seq=6, first=6)) == OVERFLOW
    assert ladder(books, 0, ASK) == [(9.5, 2.0), (10.0, 1.0), (11.0, 1.0)]
    assert apply(books, delta(SELL, 20.0, 2.0, seq=7, first=7)) == OVERFLOW  # worse than all: not kept
    assert ladder(books, 0, ASK) == [(9.5, 2.0), (10.0, 1.0), (11.0, 1.0)]
    assert apply(books, delta(SELL, 10.0, 3.0, seq=8, first=8)) == OK  # an update needs no room
    assert books.state[0, C_OVERFLOW] == 2


def test_a_snapshot_run_clears_the_book_once_and_syncs_it():
    books = make_books()
    run(books, [delta(BUY, 90.0, 1.0), delta(SELL, 95.0, 1.0)])
    assert not is_synced(books, 0)
    statuses = run(books, snapshot([(100.0, 1.0), (99.0, 2.0)], [(101.0, 3.0), (102.0, 4.0)], last_id=50))
    assert statuses == [OK] * 4
    assert ladder(books, 0, BID) == [(100.0, 1.0), (99.0, 2.0)]
    assert ladder(books, 0, ASK) == [(101.0, 3.0), (102.0, 4.0)]
    assert is_synced(books, 0) and books.state[0, C_SNAPSHOTS] == 1
    # a run cut short (no F_LAST) followed by another snapshot: the new ids start a new book
    cut = snapshot([(80.0, 1.0)], [(81.0, 1.0)], last_id=60)[:1]
    run(books, cut + snapshot([(70.0, 1.0)], [(71.0, 1.0)], last_id=70))
    assert ladder(books, 0, BID) == [(70.0, 1.0)] and books.state[0, C_SNAPSHOTS] == 3


def test_a_bridging_message_continues_the_snapshot_and_a_gap_needs_a_resync():
    books = make_books()
    run(books, snapshot([(100.0, 1.0)], [(101.0, 1.0)], last_id=10))
    assert run(books, message([(BUY, 100.0, 2.0)], first=9, seq=12)) == [OK]  # U <= L + 1 <= u: bridges
    assert run(books, message([(BUY, 100.0, 3.0)], first=13, seq=14)) == [OK]
    assert run(books, message([(BUY, 100.0, 4.0), (SELL, 101.0, 5.0)], first=16, seq=17)) == [RESYNC_NEEDED] * 2
    assert not is_synced(books, 0) and books.state[0, C_SYNC_LOST] == 1
    assert ladder(books, 0, BID) == [(100.0, 4.0)]  # still applied: a best-effort book until the snapshot
    run(books, snapshot([(100.0, 9.0)], [(101.0, 9.0)], last_id=20))
    assert is_synced(books, 0) and ladder(books, 0, BID) == [(100.0, 9.0)]


def test_a_message_already_inside_the_snapshot_is_ignored():
    books = make_books()
    run(books, snapshot([(100.0, 1.0)], [(101.0, 1.0)], last_id=10))
    assert run(books, message([(BUY, 100.0, 5.0), (SELL, 101.0, 5.0)], first=8, seq=10)) == [IGNORED] * 2
    assert books.state[0, C_STALE] == 2 and is_synced(books, 0) and best(books, 0) == (100.0, 1.0, 101.0, 1.0)


def test_a_folded_snapshot_must_be_continued_exactly():
    books = make_books()
    run(books, snapshot([(100.0, 1.0)], [(101.0, 1.0)], last_id=10, folded_to=14))
    assert run(books, message([(BUY, 100.0, 2.0)], first=14, seq=16)) == [RESYNC_NEEDED]  # would need U = 15
    books = make_books()
    run(books, snapshot([(100.0, 1.0)], [(101.0, 1.0)], last_id=10, folded_to=14))
    assert run(books, message([(BUY, 100.0, 2.0)], first=15, seq=16)) == [OK]


def test_futures_messages_chain_on_prev_seq():
    books = make_books()
    run(books, snapshot([(100.0, 1.0)], [(101.0, 1.0)], last_id=100))
    assert run(books, message([(BUY, 100.0, 2.0)], first=90, seq=105, prev=89)) == [OK]  # the bridge ignores pu
    assert run(books, message([(BUY, 100.0, 3.0)], first=120, seq=130, prev=105)) == [OK]  # U jumps, pu chains
    assert run(books, message([(BUY, 100.0, 4.0)], first=131, seq=140, prev=129)) == [RESYNC_NEEDED]


def test_the_sources_unsynced_flag_makes_the_book_unsynced():
    books = make_books()
    run(books, snapshot([(100.0, 1.0)], [(101.0, 1.0)], last_id=10))
    assert run(books, message([(BUY, 99.0, 1.0)], first=11, seq=11, flags=F_UNSYNCED)) == [RESYNC_NEEDED]
    assert not is_synced(books, 0)


def test_a_level_through_the_other_side_removes_the_levels_it_crosses():
    books = make_books()
    run(books, snapshot([(100.0, 1.0), (99.0, 1.0)], [(101.0, 1.0), (102.0, 1.0), (103.0, 1.0)], last_id=1))
    assert apply(books, delta(BUY, 102.0, 5.0, seq=2, first=2)) == CROSSED  # crosses 101, locks 102
    assert ladder(books, 0, ASK) == [(103.0, 1.0)] and best(books, 0)[0] == 102.0
    assert apply(books, delta(SELL, 99.0, 2.0, seq=3, first=3)) == CROSSED
    assert ladder(books, 0, BID) == [] and ladder(books, 0, ASK) == [(99.0, 2.0), (103.0, 1.0)]
    assert books.state[0, C_CROSSED] == 2 and books.state[0, C_TRIMMED] == 5


def test_a_view_replaces_the_levels_it_covers_and_keeps_deeper_ones():
    books = make_books()
    run(books, snapshot([(100.0 - i, 1.0) for i in range(10)], [(101.0 + i, 1.0) for i in range(10)], last_id=1))
    bids = [(100.5, 2.0), (100.0, 2.0), (99.0, 2.0), (98.5, 2.0), (97.0, 2.0)]
    asks = [(101.0, 3.0), (102.0, 3.0), (103.0, 3.0), (104.0, 3.0), (105.0, 3.0)]
    assert apply(books, view(bids, asks, seq=2)) == OK
    assert ladder(books, 0, BID) == bids + [(96.0 - i, 1.0) for i in range(6)]  # 98.0 was covered, not listed
    assert ladder(books, 0, ASK) == asks + [(106.0 + i, 1.0) for i in range(5)]
    assert apply(books, view(bids[:2], asks, seq=3)) == OK  # a thin side is the whole side
    assert ladder(books, 0, BID) == bids[:2] and books.state[0, C_VIEWS] == 2
    assert apply(books, view([(110.0, 1.0)], asks, seq=4)) == IGNORED  # crossed in itself
    assert apply(books, view(bids, asks, seq=3)) == IGNORED  # older than the book
    assert (books.state[0, C_BAD], books.state[0, C_STALE]) == (1, 1) and BOOK_LEVELS == 5


def test_the_venues_bbo_is_checked_whichever_arrives_first():
    books = make_books()
    run(books, snapshot([(100.0, 1.0)], [(101.0, 1.0)], last_id=10))
    run(books, message([(BUY, 100.0, 2.0)], first=11, seq=11))
    assert apply(books, bbo(100.0, 2.0, 101.0, 1.0, seq=11)) == OK  # the book got there first
    assert apply(books, bbo(100.0, 2.0, 101.0, 7.0, seq=12)) == OK  # not yet at 12: stored, not checked
    assert run(books, message([(SELL, 101.0, 7.0)], first=12, seq=12)) == [OK]  # the BBO came first
    assert books.state[0, C_BBO_MATCHED] == 2
    assert apply(books, bbo(100.0, 2.0, 101.5, 7.0, seq=12)) == RESYNC_NEEDED  # the venue disagrees
    assert books.state[0, C_BBO_MISMATCHED] == 1 and not is_synced(books, 0)
    assert tuple(books.bbo[0]) == (100.0, 2.0, 101.5, 7.0) and ladder(books, 0, ASK) == [(101.0, 7.0)]


def test_reset_empties_the_book_and_forgets_its_sequence():
    books = make_books()
    run(books, snapshot([(100.0, 1.0)], [(101.0, 1.0)], last_id=10))
    reset(books, 0)
    assert not is_synced(books, 0) and ladder(books, 0, BID) == [] and books.state[0, S_LAST_SEQ] == 0
    assert books.state[0, C_RESETS] == 1 and books.state[0, C_SNAPSHOTS] == 1  # counters stay
    run(books, snapshot([(90.0, 1.0)], [(91.0, 1.0)], last_id=5))  # any snapshot, even an older id
    assert is_synced(books, 0) and best(books, 0) == (90.0, 1.0, 91.0, 1.0)


def test_malformed_records_other_kinds_and_unknown_keys_are_ignored():
    books = make_books(max_keys=10)
    bad = [delta(BUY, np.nan, 1.0), delta(BUY, -1.0, 1.0), delta(BUY, 100.0, -1.0), delta(BUY, 100.0, np.inf),
           delta(0, 100.0, 1.0)]
    assert run(books, bad) == [IGNORED] * 5 and books.state[0, C_BAD] == 5
    trade = delta(BUY, 100.0, 1.0)
    trade["kind"] = EV_TRADE
    assert apply(books, trade) == IGNORED
    assert apply(books, delta(BUY, 100.0, 1.0, venue=1, symbol=MAX_SYMBOLS)) == IGNORED  # would alias key 16
    assert apply(books, delta(BUY, 100.0, 1.0, venue=2)) == IGNORED  # key 16 >= max_keys
    assert key_of(1, 1, 10) == instrument_key(1, 1) and key_of(2, 0, 10) == -1
    assert best(books, -1)[1] == 0.0 and not is_synced(books, 10)
    assert all(ladder(books, k, s) == [] for k in range(10) for s in (BID, ASK))


def test_levels_piling_up_at_one_end_recentre_the_window():
    books = make_books(max_levels=4)
    run(books, [delta(BUY, float(p), 1.0) for p in range(1, 40)])  # each new bid is the best: front inserts
    assert ladder(books, 0, BID) == [(float(p), 1.0) for p in (39, 38, 37, 36)]
    assert books.state[0, C_RECENTRED] > 0 and books.state[0, C_OVERFLOW] == 35


def _scenario():
    """A deterministic mixed case (snapshot, diffs with overflow, crossing and recentring, a view, a BBO) on
    two keys; the result as plain lists, to compare the kernels with and without JIT."""
    rng = np.random.default_rng(7)
    books = make_books(max_keys=instrument_key(1, 0) + 1, max_levels=4)
    events = snapshot([(100.0, 1.0), (99.5, 1.0)], [(100.5, 1.0)], last_id=10)
    seq = 10
    for _ in range(120):
        seq += 1
        side = BUY if rng.random() < 0.5 else SELL
        ticks = int(rng.integers(-2, 12))  # away from the touch; a few cross it
        price = 100.0 - 0.5 * ticks if side == BUY else 100.5 + 0.5 * ticks
        events.append(delta(side, price, float(rng.choice([0.0, 1.0, 2.5])), seq=seq, first=seq))
    events.append(view([(101.0, 1.0), (100.0, 1.0), (99.0, 1.0), (98.0, 1.0), (97.0, 1.0)], [(102.0, 2.0)], seq + 1))
    events += snapshot([(10.0, 1.0)], [(11.0, 1.0)], last_id=3, key=(1, 0))
    events.append(bbo(10.0, 1.0, 11.0, 1.0, seq=3))
    events[-1]["venue"] = 1
    statuses = run(books, events)
    out = [np.zeros(6) for _ in range(4)]
    views = []
    for key in (0, instrument_key(1, 0)):
        filled = top(books, key, 6, *out)
        views.append([int(filled)] + [plain(a) for a in out])
    return {"statuses": [int(s) for s in statuses], "views": views, "state": books.state.tolist(),
            "best": [plain(best(books, k)) for k in (0, instrument_key(1, 0))], "synced": bool(is_synced(books, 0))}


def plain(values):
    return [None if np.isnan(x) else float(x) for x in values]


def test_kernels_give_the_same_result_without_jit():
    jitted = _scenario()
    assert jitted["state"][0][C_OVERFLOW] > 0 and jitted["state"][0][C_CROSSED] > 0
    assert jitted["state"][instrument_key(1, 0)][C_BBO_MATCHED] == 1
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    code = "import json; from tests.stages.test_book import _scenario; print(json.dumps(_scenario()))"
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(json.dumps(jitted))


class RefBook:
    """The book's rules in plain Python: {price: size} per side, with a bisect-sorted key list for order
    (-price for bids, price for asks: best first). No capacity limit unless ``cap`` is given."""

    def __init__(self, cap=None):
        self.sizes = ({}, {})
        self.keys = ([], [])
        self.cap = cap
        self.overflow = self.trimmed = 0

    def set(self, s, price, size):
        sizes, keys = self.sizes[s], self.keys[s]
        k = -price if s == BID else price
        if size == 0.0:
            if price in sizes:
                del sizes[price]
                keys.pop(bisect.bisect_left(keys, k))
            return
        if price not in sizes:
            bisect.insort(keys, k)
            sizes[price] = size
            if self.cap is not None and len(keys) > self.cap:
                self.overflow += 1
                worst = keys.pop()
                del sizes[-worst if s == BID else worst]
                if worst == k:
                    return
        sizes[price] = size
        o = 1 - s
        while self.keys[o] and (self.keys[o][0] <= price if s == BID else -self.keys[o][0] >= price):
            worst_k = self.keys[o].pop(0)
            del self.sizes[o][-worst_k if o == BID else worst_k]
            self.trimmed += 1

    def ladder(self, s, n=None):
        keys = self.keys[s][:n]
        return [(-k if s == BID else k, self.sizes[s][-k if s == BID else k]) for k in keys]


def reference_replay(recs):
    """Every delta of a capture through RefBooks: a snapshot run (new ids) starts a fresh book, and a message
    whose update id is not past the book's last one is dropped (Binance's rule); per key."""
    books, open_run, last, stale = {}, {}, {}, {}
    for kind, flags, side, price, size, seq, first, v, s in zip(
            *(recs[f].tolist() for f in ("kind", "flags", "side", "price", "size", "venue_seq", "first_seq",
                                         "venue", "symbol"))):
        if kind != EV_BOOK_DELTA:
            continue
        key = (v, s)
        run_id = (flags & F_SNAPSHOT, first, seq)
        if open_run.get(key) != run_id:
            if flags & F_SNAPSHOT:
                books[key] = RefBook()
                last[key] = seq
                stale[key] = False
            else:
                stale[key] = key in last and seq <= last[key]
                if not stale[key]:
                    last[key] = seq
        open_run[key] = None if flags & F_LAST else run_id
        if not stale[key]:
            books.setdefault(key, RefBook()).set(BID if side == BUY else ASK, price, size)
    return books


@njit(cache=True)
def _replay(books, recs, status, synced, last_seq, tops):
    """apply() every record; after each, the record's book: synced, last update id, best bid/ask."""
    for i in range(recs.shape[0]):
        status[i] = apply(books, recs[i])
        key = key_of(recs[i]["venue"], recs[i]["symbol"], books.state.shape[0])
        synced[i] = is_synced(books, key)
        last_seq[i] = books.state[key, S_LAST_SEQ]
        tops[i, 0], tops[i, 1], tops[i, 2], tops[i, 3] = best(books, key)


@functools.cache
def replayed(name):
    recs = parse_binance_ws(WS / name, TABLE, CAPTURES[name]).records
    books = make_books()
    n = len(recs)
    status, synced, last_seq = np.zeros(n, np.int64), np.zeros(n, np.bool_), np.zeros(n, np.int64)
    tops = np.zeros((n, 4))
    _replay(books, recs, status, synced, last_seq, tops)
    return recs, books, status, synced, last_seq, tops


def venue_bbo(recs):
    return np.stack([recs["bid_px"][:, 0], recs["bid_sz"][:, 0], recs["ask_px"][:, 0], recs["ask_sz"][:, 0]], axis=1)


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_real_capture_book_matches_the_venues_book_ticker(name):
    recs, books, status, synced, last_seq, tops = replayed(name)
    kind, flags = recs["kind"], recs["flags"]
    deltas = kind == EV_BOOK_DELTA
    # The book's own sequence rules agree with the source's F_UNSYNCED on every delta.
    assert np.array_equal(synced[deltas], (flags[deltas] & F_UNSYNCED) == 0)
    assert np.array_equal(status == IGNORED, kind == EV_TRADE)  # nothing stale or malformed in a clean capture
    # 1. At each bookTicker whose update id is the book's last applied one (none on spot: there the
    #    bookTicker always beats the 100 ms diff batch that contains its update).
    is_bbo = kind == EV_BBO
    after = is_bbo & synced & (last_seq == recs["venue_seq"])
    assert np.array_equal(tops[after], venue_bbo(recs[after]))
    # 2. At each diff message that ends on a bookTicker's update id, wherever that bookTicker is in the
    #    stream (Binance's bookTicker usually arrives before the batched diff that contains its update).
    ticker = dict(zip(recs["venue_seq"][is_bbo].tolist(), venue_bbo(recs[is_bbo]).tolist()))
    ends = np.flatnonzero(deltas & ((flags & F_LAST) != 0) & synced)
    pairs = [(i, ticker[u]) for i, u in zip(ends.tolist(), recs["venue_seq"][ends].tolist()) if u in ticker]
    matched = sum(tops[i].tolist() == want for i, want in pairs)
    key = key_of(recs["venue"][0], recs["symbol"][0], books.state.shape[0])
    print(f"\n{name}: bookTicker after the book's update id {after.sum()}/{after.sum()} equal; "
          f"any order {matched}/{len(pairs)}; kernel's own check {books.state[key, C_BBO_MATCHED]} matched, "
          f"{books.state[key, C_BBO_MISMATCHED]} mismatched; {book.counters(books, key)}")
    assert matched == len(pairs) > 500
    # The kernel checks each bookTicker against its own book too (keeping only the latest one per key).
    assert books.state[key, C_BBO_MISMATCHED] == 0 and books.state[key, C_BBO_MATCHED] > 500


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_real_capture_book_matches_a_dict_reference_book(name):
    recs, books, *_ = replayed(name)
    ref = reference_replay(recs)
    assert len(ref) == 1
    (venue, symbol), want = next(iter(ref.items()))
    key = key_of(venue, symbol, books.state.shape[0])
    out = [np.zeros(20) for _ in range(4)]
    assert top(books, key, 20, *out) == 20
    assert list(zip(out[0].tolist(), out[1].tolist())) == want.ladder(BID, 20)
    assert list(zip(out[2].tolist(), out[3].tolist())) == want.ladder(ASK, 20)
    assert books.state[key, C_TRIMMED] == want.trimmed  # same crossed-level removals over the whole stream


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cap=st.sampled_from([1, 2, 3, 8, 64]),
       ops=st.lists(st.tuples(st.sampled_from([BUY, SELL]), st.integers(0, 24), st.sampled_from([0.0, 0.5, 1.0, 2.0])),
                    max_size=60))
def test_random_deltas_give_the_same_ladders_as_a_dict_reference(cap, ops):
    books = make_books(max_keys=1, max_levels=cap)
    ref = RefBook(cap)
    for side, tick, size in ops:
        price = 100.0 + 0.25 * (tick - 12)
        apply(books, delta(side, price, size, flags=0))  # one endless unsequenced message: no checks
        ref.set(BID if side == BUY else ASK, price, size)
        assert ladder(books, 0, BID) == ref.ladder(BID) and ladder(books, 0, ASK) == ref.ladder(ASK)
    assert (books.state[0, C_OVERFLOW], books.state[0, C_TRIMMED]) == (ref.overflow, ref.trimmed)
