"""A notify socket as systemd binds it: AF_UNIX datagrams of newline-separated KEY=VALUE fields, each with the
sender's credentials (SO_PASSCRED), which is how systemd applies NotifyAccess=main."""
from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass
class Datagram:
    pid: int
    fields: dict[str, str]
    at: float  # time.monotonic() when read


class NotifySocket:
    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.seen: list[Datagram] = []

    def read(self, timeout_s: float) -> Datagram | None:
        self.sock.settimeout(max(timeout_s, 0.001))
        try:
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(CREDENTIALS.size))
        except TimeoutError:
            return None
        pid = next(CREDENTIALS.unpack(bytes(d[:CREDENTIALS.size]))[0] for level, kind, d in ancillary
                   if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
        datagram = Datagram(pid, fields, time.monotonic())
        self.seen.append(datagram)
        return datagram

    def wait_for(self, key: str, value: str | None = None, timeout_s: float = 10.0) -> Datagram:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            got = self.read(left)
            if got is not None and key in got.fields and (value is None or got.fields[key] == value):
                return got
        raise AssertionError(f"no {key}={value or '*'} within {timeout_s:g}s; got: {[d.fields for d in self.seen]}")

    def collect(self, seconds: float) -> list[Datagram]:
        """Everything that arrives within ``seconds``."""
        deadline = time.monotonic() + seconds
        out = []
        while (left := deadline - time.monotonic()) > 0:
            got = self.read(left)
            if got is not None:
                out.append(got)
        return out

    def close(self) -> None:
        self.sock.close()


def pings(datagrams: list[Datagram]) -> int:
    return sum(d.fields.get("WATCHDOG") == "1" for d in datagrams)
