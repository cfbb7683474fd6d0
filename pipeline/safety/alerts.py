"""Alerts on a trip or re-arm: a CRITICAL log line, a msgpack message on a zmq PUB socket, and an optional
operator command (a webhook script, a pager). Never blocks the watchdog: zmq sends are non-blocking and
the command is started, not waited for."""
from __future__ import annotations

import logging
import os
import shlex
import socket
import stat
import subprocess

import msgpack
import zmq

from pipeline.config import alert_endpoint_for, ipc_file_problem

log = logging.getLogger("bot4.alerts")


def endpoint_for(run: str, configured: str) -> str:
    return alert_endpoint_for(run, configured)


class AlertError(RuntimeError):
    """The alert endpoint cannot be bound; the message names watchdog.alert_endpoint and the fix."""


def ipc_path(endpoint: str) -> str | None:
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


def _listened_on(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def check_ipc_path(path: str) -> str:
    """Why an ipc endpoint at ``path`` cannot be bound ("" if it can): libzmq unlinks whatever file is there."""
    problem = ipc_file_problem(path)
    if not problem and os.path.lexists(path) and _listened_on(path):
        problem = f"{path} is in use by another process (another run's alerts?)"
    return problem


def remove_ipc_file(endpoint: str) -> None:
    """libzmq leaves an ipc endpoint's socket file behind; whoever owns the run removes it. Only a socket
    nobody listens on is removed: never a regular file, never a live endpoint."""
    path = ipc_path(endpoint)
    if path is None:
        return
    try:
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode) and st.st_uid == os.geteuid() and not _listened_on(path):
            os.unlink(path)
    except FileNotFoundError:
        pass


class Alerter:
    def __init__(self, run: str, endpoint: str, command: str):
        self.run = run
        self.endpoint = endpoint_for(run, endpoint)
        self.command = shlex.split(command) if command else []
        self.context = self.socket = None
        self.children: list[subprocess.Popen] = []
        self.bound_file: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file our bind made
        if self.endpoint:
            path = ipc_path(self.endpoint)
            problem = check_ipc_path(path) if path is not None else ""
            if problem:
                raise AlertError(f"watchdog.alert_endpoint={self.endpoint!r} cannot be bound: {problem}; choose "
                                 "another path or run.name")
            self.context = zmq.Context(io_threads=1)
            self.socket = self.context.socket(zmq.PUB)
            self.socket.setsockopt(zmq.LINGER, 200)
            self.socket.setsockopt(zmq.SNDHWM, 1000)
            self.socket.bind(self.endpoint)
            if path is not None:
                st = os.lstat(path)
                self.bound_file = (st.st_dev, st.st_ino)

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
            self._remove_bound_file()

    def _remove_bound_file(self) -> None:
        """Unlink the socket file only if it is still the one our bind created."""
        path = ipc_path(self.endpoint)
        if path is None or self.bound_file is None:
            return
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self.bound_file:
            os.unlink(path)
