"""The supervisor's word to systemd: the service notification protocol (sd_notify(3)), for ``Type=notify``.

READY=1 once start-up has armed the run (or left it disarmed on purpose); STATUS= with the trading state,
when it changes and every ``STATUS_REPEAT_S`` with the figures; WATCHDOG=1 every half ``$WATCHDOG_USEC``,
but only while every process of the run heartbeats (a hung pipeline stops the pings, so systemd restarts
it, and the restart comes up disarmed); STOPPING=1 when a stop begins. The datagrams go through
libsystemd's own sd_notify (the cysystemd binding). Without ``$NOTIFY_SOCKET`` (not started by systemd as a
notify service) nothing is sent. Used from the supervisor's main thread only, its signal handler included.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping

from cysystemd.daemon import Notification, notify

from pipeline import kill_reasons
from pipeline.safety.panic import process_condition
from pipeline.status_view import StatusView
from shm import control as cb

STATUS_REPEAT_S = 10.0  # an unchanged state is said again this often, with fresh figures


def watchdog_interval_ns(environ: Mapping[str, str], pid: int) -> int:
    """Half of ``$WATCHDOG_USEC`` when systemd watches this process (sd_watchdog_enabled(3): a
    ``$WATCHDOG_PID`` naming another process means it does not); 0 when nothing watches."""
    usec, owner = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (owner and owner != str(pid)):
        return 0
    return int(usec) * 1000 // 2


def trading_state(block: cb.ControlBlock) -> str:
    g = block.globals
    if g[cb.G_TRADING_ENABLED]:
        return "trading enabled"
    text = cb.kill_text(g)
    if int(g[cb.G_KILL_REASON]) == kill_reasons.KILL_NOT_ARMED:  # the text says what it waits for
        return f"trading disabled: {text}" if text else "trading disabled"
    return f"trading DISABLED: {StatusView(block).kill_reason()}" + (f" ({text})" if text else "")


def figures(block: cb.ControlBlock) -> str:
    ex = StatusView(block).execute_stats()
    return (f"orders {ex['orders']:,} fills {ex['fills']:,} open {ex['open_orders']:,} | "
            f"PnL ${ex['pnl_cents'] / 100:,.2f}")


class ServiceNotifier:
    def __init__(self, say: Callable[[str], None] = print):
        self.socket = os.environ.get("NOTIFY_SOCKET", "")  # libsystemd reads it from the environment too
        self.enabled = bool(self.socket)
        self.ping_every_ns = watchdog_interval_ns(os.environ, os.getpid()) if self.enabled else 0
        self.say = say
        self.failed = False
        self.last_ping_ns = 0
        self.said = ""             # the state last sent
        self.said_at_ns = 0
        self.stopping_sent = False

    def send(self, notification, value: str | None = None) -> None:
        if not self.enabled:
            return
        try:
            notify(notification, value, return_exceptions=False)
        except (OSError, RuntimeError, ValueError) as exc:  # systemd gone: the run goes on, said once
            if not self.failed:
                self.failed = True
                code = exc.args[-1] if exc.args and isinstance(exc.args[-1], int) else 0  # sd_notify's -errno
                self.say(f"bot4: cannot notify systemd at NOTIFY_SOCKET={self.socket} "
                         f"({os.strerror(-code) if code < 0 else exc}); the run goes on")

    def status(self, text: str) -> None:
        self.send(Notification.STATUS, " ".join(text.split()))  # one line: a newline ends the field

    def ready(self, block: cb.ControlBlock) -> None:
        """After start-up: the state it left the run in, then READY=1."""
        self.said, self.said_at_ns = trading_state(block), time.monotonic_ns()
        self.status(f"{self.said} | {figures(block)}")
        self.send(Notification.READY)

    def tick(self, block: cb.ControlBlock, processes: Iterable[tuple[int, str]], stale_ns: int) -> None:
        """From the supervisor's watch loop: the state when it changed or is due, a ping when due and every
        process (slot index, label) is alive with a fresh heartbeat."""
        if not self.enabled or self.stopping_sent:
            return
        now = time.monotonic_ns()
        due = self.ping_every_ns and now - self.last_ping_ns >= self.ping_every_ns
        unwell = ""
        if due:  # judged until a ping goes out: while one process is unwell, every tick
            wall = time.time_ns()
            unwell = next((str(c) for c in (process_condition(block, index, label, wall, stale_ns)
                                             for index, label in processes) if c is not None), "")
        state = trading_state(block) + (f"; not pinging the service watchdog: {unwell}" if unwell else "")
        # stopping_sent again: a signal handler may have sent STOPPING=1 meanwhile, and it has the last word.
        if (state != self.said or now - self.said_at_ns >= STATUS_REPEAT_S * 1e9) and not self.stopping_sent:
            self.said, self.said_at_ns = state, now
            self.status(f"{state} | {figures(block)}")
        if due and not unwell and not self.stopping_sent:
            self.last_ping_ns = now
            self.send(Notification.WATCHDOG)

    def stopping(self, why: str) -> None:
        """STOPPING=1 (once): systemd's stop timeout (TimeoutStopSec) runs from here and its watchdog is off."""
        if self.stopping_sent or not self.enabled:
            return
        self.stopping_sent = True
        self.status(f"stopping ({why}): disarming, flattening, draining, stopping the processes")
        self.send(Notification.STOPPING)
