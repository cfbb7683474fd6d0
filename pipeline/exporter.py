"""Prometheus metrics of a run, read from its control block (``bot4 run --metrics-port``, ``bot4 metrics``).

One custom collector reads the run's shared memory afresh at every scrape, through the same reader as ``bot4
status`` (pipeline.status_view), and the positions execute keeps in the run's positions table (pipeline.tables).
Scraping never blocks or slows a stage: it maps the segments and reads words, from a request thread that lowers
its own priority. No metric lives in this process, so a restarted run (same name) is read anew, and a scrape
between runs says ``bot4_up 0``.

Histograms come from the control block's log buckets (shm.control: four per power of two): each bucket's bound
is the largest whole nanosecond it holds (observations are whole nanoseconds), in seconds, so the cumulative
counts are exact at every bound; buckets that hold no whole nanosecond are left out, the last one is +Inf. There
is no ``_sum``: the control block counts per bucket and keeps no total (a sum from the buckets would be invented).
OpenMetrics wants a sum beside every ``_count``, so the endpoint speaks the Prometheus text format only.
"""
from __future__ import annotations

import math
import os
import socket
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIRequestHandler, make_server

import numpy as np
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                            StateSetMetricFamily, UnknownMetricFamily)
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from pipeline import kill_reasons, names, registry
from pipeline.safety.switch import SwitchState
from pipeline.status_view import RUN_STATES, StageRow, StatusView, supervisor_alive
from pipeline.tables import FEES, POSITION, PositionsTable
from shm import control as cb
from shm.segment import SegmentError
from stages import validate

SCRAPE_NICE = 10  # a scrape's thread yields the core to the stages (Linux: niceness is per thread)
STAGE_STATES = (*cb.STATE_NAMES.values(), "dead")
SWITCH_STATES = ("none", *(s.name.lower() for s in SwitchState))  # G_SWITCH_STATE: 0 none, else SwitchState + 1


def _bounds() -> tuple[np.ndarray, list[str]]:
    """(bucket indices, their ``le`` labels): buckets holding at least one whole nanosecond; the last is +Inf."""
    indices, labels = [], []
    for b in range(cb.HIST_BUCKETS - 1):
        lower = cb.bucket_upper_ns(b - 1) if b else 1.0
        largest = math.ceil(cb.bucket_upper_ns(b)) - 1  # buckets are [lower, upper)
        if math.ceil(lower) <= largest:
            indices.append(b)
            labels.append(floatToGoString(largest / 1e9))
    return np.array(indices + [cb.HIST_BUCKETS - 1]), labels + ["+Inf"]


BUCKETS, BUCKET_LABELS = _bounds()


def add_histogram(family: HistogramMetricFamily, labels: list[str], counts: np.ndarray) -> None:
    """One labelled histogram of ``family`` from a control-block histogram (a copy: one consistent read)."""
    cumulative = np.cumsum(counts)[BUCKETS].astype(float).tolist()
    family.add_metric(labels, list(zip(BUCKET_LABELS, cumulative)), None)
    family.samples.append(Sample(family.name + "_count", dict(zip(family._labelnames, labels)), cumulative[-1],
                                 None, None))  # (the library writes _count only beside a _sum)


class RunCollector:
    """Every metric of run ``run``, read at each scrape (a prometheus_client custom collector)."""

    def __init__(self, run: str):
        self.run = run

    def describe(self):
        return []  # which names appear depends on the run (record mode has no execute): none to declare

    def collect(self):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SCRAPE_NICE)
        except OSError:
            pass  # not permitted to lower it: read anyway
        up = GaugeMetricFamily("bot4_up", "1 while the run's supervisor lives (then every other metric is read; "
                               "0: nothing else is served)")
        try:
            block = cb.ControlBlock.attach(names.control(self.run))
        except SegmentError:
            up.add_metric([], 0)
            return [up]
        try:
            if not supervisor_alive(block):  # a crashed run's last words: its flag may read 1 with nothing trading
                up.add_metric([], 0)
                return [up]
            up.add_metric([], 1)
            return [up, *Reading(StatusView(block), self.run).families()]
        finally:
            block.close()


@dataclass
class Reading:
    """One scrape's read of a run."""
    view: StatusView
    run: str

    def families(self) -> list:
        rows = self.view.rows()
        counters = self.view.stage_counters()  # after the rows: a slot that starts in between is in both
        return [*self.run_families(), *self.stage_families(rows, counters), *self.trading_families(counters),
                *self.position_families()]

    def run_families(self) -> list:
        g = self.view.block.globals
        info = GaugeMetricFamily("bot4_run_info", "The run's name and id (the id journals and the database carry)",
                                 labels=["run", "run_id"])
        info.add_metric([self.run, str(int(g[cb.G_RUN_ID]))], 1)
        state = StateSetMetricFamily("bot4_run_state", "The run's lifecycle state")
        current = RUN_STATES.get(int(g[cb.G_RUN_STATE]), "new")
        state.add_metric([], {s: s == current for s in RUN_STATES.values()})
        started = GaugeMetricFamily("bot4_start_time_seconds", "When the supervisor started the run (Unix time)")
        started.add_metric([], int(g[cb.G_STARTED_NS]) / 1e9)
        trading = GaugeMetricFamily("bot4_trading_enabled", "1 while orders may be sent (the control block's flag)")
        trading.add_metric([], int(g[cb.G_TRADING_ENABLED]))
        reason = StateSetMetricFamily("bot4_kill_reason", "Why trading is off (latched until re-armed; none: it is on)")
        code = int(g[cb.G_KILL_REASON])
        reason.add_metric([], {name: c == code for c, name in kill_reasons.KILL_REASON_NAMES.items()})
        families = [info, state, started, trading, reason]
        if self.view.kill_stage():
            stage = GaugeMetricFamily("bot4_kill_stage_info", "The process the kill reason names", labels=["stage"])
            stage.add_metric([self.view.kill_stage()], 1)
            families.append(stage)
        if int(g[cb.G_KILL_COUNT]):
            when = GaugeMetricFamily("bot4_kill_time_seconds", "When trading was disabled (Unix time)")
            when.add_metric([], int(g[cb.G_KILL_TIME_NS]) / 1e9)
            families.append(when)
        trips = CounterMetricFamily("bot4_trips", "Times trading was tripped off during the run")
        trips.add_metric([], int(g[cb.G_TRIPS]))
        restarts = CounterMetricFamily("bot4_stage_restarts", "Processes the supervisor restarted (run.restart)")
        restarts.add_metric([], int(g[cb.G_RESTARTS]))
        switch = StateSetMetricFamily("bot4_killswitch_state", "What the hardware kill switch says (none: no switch)")
        found = int(g[cb.G_SWITCH_STATE])
        switch.add_metric([], {s: i == found for i, s in enumerate(SWITCH_STATES)})
        frames = CounterMetricFamily("bot4_killswitch_frames", "Frames read from the switch", labels=["outcome"])
        frames.add_metric(["ok"], int(g[cb.G_SWITCH_FRAMES_OK]))
        frames.add_metric(["bad"], int(g[cb.G_SWITCH_FRAMES_BAD]))
        lost = CounterMetricFamily("bot4_killswitch_disconnects", "Times the switch's port was lost")
        lost.add_metric([], int(g[cb.G_SWITCH_DISCONNECTS]))
        return families + [trips, restarts, switch, frames, lost]

    def stage_families(self, rows: list[StageRow], counters: dict[str, dict[str, int]]) -> list:
        labels = ["stage"]
        state = StateSetMetricFamily("bot4_stage_state", "Each process's state (dead: it claims to live, its pid is "
                                     "gone)", labels=labels)
        info = GaugeMetricFamily("bot4_stage_info", "Each process's pid, core and idle strategy",
                                 labels=[*labels, "pid", "core", "idle"])
        heartbeat = GaugeMetricFamily("bot4_stage_heartbeat_age_seconds", "Time since the process's last heartbeat",
                                      labels=labels)
        records_in = CounterMetricFamily("bot4_stage_records_in", "Records taken from its inputs (a: primary, "
                                         "b: secondary)", labels=[*labels, "input"])
        records_out = CounterMetricFamily("bot4_stage_records_out", "Records published", labels=labels)
        batches = CounterMetricFamily("bot4_stage_batches", "Duty cycles that did work", labels=labels)
        errors = CounterMetricFamily("bot4_stage_errors", "Errors counted by the process", labels=labels)
        blocked = CounterMetricFamily("bot4_stage_blocked_seconds", "Time spent blocked on a full output ring",
                                      labels=labels)
        blocked_now = GaugeMetricFamily("bot4_stage_blocked_now_seconds", "How long it has been blocked on a full "
                                        "ring right now (0: not blocked)", labels=labels)
        parks = CounterMetricFamily("bot4_stage_parks", "Times the idle strategy parked it", labels=labels)
        depth = GaugeMetricFamily("bot4_stage_input_depth", "Records waiting in its primary input ring when it last "
                                  "took a batch", labels=labels)
        taps = CounterMetricFamily("bot4_stage_tap_records", "Records copied to its journal tap, or refused by a full "
                                   "tap (execute: reports and steps)", labels=[*labels, "tap", "outcome"])
        service = HistogramMetricFamily("bot4_stage_service_seconds", "Service time per batch", labels=labels)
        origin = HistogramMetricFamily("bot4_stage_origin_latency_seconds", "From the market event's receipt to this "
                                       "stage's output (tick-to-stage)", labels=labels)
        custom = UnknownMetricFamily("bot4_stage_counter", "A process's own counters, by the labels it declares "
                                     "(stages.counters): counts and levels", labels=[*labels, "counter"])
        for row in rows:
            name, c = row.name, counters[row.name]
            state.add_metric([name], {s: s == row.state for s in STAGE_STATES})
            info.add_metric([name, str(row.pid), str(row.core), row.idle], 1)
            heartbeat.add_metric([name], row.heartbeat_age_ns / 1e9)
            records_in.add_metric([name, "a"], c["in"])
            records_in.add_metric([name, "b"], c["in_b"])
            records_out.add_metric([name], c["out"])
            batches.add_metric([name], c["batches"])
            errors.add_metric([name], row.errors)
            blocked.add_metric([name], c["blocked_ns"] / 1e9)
            blocked_now.add_metric([name], row.blocked_for_ns / 1e9)
            parks.add_metric([name], c["parks"])
            depth.add_metric([name], row.depth)
            taps.add_metric([name, "reports", "written"], c["tap_written"])
            taps.add_metric([name, "reports", "dropped"], c["tap_dropped"])
            if name == "execute":
                taps.add_metric([name, "steps", "written"], c["step_tap_written"])
                taps.add_metric([name, "steps", "dropped"], c["step_tap_dropped"])
            if name in registry.STAGE_NAMES:  # the other processes' histogram words stay zero
                add_histogram(service, [name], row.service)
                add_histogram(origin, [name], row.origin)
            for label, value in self.view.custom_counters(name).items():
                custom.add_metric([name, label], value)
        return [state, info, heartbeat, records_in, records_out, batches, errors, blocked, blocked_now, parks, depth,
                taps, service, origin, custom]

    def trading_families(self, counters: dict[str, dict[str, int]]) -> list:
        families = []
        checked = counters.get("validate")
        if checked is not None:
            quarantined = CounterMetricFamily("bot4_quarantined_events", "Market events validate quarantined, by "
                                              "reason", labels=["reason"])
            for label, _ in validate.REASONS.values():
                quarantined.add_metric([label], checked[label])
            families.append(quarantined)
        ex = counters.get("execute")
        if ex is not None:
            rejects = CounterMetricFamily("bot4_gate_rejects", "Intents execute's pre-trade gate refused, by reason",
                                          labels=["reason"])
            for label, value in ex.items():
                if label.startswith("rej_"):
                    rejects.add_metric([label[4:]], value)
            families.append(rejects)
            for name, label, doc in (("bot4_orders", "orders", "Orders sent"), ("bot4_fills", "fills", "Fills"),
                                     ("bot4_cancels", "cancels", "Orders cancelled")):
                family = CounterMetricFamily(name, doc)
                family.add_metric([], ex[label])
                families.append(family)
            for name, value, doc in (
                    ("bot4_open_orders", ex["open_orders"], "Orders open now"),
                    ("bot4_pnl_usd", ex["pnl_cents"] / 100, "Profit and loss after fees, marked at execute's mids"),
                    ("bot4_fees_usd", ex["fees_cents"] / 100, "Fees paid (negative: rebates received)"),
                    ("bot4_gross_position_usd", ex["gross_position_usd"], "Sum of |position| x mid over instruments")):
                families.append(GaugeMetricFamily(name, doc, value=value))
        rk = counters.get("risk")
        if rk is not None:
            for name, value, doc in (
                    ("bot4_equity_usd", rk["equity_cents"] / 100, "Equity as risk sees it (capital + PnL)"),
                    ("bot4_peak_equity_usd", rk["peak_equity_cents"] / 100, "The highest equity of the run"),
                    ("bot4_drawdown_ratio", rk["drawdown_bps"] / 1e4, "Drawdown from the peak (0.15 = 15%)"),
                    ("bot4_heat_ratio", rk["heat_bps"] / 1e4, "Portfolio heat (risk.heat_limit caps it)"),
                    ("bot4_garch_params_version", rk["garch_version"],
                     "The GARCH parameters in force (1: the configured fit; each published refit adds 1)")):
                families.append(GaugeMetricFamily(name, doc, value=value))
        st = counters.get("strategy")
        if st is not None:
            families.append(GaugeMetricFamily("bot4_allocator_weights_version", "The allocator weights in force "
                                              "(0: no allocator, signal mode; each publication adds 1)",
                                              value=st["weights_version"]))
        model = counters.get("inference")
        if model is not None and model["model_sha256_head"]:
            version = GaugeMetricFamily("bot4_model_version", "The model inference serves: its metadata's version",
                                        labels=["model", "sha256_head"])
            name = cb.read_text(self.view.block.stages[registry.slot("inference")], *registry.MODEL_NAME_WORDS)
            version.add_metric([name, f"{model['model_sha256_head']:0{registry.SHA256_HEAD_HEX}x}"],
                               model["model_version"])
            families.append(version)
        return families

    def position_families(self) -> list:
        try:
            table = PositionsTable.attach(self.run)
        except SegmentError:
            return []  # no execute in this run (record mode)
        try:
            position = GaugeMetricFamily("bot4_position", "Execute's position per instrument, base units",
                                         labels=["venue", "symbol"])
            fees = GaugeMetricFamily("bot4_instrument_fees_usd", "Fees paid per instrument", labels=["venue", "symbol"])
            for key, venue, symbol in table.instruments():
                position.add_metric([venue, symbol], float(table.values[POSITION, key]))
                fees.add_metric([venue, symbol], float(table.values[FEES, key]))
            return [position, fees]
        finally:
            table.close()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass  # a scrape is not news: no line per request in the run's output


class Endpoint:
    """A run's metrics served over HTTP from daemon threads of this process (one per request); raises OSError when
    it cannot listen on ``host``:``port``."""

    def __init__(self, run: str, host: str, port: int):
        registry_ = CollectorRegistry(support_collectors_without_names=True)  # ?name[]=... filters it too
        registry_.register(RunCollector(run))
        metrics = make_wsgi_app(registry_)

        def text_format(environ, start_response):  # whatever the scraper accepts: see the module's doc
            return metrics({**environ, "HTTP_ACCEPT": "text/plain"}, start_response)

        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        server = type("Server", (ThreadingWSGIServer,), {"address_family": family})
        self.server = make_server(address[0], port, text_format, server, handler_class=_Quiet)
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"bot4 metrics {run}", daemon=True)
        self.thread.start()
        self.host, self.port = host, self.server.server_port  # port 0 asks the system for a free one

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
