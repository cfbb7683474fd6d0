"""``bot4 metrics --name RUN``: serve a run's Prometheus metrics (pipeline.exporter) until Ctrl-C or SIGTERM.

For a run started without ``--metrics-port``. It reads whichever run holds the name at each scrape, so it may be
started before the run and outlive a restart of it (``bot4_up`` is 0 in between).
"""
from __future__ import annotations

import signal
import sys
import threading

from pipeline import names
from pipeline.exporter import Endpoint
from shm.segment import list_segments


def main(run: str, host: str, port: int) -> int:
    if not 0 <= port <= 65_535:
        print(f"bot4 metrics: --port={port} is invalid: use 1..65535 (or 0: any free port)", file=sys.stderr)
        return 2
    try:
        endpoint = Endpoint(run, host, port)
    except OSError as exc:
        print(f"bot4 metrics: cannot listen on {host}:{port} ({exc.strerror or exc}): choose a free port (--port) or "
              "an address of this host (--host)", file=sys.stderr)
        return 1
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        running = names.control(run) in list_segments(names.run_prefix(run))
        print(f"bot4 metrics: run {run!r} at {endpoint.url}"
              + ("" if running else f" (no run named {run!r} now: bot4_up reads 0 until one starts)"), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        endpoint.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("bot4 metrics: stopped", flush=True)
    return 0
