"""The hftbacktest side of the peer check (issue 11): a Binance capture through hftbacktest 2.4.4's own
converter and exchange models, with a fixed quoting strategy, so our venue model can be compared with it.

The strategy, in hftbacktest's local time (the converter's shifted host clock, see ``Converted``): at every
boundary ``t`` with ``(t - clock_offset_ns) % interval == 0`` (the first at or after the first row; not
hftbacktest's usual ``t0 + k*interval``) it reads the local book after every row with ``local_ts <= t`` and wants

    bid = floor((mid - distance_ticks * tick) / tick) * tick
    ask = ceil((mid + distance_ticks * tick) / tick) * tick

A side with no live order gets a GTC limit at its desired price; a side whose live order is at another price
gets a cancel and a new GTC limit (sent together, the new one not waiting for the cancel's ack); a side whose
live order still has a request in flight (no ack yet) is left until the next boundary (hftbacktest refuses a
cancel then). Bids are only kept while ``position < max_position``, asks while ``position > -max_position``;
otherwise that side's live order is cancelled.

Fills are counted from the local order records (``qty - leaves_qty`` growing between two boundaries), never from
hftbacktest's position, which drops partial fills (upstream issues 299/316). One recorded fill is what one
boundary saw of one order: partial chunks of one order between two boundaries are merged (maker fills are all at
the order's price, so nothing is lost but the count). ``exch_ts`` is the venue time of the last chunk,
``local_ts = exch_ts + response latency`` (the time the response reached local; exact with a constant latency
unless hftbacktest's FIFO bus pushed it later behind an earlier response).

Order qty: with ``fill_mode="partial"`` a qty that is an exact lot multiple can stop hftbacktest 2.4.4 with
InvalidOrderStatus (upstream issue 312: a queue fill exactly equal to the remainder leaves a Filled order in the
book); ``DEFAULT_QTY`` is therefore a hair under 3 lots (0.0029999 BTC on a 0.001 lot).

Run: ``python -m bench.hftbacktest_peer [capture.gz]`` prints the result of the default setting.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

DEFAULT_QTY = 0.0029999
QUEUE_MODELS = ("risk_averse", "power", "power2", "power3", "log", "log2")
FILL_MODES = ("no_partial", "partial")
CAPTURES = Path(__file__).resolve().parent.parent / "tests" / "data" / "binance-ws-capture"

# fill record columns: int64 (ns timestamps do not fit a float64 exactly) and float64
T_LOCAL_TS, T_EXCH_TS = range(2)
F_SIDE, F_PRICE, F_QTY, F_MAKER = range(4)
# run counters (int64)
C_ORDERS, C_CANCELS, C_FILLS, C_ERROR, C_STEPS, C_END_TS = range(6)


@dataclasses.dataclass(frozen=True)
class Converted:
    data: np.ndarray          # hftbacktest event rows (hftbacktest.event_dtype)
    local_offset_ns: int      # what the converter added to every capture local_ts (its smallest feed delay -> 0)


@dataclasses.dataclass(frozen=True)
class Fill:
    local_ts: int
    exch_ts: int
    side: int                 # +1 buy, -1 sell
    price: float
    qty: float
    maker: bool


@dataclasses.dataclass(frozen=True)
class PeerResult:
    orders: int               # new orders submitted
    cancels: int
    fills: int
    traded_qty: float
    position: float           # signed filled qty from the fill list
    net_pnl: float            # cash from fills - fees + position * final mid
    fees: float
    final_mid: float
    elapsed_s: float          # the quoting loop; a process's first call includes its ~8-10 s numba compilation
    end_ts: int               # hftbacktest local time when the data ended
    hbt_position: float       # hftbacktest's own (local) position: equal to ``position`` only without partial fills
    hbt_fee: float
    hbt_balance: float
    fill_list: tuple[Fill, ...]


def convert_capture(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Converted:
    """A Binance futures capture through ``hftbacktest.data.utils.binancefutures.convert``; cached under
    ``cache_dir`` by the file's sha256 when given. Spot captures do not convert (their ``depthUpdate`` has no
    ``T``: KeyError 'T'); that error is raised as a ValueError naming the file."""
    path = Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:24]
    cached = Path(cache_dir) / f"hbt-{digest}.npz" if cache_dir is not None else None
    if cached is not None and cached.exists():
        with np.load(cached) as z:
            return Converted(z["data"], int(z["local_offset_ns"]))
    from hftbacktest.data.utils import binancefutures
    try:
        data = binancefutures.convert(str(path), buffer_size=_rows_upper_bound(path))
    except KeyError as exc:
        raise ValueError(f"{path}: hftbacktest's binancefutures converter needs field {exc} "
                         "(a futures capture: usdm_/cm_; spot captures lack T on depthUpdate)") from exc
    converted = Converted(data, int(data["local_ts"].min()) - _first_used_local_ts(path))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = cached.with_suffix(".part.npz")
        np.savez(part, data=converted.data, local_offset_ns=converted.local_offset_ns)
        os.replace(part, cached)
    return converted


def _rows_upper_bound(path: Path) -> int:
    """Rows the converter can write: one per depth level or trade; the file size over the shortest level text
    is a safe bound, far below the converter's 100M-row default buffer."""
    return max(1000, path.stat().st_size * 12 // 14)


def _first_used_local_ts(path: Path) -> int:
    """The capture's first local time of a line the converter turns into rows (depthUpdate, or a MARKET trade):
    lines are in local-time order, so the converted minimum is this plus the converter's offset."""
    with gzip.open(path, "rt") as f:
        for line in f:
            data = json.loads(line[20:]).get("data", {})
            if data.get("e") == "depthUpdate" or (data.get("e") == "trade" and data.get("X") == "MARKET"):
                return int(line[:19])
    raise ValueError(f"{path}: no depthUpdate or trade line")


def _asset(data: np.ndarray, *, tick: float, lot: float, entry_ns: int, response_ns: int, queue: str,
           queue_n: float, fill_mode: str, maker_fee: float, taker_fee: float):
    from hftbacktest import BacktestAsset
    asset = (BacktestAsset().data([data]).linear_asset(1.0).constant_order_latency(entry_ns, response_ns)
             .tick_size(tick).lot_size(lot).trading_value_fee_model(maker_fee, taker_fee).last_trades_capacity(0))
    asset = {"risk_averse": lambda a: a.risk_adverse_queue_model(),
             "power": lambda a: a.power_prob_queue_model(queue_n),
             "power2": lambda a: a.power_prob_queue_model2(queue_n),
             "power3": lambda a: a.power_prob_queue_model3(queue_n),
             "log": lambda a: a.log_prob_queue_model(),
             "log2": lambda a: a.log_prob_queue_model2()}[queue](asset)
    return asset.partial_fill_exchange() if fill_mode == "partial" else asset.no_partial_fill_exchange()


@njit
def _run(hbt, interval_ns, clock_offset_ns, distance_ticks, qty, max_position, response_ns, max_orders, fill_ts,
         fills, counters, mids):
    """The quoting loop (boundaries at ``clock_offset_ns + k * interval_ns``); returns when the data ends or
    hftbacktest reports an error (its code in C_ERROR).
    Not cache=True: numba refuses ("uses dynamic globals"): hftbacktest's binding calls its Rust library through
    ctypes pointers, so every process compiles this anew (about 8-10 s here)."""
    # order ids are 1..max_orders; filled[i] is the qty already recorded for order i
    filled = np.zeros(max_orders + 1)
    depth = hbt.depth(0)
    tick = depth.tick_size
    live_bid = 0
    live_ask = 0
    bid_tick = 0
    ask_tick = 0
    position = 0.0
    n_fills = 0
    oid = 0
    rc = hbt.elapse(0)  # initialises the clock at the first row (and processes the rows at that time)
    if rc == 0:
        now = hbt.current_timestamp
        first = -((clock_offset_ns - now) // interval_ns) * interval_ns + clock_offset_ns  # first boundary >= now
        if first > now:
            rc = hbt.elapse(first - now)
    while rc == 0:
        counters[C_STEPS] += 1
        orders = hbt.orders(0)
        values = orders.values()
        while values.has_next():
            o = values.get()
            side = int(o.arr[0].side)  # the int8 field; the property is annotated uint8
            done = o.qty - o.leaves_qty
            if done > filled[o.order_id] + 1e-12:
                if n_fills < fills.shape[0]:
                    fill_ts[n_fills, T_EXCH_TS] = o.exch_timestamp
                    fill_ts[n_fills, T_LOCAL_TS] = o.exch_timestamp + response_ns
                    f = fills[n_fills]
                    f[F_SIDE] = side
                    f[F_PRICE] = o.exec_price_tick * tick
                    f[F_QTY] = done - filled[o.order_id]
                    f[F_MAKER] = 1.0 if o.arr[0].maker else 0.0  # Order has no maker property
                n_fills += 1
                position += side * (done - filled[o.order_id])
                filled[o.order_id] = done
        # a side's live order that is no longer working frees the side
        if live_bid != 0:
            o = orders.get(live_bid)
            if o is None or not (o.status == 1 or o.status == 5 or (o.status == 0 and o.req == 1)):
                live_bid = 0
        if live_ask != 0:
            o = orders.get(live_ask)
            if o is None or not (o.status == 1 or o.status == 5 or (o.status == 0 and o.req == 1)):
                live_ask = 0
        hbt.clear_inactive_orders(0)
        best_bid = depth.best_bid
        best_ask = depth.best_ask
        if best_bid > 0.0 and best_ask > best_bid and np.isfinite(best_bid) and np.isfinite(best_ask):
            mid = 0.5 * (best_bid + best_ask)
            mids[0] = mid
            want_bid = int(np.floor((mid - distance_ticks * tick) / tick + 1e-9))
            want_ask = int(np.ceil((mid + distance_ticks * tick) / tick - 1e-9))
            for side in (1, -1):
                live = live_bid if side == 1 else live_ask
                want = want_bid if side == 1 else want_ask
                have = bid_tick if side == 1 else ask_tick
                allowed = position < max_position if side == 1 else position > -max_position
                if live != 0:
                    o = orders.get(live)
                    if o is None or o.req != 0:
                        continue  # a request in flight: hftbacktest refuses a cancel until its ack
                    if allowed and have == want:
                        continue
                    hbt.cancel(0, live, False)
                    counters[C_CANCELS] += 1
                    live = 0
                if allowed and oid < max_orders:
                    oid += 1
                    if side == 1:
                        r = hbt.submit_buy_order(0, oid, want * tick, qty, 0, 0, False)  # GTC, LIMIT
                    else:
                        r = hbt.submit_sell_order(0, oid, want * tick, qty, 0, 0, False)
                    if r != 0:
                        counters[C_ERROR] = r
                        return n_fills
                    counters[C_ORDERS] += 1
                    live = oid
                    have = want
                if side == 1:
                    live_bid = live
                    bid_tick = have
                else:
                    live_ask = live
                    ask_tick = have
        rc = hbt.elapse(interval_ns)
    counters[C_END_TS] = hbt.current_timestamp
    if rc != 1:
        counters[C_ERROR] = rc
    counters[C_FILLS] = n_fills
    return n_fills


def run_peer(converted: Converted, *, interval_ms: float = 100.0, distance_ticks: float = 5.0,
             qty: float = DEFAULT_QTY, max_position: float = 0.02, entry_latency_ms: float = 5.0,
             response_latency_ms: float = 5.0, queue: str = "risk_averse", queue_n: float = 3.0,
             fill_mode: str = "no_partial", maker_fee: float = 0.0002, taker_fee: float = 0.0005,
             tick: float = 0.1, lot: float = 0.001, clock_offset_ns: int = 0,
             max_orders: int = 200_000) -> PeerResult:
    """One hftbacktest run of the fixed quoter (defaults: BTCUSDT USD-M grid, Binance USD-M VIP0 fees).
    Decisions are at local times ``t`` with ``(t - clock_offset_ns) % interval == 0``: pass the conversion's
    ``local_offset_ns`` to decide at multiples of the capture's own clock (what our side sees)."""
    if queue not in QUEUE_MODELS:
        raise ValueError(f"queue={queue!r}: one of {QUEUE_MODELS}")
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode={fill_mode!r}: one of {FILL_MODES}")
    from hftbacktest import HashMapMarketDepthBacktest
    entry_ns, response_ns = int(entry_latency_ms * 1e6), int(response_latency_ms * 1e6)
    hbt = HashMapMarketDepthBacktest([_asset(converted.data, tick=tick, lot=lot, entry_ns=entry_ns,
                                             response_ns=response_ns, queue=queue, queue_n=queue_n,
                                             fill_mode=fill_mode, maker_fee=maker_fee, taker_fee=taker_fee)])
    fill_ts = np.zeros((max_orders, 2), np.int64)
    fills = np.zeros((max_orders, 4))
    counters = np.zeros(6, np.int64)
    mids = np.full(1, np.nan)
    t = time.perf_counter()
    interval_ns = int(interval_ms * 1e6)
    n = _run(hbt, interval_ns, int(clock_offset_ns) % interval_ns, float(distance_ticks), float(qty),
             float(max_position), response_ns, max_orders, fill_ts, fills, counters, mids)
    elapsed = time.perf_counter() - t
    sv = hbt.state_values(0)
    hbt_position, hbt_fee, hbt_balance = float(sv.position), float(sv.fee), float(sv.balance)
    hbt.close()
    if counters[C_ERROR] != 0:
        raise RuntimeError(f"hftbacktest stopped with code {int(counters[C_ERROR])} "
                           "(14 = InvalidOrderStatus, upstream issue 312)")
    m = min(n, max_orders)
    fill_list = tuple(Fill(int(t[T_LOCAL_TS]), int(t[T_EXCH_TS]), int(r[F_SIDE]), float(r[F_PRICE]),
                           float(r[F_QTY]), bool(r[F_MAKER])) for t, r in zip(fill_ts[:m], fills[:m]))
    fees, cash, position = fees_cash_position(fill_list, maker_fee, taker_fee)
    final_mid = float(mids[0])
    return PeerResult(orders=int(counters[C_ORDERS]), cancels=int(counters[C_CANCELS]), fills=int(n),
                      traded_qty=float(sum(f.qty for f in fill_list)), position=position,
                      net_pnl=cash - fees + position * final_mid, fees=fees, final_mid=final_mid,
                      elapsed_s=elapsed, end_ts=int(counters[C_END_TS]), hbt_position=hbt_position,
                      hbt_fee=hbt_fee, hbt_balance=hbt_balance, fill_list=fill_list)


def fees_cash_position(fill_list, maker_fee: float, taker_fee: float) -> tuple[float, float, float]:
    """(fees, cash, position) of a fill list: cash = -sum(side * price * qty), fee = rate * price * qty."""
    fees = sum((maker_fee if f.maker else taker_fee) * f.price * f.qty for f in fill_list)
    cash = -sum(f.side * f.price * f.qty for f in fill_list)
    position = sum(f.side * f.qty for f in fill_list)
    return fees, cash, position


def main(argv: list[str]) -> None:
    capture = Path(argv[0]) if argv else CAPTURES / "usdm_btcusdt_20240808.gz"
    t = time.perf_counter()
    converted = convert_capture(capture, os.environ.get("BOT4_HBT_CACHE"))
    print(f"converted {len(converted.data)} rows in {time.perf_counter() - t:.1f} s, "
          f"local offset {converted.local_offset_ns} ns")
    t = time.perf_counter()
    run_peer(converted)
    first_s = time.perf_counter() - t
    result = run_peer(converted)
    print(f"first call {first_s:.1f} s = compilation ~{first_s - result.elapsed_s:.1f} s + the run")
    print({k: v for k, v in dataclasses.asdict(result).items() if k != "fill_list"})


if __name__ == "__main__":
    main(sys.argv[1:])
