"""A sanity ordering: quoting at the touch, an order behind the displayed queue (risk-averse: only trades at its
price move it up) fills less than under a probabilistic queue (part of each decrease was ahead of it), which fills
less than with no queue at all (the old trade-through paper venue). The power model with n = 3 credits an order
that joined at the back with almost none of a decrease, so it fills at most a little more than risk-averse (as in
hftbacktest: 474 against 471 fills at distance 0 on this capture); the log model credits more.

Run on the USD-M capture, not on the synthetic market: the synthetic feed redraws its whole book at every event
(the touch flickers a tick either way), so a resting quote is crossed by the next books long before a trade
reaches it through a queue, and the three models fill the same (measured: 203 maker fills each on 30,000 events).
"""
import numpy as np

from pipeline.backtest.data import load
from pipeline.config import Config
from pipeline.hosting.fused import run_fused
from stages import records

CAPTURE = "tests/data/binance-ws-capture/usdm_btcusdt_20240808.gz"


def _config(queue_model: str) -> Config:
    return Config().with_overrides(
        feed={"source": "replay", "venues": ["binance"], "symbols": ["BTCUSDT"], "files": [f"binance={CAPTURE}"]},
        strategy={"kind": "fixed_quote", "fixed_interval_ms": 100.0, "fixed_distance_ticks": 0.0,
                  "fixed_reference": "touch", "fixed_qty": 0.0029999, "fixed_max_position": 0.02,
                  "fixed_tick_by_symbol": ["BTCUSDT=0.1"]},
        venue={"queue_model": queue_model, "queue_power": 3.0, "lot_by_symbol": ["BTCUSDT=0.001"]})


def test_quotes_at_the_touch_fill_less_the_more_queue_the_model_puts_ahead():
    m = load(_config("front"))
    events = m.events
    filled = {}
    for model in ("risk_averse", "power3", "log", "front"):
        r = run_fused(_config(model), market_source=iter([events]), offsets_ns=m.offsets_ns,
                      horizon_ns=m.horizon_ns, span_ns=5_000_000).reports
        fills = r[(r["qty"] > 0) & ((r["state"] == records.ORD_PARTIAL) | (r["state"] == records.ORD_FILLED))]
        filled[model] = float(np.sum(fills["qty"][fills["liquidity"] > 0]))
    # power3 puts nearly every decrease behind an order that has joined at the back: close to risk-averse
    assert 0 < filled["risk_averse"] <= filled["power3"] < filled["log"] < filled["front"], filled
