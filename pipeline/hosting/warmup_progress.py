"""What the operator sees while the kernels compile: which kernel, how many of how many, how long.

A terminal gets one updating line (rich). Anything else (a log file, a pipe, systemd's journal) gets plain
lines: one when a kernel has been at it for NOTICE_S ("working on ..."), one when a kernel compiled (or, after
such a notice, loaded); a kernel loaded from the cache at once prints nothing, so a warm start adds no line.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

NOTICE_S = 1.0  # loading a kernel from the cache takes less on an idle machine: past this, it is most likely compiling


class CompileProgress:
    def __init__(self, total: int, stream: TextIO | None = None, prefix: str = "bot4: "):
        self.total, self.stream, self.prefix = total, stream or sys.stderr, prefix
        self.started_at = time.monotonic()
        self.running: dict[int, tuple[str, float]] = {}  # index -> (name, started)
        self.noticed: set[int] = set()
        self.finished_count = self.compiled_count = 0
        self.bar = self.task = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("compiling kernels"), BarColumn(bar_width=20), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.description}"),
                                console=Console(file=self.stream), transient=True)
            self.task = self.bar.add_task("", total=total)
            self.bar.start()

    def _line(self, text: str) -> None:
        try:
            print(f"{self.prefix}{text}", file=self.stream, flush=True)
        except (BrokenPipeError, ValueError):  # a reader that went away must not stop the compile
            pass

    def _elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def started(self, index: int, name: str) -> None:
        self.running[index] = (name, time.monotonic())
        self._describe()

    def finished(self, index: int, name: str, compiled: bool, seconds: float) -> None:
        self.running.pop(index, None)
        self.finished_count += 1
        self.compiled_count += compiled
        if self.bar is not None:
            self.bar.advance(self.task)
            self._describe()
        elif compiled or index in self.noticed:
            how = "compiled" if compiled else "loaded from the cache"
            self._line(f"kernel {self.finished_count}/{self.total} {how}: {name} in {seconds:.1f} s "
                       f"({self._elapsed():.0f} s so far)")

    def tick(self) -> None:
        """Called while waiting: a plain stream hears once about each kernel that takes longer than a load."""
        if self.bar is not None:
            return
        now = time.monotonic()
        for index, (name, since) in self.running.items():
            if index not in self.noticed and now - since > NOTICE_S:
                self.noticed.add(index)
                self._line(f"working on {name} ({len(self.running)} at once; {self.finished_count}/{self.total} "
                           f"kernels done, {self._elapsed():.0f} s so far)")

    def restart(self) -> None:
        """A pass starts over (a broken cache entry was removed): the count restarts, the clock does not."""
        self.running.clear()
        self.finished_count = self.compiled_count = 0
        if self.bar is not None:
            self.bar.reset(self.task, total=self.total)

    def _describe(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=", ".join(name for name, _ in self.running.values()))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        if self.compiled_count:
            self._line(f"compiled {self.compiled_count} of {self.total} kernels "
                       f"({self.total - self.compiled_count} from the cache) in {self._elapsed():.1f} s")
