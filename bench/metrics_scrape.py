"""What one Prometheus scrape of a run costs (pipeline.exporter), beside ``bot4 status``'s read of the same block.

A stand-in run (a control block and positions table this process creates, every process slot started, every
histogram filled over 40 buckets) is read three ways per round, the order rotated each round: the collector and
the text exposition in this process, a scrape over HTTP from the endpoint's thread, and StatusView.lines() (what
``bot4 status`` prints). Per way, per round: p50 / p99 of wall and CPU time (CPU: this process, all threads);
the medians over rounds are printed with their min-max. A stage never waits on a scrape (it only loads words);
what a scrape takes from the stages is its CPU time on the shared cores, times the scrape rate.

    flock /tmp/bot4-bench.lock python -m bench.metrics_scrape [--rounds 5] [--scrapes 200]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import urllib.request
import uuid

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from pipeline import exporter, names, registry
from pipeline.status_view import StatusView
from pipeline.tables import PositionsTable
from shm import control as cb
from shm import segment


def stand_in_run(run: str) -> tuple[cb.ControlBlock, PositionsTable]:
    block = cb.ControlBlock.create(names.control(run))
    positions = PositionsTable.create(run, ("venue_a", "venue_b"), ("BTC-USDT", "ETH-USDT", "SOL-USDT"))
    rng = np.random.default_rng(7)
    for index in range(len(registry.PROCESSES)):
        slot = block.stages[index]
        slot[cb.S_PID], slot[cb.S_PID_START_NS] = os.getpid(), segment.process_start_ns(os.getpid())
        slot[cb.S_STATE] = cb.RUNNING
        for offset in (cb.S_SERVICE_HIST, cb.S_ORIGIN_HIST):
            slot[offset + 40:offset + 80] = rng.integers(0, 10_000, 40)
    positions.values[:] = rng.normal(size=positions.values.shape)
    return block, positions


def timed(action, n: int) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for _ in range(n):
        w, c = time.perf_counter_ns(), time.process_time_ns()
        action()
        cpu.append((time.process_time_ns() - c) / 1e6)
        wall.append((time.perf_counter_ns() - w) / 1e6)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scrapes", type=int, default=200, help="per way per round")
    args = parser.parse_args()
    run = f"bench-{uuid.uuid4().hex[:8]}"
    block, positions = stand_in_run(run)
    endpoint = exporter.Endpoint(run, "127.0.0.1", 0)
    try:
        registry_ = CollectorRegistry()
        registry_.register(exporter.RunCollector(run))
        text = generate_latest(registry_)
        view = StatusView(block)

        def http():
            with urllib.request.urlopen(endpoint.url, timeout=30) as response:
                response.read()

        ways = {"collect + format (in process)": lambda: generate_latest(registry_),
                "HTTP scrape (endpoint thread)": http,
                "bot4 status's read (StatusView.lines)": view.lines}
        for action in ways.values():
            timed(action, 5)  # warm
        results = {name: [] for name in ways}
        order = list(ways)
        for r in range(args.rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:
                wall, cpu = timed(ways[name], args.scrapes)
                results[name].append((np.percentile(wall, 50), np.percentile(wall, 99), np.percentile(cpu, 50)))
        lines = text.count(b"\n")
        print(f"one scrape: {len(text):,} bytes, {lines:,} lines ({len(registry.PROCESSES)} processes "
              f"started); {args.rounds} rounds x {args.scrapes}; load average {os.getloadavg()[0]:.2f}")
        base = statistics.median(p50 for p50, _, _ in results["bot4 status's read (StatusView.lines)"])
        for name, rounds in results.items():
            p50s, p99s, cpus = zip(*rounds)
            print(f"{name:<40} wall p50 {statistics.median(p50s):7.2f} ms ({min(p50s):.2f}-{max(p50s):.2f}), "
                  f"p99 {statistics.median(p99s):7.2f} ms; CPU p50 {statistics.median(cpus):6.2f} ms; "
                  f"{statistics.median(p50s) / base:5.1f}x bot4 status")
    finally:
        endpoint.close()
        for table in (block, positions):
            seg = table.segment
            table.close()
            seg.unlink()


if __name__ == "__main__":
    main()
