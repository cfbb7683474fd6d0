"""Kill-switch latency on the live pipeline: rack switch event -> ``trading_enabled == 0`` -> open orders
cancelled on the paper venue, over many trips.

A rack controller on a pseudo-terminal sends armed frames at 100 Hz; each trip it writes one kill frame
and notes CLOCK_MONOTONIC just before the write. The watchdog stamps the monotonic and wall time just
after it dropped the flag (``G_KILL_MONO_NS``, ``G_KILL_TIME_NS``); the execute stage records the wall time
of its cancel-all (``last_cancel_all_ns``), which can precede the stamp by the few microseconds between the
drop and the clock read (a negative figure). So the bench process never
spins on the two cores it measures. Between trips it re-arms (armed frames, ``bot4 killswitch arm``) and
waits for quotes to rest again. Run: ``python -m bench.killswitch_latency [--trips 1000]``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import tty

import numpy as np

from pipeline import kill_reasons, names
from pipeline.registry import STAGE_NAMES
from pipeline.safety.switch import encode_frame
from shm import control as cb
from shm import segment
from stages import execute
from tools.killswitch import request_arm

EXECUTE = STAGE_NAMES.index("execute")


class Rack:
    def __init__(self, rate_hz: float = 100.0):
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.period = 1.0 / rate_hz
        self.mode = "A"
        self.kick = threading.Event()
        self.kill_written_ns = 0
        self.seq = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            mode = self.mode
            frame = encode_frame(mode, self.seq & 0xFF)
            if mode == "K" and not self.kill_written_ns:
                self.kill_written_ns = time.monotonic_ns()
            try:
                os.write(self.master, frame)
                os.read(self.master, 4096)
            except OSError:
                pass
            self.seq += 1
            self.kick.wait(self.period)
            self.kick.clear()

    def press(self) -> None:
        self.kill_written_ns = 0
        self.mode = "K"
        self.kick.set()

    def release(self) -> None:
        self.mode = "A"

    def close(self) -> None:
        self.running = False
        self.kick.set()
        self.thread.join()
        os.close(self.master)
        os.close(self.slave)


def percentiles(values: list[int]) -> str:
    a = np.array(values) / 1e3
    return f"p50 {np.percentile(a, 50):8.1f} us  p99 {np.percentile(a, 99):8.1f} us  max {a.max():8.1f} us"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trips", type=int, default=1000)
    args = parser.parse_args()
    rack = Rack()
    run = f"ksbench{os.getpid()}"
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        fh.write(f'[killswitch]\nmode = "heartbeat"\nport = "{rack.path}"\n[execute]\non_kill = "cancel_only"\n'
                 '[run]\nstatus_interval_s = 0.0\n')
        conf = fh.name
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "run", "--name", run, "--config", conf],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    to_flag, to_cancel, skipped = [], [], 0
    block = None
    try:
        while "bot4: running" not in (line := proc.stdout.readline()):
            if not line:
                raise SystemExit("the pipeline did not start")
        block = cb.ControlBlock.attach(names.control(run))
        g, ex = block.globals, block.stages[EXECUTE][cb.S_CUSTOM:]
        started = time.monotonic()
        for trip in range(args.trips):
            deadline = time.monotonic() + 5
            while not (g[cb.G_TRADING_ENABLED] and ex[execute.ST_OPEN] > 0):
                if time.monotonic() > deadline:
                    raise SystemExit(f"trip {trip}: not armed with resting orders after 5 s")
                time.sleep(0.001)
            cancels_before = int(ex[execute.ST_LAST_CANCEL_ALL_NS])
            rack.press()
            while g[cb.G_TRADING_ENABLED] or int(ex[execute.ST_LAST_CANCEL_ALL_NS]) == cancels_before:
                time.sleep(0.0005)
            if g[cb.G_KILL_REASON] != kill_reasons.KILL_SWITCH_PRESSED:
                skipped += 1  # tripped by something else: not a switch measurement
            else:
                to_flag.append(int(g[cb.G_KILL_MONO_NS]) - rack.kill_written_ns)
                to_cancel.append(int(ex[execute.ST_LAST_CANCEL_ALL_NS]) - int(g[cb.G_KILL_TIME_NS]))
            rack.release()
            while not request_arm(block, timeout_s=1.0)[0]:
                time.sleep(0.005)
        elapsed = time.monotonic() - started
    finally:
        rack.close()
        if block is not None:
            block.close()
        proc.terminate()
        proc.wait(30)
        os.unlink(conf)
        for name in segment.list_segments(names.run_prefix(run)):
            segment.reclaim_if_stale(name)
    print(f"kill switch latency over {len(to_flag)} trips ({elapsed:.0f} s, {skipped} tripped by something else); "
          f"rack frames at 100 Hz on a pty, watchdog period 1 ms, 9 processes on {len(os.sched_getaffinity(0))} cores")
    print(f"  kill frame written -> trading_enabled == 0 : {percentiles(to_flag)}")
    print(f"  trading_enabled == 0 -> open orders cancelled : {percentiles(to_cancel)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
