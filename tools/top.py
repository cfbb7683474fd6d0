"""``bot4 top --name RUN``: a live terminal view of a running pipeline, redrawn once a second (rich).

The stages with their rates and latencies (over the last second), the trading state and why it is off, execute's
orders and PnL, risk's equity, and the positions per instrument; read from shared memory like ``bot4 status``
(pipeline.status_view), which never stops or slows anything. q or Ctrl-C quits; so does the run's end, saying so.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import termios
import time
import tty

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pipeline import names, registry
from pipeline.status_view import RUN_STATES, StatusView, supervisor_alive
from pipeline.tables import FEES, POSITION, PositionsTable
from shm import control as cb
from shm.segment import SegmentError

REFRESH_S = 1.0


class Keys:
    """Single key presses from a terminal on stdin (cbreak mode: unbuffered, no echo; Ctrl-C still interrupts)."""

    def __init__(self):
        self.fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
        self.saved = None

    def __enter__(self) -> Keys:
        if self.fd is not None:
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def wait(self, timeout_s: float) -> str:
        """The keys pressed within ``timeout_s`` ("" when none; returns at the first)."""
        if self.fd is None:
            time.sleep(timeout_s)
            return ""
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        return os.read(self.fd, 32).decode("utf-8", "replace") if ready else ""


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def render(run: str, view: StatusView, positions: PositionsTable | None) -> Group:
    g = view.block.globals
    rows = view.rows()
    up_s = max(0, time.time_ns() - int(g[cb.G_STARTED_NS])) // 1_000_000_000
    header = Text(f"bot4 top: run {run} (id {int(g[cb.G_RUN_ID]):x}), {RUN_STATES.get(int(g[cb.G_RUN_STATE]), '?')}, "
                  f"up {up_s // 3600}:{up_s // 60 % 60:02d}:{up_s % 60:02d}, {time.strftime('%H:%M:%S')}", style="bold")
    trading = view.trading_text()
    state = Text("trading ", style="bold")
    state.append(trading, style="bold green" if trading == "ENABLED" else "bold red")
    kill = cb.kill_text(g)
    if not int(g[cb.G_TRADING_ENABLED]) and kill:
        state.append(f"  {kill}")
    if int(g[cb.G_TRIPS]) or int(g[cb.G_RESTARTS]):
        state.append(f"  (trips {int(g[cb.G_TRIPS])}, restarts {int(g[cb.G_RESTARTS])})")

    stages = Table(title="stages (latencies over the last second)", title_justify="left", expand=False)
    for column, right in (("stage", False), ("state", False), ("core", True), ("idle", False), ("in/s", True),
                          ("out/s", True), ("depth", True), ("svc p50", True), ("svc p99", True), ("tick p50", True),
                          ("tick p99", True), ("errors", True), ("hb age", True)):
        stages.add_column(column, justify="right" if right else "left", no_wrap=True)
    counters = view.stage_counters()
    for row in rows:
        stages.add_row(row.name, Text(row.state, style="" if row.state == "running" else "bold red"), str(row.core),
                       row.idle, _rate(row.rate_in), _rate(row.rate_out), f"{row.depth:,}",
                       row.latency("service", 0.5, True), row.latency("service", 0.99, True),
                       row.latency("origin", 0.5, True), row.latency("origin", 0.99, True),
                       f"{row.errors:,}", row.heartbeat_age())

    parts = [header, state, stages]
    ex = counters.get("execute")
    if ex is not None:
        rejected = ", ".join(f"{label[4:].replace('_', ' ')} {value:,}" for label, value in ex.items()
                             if label.startswith("rej_") and value)
        parts.append(Text(f"execute: orders {ex['orders']:,} fills {ex['fills']:,} cancels {ex['cancels']:,} open "
                          f"{ex['open_orders']:,} rejects {ex['rejects']:,}" + (f" ({rejected})" if rejected else "")
                          + f" | gross ${ex['gross_position_usd']:,} | PnL ${ex['pnl_cents'] / 100:,.2f} (fees "
                          f"${ex['fees_cents'] / 100:,.2f})"))
    rk = counters.get("risk")
    if rk is not None:
        parts.append(Text(f"risk: equity ${rk['equity_cents'] / 100:,.2f} drawdown {rk['drawdown_bps'] / 100:.2f}% "
                          f"heat {rk['heat_bps'] / 100:.2f}% | GARCH version {rk['garch_version']}"))
    model = counters.get("inference")
    if model is not None and model["model_sha256_head"]:
        name = cb.read_text(view.block.stages[registry.slot("inference")], *registry.MODEL_NAME_WORDS)
        weights = counters.get("strategy", {}).get("weights_version", 0)
        parts.append(Text(f"model: {name} version {model['model_version']} (sha256 "
                          f"{model['model_sha256_head']:0{registry.SHA256_HEAD_HEX}x}...)"
                          + (f" | allocator weights version {weights}" if weights else "")))
    if positions is not None:
        held = [(venue, symbol, positions.values[POSITION, key], positions.values[FEES, key])
                for key, venue, symbol in positions.instruments() if positions.values[POSITION, key] != 0.0]
        if held:
            table = Table(title="positions", title_justify="left")
            for column in ("venue", "symbol", "position", "fees $"):
                table.add_column(column, justify="left" if column in ("venue", "symbol") else "right")
            for venue, symbol, qty, fees in held:
                table.add_row(venue, symbol, f"{qty:,.6g}", f"{fees:,.2f}")
            parts.append(table)
        else:
            parts.append(Text("positions: flat"))
    parts.append(Text("q or Ctrl-C: quit", style="dim"))
    return Group(*parts)


def ended(block: cb.ControlBlock) -> str:
    """Why the view should end ("" while the run goes on)."""
    if int(block.globals[cb.G_RUN_STATE]) == cb.RUN_STOPPED:
        return "stopped"
    if not supervisor_alive(block):
        return f"is gone: its supervisor (pid {int(block.globals[cb.G_SUPERVISOR_PID])}) died"
    return ""


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(run: str) -> int:
    try:
        block = cb.ControlBlock.attach(names.control(run))
    except SegmentError as exc:
        print(f"bot4 top: {exc}", file=sys.stderr)
        return 1
    try:
        positions = PositionsTable.attach(run)
    except SegmentError:
        positions = None  # record mode: nothing trades
    view = StatusView(block)
    view.rows()  # the first sample: rates need a previous one
    why = ended(block)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with Keys() as keys, Live(console=Console(), screen=True, auto_refresh=False) as live:
            while not why:
                live.update(render(run, view, positions), refresh=True)
                if "q" in keys.wait(REFRESH_S).lower():
                    break
                why = ended(block)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if positions is not None:
            positions.close()
        del view
        block.close()
    if why:
        print(f"bot4 top: the run {run!r} {why}")
    return 0
