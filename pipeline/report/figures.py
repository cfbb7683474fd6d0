"""The report's PNG figures, drawn with matplotlib's Agg backend (no display, same bytes for the same data)."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from pipeline.report.metrics import NS, Analysis  # noqa: E402

_METADATA = {"Software": None}  # no matplotlib version in the file


def _seconds(ts: np.ndarray, t0: int) -> np.ndarray:
    return (np.asarray(ts, np.int64) - t0) / NS


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=_METADATA)
    plt.close(fig)
    return path


def write(analysis: Analysis, directory: str) -> list[str]:
    """Write the figures the data allows into ``directory``; returns their file names."""
    out = []
    t0 = int(analysis.curve_ts[0]) if len(analysis.curve_ts) else 0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    x = _seconds(analysis.curve_ts, t0)
    top.plot(x, analysis.curve_equity, lw=1)
    top.set_ylabel("equity (quote)")
    top.set_title("Equity")
    bottom.fill_between(x, -100 * analysis.curve_drawdown, 0, step="post", color="tab:red", alpha=0.5)
    bottom.set_ylabel("drawdown (%)")
    bottom.set_xlabel("event time (s from the first event)")
    out.append(os.path.basename(_save(fig, os.path.join(directory, "equity.png"))))
    if analysis.inventory:
        n = len(analysis.inventory)
        fig, axes = plt.subplots(n, 1, figsize=(10, 2.2 * n), squeeze=False)
        for ax, (name, (ts, pos)) in zip(axes[:, 0], sorted(analysis.inventory.items())):
            ax.step(_seconds(ts, t0), pos, where="post", lw=1)
            ax.set_ylabel("position")
            ax.set_title(name, fontsize=9)
        axes[-1, 0].set_xlabel("event time (s from the first event)")
        out.append(os.path.basename(_save(fig, os.path.join(directory, "inventory.png"))))
    if any(len(v) for v in analysis.markout_samples.values()):
        labels = list(analysis.markout_samples)
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.boxplot([analysis.markout_samples[k] if len(analysis.markout_samples[k]) else [np.nan] for k in labels],
                   showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_ylabel("mark-out (bps, + = favourable)")
        ax.set_title("Fill mark-outs")
        out.append(os.path.basename(_save(fig, os.path.join(directory, "markouts.png"))))
    lat = {k: v for k, v in analysis.latency_samples.items() if len(v)}
    if lat:
        fig, ax = plt.subplots(figsize=(8, 4))
        for name, values in sorted(lat.items()):
            ax.hist(values, bins=50, alpha=0.6, label=name)
        ax.set_xlabel("latency (us)")
        ax.legend()
        ax.set_title("Latency")
        out.append(os.path.basename(_save(fig, os.path.join(directory, "latency.png"))))
    return out
