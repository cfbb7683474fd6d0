"""The execute kernel on the event clock with hand-built books, trades and intents, for the router's and the algos'
tests: each record carries its own time, so a test says when every slice is due."""
import dataclasses

import numpy as np

from pipeline.config import Config
from shm import control as cb
from stages import execute, records, routing
from stages.records import EV_BOOK, EV_TRADE, INTENT_IOC, SELL
from stages.routing import algos, router
from stages.universe import instrument_key
from stages.venue import exchange
from tests.conftest import instant_venue, kernel_params

MS = 1_000_000
T0 = 1_000 * MS


def routing_params(**keys) -> np.ndarray:
    """The routing block of a config whose [routing] section has ``keys``."""
    return routing.make_params(**dataclasses.asdict(Config().with_overrides(routing=keys).routing))


def book(t, seq, venue=0, symbol=0, bid=100.0, ask=100.5, size=1.0, tick=0.5):
    ev = np.zeros(1, records.MARKET_EVENT)[0]
    ev["kind"], ev["origin_seq"], ev["venue_seq"], ev["origin_ts"], ev["exch_ts"] = EV_BOOK, seq, seq, t, t
    ev["venue"], ev["symbol"] = venue, symbol
    for j in range(records.BOOK_LEVELS):
        ev["bid_px"][j], ev["ask_px"][j] = bid - j * tick, ask + j * tick
        ev["bid_sz"][j] = ev["ask_sz"][j] = size
    return ev


def trade(t, seq, venue=0, symbol=0, price=100.0, size=1.0, side=SELL):
    ev = np.zeros(1, records.MARKET_EVENT)[0]
    ev["kind"], ev["origin_seq"], ev["venue_seq"], ev["origin_ts"], ev["exch_ts"] = EV_TRADE, seq, seq, t, t
    ev["venue"], ev["symbol"], ev["price"], ev["size"], ev["side"] = venue, symbol, price, size, side
    return ev


def intent(t, seq, side, price, qty, venue=0, symbol=0, intent_id=1, kind=INTENT_IOC, route=0, algo=0,
           horizon_ms=0.0, param=0.0, max_child=0.0):
    it = np.zeros(1, records.ORDER_INTENT)[0]
    it["origin_ts"], it["origin_seq"], it["intent_id"], it["venue"], it["symbol"] = t, seq, intent_id, venue, symbol
    it["kind"], it["side"], it["price"], it["qty"], it["strategy"] = kind, side, price, qty, records.STRAT_DIRECTIONAL
    it["route"], it["algo"], it["algo_horizon_ms"], it["algo_param"], it["algo_max_child"] = (route, algo, horizon_ms,
                                                                                             param, max_child)
    return it


class Desk:
    """execute.step with its state; ``routing``: [routing] keys; ``venue``: [venue] keys (default: no latency);
    ``gate``: execute.make_params keywords; ``latency_table``: the venue model's."""

    def __init__(self, routing=None, venue=None, latency_table=None, **gate):
        gate = {"price_collar_bps": 500.0, "max_open_orders": 64, **gate}  # books here are 50 bps wide
        self.params = kernel_params("execute", venue=instant_venue(**(venue or {})), event_clock=True,
                                    routing=routing_params(**(routing or {})), **gate)
        self.state = execute.make_state(exchange.make_state(latency_table=latency_table))
        self.ctl = np.zeros(cb.GLOBAL_WORDS, np.int64)
        self.ctl[cb.G_TRADING_ENABLED] = 1
        self.stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
        self.out = np.zeros(execute.out_capacity(64), records.EXEC_REPORT)
        self.reports = []

    def step(self, intents=(), market=()):
        intents = np.array(list(intents), records.ORDER_INTENT)
        market = np.array(list(market), records.MARKET_EVENT)
        n = execute.step(intents, len(intents), market, len(market), self.state, self.params, self.ctl,
                         self.stats, self.out, 0)
        got = self.out[:n].copy()
        self.reports.append(got)
        return got

    def all_reports(self):
        return np.concatenate(self.reports) if self.reports else np.zeros(0, records.EXEC_REPORT)

    @property
    def parents(self):
        return self.state[execute.X_ROUTING][routing.RS_PARENTS]

    @property
    def venue_stats(self):
        return self.state[execute.X_ROUTING][routing.RS_VENUES]

    def counters(self):
        return routing.counters(self.state[execute.X_ROUTING])

    def position(self, venue=0, symbol=0):
        return float(self.state[execute.X_POSITIONS][instrument_key(venue, symbol)])


__all__ = ["Desk", "MS", "T0", "algos", "book", "intent", "router", "routing_params", "trade"]
