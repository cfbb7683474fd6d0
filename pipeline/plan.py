"""The run plan: what every process of a run works from, resolved once by the supervisor (or by fused mode,
a backtest, a feature build) from the checked config: the config itself, the GARCH fit in use, the model's
path and where each process runs. Children receive it whole (pickled on stdin by the launcher) and never
parse, check or read a configured file again.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.config import Config, ConfigError
from shm import idle as idle_strategies


@dataclass(frozen=True)
class Placement:
    """Where a process runs and how it idles (pipeline.hosting.topology decides)."""
    core: int
    idle: int          # shm.idle strategy
    dedicated: bool
    spin_cycles: int = 5
    yield_cycles: int = 1000
    min_sleep_us: int = 50
    max_sleep_us: int = 1000

    def idle_params(self):
        return idle_strategies.make_params(self.idle, self.spin_cycles, self.yield_cycles, self.min_sleep_us,
                                           self.max_sleep_us)


@dataclass(frozen=True)
class RunPlan:
    config: Config
    garch_doc: dict                  # the GARCH fit document in use (risk.garch_params, or the shipped fit)
    garch_table: np.ndarray          # (MAX_KEYS, 3) omega, alpha, beta per instrument key, from garch_doc
    model_path: str                  # what inference loads: inference.ensemble, inference.model or the shipped model
    placements: dict[str, Placement] = field(default_factory=dict)  # empty outside a live run
    latency_table: np.ndarray | None = None  # venue.latency_file's rows (stages.venue.latency), read once; None = constant

    @property
    def run(self) -> str:
        return self.config.run.name

    def with_placements(self, placements: dict[str, Placement]) -> RunPlan:
        return RunPlan(self.config, self.garch_doc, self.garch_table, self.model_path, dict(placements),
                       self.latency_table)


def resolve(config: Config) -> RunPlan:
    """The plan of ``config``: reads the GARCH fit (once). A fit that cannot serve the run is a config error
    naming risk.garch_params (exit 2), as a bad value is."""
    from stages import garch, inference
    try:
        doc = garch.load_params(config.risk.garch_params or garch.DEFAULT_PARAMS_PATH, config.risk.bar_s)
    except garch.GarchParamsError as exc:
        raise ConfigError(str(exc)) from None
    table = garch.key_table(doc, list(config.feed.symbols))
    model = config.inference.ensemble or config.inference.model or inference.DEFAULT_MODEL
    return RunPlan(config, doc, table, str(model),
                   latency_table=read_latency_table(config.venue.latency_file) if config.venue.latency_file else None)


def read_latency_table(path: str) -> np.ndarray:
    """venue.latency_file: rows of (request_ns, venue_ns, response_ns), a .npy array or a CSV (a header line of
    names is skipped); a file that is not such a table is a config error naming the key (exit 2)."""
    from stages.venue import latency
    try:
        if path.endswith(".npy"):
            rows = np.load(path, allow_pickle=False)
        else:
            rows = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2,
                              skiprows=1 if not open(path).readline().strip()[:1].lstrip("-").isdigit() else 0)
        return latency.check_table(rows, path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"venue.latency_file={path!r} is invalid: {exc}; give rows of request_ns,venue_ns,"
                          "response_ns (a venue time of 0 or less: rejected)") from None
