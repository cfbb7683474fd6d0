"""Helpers shared by the bench scripts: record layout, an in-njit clock, pinned forked children,
shared result arrays, cleanup of shm names, the C ring floor, formatting.

Nothing here touches the hot path of the product; it only hosts measurements.
"""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import mmap
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import psutil
from numba import njit, types

from shm import segment

# ---------------------------------------------------------------------------------------------------------
# Records

RECORD = np.dtype([("seq", np.int64), ("ts", np.int64), ("payload", np.int64, (6,))], align=True)
assert RECORD.itemsize == 64
REC_BYTES = RECORD.itemsize
_TAIL = bytes(REC_BYTES - 8)


def py_record(seq: int) -> bytes:
    """The same 64-byte record as a Python ``bytes`` object (what the Python peers move)."""
    return seq.to_bytes(8, "little", signed=True) + _TAIL


def py_seq(rec: bytes) -> int:
    return int.from_bytes(rec[:8], "little", signed=True)


# ---------------------------------------------------------------------------------------------------------
# Clock usable inside njit(cache=True): an ExternalFunction (ctypes would disable caching, PITFALLS 3).
# CLOCK_MONOTONIC, the same clock as time.monotonic_ns()/perf_counter_ns() and the C floor's clock.

CLOCK_MONOTONIC = 1
_clock_gettime = types.ExternalFunction("clock_gettime", types.int32(types.int32, types.intp))


@njit(cache=True)
def mono_ns(ts):
    """CLOCK_MONOTONIC in ns; ``ts`` is a caller-owned int64[2] (no allocation on the hot path)."""
    _clock_gettime(CLOCK_MONOTONIC, ts.ctypes.data)
    return ts[0] * 1_000_000_000 + ts[1]


@njit(cache=True)
def clock_overhead_ns(ts, n):
    """Median-ish cost of one mono_ns() call: min over 16 blocks of n back-to-back calls (ns per call)."""
    best = 1 << 62
    for _ in range(16):
        t0 = mono_ns(ts)
        for _ in range(n):
            mono_ns(ts)
        dt = mono_ns(ts) - t0
        if dt < best:
            best = dt
    return best / n


def new_timespec() -> np.ndarray:
    return np.zeros(2, np.int64)


# ---------------------------------------------------------------------------------------------------------
# Cores and processes


def bench_cores() -> tuple[int, int]:
    """(producer core, consumer core): the first two CPUs we may run on (0 and 1 on this machine)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        print(f"note: only CPU {allowed} available; both sides share one core (figures meaningless)")
        return allowed[0], allowed[0]
    return allowed[0], allowed[1]


def pin(core: int) -> None:
    """Pin the calling thread (call before creating threads so they inherit it, PITFALLS 8)."""
    os.sched_setaffinity(0, {core})


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """A forked child gets SIGKILL if the bench process dies (even by SIGKILL): no spinner left behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(70)


def shared_array(count: int, dtype=np.int64) -> np.ndarray:
    """A zeroed array in an anonymous MAP_SHARED mapping: written by forked children, read by the parent.

    No name, so nothing can be left in /dev/shm; the array keeps its mapping alive (np.frombuffer)."""
    dtype = np.dtype(dtype)
    buf = mmap.mmap(-1, max(count * dtype.itemsize, 1))
    return np.frombuffer(buf, dtype=dtype, count=count)


class Children:
    """Forked, pinned children that are always reaped: ``kill_all`` in a ``finally`` leaves no process."""

    def __init__(self):
        self.pids: list[int] = []
        self.codes: dict[int, int] = {}

    def spawn(self, core: int | None, fn, *args) -> int:
        """Fork ``fn(*args)``, pinned to ``core`` (None: not pinned, the scheduler places its threads)."""
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)   # Ctrl-C ends a child at once, even in njit
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                die_with_parent(parent)
                if core is not None:
                    pin(core)
                rc = fn(*args)
                code = 0 if rc is None else int(rc)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pids.append(pid)
        return pid

    def wait(self, timeout: float) -> list[int]:
        """Exit codes in spawn order; kills everything and raises TimeoutError past ``timeout`` seconds."""
        # The parent must sleep while children are timed: polling would wake it every few ms on one of
        # the two benchmark cores and show up in the tail. pidfds let it block until an exit or the deadline.
        deadline = time.monotonic() + timeout
        pending = [p for p in self.pids if p not in self.codes]
        fds = {}
        try:
            if hasattr(os, "pidfd_open"):
                for pid in pending:
                    with contextlib.suppress(OSError):
                        fds[pid] = os.pidfd_open(pid)
            while pending:
                for pid in list(pending):
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        self.codes[pid] = os.waitstatus_to_exitcode(status)
                        pending.remove(pid)
                if not pending:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill_all()
                    raise TimeoutError(f"children {pending} still running after {timeout:.0f}s; killed")
                if all(p in fds for p in pending):
                    select.select([fds[p] for p in pending], [], [], left)
                else:
                    time.sleep(min(left, 0.05))
        finally:
            for fd in fds.values():
                os.close(fd)
        return [self.codes[p] for p in self.pids]

    def kill_all(self) -> None:
        for pid in self.pids:
            if pid in self.codes:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(pid, 0)
                self.codes[pid] = os.waitstatus_to_exitcode(status)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill_all()
        return False


def wait_flag(flags: np.ndarray, index: int, value: int, timeout: float, what: str) -> None:
    """Poll a shared flag from Python (not hot path) until it reaches ``value``."""
    deadline = time.monotonic() + timeout
    while flags[index] < value:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.0002)


@contextlib.contextmanager
def terminate_as_exit():
    """SIGTERM/SIGHUP raise SystemExit in the main process so every ``finally`` (unlink, kill) runs."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------------------------------------
# Shared-memory names

BENCH_PREFIX = f"{segment.NAME_PREFIX}bench."
_counter = itertools.count()


def bench_name(tag: str) -> str:
    return f"{BENCH_PREFIX}{os.getpid()}.{next(_counter)}.{tag}"


def reclaim_stale_bench_segments() -> list[str]:
    """Unlink /bot4.bench.* segments whose creator is dead (a run killed by SIGKILL before it unlinked)."""
    gone = []
    for name in segment.list_segments(BENCH_PREFIX):
        with contextlib.suppress(Exception):
            if segment.reclaim_if_stale(name):
                gone.append(name)
    return gone


def leftover_bench_entries() -> list[str]:
    """Our own entries still in /dev/shm (should be empty after every run)."""
    return segment.list_segments(f"{BENCH_PREFIX}{os.getpid()}.")


# ---------------------------------------------------------------------------------------------------------
# Statistics and formatting


def fmt_ns(ns: float) -> str:
    if ns != ns:
        return "n/a"
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} µs" if ns < 100_000 else f"{ns / 1e3:.0f} µs"
    return f"{ns / 1e6:.2f} ms"


def fmt_rate(per_s: float) -> str:
    if per_s != per_s:
        return "n/a"
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M/s"
    return f"{per_s / 1e3:.0f} k/s"


def fmt_ratio(x: float) -> str:
    if x != x or x <= 0:
        return "n/a"
    if x < 0.1:
        return f"1/{1 / x:.0f}"
    return f"{x:.2f}×" if x < 10 else f"{x:.0f}×"


def median(values) -> float:
    values = [v for v in values if v == v]
    return float(np.median(values)) if values else float("nan")


def machine_info() -> str:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    import numba
    try:
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "?"
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
            clocksource = f.read().strip()
    except OSError:
        clocksource = "?"
    return (f"{model}, {os.cpu_count()} CPUs (allowed {sorted(os.sched_getaffinity(0))}), "
            f"load {load}, clocksource {clocksource}; Python {platform.python_version()}, "
            f"numba {numba.__version__}, numpy {np.__version__}")


# ---------------------------------------------------------------------------------------------------------
# The C floor: the same SPSC ring in C11 (acquire/release), two forked pinned processes, anonymous
# MAP_SHARED memory (nothing named, nothing to clean). Built on the fly with gcc -O2.

C_SOURCE = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct { int64_t seq; int64_t ts; int64_t payload[6]; } rec_t;
_Static_assert(sizeof(rec_t) == 64, "64-byte records");

/* Same layout as shm/ring.py: one 128-byte line per writer, records after. */
typedef struct {
    _Alignas(128) _Atomic int64_t tail;  int64_t cached_head;   /* written by the producer */
    _Alignas(128) _Atomic int64_t head;  int64_t cached_tail;   /* written by the consumer */
} cursors_t;
_Static_assert(sizeof(cursors_t) == 256, "two 128-byte lines");

typedef struct { cursors_t *c; rec_t *recs; int64_t cap, mask; } ring_t;

typedef struct {
    _Alignas(128) _Atomic int64_t ready;
    _Alignas(128) int64_t end_ns, errors, received;
} control_t;

static pid_t child_pid = 0;

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void pin(int core) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core, &set);
    if (sched_setaffinity(0, sizeof set, &set)) perror("sched_setaffinity");
}

static void timeout_exit(const char *where) {
    fprintf(stderr, "cring: timeout in %s\n", where);
    if (child_pid > 0) { kill(child_pid, SIGKILL); waitpid(child_pid, NULL, 0); }
    _exit(3);
}

#define SPIN(spins, deadline, where) \
    do { if ((++(spins) & 0xFFFF) == 0 && now_ns() > (deadline)) timeout_exit(where); } while (0)

static void *shared(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(2); }
    memset(p, 0, bytes);  /* fault the pages in before forking */
    return p;
}

static ring_t make_ring(int64_t cap) {
    ring_t r;
    char *base = shared(sizeof(cursors_t) + (size_t)cap * sizeof(rec_t));
    r.c = (cursors_t *)base;
    r.recs = (rec_t *)(base + sizeof(cursors_t));
    r.cap = cap;
    r.mask = cap - 1;
    return r;
}

static inline int64_t ring_write(ring_t *r, const rec_t *src, int64_t n) {
    cursors_t *c = r->c;
    int64_t tail = atomic_load_explicit(&c->tail, memory_order_relaxed);
    int64_t free_ = r->cap - (tail - c->cached_head);
    if (free_ < n) {
        int64_t head = atomic_load_explicit(&c->head, memory_order_acquire);
        c->cached_head = head;
        free_ = r->cap - (tail - head);
        if (free_ <= 0) return -1;
    }
    int64_t k = n < free_ ? n : free_;
    for (int64_t i = 0; i < k; i++) r->recs[(tail + i) & r->mask] = src[i];
    atomic_store_explicit(&c->tail, tail + k, memory_order_release);
    return k;
}

static inline int64_t ring_read(ring_t *r, rec_t *out, int64_t limit) {
    cursors_t *c = r->c;
    int64_t head = atomic_load_explicit(&c->head, memory_order_relaxed);
    int64_t avail = c->cached_tail - head;
    if (avail < limit) {
        int64_t tail = atomic_load_explicit(&c->tail, memory_order_acquire);
        c->cached_tail = tail;
        avail = tail - head;
    }
    int64_t k = avail < limit ? avail : limit;
    if (k <= 0) return 0;
    for (int64_t i = 0; i < k; i++) out[i] = r->recs[(head + i) & r->mask];
    atomic_store_explicit(&c->head, head + k, memory_order_release);
    return k;
}

static pid_t fork_pinned(int core) {
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(2); }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(4);
        pin(core);
    }
    return pid;
}

static int finish_child(void) {
    int status = 0;
    waitpid(child_pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { fprintf(stderr, "cring: child failed %d\n", status); return 5; }
    return 0;
}

/* A sends seq i on ring ab, B copies it back on ring ba; A times each round trip. */
static int pingpong(int64_t warmup, int64_t samples, int64_t cap, int core_a, int core_b, int64_t timeout_s,
                    const char *path) {
    ring_t ab = make_ring(cap), ba = make_ring(cap);
    control_t *ctl = shared(sizeof *ctl);
    int64_t total = warmup + samples;
    int64_t *lat = calloc((size_t)samples + 1, sizeof(int64_t));
    child_pid = fork_pinned(core_b);
    if (child_pid == 0) {
        int64_t deadline = now_ns() + timeout_s * 1000000000LL;
        uint64_t spins = 0;
        rec_t buf;
        atomic_store_explicit(&ctl->ready, 1, memory_order_release);
        for (int64_t i = 0; i < total; i++) {
            while (ring_read(&ab, &buf, 1) == 0) SPIN(spins, deadline, "pong read");
            while (ring_write(&ba, &buf, 1) != 1) SPIN(spins, deadline, "pong write");
        }
        _exit(0);
    }
    pin(core_a);
    int64_t deadline = now_ns() + timeout_s * 1000000000LL;
    uint64_t spins = 0;
    while (!atomic_load_explicit(&ctl->ready, memory_order_acquire)) SPIN(spins, deadline, "ready");
    rec_t src, out;
    memset(&src, 0, sizeof src);
    int64_t bad = 0;
    for (int64_t i = 0; i < total; i++) {
        src.seq = i;
        int64_t t0 = now_ns();
        while (ring_write(&ab, &src, 1) != 1) SPIN(spins, deadline, "ping write");
        while (ring_read(&ba, &out, 1) == 0) SPIN(spins, deadline, "ping read");
        int64_t t1 = now_ns();
        if (out.seq != i) bad++;
        if (i >= warmup) lat[i - warmup] = t1 - t0;
    }
    int rc = finish_child();
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(lat, sizeof(int64_t), (size_t)samples, f) != (size_t)samples) { perror("write"); return 2; }
    fclose(f);
    printf("%lld\n", (long long)bad);
    return rc;
}

/* Producer (this process) streams `total` records in batches; the consumer verifies every sequence. */
static int throughput(int64_t total, int64_t batch, int64_t cap, int core_p, int core_c, int64_t timeout_s) {
    ring_t r = make_ring(cap);
    control_t *ctl = shared(sizeof *ctl);
    child_pid = fork_pinned(core_c);
    if (child_pid == 0) {
        rec_t *out = calloc((size_t)batch, sizeof(rec_t));
        int64_t deadline = now_ns() + timeout_s * 1000000000LL;
        uint64_t spins = 0;
        int64_t expected = 0, errors = 0;
        atomic_store_explicit(&ctl->ready, 1, memory_order_release);
        while (expected < total) {
            int64_t n = ring_read(&r, out, batch);
            if (n == 0) { SPIN(spins, deadline, "consumer"); continue; }
            for (int64_t i = 0; i < n; i++, expected++) errors += out[i].seq != expected;
        }
        ctl->end_ns = now_ns();
        ctl->errors = errors;
        ctl->received = expected;
        _exit(0);
    }
    pin(core_p);
    rec_t *src = calloc((size_t)batch, sizeof(rec_t));
    int64_t deadline = now_ns() + timeout_s * 1000000000LL;
    uint64_t spins = 0;
    while (!atomic_load_explicit(&ctl->ready, memory_order_acquire)) SPIN(spins, deadline, "ready");
    int64_t start = now_ns(), seq = 0, full = 0;
    while (seq < total) {
        int64_t n = total - seq < batch ? total - seq : batch;
        for (int64_t i = 0; i < n; i++) src[i].seq = seq + i;
        int64_t done = 0;
        while (done < n) {
            int64_t k = ring_write(&r, src + done, n - done);
            if (k < 0) { full++; SPIN(spins, deadline, "producer"); } else done += k;
        }
        seq += n;
    }
    int rc = finish_child();
    printf("%lld %lld %lld %lld %lld\n", (long long)start, (long long)ctl->end_ns, (long long)ctl->errors,
           (long long)ctl->received, (long long)full);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 9 && !strcmp(argv[1], "pingpong"))
        return pingpong(atoll(argv[2]), atoll(argv[3]), atoll(argv[4]), atoi(argv[5]), atoi(argv[6]),
                        atoll(argv[7]), argv[8]);
    if (argc == 8 && !strcmp(argv[1], "throughput"))
        return throughput(atoll(argv[2]), atoll(argv[3]), atoll(argv[4]), atoi(argv[5]), atoi(argv[6]),
                          atoll(argv[7]));
    fprintf(stderr, "usage: cring pingpong WARMUP SAMPLES CAP CORE_A CORE_B TIMEOUT_S OUT\n"
                    "       cring throughput TOTAL BATCH CAP CORE_P CORE_C TIMEOUT_S\n");
    return 64;
}
"""


class CRing:
    """The C floor, compiled into a private temp dir that ``close`` removes."""

    def __init__(self, tmpdir: str, exe: str, compiler: str):
        self.tmpdir, self.exe, self.compiler = tmpdir, exe, compiler

    @classmethod
    def build(cls, tmpdir: str) -> "CRing | None":
        cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
        if not cc:
            print("note: no C compiler (gcc/cc) found: the C ring floor is skipped")
            return None
        src = os.path.join(tmpdir, "cring.c")
        exe = os.path.join(tmpdir, "cring")
        with open(src, "w") as f:
            f.write(C_SOURCE)
        try:
            proc = subprocess.run([cc, "-O2", "-std=c11", "-o", exe, src], capture_output=True, text=True)
        except OSError as e:
            print(f"note: cannot run the C compiler {cc!r} ({e}): the C ring floor is skipped")
            return None
        if proc.returncode != 0:
            print(f"note: {cc} -O2 failed, the C ring floor is skipped:\n{proc.stderr.strip()}")
            return None
        version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()
        return cls(tmpdir, exe, (version[0] if version else cc) + " -O2")

    def run(self, args: list, timeout: float) -> str:
        parent = os.getpid()
        # The C parent dies with us (its own child already dies with it): nothing outlives a SIGKILLed run.
        proc = subprocess.Popen([self.exe, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=lambda: die_with_parent(parent))
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            proc.kill()  # its child dies with it (PR_SET_PDEATHSIG)
            proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"C ring {args[0]} failed rc={proc.returncode}: {err.strip()}")
        return out


_TMP_PREFIX = "bot4-bench-"


def _reclaim_stale_tmpdirs() -> None:
    """Remove private temp dirs of bench runs that were killed (SIGKILL) before their cleanup ran."""
    base = tempfile.gettempdir()
    for entry in os.listdir(base):
        if not entry.startswith(_TMP_PREFIX):
            continue
        pid = entry[len(_TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(os.path.join(base, entry), ignore_errors=True)


@contextlib.contextmanager
def private_tmpdir():
    """A temp dir for the C source/binary and ipc:// sockets; removed on exit, or by the next run."""
    _reclaim_stale_tmpdirs()
    path = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
