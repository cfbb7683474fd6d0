"""The profile's PNG figures (matplotlib, Agg backend: no display, no network)."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from pipeline.profiling.analysis import PHASES, bucket_lower_ns, fmt_ns, quantile_ns  # noqa: E402
from shm import control as cb  # noqa: E402

_METADATA = {"Software": None}  # no matplotlib version in the file
PHASE_COLOURS = {"reading": "tab:blue", "kernel": "tab:green", "publishing": "tab:orange", "blocked": "tab:red",
                 "idle": "lightgrey", "other": "white"}


def _save(fig, path: str, dpi: int = 100) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, metadata=_METADATA)
    plt.close(fig)
    return os.path.basename(path)


def phases(profile: dict, path: str) -> str:
    """Per process, its window's wall time split by phase (% of the window); "other" is what it did not account
    (a stage group member: the other members' turns)."""
    procs = profile["processes"]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(procs) + 1.6))
    labels = [p["name"] + (" (group)" if p["group"] else "") for p in procs]
    y = np.arange(len(procs))[::-1]
    left = np.zeros(len(procs))
    for phase in (*PHASES, "other"):
        share = np.array([100.0 * (max(0, p["unaccounted_ns"]) if phase == "other" else p["phases_ns"][phase])
                          / p["wall_ns"] if p["wall_ns"] else 0.0 for p in procs])
        label = phase if phase != "kernel" else "kernel (Python agents: work)"
        ax.barh(y, share, left=left, color=PHASE_COLOURS[phase], edgecolor="grey", lw=0.4, label=label)
        left += share
    ax.set_yticks(y, labels)
    ax.set_xlim(0, max(100.0, float(left.max()) if len(left) else 100.0))
    ax.set_xlabel(f"% of the {profile['seconds']:.2f} s window")
    ax.set_title("Where each process's time goes")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5 / max(1, len(procs)) - 0.12), ncol=6, fontsize=8,
              frameon=False)
    return _save(fig, path)


def batches(profile: dict, path: str) -> str:
    """Per stage process, its batches by size (share of the window's batches, log2 buckets)."""
    procs = [p for p in profile["processes"] if sum(p["batch_hist"])]
    cols = 3
    rows = max(1, -(-len(procs) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.3 * rows), squeeze=False)
    for ax, p in zip(axes.flat, procs):
        hist = np.array(p["batch_hist"], float)
        top = int(np.nonzero(hist)[0].max()) + 1
        ax.bar(np.arange(top), 100.0 * hist[:top] / hist.sum(), color="tab:blue")
        ax.set_xticks(np.arange(top), [_bucket_label(b) for b in range(top)], rotation=45, fontsize=7)
        mean = p["mean_batch"]
        ax.set_title(f"{p['name']}: {p['batches']:,} batches, mean {mean:.1f}" if mean else p["name"], fontsize=9)
        ax.set_ylabel("% of batches", fontsize=8)
    for ax in list(axes.flat)[len(procs):]:
        ax.axis("off")
    fig.suptitle("Batch sizes (records per served batch)", fontsize=10)
    return _save(fig, path)


def _bucket_label(b: int) -> str:
    first, last = cb.batch_bucket_range(b)
    if last < 0:
        return f"{first}+"
    return str(first) if first == last else f"{first}-{last}"


def depths(profile: dict, path: str) -> str:
    """Each ring's depth (records waiting for its consumer) over the window."""
    rings = profile["rings"]
    cols = 3
    rows = max(1, -(-len(rings) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.1 * rows), squeeze=False, sharex=True)
    for ax, r in zip(axes.flat, rings):
        ax.plot(r["t_s"], r["depth"], lw=0.8, drawstyle="steps-post")
        ax.set_title(f"{r['name']} (capacity {r['capacity']:,})", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rings):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("s into the window", fontsize=8)
    fig.suptitle("Ring depth over time (records waiting)", fontsize=10)
    return _save(fig, path)


def waterfall(profile: dict, path: str, dpi: int = 100) -> str:
    """Tick to order hop by hop: each stage's bar spans from the previous stage's tick-to-output to its own."""
    stages = [s for s in profile["waterfall"]["stages"] if s["count"]]
    quantiles = profile["waterfall"]["quantiles"]
    fig, axes = plt.subplots(1, len(quantiles), figsize=(11, 0.42 * len(stages) + 1.8), squeeze=False)
    for ax, q in zip(axes[0], quantiles):
        key = f"p{round(q * 100)}"
        top = max([s[key] for s in stages] or [1.0])
        unit, scale = ("ms", 1e6) if top >= 20e6 else ("µs", 1e3)
        y = np.arange(len(stages))[::-1]
        for yi, s in zip(y, stages):
            end, hop = s[key] / scale, s[f"hop_{key}"] / scale
            ax.barh(yi, hop, left=end - hop, color="tab:blue" if hop >= 0 else "tab:red", height=0.6)
            ax.text(max(end, end - hop), yi, f" +{fmt_ns(s[f'hop_{key}'])}" if hop >= 0 else
                    f" {fmt_ns(s[f'hop_{key}'])}", va="center", fontsize=8)
        ax.set_yticks(y, [s["name"] for s in stages])
        ax.set_xlabel(f"{unit} since the market event was received")
        total = stages[-1][key] if stages else None
        ax.set_title(f"{key}: tick to {stages[-1]['name'] if stages else '-'} output {fmt_ns(total)}", fontsize=10)
        ax.set_xlim(0, 1.25 * top / scale)
    fig.suptitle(f"Tick-to-order waterfall, run {profile['run']!r}, {profile['seconds']:.1f} s window "
                 "(hop = difference of consecutive stages' percentiles)", fontsize=10)
    return _save(fig, path, dpi)


def tick_to_order(hist, path: str, title: str) -> str:
    """A log-bucketed latency histogram (execute's tick to order) with its percentiles marked."""
    hist = np.asarray(hist, np.int64)
    nonzero = np.nonzero(hist)[0]
    fig, ax = plt.subplots(figsize=(9, 4))
    if len(nonzero):
        lo, hi = int(nonzero.min()), int(nonzero.max()) + 1
        edges = np.array([bucket_lower_ns(b) for b in range(lo, hi)] + [cb.bucket_upper_ns(hi - 1)]) / 1e3
        edges[0] = max(edges[0], cb.bucket_upper_ns(lo) / 1e3 / 2)  # bucket 0 starts at 0: not on a log axis
        ax.stairs(hist[lo:hi], edges, fill=True, color="tab:blue", alpha=0.7)
        ax.set_xscale("log")
        for q, style in ((0.5, "-"), (0.99, "--"), (0.999, ":")):
            v = quantile_ns(hist, q)
            ax.axvline(v / 1e3, color="black", ls=style, lw=1, label=f"p{q * 100:g} {fmt_ns(v)}")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no orders measured", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("tick to order (µs, log scale)")
    ax.set_ylabel("orders and refusals")
    ax.set_title(f"{title}: {int(hist.sum()):,} measured", fontsize=10)
    return _save(fig, path)
