"""Fit GARCH(1,1) per symbol with ``arch`` on bar returns of recorded market data; store the parameters as JSON.

    bot4 risk fit-garch [--file VENUE=PATH ...] [--journal DIR --config C] [--bar-s 1] [--out PATH] [--every-s S]
                        [--publish RUN]

Mids come from best bid/offer and book events (``(bid + ask) / 2``), each recording (file or journal) cut
into bars by receive time with ``stages.garch.bar_returns`` (the rule the risk stage uses online), in basis
points. Recordings are not joined: a gap between two captures would otherwise be one huge bar return. The
model is arch's zero-mean GARCH(1,1) with normal errors (``rescale=False``: the stored parameters are in
bps**2 per bar, the units the risk stage uses).

A fit is accepted when the optimiser converged, omega > 0, alpha, beta >= 0, alpha + beta < 0.999 and the
sample has at least ``--min-bars`` returns. Otherwise the symbol keeps the parameters it had in the output
file (if any) and the file records why the refit failed; symbols outside the sample keep theirs too.
``default`` is fitted on every symbol's returns pooled and applies to symbols without their own entry.

``--every-s`` refits periodically (the strategic loop, e.g. on a journal the live run keeps appending to).
A run reads the file when it starts; ``--publish RUN`` also hands each written document to the running
pipeline ``RUN`` (``pipeline.store.garch_store``), whose risk stage takes it at its next bar boundary. The run's own
symbols and bar length decide what is published; a fit for another bar length is refused.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from stages import garch
from stages.garch import DEFAULT_KEY, DEFAULT_PARAMS_PATH, FORMAT_VERSION, symbol_key, usable
from stages.records import EV_BBO, EV_BOOK

MAX_PERSISTENCE = 0.999  # closer to a unit root the unconditional variance is meaningless (and arch often lands on 1)


@dataclass
class Sample:
    returns: list = field(default_factory=list)   # one array of bar returns (bps) per recording
    sources: list = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0

    def add(self, r: np.ndarray, source: str, start_ns: int, end_ns: int) -> None:
        self.returns.append(r)
        self.sources.append(source)
        self.start_ns = start_ns if not self.start_ns else min(self.start_ns, start_ns)
        self.end_ns = max(self.end_ns, end_ns)

    def series(self) -> np.ndarray:
        return np.concatenate(self.returns) if self.returns else np.zeros(0)


def bar_returns_by_symbol(events: np.ndarray, symbol_names: list[str], bar_ns: int, source: str,
                          samples: dict[str, Sample]) -> None:
    """Append each (venue, symbol) stream's bar returns in ``events`` to ``samples[symbol key]``."""
    ok = (events["reason"] == 0) & ((events["kind"] == EV_BBO) | (events["kind"] == EV_BOOK))
    bid, ask = events["bid_px"][:, 0], events["ask_px"][:, 0]
    ok &= (bid > 0) & (ask > bid)
    for venue, symbol in sorted({(int(v), int(s)) for v, s in zip(events["venue"][ok], events["symbol"][ok])}):
        mine = ok & (events["venue"] == venue) & (events["symbol"] == symbol)
        ts = events["origin_ts"][mine].astype(np.int64)
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        mids = (0.5 * (bid[mine] + ask[mine]))[order]
        out = np.zeros(garch.returns_capacity(ts, bar_ns))
        n = garch.bar_returns(ts, mids, bar_ns, out)
        name = symbol_names[symbol] if symbol < len(symbol_names) else f"symbol{symbol}"
        samples.setdefault(symbol_key(name), Sample()).add(out[:n], source, int(ts[0]), int(ts[-1]))


def load_files(entries: list[str], bar_ns: int, samples: dict[str, Sample]) -> None:
    from pipeline.sources.recordings import parse_file
    from pipeline.sources.symbols import SymbolTable
    for entry in entries:
        venue, sep, path = entry.partition("=")
        if not sep:
            venue, path = "binance", entry
        table = SymbolTable(venues=[venue], symbols=[], strict=False)
        result = parse_file(path, table, venue=venue)
        names = [name for kind, name, _ in sorted(table.added, key=lambda a: a[2]) if kind == "symbol"]
        bar_returns_by_symbol(result.records, names, bar_ns, os.path.basename(path), samples)


def load_journal(directory: str, symbol_names: list[str], bar_ns: int, samples: dict[str, Sample]) -> None:
    from pipeline.store.journal import JournalReader
    from stages.records import MARKET_EVENT
    events = JournalReader(directory, "market", MARKET_EVENT).read_all()
    bar_returns_by_symbol(events, symbol_names, bar_ns, f"journal:{directory}", samples)


@dataclass
class FitOutcome:
    params: dict | None     # omega, alpha, beta, mu, loglik, ... when accepted
    failure: str            # why not, when rejected


def fit_one(returns: np.ndarray, min_bars: int) -> FitOutcome:
    """arch's zero-mean GARCH(1,1) on ``returns`` (bps per bar); the checks that make a fit usable online."""
    from arch import arch_model
    if len(returns) < min_bars:
        return FitOutcome(None, f"sample has {len(returns)} bar returns, fewer than min_bars={min_bars}")
    if not np.all(np.isfinite(returns)) or float(np.var(returns)) <= 0.0:
        return FitOutcome(None, "returns are constant or not finite")
    model = arch_model(returns, mean="Zero", vol="GARCH", p=1, q=1, dist="normal", rescale=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = model.fit(disp="off", show_warning=True)
        except (ValueError, np.linalg.LinAlgError) as exc:
            return FitOutcome(None, f"arch fit raised {type(exc).__name__}: {exc}")
    omega, alpha, beta = (float(res.params[k]) for k in ("omega", "alpha[1]", "beta[1]"))
    notes = sorted({str(w.message).splitlines()[0] for w in caught})
    if res.convergence_flag != 0:
        return FitOutcome(None, f"optimiser did not converge (flag {res.convergence_flag}): {'; '.join(notes)}")
    if not (omega > 0.0 and alpha >= 0.0 and beta >= 0.0 and alpha + beta < MAX_PERSISTENCE):
        return FitOutcome(None, f"not covariance-stationary (alpha + beta must be < {MAX_PERSISTENCE}): "
                                f"omega={omega:.6g} alpha={alpha:.6g} beta={beta:.6g}")
    return FitOutcome({"omega": omega, "alpha": alpha, "beta": beta, "mu": 0.0,
                       "unconditional_var": omega / (1.0 - alpha - beta),
                       "backcast": float(garch.backcast(returns)),
                       "loglik": float(res.loglikelihood), "n_bars": int(len(returns)), "notes": notes}, "")


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="seconds") if ns else ""


def refit(samples: dict[str, Sample], bar_s: float, previous: dict | None, min_bars: int = 200,
          now: datetime | None = None) -> dict:
    """The new parameter document: each symbol refitted, or kept from ``previous`` with the failure noted."""
    now = now or datetime.now(timezone.utc)
    previous = previous or {}
    if previous and abs(float(previous.get("bar_s", bar_s)) - bar_s) > 1e-12:
        previous = {}  # parameters for another bar length cannot be kept
    old = previous.get("symbols", {})
    pooled = Sample()
    for sample in samples.values():
        for r, source in zip(sample.returns, sample.sources):
            pooled.add(r, source, sample.start_ns, sample.end_ns)
    doc = {"version": FORMAT_VERSION, "model": "GARCH(1,1), zero mean, normal errors (arch)",
           "units": "bps per bar", "bar_s": bar_s, "symbols": {}}
    for key, sample in sorted(samples.items()) + [(DEFAULT_KEY, pooled)]:
        outcome = fit_one(sample.series(), min_bars)
        if outcome.params is not None:
            entry = dict(outcome.params, fitted_at=now.isoformat(timespec="seconds"),
                         sample={"sources": sample.sources, "start": _iso(sample.start_ns), "end": _iso(sample.end_ns)})
        elif key in old:
            entry = dict(old[key], last_failure={"at": now.isoformat(timespec="seconds"), "reason": outcome.failure})
        else:
            entry = {"failed": outcome.failure, "at": now.isoformat(timespec="seconds")}
        doc["symbols"][key] = entry
    for key, entry in old.items():  # symbols this sample does not cover keep their fit
        doc["symbols"].setdefault(key, entry)
    return doc


def refit_file(files: list[str], journal: str | None, config: str | None, bar_s: float, min_bars: int,
               out: Path) -> dict:
    """Read the recordings, refit over the file at ``out`` (keeping what fails) and replace it atomically."""
    bar_ns = int(round(bar_s * 1e9))
    samples: dict[str, Sample] = {}
    load_files(files, bar_ns, samples)
    if journal:
        from pipeline.config import load
        load_journal(journal, list(load(config).feed.symbols), bar_ns, samples)
    previous = json.loads(out.read_text()) if out.is_file() else None
    doc = refit(samples, bar_s, previous, min_bars)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, out)  # readers never see half a file
    return doc


def refit_every(every_s: float, stop: threading.Event, *args, after=None) -> int:
    """The strategic loop for GARCH: refit now and then every ``every_s`` until ``stop``; returns refits done.
    ``after(doc)`` is called after each write. A refit that raises (a journal being rotated, say) is
    reported and retried next period."""
    done = 0
    while True:
        try:
            doc = refit_file(*args)
            report(doc, args[-1])
            done += 1
            if after is not None:
                after(doc)
        except (OSError, ValueError) as exc:
            print(f"refit failed: {type(exc).__name__}: {exc}; keeping {args[-1]} as it is", file=sys.stderr)
        if stop.wait(every_s):
            return done


def report(doc: dict, out: Path) -> int:
    status = 0
    for key, entry in doc["symbols"].items():
        if "last_failure" in entry or "failed" in entry:
            reason = entry.get("failed") or entry["last_failure"]["reason"]
            kept = "kept the previous fit" if usable(entry) else "no fit"
            print(f"{key}: refit failed ({reason}); {kept}")
            status = 1
        else:
            print(f"{key}: omega={entry['omega']:.5g} alpha={entry['alpha']:.4f} beta={entry['beta']:.4f} "
                  f"sigma={math.sqrt(entry['unconditional_var']):.3f} bps/bar loglik={entry['loglik']:.1f} "
                  f"n={entry['n_bars']}")
    print(f"wrote {out}", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bot4 risk fit-garch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", action="append", default=[], help="VENUE=PATH (or PATH: venue binance); repeat")
    parser.add_argument("--journal", help="a journal directory (its market stream)")
    parser.add_argument("--config", help="the run's TOML config (symbol names for --journal)")
    parser.add_argument("--bar-s", type=float, default=1.0, help="bar length in seconds (risk.bar_s)")
    parser.add_argument("--min-bars", type=int, default=200, help="fewer bar returns than this: keep the old fit")
    parser.add_argument("--out", default=str(DEFAULT_PARAMS_PATH), help="parameter file to write (and refit)")
    parser.add_argument("--every-s", type=float, default=0.0,
                        help="refit periodically (e.g. on a growing journal) until interrupted; 0 = once")
    parser.add_argument("--publish", metavar="RUN",
                        help="also publish each fit to the running pipeline RUN (its risk stage takes it at the "
                             "next bar)")
    args = parser.parse_args(argv)
    if not args.file and not args.journal:
        parser.error("give --file VENUE=PATH (repeatable) or --journal DIR")
    if args.bar_s <= 0 or args.every_s < 0:
        parser.error("--bar-s must be positive and --every-s 0 or more")
    fit_args = (args.file, args.journal, args.config, args.bar_s, args.min_bars, Path(args.out))
    after = (lambda doc: publish(args.publish, doc)) if args.publish else None
    if args.every_s > 0:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            refit_every(args.every_s, stop, *fit_args, after=after)
        except KeyboardInterrupt:
            pass
        return 0
    doc = refit_file(*fit_args)
    status = report(doc, fit_args[-1])
    if after is not None and not after(doc):
        return 2
    return status


def publish(run: str, doc: dict) -> bool:
    """Hand ``doc`` to the running pipeline ``run``; says what was published or why not."""
    from pipeline.store import garch_store
    from shm.segment import SegmentError
    try:
        version, record = garch_store.publish_refit(run, doc)
    except (garch_store.PublishError, SegmentError, TimeoutError) as exc:
        print(f"not published to run {run!r}: {exc}", file=sys.stderr, flush=True)
        return False
    print(f"published to run {run!r} as version {version} (fitted {_iso(int(record['fitted_ns']))}); its risk "
          "stage takes it at the next bar", flush=True)
    return True


if __name__ == "__main__":
    sys.exit(main())
