import subprocess
import sys

import numpy as np

from pipeline.store.journal import JournalReader, JournalWriter
from pipeline.store.journal_replay import record, replay
from stages import records, validate
from tests.conftest import ROOT, SIGNAL_ARGS, signal_config


def test_a_recorded_fused_run_replays_to_identical_orders(tmp_path):
    original = record(signal_config(), 15_000, str(tmp_path))
    market = JournalReader(str(tmp_path), "market").read_all()
    assert len(market) == 15_000 and list(market["origin_seq"][:3]) == [1, 2, 3]
    assert len(original.orders()) > 50
    outcome = replay(signal_config(), str(tmp_path))
    assert outcome.identical and outcome.recorded_reports == len(original.reports)
    assert outcome.result.counters["validate"]["quarantined"] == original.counters["validate"]["quarantined"]


def test_every_quarantined_event_is_journalled_with_its_reason(tmp_path):
    result = record(signal_config(feed={"malformed_rate": 0.01}), 12_000, str(tmp_path))
    refused = JournalReader(str(tmp_path), "quarantine").read_all()
    market = JournalReader(str(tmp_path), "market").read_all()
    counters = result.counters["validate"]
    assert len(refused) == counters["quarantined"] > 50
    assert (refused["reason"] > 0).all()
    for code, (label, name) in validate.REASONS.items():
        assert int((refused["reason"] == code).sum()) == counters[label], name
    # each quarantined record is the market event as it arrived, plus its reason
    by_seq = {int(s): i for i, s in enumerate(market["origin_seq"])}
    originals = market[[by_seq[int(s)] for s in refused["origin_seq"]]].copy()
    originals["reason"] = refused["reason"]
    assert originals.tobytes() == refused.tobytes()
    assert list(refused["origin_seq"]) == sorted(refused["origin_seq"])


def test_a_tampered_journal_replays_to_different_orders(tmp_path):
    record(signal_config(), 8_000, str(tmp_path / "a"))
    market = JournalReader(str(tmp_path / "a"), "market").read_all()
    exec_reports = JournalReader(str(tmp_path / "a"), "exec").read_all()
    market["bid_sz"][4000:, 0] *= 3.0  # a different book from the middle on
    for stream, data in (("market", market), ("exec", exec_reports)):
        writer = JournalWriter(str(tmp_path / "b"), stream, data.dtype)
        writer.append(data)
        writer.close()
    outcome = replay(signal_config(), str(tmp_path / "b"))
    assert not outcome.identical and outcome.first_difference > 0


def test_the_cli_records_and_replays(tmp_path):
    journal = str(tmp_path / "j")
    rec = subprocess.run([sys.executable, "-m", "tools.cli", "fused", *SIGNAL_ARGS, "--events", "5000", "--journal",
                          journal],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rec.returncode == 0, rec.stderr
    rep = subprocess.run([sys.executable, "-m", "tools.cli", "replay", *SIGNAL_ARGS, journal], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "identical to the" in rep.stdout
    assert np.dtype(records.MARKET_EVENT) == JournalReader(journal, "market").dtype


def _record_mode_journal(tmp_path, n_events=6_000) -> str:
    """The streams ``bot4 record`` writes (market and quarantine only), from a fused run's market."""
    record(signal_config(), n_events, str(tmp_path / "full"))
    journal = str(tmp_path / "rec")
    for stream in ("market", "quarantine"):
        data = JournalReader(str(tmp_path / "full"), stream).read_all()
        writer = JournalWriter(journal, stream, data.dtype)
        writer.append(data)
        writer.close()
    return journal


def test_a_record_mode_journal_replays_the_strategy_over_its_market(tmp_path):
    """It used to crash (reshape of an empty exec stream)."""
    journal = _record_mode_journal(tmp_path)
    outcome = replay(signal_config(), journal)
    assert outcome.kind == "record" and not outcome.comparable
    assert outcome.market_events == 6_000 and outcome.recorded_reports == 0
    assert len(outcome.orders()) > 0  # the strategy ran over the recorded market
    again = replay(signal_config(), str(tmp_path / "full"))
    assert again.kind == "fused" and again.identical
    assert outcome.reports.tobytes() == again.reports.tobytes()  # the same kernels over the same market
    rep = subprocess.run([sys.executable, "-m", "tools.cli", "replay", *SIGNAL_ARGS, journal], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "nothing to compare with" in rep.stdout


def test_compare_names_the_first_difference_also_against_an_empty_stream():
    reports = np.zeros(3, records.EXEC_REPORT)
    from pipeline.store.journal_replay import compare
    assert compare(reports, reports.copy()) == (True, -1)
    assert compare(reports[:0], reports) == (False, 0)
    changed = reports.copy()
    changed["qty"][2] = 1.0
    assert compare(reports, changed) == (False, 2)
