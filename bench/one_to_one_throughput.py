"""One-to-one throughput: records/s of 64-byte records from one producer (core 0) to one consumer (core 1).
The consumer checks every record's sequence number (no loss, no duplicate, no reordering) and the run
fails if any is wrong.

Cases, run in the same process tree, interleaved round by round (order rotated each round):

* C ring       the same SPSC ring in C11 (acquire/release), gcc -O2, batches of 1, 64, 256
* numba ring   shm.ring.try_write/read over a ring from shm.ring.create_ring, loops in @njit(cache=True),
               batches of 1, 64, 256 (the producer writes a batch, the consumer reads up to a batch)
* mp.Queue     multiprocessing.Queue(maxsize=1024 messages), pickle
* faster-fifo  faster_fifo.Queue(max_size_bytes=1 MiB), pickle
* pyzmq        PAIR over ipc://, msgpack, default high-water mark (1000 messages)

Python peers move each record as a 64-byte ``bytes`` object. Batch 1 = one record per message. Batch 64:
mp.Queue and pyzmq send one message holding a list of 64 records (one pickle / one msgpack array);
faster-fifo uses its own batch API, put_many/get_many(max_messages_to_get=64). Rate = records /
(consumer's last check - producer's first write), CLOCK_MONOTONIC on both sides.
Run: ``python -m bench.one_to_one_throughput [--records N] [--rounds R]``.
"""
from __future__ import annotations

import argparse
import sys
import time

import msgpack
import numpy as np
from numba import njit

from bench._common import (RECORD, Children, CRing, bench_cores, bench_name, fmt_rate, fmt_ratio,
                           leftover_bench_entries, machine_info, median, mono_ns, new_timespec, private_tmpdir,
                           py_record, py_seq, reclaim_stale_bench_segments, shared_array, terminate_as_exit,
                           wait_flag)
from shm import ring

R_READY_P, R_READY_C, R_START, R_END, R_ERRORS, R_RECEIVED, R_FULL = range(7)

# ---------------------------------------------------------------------------------------------------------
# numba ring


@njit(cache=True)
def numba_produce(producer, consumer, records, total, batch, deadline_ns, ts, res):
    """Stream ``total`` records with seq 0..total-1 in batches; returns back-pressure count, -1 on timeout."""
    src = np.zeros(max(batch, 1), records.dtype)
    res[R_START] = mono_ns(ts)
    seq = 0
    full = 0
    while seq < total:
        n = min(batch, total - seq)
        for i in range(n):
            src[i]["seq"] = seq + i
        done = 0
        while done < n:
            k = ring.try_write(producer, consumer, records, src[done:], n - done)
            if k == ring.BACK_PRESSURED:
                full += 1
                if (full & 0xFFFF) == 0 and mono_ns(ts) > deadline_ns:
                    return -1
            else:
                done += k
        seq += n
    return full


@njit(cache=True)
def numba_consume(producer, consumer, records, total, batch, deadline_ns, ts, res):
    """Read until ``total`` records arrived, checking each seq; writes end time, errors, count. -1 on timeout."""
    out = np.zeros(max(batch, 1), records.dtype)
    expected = 0
    errors = 0
    empty = 0
    while expected < total:
        n = ring.read(producer, consumer, records, out, batch)
        if n == 0:
            empty += 1
            if (empty & 0xFFFF) == 0 and mono_ns(ts) > deadline_ns:
                return -1
            continue
        for i in range(n):
            if out[i]["seq"] != expected:
                errors += 1
            expected += 1
    res[R_END] = mono_ns(ts)
    res[R_ERRORS] = errors
    res[R_RECEIVED] = expected
    return 0


def _numba_producer_main(name, capacity, total, batch, res, timeout):
    view = ring.attach_ring(name, RECORD, capacity)
    res[R_READY_P] = 1
    wait_flag(res, R_READY_C, 1, timeout, "consumer")
    ts = new_timespec()
    full = numba_produce(view.producer, view.consumer, view.records, total, batch,
                         mono_ns(ts) + int(timeout * 1e9), ts, res)
    res[R_FULL] = full
    if full < 0:
        print("numba producer: timed out", file=sys.stderr)
    return 0 if full >= 0 else 21


def _numba_consumer_main(name, capacity, total, batch, res, timeout):
    view = ring.attach_ring(name, RECORD, capacity)
    res[R_READY_C] = 1
    ts = new_timespec()
    rc = numba_consume(view.producer, view.consumer, view.records, total, batch,
                       mono_ns(ts) + int(timeout * 1e9), ts, res)
    if rc:
        print("numba consumer: timed out", file=sys.stderr)
    return 0 if rc == 0 else 22


def case_numba(total, batch, cores, timeout, ctx):
    res = shared_array(8)
    view = None
    try:
        view = ring.create_ring(bench_name(f"tp{batch}"), RECORD, ctx["capacity"])
        # Compile for these exact argument types before forking (zero records: nothing runs).
        ts = new_timespec()
        numba_produce(view.producer, view.consumer, view.records, 0, batch, 0, ts, res)
        numba_consume(view.producer, view.consumer, view.records, 0, batch, 0, ts, res)
        res[:] = 0
        with Children() as kids:
            kids.spawn(cores[1], _numba_consumer_main, view.name, ctx["capacity"], total, batch, res, timeout)
            kids.spawn(cores[0], _numba_producer_main, view.name, ctx["capacity"], total, batch, res, timeout)
            wait_flag(res, R_READY_P, 1, timeout, "numba producer to attach")
            wait_flag(res, R_READY_C, 1, timeout, "numba consumer to attach")
            view.segment.unlink()  # both sides are mapped: drop the name, nothing can be left behind
            codes = kids.wait(timeout + 10)
        if any(codes):
            raise RuntimeError(f"numba ring batch={batch}: children failed, exit codes {codes}")
        return _result(res, total, f"numba ring batch={batch}")
    finally:
        if view is not None:
            view.close()
            view.segment.unlink()


def _result(res, total, what):
    if res[R_RECEIVED] != total or res[R_ERRORS] != 0:
        raise RuntimeError(f"{what}: consumer got {res[R_RECEIVED]} of {total} records, "
                           f"{res[R_ERRORS]} out of sequence")
    return total / ((res[R_END] - res[R_START]) / 1e9)


# ---------------------------------------------------------------------------------------------------------
# C ring


def case_c(total, batch, cores, timeout, ctx):
    out = ctx["cring"].run(["throughput", total, batch, ctx["capacity"], cores[0], cores[1], int(timeout)],
                           timeout + 10)
    start, end, errors, received, _full = map(int, out.split())
    res = np.zeros(8, np.int64)
    res[[R_START, R_END, R_ERRORS, R_RECEIVED]] = start, end, errors, received
    return _result(res, total, f"C ring batch={batch}")


# ---------------------------------------------------------------------------------------------------------
# Python peers


def _py_produce(send, send_batch, total, batch, res, timeout):
    res[R_READY_P] = 1
    wait_flag(res, R_READY_C, 1, timeout, "consumer")
    res[R_START] = time.monotonic_ns()
    if batch == 1:
        for seq in range(total):
            send(py_record(seq))
    else:
        for base in range(0, total, batch):
            send_batch([py_record(s) for s in range(base, min(base + batch, total))])


def _py_consume(recv, recv_batch, total, batch, res):
    res[R_READY_C] = 1
    expected = 0
    errors = 0
    if batch == 1:
        while expected < total:
            if py_seq(recv()) != expected:
                errors += 1
            expected += 1
    else:
        while expected < total:
            for rec in recv_batch():
                if py_seq(rec) != expected:
                    errors += 1
                expected += 1
    res[R_END] = time.monotonic_ns()
    res[R_ERRORS] = errors
    res[R_RECEIVED] = expected


def _mpq_producer_main(q, total, batch, res, timeout):
    _py_produce(q.put, q.put, total, batch, res, timeout)
    q.close()
    q.join_thread()  # flush the feeder thread (PITFALLS 7)


def _mpq_consumer_main(q, total, batch, res, timeout):
    get = q.get
    _py_consume(lambda: get(True, timeout), lambda: get(True, timeout), total, batch, res)


def _fifo_producer_main(q, total, batch, res, timeout):
    _py_produce(q.put, q.put_many, total, batch, res, timeout)


def _fifo_consumer_main(q, total, batch, res, timeout):
    get, get_many = q.get, q.get_many
    _py_consume(lambda: get(True, timeout), lambda: get_many(True, timeout, batch), total, batch, res)


def _zmq_main(role, addr, total, batch, res, timeout):
    import zmq  # context created after pinning, so its I/O thread inherits the core (PITFALLS 8)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.linger = int(timeout * 1000)
    sock.rcvtimeo = int(timeout * 1000)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    try:
        if role == "consumer":
            sock.bind(addr)
            send_recv = lambda: unpackb(sock.recv())  # noqa: E731
            _py_consume(send_recv, send_recv, total, batch, res)
        else:
            wait_flag(res, R_READY_C, 1, timeout, "zmq consumer to bind")
            sock.connect(addr)
            send = lambda obj: sock.send(packb(obj))  # noqa: E731
            _py_produce(send, send, total, batch, res, timeout)
    finally:
        sock.close()
        ctx.term()


def _peer_case(producer_main, consumer_main, obj, total, batch, cores, timeout, what):
    res = shared_array(8)
    with Children() as kids:
        kids.spawn(cores[1], consumer_main, obj, total, batch, res, timeout)
        kids.spawn(cores[0], producer_main, obj, total, batch, res, timeout)
        codes = kids.wait(timeout + 10)
    if any(codes):
        raise RuntimeError(f"{what}: children failed, exit codes {codes}")
    return _result(res, total, what)


def case_mp_queue(total, batch, cores, timeout, ctx):
    import multiprocessing as mp
    q = mp.get_context("fork").Queue(maxsize=1024)
    try:
        return _peer_case(_mpq_producer_main, _mpq_consumer_main, q, total, batch, cores, timeout,
                          f"mp.Queue batch={batch}")
    finally:
        q.close()
        q.cancel_join_thread()


def case_faster_fifo(total, batch, cores, timeout, ctx):
    import faster_fifo
    q = faster_fifo.Queue(max_size_bytes=1 << 20)
    try:
        return _peer_case(_fifo_producer_main, _fifo_consumer_main, q, total, batch, cores, timeout,
                          f"faster-fifo batch={batch}")
    finally:
        q.close()


def case_pyzmq(total, batch, cores, timeout, ctx):
    addr = f"ipc://{ctx['tmpdir']}/tp.ipc"
    res = shared_array(8)
    with Children() as kids:
        kids.spawn(cores[1], _zmq_main, "consumer", addr, total, batch, res, timeout)
        kids.spawn(cores[0], _zmq_main, "producer", addr, total, batch, res, timeout)
        codes = kids.wait(timeout + 10)
    if any(codes):
        raise RuntimeError(f"pyzmq batch={batch}: children failed, exit codes {codes}")
    return _result(res, total, f"pyzmq batch={batch}")


# ---------------------------------------------------------------------------------------------------------

SHM_BATCHES = (1, 64, 256)
PEER_BATCHES = (1, 64)
# name, runner, is shm ring (record count and batches)
TRANSPORTS = [
    ("C ring", case_c, True),
    ("numba ring", case_numba, True),
    ("mp.Queue", case_mp_queue, False),
    ("faster-fifo", case_faster_fifo, False),
    ("pyzmq ipc+msgpack", case_pyzmq, False),
]
BATCH_NOTES = {
    ("mp.Queue", 64): "1 message = list of 64 records",
    ("faster-fifo", 64): "put_many / get_many(64)",
    ("pyzmq ipc+msgpack", 64): "1 message = msgpack array of 64",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.one_to_one_throughput", description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=5_000_000,
                    help="records per run at batch 1, shm rings (C, numba); x8 when batched")
    ap.add_argument("--peer-records", type=int, default=150_000,
                    help="records per run at batch 1, Python peers (x5 at batch 64)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (report medians over them)")
    ap.add_argument("--capacity", type=int, default=4096, help="ring capacity in records (C and numba)")
    ap.add_argument("--only", default="", help="comma-separated subset of transports, e.g. 'C ring,numba ring'")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a stuck run is killed")
    args = ap.parse_args(argv)
    if min(args.records, args.peer_records, args.rounds) < 1:
        ap.error("--records, --peer-records and --rounds must be >= 1")
    if args.capacity < max(SHM_BATCHES) or args.capacity & (args.capacity - 1):
        ap.error(f"--capacity must be a power of two >= {max(SHM_BATCHES)}")

    only = {s.strip() for s in args.only.split(",")} if args.only else None
    wanted = [t for t in TRANSPORTS if not only or t[0] in only]
    cores = bench_cores()
    stale = reclaim_stale_bench_segments()
    if stale:
        print(f"note: reclaimed {len(stale)} stale bench segment(s) of dead runs: {stale}")

    with terminate_as_exit(), private_tmpdir() as tmpdir:
        cring = CRing.build(tmpdir)
        if cring is None:
            wanted = [t for t in wanted if t[0] != "C ring"]
        ctx = {"tmpdir": tmpdir, "cring": cring, "capacity": args.capacity}
        cases = []  # (name, batch, runner, records)
        for name, runner, is_shm in wanted:
            for b in (SHM_BATCHES if is_shm else PEER_BATCHES):
                n = (args.records * (1 if b == 1 else 8) if is_shm
                     else args.peer_records * (1 if b == 1 else 5))
                cases.append((name, b, runner, n))

        print("== One-to-one throughput: 64-byte records, producer pinned to core %d, consumer to core %d ==" % cores)
        print(f"machine: {machine_info()}")
        if cring:
            print(f"C floor: {cring.compiler}, C11 atomics acquire/release")
        print(f"rounds: {args.rounds} (interleaved, order rotated each round); records per run: "
              f"{args.records} (batch 1) / {args.records * 8} (batched) for shm rings (capacity {args.capacity}), "
              f"{args.peer_records} (batch 1) / {args.peer_records * 5} (batch 64) for Python peers")
        print("every record's sequence number is checked by the consumer; shm rings busy-spin, "
              "Python peers block\n")

        rates = {(c[0], c[1]): [] for c in cases}
        t_start = time.monotonic()
        try:
            for r in range(args.rounds):
                order = cases[r % len(cases):] + cases[:r % len(cases)]
                for name, b, runner, n in order:
                    rates[(name, b)].append(runner(n, b, cores, args.timeout, ctx))
                line = " | ".join(f"{name} b{b} {fmt_rate(v[-1])}" for (name, b), v in rates.items())
                print(f"round {r + 1}/{args.rounds}: {line}", flush=True)
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
    med = {k: median(v) for k, v in rates.items()}
    zmq1 = med.get(("pyzmq ipc+msgpack", 1), float("nan"))
    print(f"\nRecords/s, median over {args.rounds} rounds ({elapsed:.0f} s); all records verified:")
    header = (f"{'transport':<19}{'batch':>6}{'median':>12}{'min':>11}{'max':>11}"
              f"{'÷ pyzmq b1':>12}{'÷ C same b':>12}   note")
    print(header)
    print("-" * len(header))
    for (name, b), v in rates.items():
        c = med.get(("C ring", b), float("nan"))
        print(f"{name:<19}{b:>6}{fmt_rate(med[(name, b)]):>12}{fmt_rate(min(v)):>11}{fmt_rate(max(v)):>11}"
              f"{fmt_ratio(med[(name, b)] / zmq1):>12}{fmt_ratio(med[(name, b)] / c):>12}"
              f"   {BATCH_NOTES.get((name, b), '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
