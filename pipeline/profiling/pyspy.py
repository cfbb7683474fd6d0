"""py-spy against the run's Python-side hosts for the profile's window: collapsed stacks per process and their
top functions. py-spy reads another process's memory (ptrace): root, CAP_SYS_PTRACE or
kernel.yama.ptrace_scope = 0. ``--nonblocking``: the process is never paused to be sampled."""
from __future__ import annotations

import ctypes
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections import Counter

RATE_HZ = 100
TOP = 15
MISSING = ("py-spy is not installed: pip install 'bot4[profile]' (or pip install py-spy); it needs ptrace rights "
           "over the run's processes (root, CAP_SYS_PTRACE, or kernel.yama.ptrace_scope = 0)")


def executable() -> str | None:
    """py-spy on PATH, or where pip put this interpreter's scripts."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return shutil.which("py-spy") or (beside if os.access(beside, os.X_OK) else None)


def _die_with_parent() -> None:
    """In the child before exec: a profile killed outright (SIGKILL) takes its py-spy processes with it."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class Recorders:
    """One ``py-spy record`` per host, started together; ``finish`` waits for them and reads what they wrote.
    Used as a context manager: any that still run on the way out (an interrupted profile) are killed."""

    def __init__(self, hosts: list[tuple[str, int]], seconds: float, directory: str):
        self.hosts = hosts
        self.directory = directory
        self.seconds = max(1, math.ceil(seconds))
        self.procs: list[tuple[str, int, str, subprocess.Popen | None, str]] = []
        exe = executable()
        self.error = "" if exe else MISSING
        if not exe:
            return
        for name, pid in hosts:
            raw = f"pyspy-{name}.txt"
            try:
                proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(self.seconds),
                                         "--rate", str(RATE_HZ), "--nonblocking", "--nolineno", "--format", "raw",
                                         "--output", os.path.join(directory, raw)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        preexec_fn=_die_with_parent)
                self.procs.append((name, pid, raw, proc, ""))
            except OSError as exc:
                self.procs.append((name, pid, raw, None, str(exc)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for _, _, _, proc, _ in self.procs:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        return False

    def finish(self) -> dict:
        if self.error:
            return {"error": self.error, "hosts": []}
        hosts = []
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for name, pid, raw, proc, error in self.procs:
            entry = {"name": name, "pid": pid, "raw": raw}
            if proc is None:
                hosts.append({**entry, "error": error})
                continue
            try:
                said, _ = proc.communicate(timeout=self.seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                said, _ = proc.communicate()
            path = os.path.join(self.directory, raw)
            if proc.returncode != 0 or not os.path.exists(path):
                last = [line for line in (said or "").splitlines() if line.strip()]
                hosts.append({**entry, "error": f"exit {proc.returncode}: {last[-1] if last else 'no output'}"
                              + (" (ptrace refused: run as root or grant CAP_SYS_PTRACE)"
                                 if "ermission" in (said or "") else "")})
                continue
            with open(path) as fh:
                samples, top = top_functions(fh.read())
            hosts.append({**entry, "samples": samples, "top": top})
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the py-spy processes, now reaped
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return {"error": "", "hosts": hosts, "rate_hz": RATE_HZ, "seconds": self.seconds, "cpu_ns": int(cpu * 1e9)}


def top_functions(collapsed: str, top: int = TOP) -> tuple[int, list[dict]]:
    """From collapsed stacks ("f1;f2;f3 count" a line): samples, and the functions with the most samples where
    they were running (self) and on the stack at all (total), as % of the samples (py-spy counts only samples in
    which the process was running, not idle)."""
    own, anywhere = Counter(), Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            anywhere[frame] += n
    if not samples:
        return 0, []
    return samples, [{"function": f, "self": 100.0 * n / samples, "total": 100.0 * anywhere[f] / samples}
                     for f, n in own.most_common(top)]
