"""Feed -> validate from a replay at max speed: how many recorded events per second get validated.

Three measures on the same merged recording (the 2024-08-08 Binance captures: spot BTC and ETH, USD-M BTC),
in one invocation, rounds interleaved:

- ``kernel``: the validate kernel alone over the whole stream in one process (batches of 256): the ceiling.
- ``record``: ``bot4 record`` with the replay as its feed: the feed process publishes the parsed stream into
  a shared-memory ring, the validate process consumes it, the journal writes the market and quarantine taps.
- ``trade``: ``bot4 run`` on the same replay: all seven stages behind validate (they share the 2 cores).

Live rates are sampled from the control block (validate's input counter every 2 ms, the way ``bot4 status``
reads it) and taken between 5% and 95% of the stream, so start-up and drain do not count. Every run must
account for every event (forwarded + quarantined = fed). Run: ``python -m bench.feed_validate [--rounds 3]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import names
from pipeline.config import Config
from pipeline.sources import SymbolTable, merge, parse_file
from shm import control as cb
from shm.segment import SegmentError
from stages import records, validate

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "tests" / "data" / "binance-ws-capture"
FILES = (("spot", "spot_btcusdt_20240808.gz"), ("spot", "spot_ethusdt_20240808.gz"), ("usdm", "usdm_btcusdt_20240808.gz"))
VENUES, SYMBOLS = ["spot", "usdm"], ["BTC-USDT", "ETH-USDT"]
VALIDATE_SLOT = 1


def load_stream() -> np.ndarray:
    table = SymbolTable(venues=VENUES, symbols=SYMBOLS)
    return merge([parse_file(str(CAPTURES / name), table, venue=venue) for venue, name in FILES])


def kernel_rate(stream: np.ndarray, batch: int = 256) -> float:
    config = Config()
    v = config.validate
    params = validate.make_params(len(VENUES), len(SYMBOLS), max_stale_ms=v.max_stale_ms, max_future_ms=v.max_future_ms,
                                  max_jump_pct=v.max_jump_pct)
    out = np.zeros(batch, records.MARKET_EVENT)
    stats = np.zeros(cb.CUSTOM_WORDS, np.int64)
    validate.step(stream[:1], 1, stream[:0], 0, validate.make_state(batch), params, None, stats, out, 0)  # compile
    state = validate.make_state(batch)
    stats[:] = 0
    started = time.perf_counter_ns()
    for i in range(0, len(stream), batch):
        chunk = stream[i:i + batch]
        validate.step(chunk, len(chunk), chunk[:0], 0, state, params, None, stats, out, 0)
    elapsed = time.perf_counter_ns() - started
    assert stats[validate.ST_FORWARDED] + stats[validate.ST_QUARANTINED] == len(stream)
    return len(stream) / elapsed * 1e9


def live_rate(mode: str, total: int, workdir: str) -> float:
    conf = Path(workdir) / "replay.toml"
    files = ", ".join(f'"{venue}={CAPTURES / name}"' for venue, name in FILES)
    conf.write_text(f'[feed]\nsource = "replay"\nvenues = {VENUES}\nsymbols = {SYMBOLS}\nfiles = [{files}]\n'
                    "replay_speed = 0\n".replace("'", '"'))
    run = f"fv{os.getpid()}{mode[0]}"
    journal = tempfile.mkdtemp(dir=workdir)
    command = "record" if mode == "record" else "run"
    args = [sys.executable, "-m", "tools.cli", command, "--quiet", "--config", str(conf), "--name", run]
    if mode == "record":
        args += ["--journal", journal]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = []
    block = None
    try:
        while proc.poll() is None:
            if block is None:
                try:
                    block = cb.ControlBlock.attach(names.control(run))
                except SegmentError:
                    time.sleep(0.01)
                    continue
            try:
                samples.append((time.perf_counter_ns(), int(block.stages[VALIDATE_SLOT][cb.S_IN])))
            except (ValueError, OSError):
                break
            if samples[-1][1] >= total:
                break
            time.sleep(0.002)
    finally:
        if block is not None:
            block.close()
        output, _ = proc.communicate(timeout=300)
    if proc.returncode != 0 or f"events in: {total:,}" not in output:
        raise SystemExit(f"bot4 {command} failed or lost events (exit {proc.returncode}):\n{output}")
    t = np.array([s[0] for s in samples], np.float64)
    n = np.array([s[1] for s in samples], np.float64)
    lo, hi = np.searchsorted(n, 0.05 * total), np.searchsorted(n, 0.95 * total)
    if hi <= lo or hi >= len(n):
        raise SystemExit(f"too few samples to time bot4 {command} ({len(samples)})")
    return (n[hi] - n[lo]) / (t[hi] - t[lo]) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    stream = load_stream()
    parse_s = time.perf_counter() - started
    print(f"cores: {sorted(os.sched_getaffinity(0))}; stream: {len(stream):,} events from {len(FILES)} captures "
          f"(parsed and merged in {parse_s:.2f} s, {len(stream) / parse_s:,.0f} events/s)")
    rates: dict[str, list[float]] = {"kernel": [], "record": [], "trade": []}
    order = list(rates)
    with tempfile.TemporaryDirectory(prefix="bot4-bench-fv-") as workdir:
        for r in range(args.rounds):
            for mode in order[r % 3:] + order[:r % 3]:  # rotate: A B C, B C A, C A B
                rate = kernel_rate(stream) if mode == "kernel" else live_rate(mode, len(stream), workdir)
                rates[mode].append(rate)
                print(f"round {r + 1}: {mode:<7} {rate / 1e6:6.2f} M events/s", flush=True)
    kernel = statistics.median(rates["kernel"])
    print("\nmedian over rounds (min-max):")
    for mode, values in rates.items():
        med = statistics.median(values)
        print(f"  {mode:<7} {med / 1e6:6.2f} M events/s ({min(values) / 1e6:.2f}-{max(values) / 1e6:.2f}), "
              f"{med / kernel:.2f}x the kernel alone, {1e9 / med:,.0f} ns/event")


if __name__ == "__main__":
    main()
