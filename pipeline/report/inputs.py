"""What a report is made from (RunRecord), and reading one from a journal directory."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from pipeline import streams
from pipeline.store.journal import JournalError, JournalReader, list_streams, segment_paths
from stages import records


class ReportInputError(ValueError):
    """The report's input cannot be read or is not a run; the message names the file and the fix."""


@dataclass
class RunRecord:
    market: np.ndarray     # records.MARKET_EVENT in stream order (raw feed events; see quarantine)
    reports: np.ndarray    # records.EXEC_REPORT in order
    intents: np.ndarray    # records.ORDER_INTENT in order
    initial_equity: float  # quote currency
    meta: dict = field(default_factory=dict)  # copied into report.json as given (JSON types only)
    quarantine: np.ndarray | None = None  # records.MARKET_EVENT validation refused (matched by origin_seq)

    def __post_init__(self):
        for name, dtype in (("market", records.MARKET_EVENT), ("reports", records.EXEC_REPORT),
                            ("intents", records.ORDER_INTENT)):
            value = getattr(self, name)
            if value is None:
                value = np.zeros(0, dtype)
            if np.asarray(value).dtype != dtype:
                raise ReportInputError(f"RunRecord.{name} must be an array of records.{dtype_name(dtype)}")
            setattr(self, name, np.asarray(value).reshape(-1))
        if self.quarantine is None:
            self.quarantine = np.zeros(0, records.MARKET_EVENT)
        if not np.isfinite(self.initial_equity):
            raise ReportInputError(f"initial_equity={self.initial_equity!r} must be a finite amount of quote "
                                   "currency (pass --equity)")
        self.initial_equity = float(self.initial_equity)


class _KeptStream:
    """One stream of a run kept in memory (as bytes: a structured copy is ~30 us in numpy 2, bytes a memcpy) and
    written on to ``writer`` when there is one."""

    def __init__(self, dtype: np.dtype, writer=None):
        self.dtype, self.writer, self.parts = dtype, writer, []

    def append(self, batch: np.ndarray) -> None:
        if self.writer is not None:
            self.writer.append(batch)
        self.parts.append(batch.tobytes())

    def all(self) -> np.ndarray:
        from pipeline.hosting.fused import records_from_bytes
        return records_from_bytes(self.parts, self.dtype)


class KeptRun:
    """A fused run's journal (pipeline.hosting.fused.Journal) that keeps every stream for a report; with
    ``journal`` (a JournalSet) every batch is written there too."""

    def __init__(self, journal=None):
        def kept(name, dtype):
            return _KeptStream(dtype, getattr(journal, name) if journal is not None else None)
        self.market, self.quarantine = kept("market", records.MARKET_EVENT), kept("quarantine", records.MARKET_EVENT)
        self.intents, self.reports = kept("intents", records.ORDER_INTENT), kept("reports", records.EXEC_REPORT)

    def record(self, initial_equity: float, meta: dict | None = None) -> RunRecord:
        return RunRecord(self.market.all(), self.reports.all(), self.intents.all(), initial_equity, meta or {},
                         self.quarantine.all())


def dtype_name(dtype: np.dtype) -> str:
    return next((k.upper() for k, v in records.ALL.items() if v == dtype), str(dtype))


def _runs_of(directory: str) -> list[tuple[int, str]]:
    """(run_id, source) of the runs whose segments the directory holds, oldest first (by the market stream's
    segment order, else the first stream's)."""
    found = list_streams(directory)
    stream = "market" if "market" in found else (found[0] if found else None)
    runs: list[tuple[int, str]] = []
    if stream is None:
        return runs
    for info in JournalReader(directory, stream).segments:
        if info.header is not None and (info.header.run_id, info.header.source) not in runs:
            runs.append((info.header.run_id, info.header.source))
    return runs


def _read_run(directory: str, stream: str, dtype: np.dtype, run_id: int | None) -> tuple[np.ndarray, dict]:
    if not segment_paths(directory, stream):
        return np.zeros(0, dtype), {"records": 0}
    reader = JournalReader(directory, stream, dtype)
    chosen = [s for s in reader.segments if s.header is not None and s.record_count
              and (run_id is None or s.header.run_id == run_id)]
    parts = [np.fromfile(s.path, dtype=dtype, count=s.record_count, offset=s.header.header_bytes) for s in chosen]
    out = np.concatenate(parts) if parts else np.zeros(0, dtype)
    info = {"records": int(len(out)), "torn_bytes": int(sum(s.torn_bytes for s in reader.segments)),
            "missing_segments": [int(i) for i in reader.missing_indices]}
    return out, info


def from_journal(directory: str, initial_equity: float, run_id: int | None = None,
                 run_name: str | None = None, meta: dict | None = None) -> RunRecord:
    """The run a journal directory holds. A directory several runs wrote into (a stream reopened starts a
    new segment) reports one run: ``run_id``, else the newest run named ``run_name`` (segments written by
    ``bot4 run <name>``), else the newest run. Raises ReportInputError naming the directory and the fix."""
    if not os.path.isdir(directory):
        raise ReportInputError(f"journal directory={directory!r} does not exist; give a journal directory "
                               "(bot4 run --journal DIR, bot4 fused --journal DIR) or a run name")
    found = list_streams(directory)
    if "market" not in found and "exec" not in found:
        raise ReportInputError(f"directory={directory!r} holds no journal segments of streams 'market' or 'exec' "
                               f"(found {found or 'none'}); give the directory a run journalled into")
    try:
        runs = _runs_of(directory)
        if run_id is None and run_name is not None:
            named = [r for r, source in runs if source == f"bot4 run {run_name}"]
            if not named:
                raise ReportInputError(f"journal directory={directory!r} holds no run named {run_name!r} (its runs: "
                                       f"{', '.join(s for _, s in runs) or 'none'}); give the right name or --run-id")
            run_id = named[-1]
        elif run_id is None and runs:
            run_id = runs[-1][0]
        if run_id is not None and runs and run_id not in {r for r, _ in runs}:
            raise ReportInputError(f"run_id={run_id:#x} is not in journal directory={directory!r} (its runs: "
                                   f"{', '.join(f'{r:#x}' for r, _ in runs)})")
        arrays, counts = {}, {}
        for stream in streams.STREAMS:
            arrays[stream.name], counts[stream.name] = _read_run(directory, stream.name, stream.dtype, run_id)
        headers = [s.header for s in JournalReader(directory, found[0]).segments if s.header is not None]
    except JournalError as exc:
        raise ReportInputError(f"journal directory={directory!r} cannot be read: {exc}") from None
    header = next((h for h in headers if run_id is None or h.run_id == run_id), None)
    if not len(arrays["market"]) and not len(arrays["exec"]):
        raise ReportInputError(f"journal directory={directory!r} holds no market events and no execution reports "
                               "for the run; nothing to report")
    info = {
        "source": header.source if header else "",
        "journal_id": f"{header.journal_id:#018x}" if header else None,
        "run_id": f"{run_id:#018x}" if run_id is not None else None,
        "runs_in_directory": len(runs),
        "universe": header.universe if header else {"venues": [], "symbols": []},
        "streams": counts,
    }
    info.update(meta or {})
    return RunRecord(arrays["market"], arrays["exec"], arrays["intent"], initial_equity, info,
                     quarantine=arrays["quarantine"])
