"""The account a run leaves when its supervisor died: ``<tempdir>/bot4.<run>.last``, owner-only JSON.

The watchdog writes it after it disarmed and removed the run's shared memory (so ``bot4 status`` still has
something to say when no control block is left); the next start under the name removes it.
"""
from __future__ import annotations

import json
import os
import tempfile


def path(run: str) -> str:
    return os.path.join(tempfile.gettempdir(), f"bot4.{run}.last")


def write(run: str, account: dict) -> str:
    """Atomically (a reader sees the whole file or none); mode 0600."""
    target = path(run)
    partial = f"{target}.{os.getpid()}.tmp"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(account, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.replace(partial, target)
    return target


def read(run: str) -> dict | None:
    try:
        with open(path(run)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def remove(run: str) -> None:
    try:
        os.unlink(path(run))
    except FileNotFoundError:
        pass


def describe(account: dict) -> list[str]:
    """What ``bot4 status`` / ``bot4 killswitch status`` print for a run that left only this account."""
    lines = [f"run {account.get('run')!r} is gone: {account.get('what')} at {account.get('when')}",
             f"trading: DISABLED, reason: {account.get('kill_reason')}"
             + (f" ({account['kill_text']})" if account.get("kill_text") else ""),
             f"cleaned up by the watchdog: {account.get('cleanup')}"]
    counters = account.get("counters") or {}
    if counters:
        lines.append("final counters: " + ", ".join(f"{k} {v:,}" for k, v in counters.items()))
    return lines
