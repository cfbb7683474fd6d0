"""Alerts on a trip or re-arm: a CRITICAL log line, a msgpack message on a zmq PUB socket, and an optional
operator command (a webhook script, a pager). Never blocks the watchdog: zmq sends are non-blocking and
the command is started, not waited for."""
from __future__ import annotations

import logging
import os
import shlex
import subprocess
import tempfile

import msgpack
import zmq

log = logging.getLogger("bot4.alerts")


def endpoint_for(run: str, configured: str) -> str:
    if configured == "auto":
        return f"ipc://{tempfile.gettempdir()}/bot4.{run}.alerts"
    return configured


def remove_ipc_file(endpoint: str) -> None:
    """libzmq leaves an ipc endpoint's socket file behind; whoever owns the run removes it."""
    if endpoint.startswith("ipc://"):
        try:
            os.unlink(endpoint[len("ipc://"):])
        except FileNotFoundError:
            pass


class Alerter:
    def __init__(self, run: str, endpoint: str, command: str):
        self.run = run
        self.endpoint = endpoint_for(run, endpoint)
        self.command = shlex.split(command) if command else []
        self.context = self.socket = None
        self.children: list[subprocess.Popen] = []
        if self.endpoint:
            self.context = zmq.Context(io_threads=1)
            self.socket = self.context.socket(zmq.PUB)
            self.socket.setsockopt(zmq.LINGER, 200)
            self.socket.setsockopt(zmq.SNDHWM, 1000)
            self.socket.bind(self.endpoint)

    def send(self, event: str, **fields) -> None:
        message = {"event": event, "run": self.run, **fields}
        level = logging.CRITICAL if event == "trip" else logging.INFO
        log.log(level, "%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()))
        if self.socket is not None:
            try:
                self.socket.send_multipart([b"alert", msgpack.packb(message)], flags=zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                log.error("alert not published on %s: %s", self.endpoint, exc)
        if self.command:
            env = dict(os.environ, BOT4_EVENT=event, BOT4_RUN=self.run,
                       **{f"BOT4_{k.upper()}": str(v) for k, v in fields.items()})
            try:
                self.children.append(subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL))
            except OSError as exc:
                log.error("alert command %s failed to start: %s", self.command, exc)
        self.children = [c for c in self.children if c.poll() is None]

    def close(self) -> None:
        for child in self.children:
            try:
                child.wait(2)
            except subprocess.TimeoutExpired:
                child.kill()
        if self.socket is not None:
            self.socket.close()
            self.context.term()
            remove_ipc_file(self.endpoint)
