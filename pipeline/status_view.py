"""Live figures read from the control block in shared memory (``bot4 status``, the supervisor's lines and
summary, the watchdog's post-mortem), like AeronStat.

Reading never stops or slows anything: it maps the control block and reads words.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pipeline import graph, kill_reasons, registry
from pipeline.config import STRATEGY_KEYS
from shm import control as cb
from shm import segment
from shm.idle import NAMES as IDLE_NAMES
from stages import execute, validate

IDLE_LABEL = {v: k for k, v in IDLE_NAMES.items()}
RUN_STATES = {0: "new", cb.RUN_STARTING: "starting", cb.RUN_RUNNING: "running", cb.RUN_STOPPING: "stopping",
              cb.RUN_STOPPED: "stopped"}  # G_RUN_STATE
PROCESS_NAMES = registry.NAMES  # control-block slot i belongs to PROCESS_NAMES[i]


def _started(slot: np.ndarray) -> bool:
    return bool(slot[cb.S_PID]) or int(slot[cb.S_STATE]) != 0


def _us(ns: float) -> str:
    if ns != ns:  # nan
        return "-"
    if ns < 1_000:
        return f"{ns:.0f}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f}us"
    return f"{ns / 1e6:.2f}ms"


def hist(slot: np.ndarray, offset: int) -> np.ndarray:
    return slot[offset:offset + cb.HIST_BUCKETS].copy()


def supervisor_alive(block: cb.ControlBlock) -> bool:
    """The control block's creator (the supervisor) runs: pid and start time from the segment header, so a
    reused pid cannot fake it; a process-private block has only the pid word."""
    if block.segment is None:
        return segment.pid_alive(int(block.globals[cb.G_SUPERVISOR_PID]))
    h = block.segment.header
    pid, start = int(h[segment.H_CREATOR_PID]), int(h[segment.H_CREATOR_START_NS])
    del h
    return segment.process_alive(pid, start)


def slot_alive(slot: np.ndarray) -> bool:
    return segment.process_alive(int(slot[cb.S_PID]), int(slot[cb.S_PID_START_NS]))


def state_label(slot: np.ndarray) -> str:
    """The slot's state, or "dead" when it claims to be live and its process is gone."""
    state = int(slot[cb.S_STATE])
    if state not in (0, cb.STOPPED) and slot[cb.S_PID] and not slot_alive(slot):
        return "dead"
    return cb.STATE_NAMES.get(state, "?")


@dataclass(frozen=True)
class StageRow:
    """One started process at a sample: rates and the recent histograms cover the time since the previous sample."""
    name: str
    state: str
    pid: int
    core: int
    idle: str
    rate_in: float
    rate_out: float
    depth: int                 # records waiting in its primary input when it last took a batch
    service: np.ndarray        # histograms since the start (shm.control)
    origin: np.ndarray
    service_recent: np.ndarray
    origin_recent: np.ndarray
    heartbeat_age_ns: float    # nan: no heartbeat yet
    blocked_for_ns: int        # how long it has been blocked on a full output ring (0: it is not)
    errors: int

    def latency(self, which: str, q: float, recent: bool = False) -> str:
        """The q-quantile of ``which`` ("service" or "origin") as text."""
        return _us(cb.percentile_ns(getattr(self, which + ("_recent" if recent else "")), q))

    def heartbeat_age(self) -> str:
        return _us(self.heartbeat_age_ns)


class StatusView:
    """Formats status lines; keeps the previous sample to turn counters into rates."""

    def __init__(self, block: cb.ControlBlock):
        self.block = block
        self.prev_ns = 0
        self.prev = {}

    def rows(self) -> list[StageRow]:
        """Every started process, sampled now; the first call's rates are 0 (no previous sample)."""
        now = time.time_ns()
        dt = (now - self.prev_ns) / 1e9 if self.prev_ns else 0.0
        rows = []
        for index, name in enumerate(PROCESS_NAMES):
            slot = self.block.stages[index]
            if not _started(slot):
                continue  # not part of this run (journal, recorder unless configured; record mode)
            counters = (int(slot[cb.S_IN]) + int(slot[cb.S_IN_B]), int(slot[cb.S_OUT]))
            service = hist(slot, cb.S_SERVICE_HIST)
            origin = hist(slot, cb.S_ORIGIN_HIST)
            prev, prev_service, prev_origin = self.prev.get(name, (counters, service, origin))
            self.prev[name] = (counters, service, origin)
            # A heartbeat (or a block) newer than our clock read (written after it) counts as age 0.
            hb_age = max(0, now - int(slot[cb.S_HEARTBEAT_NS])) if slot[cb.S_HEARTBEAT_NS] else float("nan")
            blocked_since = int(slot[cb.S_BLOCKED_SINCE_NS])
            rows.append(StageRow(
                name, state_label(slot), int(slot[cb.S_PID]), int(slot[cb.S_CORE]),
                IDLE_LABEL.get(int(slot[cb.S_IDLE_STRATEGY]), "-") if name in registry.STAGE_NAMES else "sleeping",
                (counters[0] - prev[0]) / dt if dt else 0.0, (counters[1] - prev[1]) / dt if dt else 0.0,
                int(slot[cb.S_QUEUE_DEPTH]), service, origin, service - prev_service, origin - prev_origin, hb_age,
                max(0, now - blocked_since) if blocked_since else 0, int(slot[cb.S_ERRORS])))
        self.prev_ns = now
        return rows

    def trading_text(self) -> str:
        """ENABLED, DISABLED (why), or NOT RUNNING when the supervisor is gone (what still lives)."""
        g = self.block.globals
        enabled = int(g[cb.G_TRADING_ENABLED])
        if supervisor_alive(self.block):
            return "ENABLED" if enabled else f"DISABLED ({self.kill_reason()})"
        live = [n for i, n in enumerate(PROCESS_NAMES) if _started(self.block.stages[i])
                and state_label(self.block.stages[i]) not in ("dead", "stopped", "new")]
        return (f"NOT RUNNING: the supervisor (pid {int(g[cb.G_SUPERVISOR_PID])}) is dead"
                + (f", still alive: {', '.join(live)}" if live else ", and every stage")
                + (" (the flag reads 1, but nothing is trading)" if enabled and not live else
                   f" (flag {enabled}; {self.kill_reason()})"))

    def lines(self) -> list[str]:
        out = [f"{'stage':<10}{'state':<9}{'core':>4} {'idle':<10}{'in/s':>10}{'out/s':>10}{'depth':>7}"
               f"{'svc p50':>9}{'svc p99':>9}{'tick p50':>10}{'tick p99':>10}{'hb age':>9}"]
        for row in self.rows():
            out.append(
                f"{row.name:<10}{row.state:<9}{row.core:>4} {row.idle:<10}{row.rate_in:>10.0f}{row.rate_out:>10.0f}"
                f"{row.depth:>7}{row.latency('service', 0.5):>9}{row.latency('service', 0.99):>9}"
                f"{row.latency('origin', 0.5):>10}{row.latency('origin', 0.99):>10}{row.heartbeat_age():>9}")
        ex = self.execute_stats()
        trading = self.trading_text()
        out.append(f"trading {trading} | orders {ex['orders']} fills {ex['fills']} open {ex['open_orders']} "
                   f"rejects {ex['rejects']} | gross position ${ex['gross_position_usd']:,} | "
                   f"PnL ${ex['pnl_cents'] / 100:,.2f} (fees ${ex['fees_cents'] / 100:,.2f})")
        rk = self.stage_counters().get("risk")
        if rk is not None:
            version = rk["garch_version"]
            out.append(f"risk: equity ${rk['equity_cents'] / 100:,.2f} drawdown {rk['drawdown_bps'] / 100:.2f}% "
                       f"heat {rk['heat_bps'] / 100:.2f}% | GARCH parameters version {version}"
                       + (f" ({version - 1} refit{'s' if version != 2 else ''} published)" if version > 1 else "")
                       + (f", {rk['garch_rows_refused']} rows refused" if rk["garch_rows_refused"] else ""))
        st = self.stage_counters().get("strategy")
        if st is not None and st["weights_version"] > 0:  # regime mode (a signal-mode run has no allocator)
            version = st["weights_version"]
            intents = ", ".join(f"{n} {st[n + '_intents']}" for n in STRATEGY_KEYS)
            fit = (f"A {st['mm_fit_a_per_s']}/s k {st['mm_fit_k_milli'] / 1000:.3f}/tick"
                   if st["mm_fit_a_per_s"] else "not yet fitted")
            out.append(f"strategy: decisions trending {st['regime_trending']} range {st['regime_range']} volatile "
                       f"{st['regime_volatile']} | intents {intents} | allocator weights version {version}"
                       + (f" ({version - 1} publication{'s' if version != 2 else ''})" if version > 1 else "")
                       + (f", {st['weights_refused']} refused" if st["weights_refused"] else "")
                       + f" | market making fit {fit}")
        gw = self.stage_counters().get("gateway")
        if gw is not None:
            out.append(self.gateway_line(gw))
        return out + self.model_lines()

    def model_lines(self) -> list[str]:
        """The model set inference serves (pipeline.hosting.models): identity, swaps, then one line per member with
        its latency per batch, failures and timeouts."""
        inf = self.stage_counters().get("inference")
        if inf is None or not inf["model_sha256_head"]:
            return []
        name = cb.read_text(self.block.stages[registry.slot("inference")], *registry.MODEL_NAME_WORDS)
        members = name.split(": ", 1)[1].split("+") if ": " in name else [name]
        out = [f"model: {name} version {inf['model_version']} (sha256 "
               f"{inf['model_sha256_head']:0{registry.SHA256_HEAD_HEX}x}...) | members alive "
               f"{inf['members_alive']}/{inf['members']}, batches with no view {inf['no_view_batches']} | swaps "
               f"{inf['swaps']}, refused {inf['publish_refused']} | longest wait {_us(inf['wait_max_ns'])}, "
               f"around swaps {_us(inf['swap_wait_max_ns'])} (longest load step {_us(inf['load_step_max_ns'])}, "
               f"handover {_us(inf['handover_max_ns'])})"]
        for m in range(min(inf["members"], registry.MAX_MEMBERS)):
            c = {label: inf[f"m{m}_{label}"] for label in registry.MEMBER_COUNTERS}
            out.append(f"  member {m} {members[m] if m < len(members) else '?'}: calls {c['calls']:,} p50 "
                       f"{_us(c['p50_ns'])} p99 {_us(c['p99_ns'])} max {_us(c['max_ns'])} | failures "
                       f"{c['failures']:,} timeouts {c['timeouts']:,}"
                       + (" | DISABLED (failed or late in too many batches in a row)" if c["disabled"] else ""))
        f = {label: inf[f"fused_{label}"] for label in registry.MEMBER_COUNTERS}
        if f["calls"]:  # one session for all members: the per-member times above are from batches run one by one
            out.append(f"  fused (all members, one run): calls {f['calls']:,} p50 {_us(f['p50_ns'])} p99 "
                       f"{_us(f['p99_ns'])} max {_us(f['max_ns'])} | fell back to one by one {f['failures']:,} "
                       f"late {f['timeouts']:,}" + (" | OFF (runs one by one)" if f["disabled"] else ""))
        return out

    def compact_line(self) -> str:
        """One line for a run's log per status interval: the trading state, the flow through the first and last
        stage, tick-to-last-stage latency over the interval, orders and PnL, the deepest input, what is not running."""
        rows = [row for row in self.rows() if row.name in registry.STAGE_NAMES]
        if not rows:
            return f"trading {self.trading_text()} | no stage started"
        first, last = rows[0], rows[-1]
        parts = [f"trading {self.trading_text()}",
                 f"{first.name} out {first.rate_out:,.0f}/s, {last.name} in {last.rate_in:,.0f}/s",
                 f"tick p50 {last.latency('origin', 0.5, recent=True)} p99 {last.latency('origin', 0.99, recent=True)}"]
        if last.name == "execute":
            ex = self.execute_stats()
            parts.append(f"orders {ex['orders']:,} fills {ex['fills']:,} open {ex['open_orders']:,} rejects "
                         f"{ex['rejects']:,} | gross ${ex['gross_position_usd']:,} PnL ${ex['pnl_cents'] / 100:,.2f}")
        deepest = max(rows, key=lambda row: row.depth)
        if deepest.depth:
            parts.append(f"depth {deepest.depth:,} ({deepest.name})")
        stuck = [f"{row.name} {row.state}" for row in rows if row.state != "running"]
        if stuck:
            parts.append("not running: " + ", ".join(stuck))
        return " | ".join(parts)

    @staticmethod
    def gateway_line(gw: dict[str, int]) -> str:
        return (f"gateway (live venues): commands {gw['commands']:,} answers {gw['answers']:,} | placed "
                f"{gw['orders_placed']:,} cancels {gw['cancels_sent']:,} amends {gw['amends']:,} (applied "
                f"{gw['amends_applied']:,}, refused {gw['amend_rejects']:,}) venue rejects {gw['venue_rejects']:,} | "
                f"unknown outcomes {gw['unknown_outcomes']:,} (resolved {gw['unknown_resolved']:,}, queries "
                f"{gw['queries']:,}) | stream reconnects {gw['stream_reconnects']:,} | cancel-alls "
                f"{gw['cancel_alls']:,} | venue errors {gw['venue_errors']:,} | create to ack p50 "
                f"{gw['ack_p50_us'] / 1e3:.1f} ms max {gw['ack_max_us'] / 1e3:.1f} ms"
                + (f" | holdings checks {gw['holdings_checks']:,}, mismatches {gw['holdings_mismatches']:,}"
                   if gw["holdings_checks"] else "")
                + (f" | {gw['answers_waiting']:,} answers waiting for execute" if gw["answers_waiting"] else ""))

    def execute_stats(self) -> dict[str, int]:
        slot = self.block.stages[registry.slot("execute")]
        return {label: int(slot[cb.S_CUSTOM + i]) for i, label in enumerate(execute.STATS)}

    def kill_reason(self) -> str:
        reason = kill_reasons.KILL_REASON_NAMES.get(int(self.block.globals[cb.G_KILL_REASON]), "?")
        stage = self.kill_stage()
        return f"{reason}: {stage}" if stage else reason

    def kill_stage(self) -> str:
        """The process the latched kill reason is about ("" when it names none)."""
        g = self.block.globals
        index = int(g[cb.G_KILL_STAGE])
        if int(g[cb.G_KILL_REASON]) in kill_reasons.STAGE_REASONS and 0 <= index < len(PROCESS_NAMES):
            return PROCESS_NAMES[index]
        return ""

    def stage_counters(self) -> dict[str, dict[str, int]]:
        """Per started process: its slot's counters, then its own (``custom_counters``; a label of its own wins)."""
        out = {}
        for index, name in enumerate(PROCESS_NAMES):
            slot = self.block.stages[index]
            if not _started(slot):
                continue
            out[name] = {"in": int(slot[cb.S_IN]), "in_b": int(slot[cb.S_IN_B]), "out": int(slot[cb.S_OUT]),
                         "batches": int(slot[cb.S_BATCHES]), "parks": int(slot[cb.S_PARKS]),
                         "blocked_ns": int(slot[cb.S_BLOCKED_NS]), "errors": int(slot[cb.S_ERRORS]),
                         "tap_written": int(slot[cb.S_TAP_WRITTEN]), "tap_dropped": int(slot[cb.S_TAP_DROPPED]),
                         "step_tap_written": int(slot[cb.S_STEP_TAP_WRITTEN]),
                         "step_tap_dropped": int(slot[cb.S_STEP_TAP_DROPPED]),
                         **self.custom_counters(name)}
        return out

    def custom_counters(self, name: str) -> dict[str, int]:
        """Process ``name``'s own counters (stages.counters), by the labels the registry declares for it."""
        slot = self.block.stages[registry.slot(name)]
        return {label: int(slot[cb.S_CUSTOM + i]) for i, label in enumerate(registry.counters(name))}

    def summary(self) -> list[str]:
        counters = self.stage_counters()
        checked = counters.get("validate", {})
        by_reason = ", ".join(f"{name} {checked[label]:,}" for label, name in validate.REASONS.values()
                              if checked.get(label))
        fed = counters.get("feed", {})  # none: the run failed to start before the feed process claimed its slot
        lines = [f"events in: {fed.get('out', 0):,} (quarantined {checked.get('quarantined', 0):,}"
                 + (f": {by_reason})" if by_reason else ")")]
        lines.append("records per stage (in -> out): " + ", ".join(
            f"{n} {c['in'] + c['in_b']:,}->{c['out']:,}" for n, c in counters.items() if n in registry.STAGE_NAMES))
        if "execute" in counters:
            ex = self.execute_stats()
            tick = hist(self.block.stages[registry.slot("execute")], cb.S_ORIGIN_HIST)
            lines.append(f"orders {ex['orders']:,}, fills {ex['fills']:,}, cancels {ex['cancels']:,}, rejects "
                         f"{ex['rejects']:,}, PnL ${ex['pnl_cents'] / 100:,.2f} after fees "
                         f"${ex['fees_cents'] / 100:,.2f}")
            rejected = {label[4:]: v for label, v in ex.items() if label.startswith("rej_") and v}
            if rejected:
                lines.append("rejected by the gate: " + ", ".join(f"{k.replace('_', ' ')} {v:,}"
                                                                   for k, v in rejected.items()))
            if int(self.block.globals[cb.G_REPLAY_CLOCK]) == cb.REPLAY_UNPACED:
                lines.append("tick-to-order latency: not measured (an unpaced replay, feed.replay_speed = 0, "
                             "releases events with no wall time of their own; service times are measured)")
            else:
                lines.append("tick-to-order latency (market event received -> order sent or refused): "
                             f"p50 {_us(cb.percentile_ns(tick, 0.5))} p99 {_us(cb.percentile_ns(tick, 0.99))} "
                             f"p99.9 {_us(cb.percentile_ns(tick, 0.999))} over {int(tick.sum()):,} reports")
            lines.append(self.residual(ex))
        else:
            lines.append("record mode: nothing traded")
        source = {label[5:].replace("_", " "): fed.get(label, 0) for label in registry.CCXT_FEED_COUNTERS}
        if any(source.values()):
            lines.append("live source (ccxt): " + ", ".join(f"{k} {v:,}" for k, v in source.items()))
        if "gateway" in counters:
            lines.append(self.gateway_line(counters["gateway"]))
        if "journal" in counters:
            lines += self.journal_lines(counters)
        if "recorder" in counters:
            r = counters["recorder"]
            error = cb.read_text(self.block.stages[registry.slot("recorder")], *registry.RECORDER_ERROR_WORDS)  # masked
            lines.append(f"recorder: {r['in']:,} rows into PostgreSQL (market {r['market']:,}, intent {r['intent']:,}, "
                         f"exec {r['exec']:,}, quarantine {r['quarantine']:,}); reconnects {r['reconnects']}"
                         + (f" (last error: {error})" if error else ""))
        blocked = {n: c["blocked_ns"] for n, c in counters.items() if c["blocked_ns"]}
        if blocked:
            lines.append("blocked on full rings: " + ", ".join(f"{n} {_us(v)}" for n, v in blocked.items()))
        return lines


    def stopped_cleanly(self, name: str) -> bool:
        return int(self.block.stages[PROCESS_NAMES.index(name)][cb.S_STATE]) == cb.STOPPED

    def residual(self, ex: dict[str, int]) -> str:
        """What execute left open after the stop (its last counters; a dead execute's are frozen)."""
        open_orders, gross = ex["open_orders"], ex["gross_position_usd"]
        if not self.stopped_cleanly("execute"):
            return (f"execute died: {open_orders:,} open orders and ${gross:,} gross position left unflattened "
                    "(a dead execute cannot cancel or flatten)")
        left = []
        if ex["dust_positions"]:
            left.append(f"{ex['dust_positions']} dust position(s) below execute.flatten_min_usd, not flattened")
        if ex["flatten_given_up"]:
            left.append(f"{ex['flatten_given_up']} instrument(s) whose flatten orders the venue refused "
                        f"{execute.FLATTEN_REJECTS_MAX} times in a row (see the journal's rejects)")
        if ex["cancels_given_up"]:
            left.append(f"{ex['cancels_given_up']} order(s) whose cancel the venue kept refusing (the gateway's "
                        "stop cancels all of ours at the venue)")
        note = f" ({'; '.join(left)})" if left else ""
        if open_orders == 0 and gross == 0 and not left:
            return "positions after the stop: flat, no open orders"
        if open_orders == 0 and ex["to_flatten"] == 0:
            return f"positions after the stop: no open orders, ${gross:,} gross position left{note}"
        return (f"positions after the stop: NOT flat: {open_orders:,} open orders and ${gross:,} gross position "
                f"left{note}")

    def journal_lines(self, counters: dict[str, dict[str, int]]) -> list[str]:
        """Per stream: what its stage tapped (written to the tap or refused by a full one), what the
        journal wrote, and the difference, lost, with why."""
        journal = counters["journal"]
        died = not self.stopped_cleanly("journal")
        lines = []
        for tap, stream in graph.TAP_STREAMS.items():
            stage = counters.get(tap.split(".")[0])
            if stage is None:
                continue  # not hosted in this run (record mode)
            prefix = "step_" if tap == graph.BY_NAME["execute"].step_tap else ""  # execute's second tap
            written, refused = stage[prefix + "tap_written"], stage[prefix + "tap_dropped"]
            tapped, journalled = written + refused, journal[stream]
            lost = tapped - journalled
            line = f"journal {stream}: {tapped:,} tapped, {journalled:,} journalled, {lost:,} lost"
            if lost and died:
                line += f" (the journal died: {written - journalled:,} left in the tap, {refused:,} refused by it)"
            elif lost:
                line += f" (the journal fell behind: {refused:,} refused by a full tap)"
            lines.append(line)
        return lines
