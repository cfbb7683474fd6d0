"""The allocator's weights a live run uses, published in shared memory so new weights reach it without a restart.

The supervisor of a regime-mode run creates ``/bot4.<run>.weights`` (a one-slot :class:`shm.seqlock.SeqlockTable`
of ``stages.strategies.allocator.PUBLISHED_WEIGHTS``) and publishes the configured table (version 1) before any
stage starts. ``bot4 allocator weights --name RUN --trending ...`` (or the auto-tuner, through :func:`publish`)
publishes a replacement; the strategy stage takes it at its next batch of predictions. Publishers may race each
other: writes go through ``seqlock.write_contended``, and a publication that changes some regimes carries the
others as it read them (two racing publishers of different regimes: the later one wins whole). The segment goes
with the run.
"""
from __future__ import annotations

import time

import numpy as np

from pipeline import names, tables
from pipeline.config import REGIME_KEYS, AllocatorConfig, ConfigError
from shm import segment
from shm.segment import SegmentError
from stages.strategies import allocator

SLOT = tables.WEIGHTS_SLOT


class PublishError(ValueError):
    """Weights that must not, or cannot, reach the running pipeline."""


def parse(changes: dict[str, str]) -> dict[str, dict[str, float]]:
    """{regime: "STRATEGY=WEIGHT,..." or "off"} -> {regime: {strategy: weight}}, checked as the config checks
    ``allocator.<regime>`` (a ConfigError names the key, the range and the fix)."""
    found = {}
    for regime, text in changes.items():
        if regime not in REGIME_KEYS:
            raise ConfigError(f"{regime!r} is not a regime; use {', '.join(REGIME_KEYS)}")
        entries = () if text.strip().lower() in ("off", "none", "") else tuple(e.strip() for e in text.split(","))
        found[regime] = AllocatorConfig(**{regime: entries}).values(regime)
    return found


def describe(weights: np.ndarray) -> dict[str, str]:
    """{regime: "momentum=1, mean_reversion=0.5" or "off"}, for status and the publisher's reply."""
    out = {}
    for row, regime in enumerate(REGIME_KEYS):
        on = [f"{name}={weights[row, s]:g}" for s, name in enumerate(allocator.STRATEGY_KEYS) if weights[row, s] > 0]
        out[regime] = ", ".join(on) or "off"
    return out


def record(weights: np.ndarray) -> np.void:
    w = np.asarray(weights, float)
    if w.shape != (allocator.N_REGIMES, allocator.N_STRATEGIES) or not allocator.usable_weights(w):
        raise PublishError(f"weights must be a {allocator.N_REGIMES}x{allocator.N_STRATEGIES} table of finite "
                           f"values in [0, {allocator.MAX_WEIGHT:g}]; got {w.tolist()}")
    out = np.zeros(1, allocator.PUBLISHED_WEIGHTS)
    out[0]["weights"] = w
    out[0]["published_ns"] = time.time_ns()
    return out[0]


def create(run: str):
    return tables.weights_table(run, create=True)


def publish_initial(table, weights: np.ndarray) -> int:
    """The supervisor's start-up publication: the configured weights, version 1."""
    return table.publish(SLOT, record(weights))


def _attach(run: str):
    try:
        table = tables.weights_table(run)
    except SegmentError:
        if names.control(run) in segment.list_segments(names.run_prefix(run)):
            raise PublishError(f"run {run!r} has no allocator: its strategy stage runs strategy.kind other than "
                               "'regime' (or it has no strategy stage); weights apply to the regime mode only") from None
        raise PublishError(f"no run named {run!r} is running (no {names.control(run)} in /dev/shm)") from None
    h = table.segment.header
    pid, start = int(h[segment.H_CREATOR_PID]), int(h[segment.H_CREATOR_START_NS])
    del h
    if not segment.process_alive(pid, start):  # a killed run's table, not yet reclaimed: nobody would read it
        table.close()
        raise PublishError(f"run {run!r} is not running: its supervisor (pid {pid}) is dead; its shared memory goes "
                           "at the next start under that name")
    return table


def current(run: str) -> tuple[np.ndarray, int, int]:
    """(weights in the table, its version, when it was published, ns since the epoch) of the running ``run``."""
    table = _attach(run)
    try:
        rec, version = table.read(SLOT)
        return np.array(rec["weights"]), version, int(rec["published_ns"])
    finally:
        table.close()


def publish(run: str, changes: dict[str, dict[str, float]]) -> tuple[int, np.ndarray]:
    """Publish new weights for the regimes ``changes`` names ({regime: {strategy: weight}}, absent = 0) to the
    running ``run``; the other regimes keep theirs. Returns (the new version, the whole table published)."""
    for regime, by_name in changes.items():
        if regime not in REGIME_KEYS:
            raise PublishError(f"{regime!r} is not a regime; use {', '.join(REGIME_KEYS)}")
        unknown = [name for name in by_name if name not in allocator.STRATEGY_KEYS]
        if unknown:
            raise PublishError(f"{unknown} are not strategies; use {', '.join(allocator.STRATEGY_KEYS)}")
    table = _attach(run)
    try:
        rec, version = table.read(SLOT)
        if version == 0:
            raise PublishError(f"run {run!r} has not published its weights yet (still starting?)")
        weights = np.array(rec["weights"])
        for regime, by_name in changes.items():
            row = REGIME_KEYS.index(regime)
            weights[row, :] = 0.0
            for name, w in by_name.items():
                weights[row, allocator.STRATEGY_KEYS.index(name)] = w
        return table.publish(SLOT, record(weights)), weights
    finally:
        table.close()
