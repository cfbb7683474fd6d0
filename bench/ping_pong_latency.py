"""One-way hop latency between two pinned processes, by ping-pong: A (core 0) sends a 64-byte record to
B (core 1), B sends it back, A times the round trip; one way = RTT / 2.

Transports, run in the same process tree, interleaved round by round (A B C D E, B C D E A, ...):

* C ring      the floor: the same SPSC ring in C11 (acquire/release), gcc -O2, compiled on the fly
* numba ring  shm.ring.try_write/read over two rings from shm.ring.create_ring, loops in @njit(cache=True)
* mp.Queue    multiprocessing.Queue (pickle), blocking get
* faster-fifo faster_fifo.Queue (pickle), blocking get
* pyzmq       one zmq PAIR connection over ipc://, msgpack-encoded records, blocking recv

The shm rings busy-spin (each process has a core); the Python peers block, as their users do. Each sample
includes one clock read (printed). Run: ``python -m bench.ping_pong_latency [--samples N] [--rounds R]``.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import msgpack
import numpy as np
from numba import njit

from bench._common import (RECORD, Children, CRing, bench_cores, bench_name, clock_overhead_ns, fmt_ns,
                           fmt_ratio, leftover_bench_entries, machine_info, median, mono_ns, new_timespec,
                           private_tmpdir, py_record, py_seq, reclaim_stale_bench_segments, shared_array,
                           terminate_as_exit, wait_flag)
from shm import ring

RING_CAPACITY = 64          # records per ring; ping-pong never has more than one in flight
F_A, F_B = 0, 1             # shared flags: A ready, B ready

# ---------------------------------------------------------------------------------------------------------
# numba ring: the whole loop in njit


@njit(cache=True)
def numba_ping(p1, c1, r1, p2, c2, r2, lat, warmup, deadline_ns, ts):
    """A: send seq i on ring 1, spin for the reply on ring 2, record RTT. 0 ok, -1 timeout, -2 bad reply."""
    src = np.zeros(1, r1.dtype)
    out = np.zeros(1, r1.dtype)
    total = warmup + lat.shape[0]
    for i in range(total):
        src[0]["seq"] = i
        spins = 0
        t0 = mono_ns(ts)
        while ring.try_write(p1, c1, r1, src, 1) != 1:
            spins += 1
            if (spins & 0xFFFF) == 0 and mono_ns(ts) > deadline_ns:
                return -1
        while ring.read(p2, c2, r2, out, 1) == 0:
            spins += 1
            if (spins & 0xFFFF) == 0 and mono_ns(ts) > deadline_ns:
                return -1
        t1 = mono_ns(ts)
        if out[0]["seq"] != i:
            return -2
        if i >= warmup:
            lat[i - warmup] = t1 - t0
    return 0


@njit(cache=True)
def numba_pong(p1, c1, r1, p2, c2, r2, total, deadline_ns, ts):
    """B: copy each record from ring 1 back onto ring 2. 0 ok, -1 timeout."""
    buf = np.zeros(1, r1.dtype)
    for _ in range(total):
        spins = 0
        while ring.read(p1, c1, r1, buf, 1) == 0:
            spins += 1
            if (spins & 0xFFFF) == 0 and mono_ns(ts) > deadline_ns:
                return -1
        while ring.try_write(p2, c2, r2, buf, 1) != 1:
            spins += 1
            if (spins & 0xFFFF) == 0 and mono_ns(ts) > deadline_ns:
                return -1
    return 0


def _views(v):
    return v.producer, v.consumer, v.records


def _numba_ping_main(ab_name, ba_name, lat, warmup, flags, timeout):
    ab = ring.attach_ring(ab_name, RECORD, RING_CAPACITY)
    ba = ring.attach_ring(ba_name, RECORD, RING_CAPACITY)
    flags[F_A] = 1
    wait_flag(flags, F_B, 1, timeout, "pong to attach")
    ts = new_timespec()
    rc = numba_ping(*_views(ab), *_views(ba), lat, warmup, mono_ns(ts) + int(timeout * 1e9), ts)
    if rc:
        print(f"numba ping: {'timed out' if rc == -1 else 'reply with a wrong sequence'}", file=sys.stderr)
    return 0 if rc == 0 else 20 - rc


def _numba_pong_main(ab_name, ba_name, total, flags, timeout):
    ab = ring.attach_ring(ab_name, RECORD, RING_CAPACITY)
    ba = ring.attach_ring(ba_name, RECORD, RING_CAPACITY)
    flags[F_B] = 1
    ts = new_timespec()
    rc = numba_pong(*_views(ab), *_views(ba), total, mono_ns(ts) + int(timeout * 1e9), ts)
    if rc:
        print("numba pong: timed out", file=sys.stderr)
    return 0 if rc == 0 else 30 - rc


def round_numba(n, warmup, cores, timeout, ctx):
    flags = shared_array(2)
    lat = shared_array(n)
    ab = ba = None
    try:
        ab = ring.create_ring(bench_name("pp-ab"), RECORD, RING_CAPACITY)
        ba = ring.create_ring(bench_name("pp-ba"), RECORD, RING_CAPACITY)
        # Compile for these exact argument types before forking (zero iterations: nothing runs).
        ts = new_timespec()
        numba_ping(*_views(ab), *_views(ba), lat[:0], 0, 0, ts)
        numba_pong(*_views(ab), *_views(ba), 0, 0, ts)
        with Children() as kids:
            kids.spawn(cores[1], _numba_pong_main, ab.name, ba.name, warmup + n, flags, timeout)
            kids.spawn(cores[0], _numba_ping_main, ab.name, ba.name, lat, warmup, flags, timeout)
            wait_flag(flags, F_A, 1, timeout, "numba ping to attach")
            wait_flag(flags, F_B, 1, timeout, "numba pong to attach")
            # Both sides hold mappings now: drop the names so nothing can outlive this run.
            ab.segment.unlink()
            ba.segment.unlink()
            codes = kids.wait(timeout + 10)
        if any(codes):
            raise RuntimeError(f"numba ring ping-pong children failed: exit codes {codes}")
        return np.array(lat)
    finally:
        for v in (ab, ba):
            if v is not None:
                v.close()
                v.segment.unlink()


# ---------------------------------------------------------------------------------------------------------
# C ring


def round_c(n, warmup, cores, timeout, ctx):
    out = os.path.join(ctx["tmpdir"], "lat.bin")
    bad = int(ctx["cring"].run(["pingpong", warmup, n, RING_CAPACITY, cores[0], cores[1], int(timeout), out],
                               timeout + 10))
    if bad:
        raise RuntimeError(f"C ring ping-pong: {bad} replies with a wrong sequence")
    lat = np.fromfile(out, dtype=np.int64)
    os.unlink(out)
    return lat


# ---------------------------------------------------------------------------------------------------------
# Python peers: the loop is Python, the receive blocks (how these libraries are used)


def _py_ping(send, recv, lat, warmup):
    perf = time.perf_counter_ns
    n = lat.shape[0]
    for i in range(warmup + n):
        rec = py_record(i)
        t0 = perf()
        send(rec)
        back = recv()
        t1 = perf()
        if py_seq(back) != i:
            return 12
        if i >= warmup:
            lat[i - warmup] = t1 - t0
    return 0


def _py_pong(send, recv, total):
    for _ in range(total):
        send(recv())
    return 0


def _queue_ping_main(q_ab, q_ba, lat, warmup, flags, timeout, is_mp):
    flags[F_A] = 1
    wait_flag(flags, F_B, 1, timeout, "pong")
    rc = _py_ping(q_ab.put, functools.partial(q_ba.get, True, timeout), lat, warmup)
    if is_mp:  # flush the feeder thread before exiting (PITFALLS 7)
        q_ab.close()
        q_ab.join_thread()
    return rc


def _queue_pong_main(q_ab, q_ba, total, flags, timeout, is_mp):
    flags[F_B] = 1
    rc = _py_pong(q_ba.put, functools.partial(q_ab.get, True, timeout), total)
    if is_mp:
        q_ba.close()
        q_ba.join_thread()
    return rc


def _queue_round(make_queue, is_mp, n, warmup, cores, timeout):
    flags = shared_array(2)
    lat = shared_array(n)
    q_ab, q_ba = make_queue(), make_queue()
    try:
        with Children() as kids:
            kids.spawn(cores[1], _queue_pong_main, q_ab, q_ba, warmup + n, flags, timeout, is_mp)
            kids.spawn(cores[0], _queue_ping_main, q_ab, q_ba, lat, warmup, flags, timeout, is_mp)
            codes = kids.wait(timeout + 10)
        if any(codes):
            raise RuntimeError(f"queue ping-pong children failed: exit codes {codes}")
        return np.array(lat)
    finally:
        for q in (q_ab, q_ba):
            q.close()
            if is_mp:
                q.cancel_join_thread()


def round_mp_queue(n, warmup, cores, timeout, ctx):
    import multiprocessing as mp
    return _queue_round(mp.get_context("fork").Queue, True, n, warmup, cores, timeout)


def round_faster_fifo(n, warmup, cores, timeout, ctx):
    import faster_fifo
    return _queue_round(lambda: faster_fifo.Queue(max_size_bytes=1 << 20), False, n, warmup, cores, timeout)


def _zmq_main(addr, role, lat, count, warmup, flags, timeout):
    import zmq  # context created after pinning, so its I/O thread inherits the core (PITFALLS 8)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.linger = 1000
    sock.rcvtimeo = int(timeout * 1000)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    try:
        if role == "ping":
            sock.bind(addr)
            flags[F_A] = 1
            wait_flag(flags, F_B, 1, timeout, "zmq pong")
            return _py_ping(lambda rec: sock.send(packb(rec)), lambda: unpackb(sock.recv()), lat, warmup)
        wait_flag(flags, F_A, 1, timeout, "zmq ping to bind")
        sock.connect(addr)
        flags[F_B] = 1
        return _py_pong(lambda rec: sock.send(packb(rec)), lambda: unpackb(sock.recv()), count)
    finally:
        sock.close()
        ctx.term()


def round_pyzmq(n, warmup, cores, timeout, ctx):
    flags = shared_array(2)
    lat = shared_array(n)
    addr = f"ipc://{ctx['tmpdir']}/pp.ipc"
    with Children() as kids:
        kids.spawn(cores[1], _zmq_main, addr, "pong", None, warmup + n, warmup, flags, timeout)
        kids.spawn(cores[0], _zmq_main, addr, "ping", lat, n, warmup, flags, timeout)
        codes = kids.wait(timeout + 10)
    if any(codes):
        raise RuntimeError(f"pyzmq ping-pong children failed: exit codes {codes}")
    return np.array(lat)


# ---------------------------------------------------------------------------------------------------------

# name, runner, uses the shm-ring sample count (else the Python-peer count)
TRANSPORTS = [
    ("C ring", round_c, True),
    ("numba ring", round_numba, True),
    ("mp.Queue", round_mp_queue, False),
    ("faster-fifo", round_faster_fifo, False),
    ("pyzmq ipc+msgpack", round_pyzmq, False),
]
QUANTILES = (50.0, 99.0, 99.9)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ping_pong_latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=200_000, help="round trips per round, shm rings (C, numba)")
    ap.add_argument("--peer-samples", type=int, default=10_000,
                    help="round trips per round, Python peers (mp.Queue, faster-fifo, pyzmq)")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds (report medians over them)")
    ap.add_argument("--warmup", type=int, default=1_000, help="untimed round trips at the start of each run")
    ap.add_argument("--only", default="", help="comma-separated subset, e.g. 'C ring,numba ring'")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a stuck run is killed")
    args = ap.parse_args(argv)
    if args.samples < 1 or args.peer_samples < 1 or args.rounds < 1:
        ap.error("--samples, --peer-samples and --rounds must be >= 1")

    wanted = [t for t in TRANSPORTS if not args.only or t[0] in {s.strip() for s in args.only.split(",")}]
    cores = bench_cores()
    stale = reclaim_stale_bench_segments()
    if stale:
        print(f"note: reclaimed {len(stale)} stale bench segment(s) of dead runs: {stale}")

    with terminate_as_exit(), private_tmpdir() as tmpdir:
        cring = CRing.build(tmpdir)
        if cring is None:
            wanted = [t for t in wanted if t[0] != "C ring"]
        ctx = {"tmpdir": tmpdir, "cring": cring}
        ts = new_timespec()
        clock_overhead_ns(ts, 10)  # compile
        overhead = clock_overhead_ns(ts, 10_000)

        print("== Ping-pong hop latency: 64-byte records, A pinned to core %d, B pinned to core %d ==" % cores)
        print(f"machine: {machine_info()}")
        if cring:
            print(f"C floor: {cring.compiler}, C11 atomics acquire/release")
        print(f"rounds: {args.rounds} (interleaved, order rotated each round); round trips per round: "
              f"{args.samples} for shm rings, {args.peer_samples} for Python peers; warmup {args.warmup}")
        print(f"clock: CLOCK_MONOTONIC read costs ~{overhead:.0f} ns (one read per sample; not subtracted)")
        print("one way = RTT / 2; shm rings busy-spin on both sides; Python peers block in get/recv\n")

        per_round = {name: [] for name, _, _ in wanted}  # name -> list of (p50, p99, p99.9) one-way ns
        t_start = time.monotonic()
        try:
            for r in range(args.rounds):
                order = wanted[r % len(wanted):] + wanted[:r % len(wanted)]
                cells = []
                for name, runner, is_shm in order:
                    n = args.samples if is_shm else args.peer_samples
                    rtt = runner(n, args.warmup, cores, args.timeout, ctx)
                    q = np.percentile(rtt, QUANTILES) / 2.0
                    per_round[name].append(tuple(q))
                    cells.append(f"{name} {fmt_ns(q[0])}")
                print(f"round {r + 1}/{args.rounds} p50 one way: " + " | ".join(cells), flush=True)
        except KeyboardInterrupt:
            print("\ninterrupted: cleaning up")
            return 130
        except (RuntimeError, TimeoutError, OSError) as e:
            print(f"\nerror: {e}", file=sys.stderr)
            return 1
        finally:
            left = leftover_bench_entries()
            if left:
                print(f"warning: entries left in /dev/shm: {left}", file=sys.stderr)

    elapsed = time.monotonic() - t_start
    print(f"\nOne-way latency, median over {args.rounds} rounds of each round's percentile ({elapsed:.0f} s):")
    floor = per_round.get("C ring")
    header = f"{'transport':<20}{'p50':>10}{'p99':>10}{'p99.9':>10}   {'p50 /C':>8}{'p99 /C':>8}{'p99.9 /C':>9}"
    print(header)
    print("-" * len(header))
    floor_med = [median(x[i] for x in floor) for i in range(3)] if floor else None
    for name, rows in per_round.items():
        med = [median(x[i] for x in rows) for i in range(3)]
        ratios = [fmt_ratio(m / f) if floor_med else "n/a" for m, f in zip(med, floor_med or med)]
        print(f"{name:<20}" + "".join(f"{fmt_ns(m):>10}" for m in med)
              + f"   {ratios[0]:>8}{ratios[1]:>8}{ratios[2]:>9}")
    spread = {name: (min(x[0] for x in rows), max(x[0] for x in rows)) for name, rows in per_round.items()}
    print("\nper-round p50 range: " + "; ".join(f"{k} {fmt_ns(a)}–{fmt_ns(b)}" for k, (a, b) in spread.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
