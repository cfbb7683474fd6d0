"""The ccxt source's pieces that need no venue: URL rewriting, backoff, venue specs, the batch hand-off."""
import queue
import random

import ccxt.pro
import numpy as np

from pipeline.config import Config
from pipeline.sources.ccxt_feed import take
from pipeline.sources.ccxt_source import Backoff, make_exchange, venue_specs
from stages.records import MARKET_EVENT


def feed_config(**keys):
    base = {"source": "ccxt", "venues": ["spot", "usdm"], "symbols": ["BTC-USDT", "ETH-USDT"],
            "ccxt_exchanges": ["spot=binance", "usdm=binanceusdm"]}
    return Config().with_overrides(feed=base | keys).feed


def test_origin_overrides_keep_the_venues_paths_and_default_to_the_real_venue():
    feed = feed_config(ccxt_rest_urls=["usdm=http://127.0.0.1:9001"], ccxt_ws_urls=["usdm=ws://127.0.0.1:9002"],
                       ccxt_symbols=["usdm:ETH-USDT=ETH/USDT:USDT"])
    spot, usdm = venue_specs(feed)
    assert (spot.venue_id, spot.exchange, spot.rest_url, spot.symbols) == (0, "binance", "", {})
    assert usdm.symbols == {"ETH-USDT": "ETH/USDT:USDT"}
    real = ccxt.pro.binanceusdm().urls["api"]
    ex = make_exchange(usdm)
    assert ex.urls["api"]["fapiPublic"] == "http://127.0.0.1:9001/fapi/v1"
    assert ex.urls["api"]["ws"]["linear"] == "ws://127.0.0.1:9002/ws"
    assert ex.get_ws_url("linear", "public") == "ws://127.0.0.1:9002/public/ws"  # ccxt's own path rewrite still applies
    assert ex.options["fetchMarkets"]["types"] == ["linear"]
    assert make_exchange(spot).urls["api"]["public"] == real["public"] == "https://api.binance.com/api/v3"


def test_backoff_doubles_from_min_to_max_with_jitter_and_resets():
    b = Backoff(100.0, 1000.0, random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    for delay, nominal in zip(delays, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
        assert nominal * 0.5 <= delay <= nominal
    b.reset()
    assert b.next_delay() <= 0.1


def test_take_fills_a_batch_in_order_and_keeps_what_does_not_fit():
    q = queue.Queue()
    arrays = []
    for start, n in ((1, 3), (4, 5), (9, 2)):
        a = np.zeros(n, MARKET_EVENT)
        a["venue_seq"] = np.arange(start, start + n)
        arrays.append(a)
        q.put(a)
    batch = np.zeros(6, MARKET_EVENT)
    pending = []
    assert take(q, batch, pending, 0.0) == 6 and list(batch["venue_seq"]) == [1, 2, 3, 4, 5, 6]
    assert take(q, batch, pending, 0.0) == 4 and list(batch["venue_seq"][:4]) == [7, 8, 9, 10]
    assert take(q, batch, pending, 0.001) == 0
