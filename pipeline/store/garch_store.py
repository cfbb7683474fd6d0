"""The GARCH parameters a live run uses, published in shared memory so a refit reaches it without a restart.

The supervisor creates ``/bot4.<run>.garch`` (a one-slot :class:`shm.seqlock.SeqlockTable` of
``stages.garch.PUBLISHED_GARCH``) and publishes the configured fit before any stage starts. ``bot4 risk
fit-garch --publish RUN`` publishes each accepted refit; the risk stage reads the slot at its next bar
boundary (``stages.risk.apply_published``). Publishers may race each other: writes go through
``seqlock.write_contended``. The segment goes with the run.
"""
from __future__ import annotations

import time

import numpy as np

from pipeline import names, tables
from shm import segment
from shm.segment import SegmentError
from shm.seqlock import SeqlockTable
from stages import garch

SLOT = tables.GARCH_SLOT


class PublishError(ValueError):
    """Parameters that must not reach the running pipeline (another bar length, a non-stationary fit)."""


def create(run: str) -> SeqlockTable:
    return tables.garch_table(run, create=True)


def attach(run: str) -> SeqlockTable:
    return tables.garch_table(run)


def check(record: np.void) -> None:
    p = record["params"]
    omega, alpha, beta = p[:, 0], p[:, 1], p[:, 2]
    bad = ~(np.isfinite(p).all(axis=1) & (omega > 0) & (alpha >= 0) & (beta >= 0) & (alpha + beta < 1))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise PublishError(f"key {k}: omega={omega[k]:.6g} alpha={alpha[k]:.6g} beta={beta[k]:.6g} is not a "
                           "covariance-stationary GARCH(1,1) (omega > 0, alpha, beta >= 0, alpha + beta < 1)")


def publish_initial(table: SeqlockTable, doc: dict, symbols: list[str], bar_ns: int) -> int:
    """The supervisor's start-up publication: the configured fit, and the run's symbol names for publishers."""
    record = garch.published_record(doc, symbols, bar_ns, time.time_ns())
    check(record)
    return table.publish(SLOT, record)


def publish_refit(run: str, doc: dict) -> tuple[int, np.void]:
    """Publish ``doc`` (a fit-garch document) to the running pipeline ``run``; returns (its version, the record).
    The symbols and bar length are the run's own, read from what it published at start."""
    try:
        table = attach(run)
    except SegmentError:
        if names.control(run) in segment.list_segments(names.run_prefix(run)):
            raise PublishError(f"run {run!r} is running without a risk stage (bot4 record?): nothing uses GARCH "
                               "parameters there") from None
        raise
    try:
        current, version = table.read(SLOT)
        if version == 0:
            raise PublishError(f"run {run!r} has not published its GARCH parameters yet (still starting?)")
        if not garch.usable(doc.get("symbols", {}).get(garch.DEFAULT_KEY, {})):
            raise PublishError(f"the fit has no usable {garch.DEFAULT_KEY!r} entry (every refit failed and there was "
                               "no earlier fit to keep); nothing published")
        bar_ns = int(current["bar_ns"])
        if abs(float(doc["bar_s"]) * 1e9 - bar_ns) > 0.5:
            raise PublishError(f"the fit is for {doc['bar_s']} s bars but run {run!r} uses {bar_ns / 1e9:g} s bars "
                               f"(risk.bar_s); refit with --bar-s {bar_ns / 1e9:g}")
        record = garch.published_record(doc, garch.published_symbols(current), bar_ns, time.time_ns())
        check(record)
        return table.publish(SLOT, record), record
    finally:
        table.close()


class GarchStoreReader:
    def __init__(self, run: str):
        self.table = attach(run)

    def current(self) -> tuple[np.void, int]:
        """(the published record, its version: 1 = the start-up parameters, n = the (n-1)th refit)."""
        return self.table.read(SLOT)

    def close(self) -> None:
        self.table.close()
