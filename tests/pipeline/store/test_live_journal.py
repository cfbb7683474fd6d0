"""A live run's journal you can rest a backtest on: recorded times kept, nothing dropped in record mode, and
a live run's execute steps replayed to byte-identical reports."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.config import load
from pipeline.sources.replay_feed import load_recording
from pipeline.store.journal import JournalReader
from pipeline.store.journal_replay import replay
from tests.conftest import ROOT, SIGNAL_ARGS, signal_config

CAPTURE = Path(__file__).resolve().parents[2] / "data" / "binance-ws-capture" / "spot_ethusdt_20240808.gz"


def _replay_config(tmp_path, journal, speed, mode="trade"):
    # A trading run's taps never block the hot path: taps that hold the whole capture keep a slow journal
    # (a loaded CI box) from dropping what the test reads. Record mode needs no such room: it is lossless.
    room = "tap_capacity = 262144\n" if mode == "trade" else ""
    conf = tmp_path / "replay.toml"
    conf.write_text(f'[run]\nmode = "{mode}"\n[feed]\nsource = "replay"\nvenues = ["spot"]\nsymbols = ["ETH-USDT"]\n'
                    f'files = ["spot={CAPTURE}"]\nreplay_speed = {speed}\n[journal]\ndir = "{journal}"\n{room}'
                    '[watchdog]\nheartbeat_stale_ms = 5000\n')  # a loaded 2-core CI box: these tests are not about it
    return conf


def _cli_replay(conf, journal):
    return subprocess.run([sys.executable, "-m", "tools.cli", "replay", *SIGNAL_ARGS, "--config", str(conf), str(journal)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_live_run_journal_replays_to_the_same_reports(live, tmp_path):
    journal = tmp_path / "journal"
    code, output = live(*SIGNAL_ARGS, "--quiet", "--duration", "10", "--journal", str(journal)).finish(timeout=300)
    assert code == 0, output
    steps = re.search(r"journal execute_step: ([\d,]+) tapped, ([\d,]+) journalled, 0 lost", output)
    assert steps and steps.group(1) == steps.group(2), output
    outcome = replay(signal_config(), str(journal))
    assert outcome.kind == "live"
    lost = [note for note in outcome.notes if not note.startswith("trading_enabled changed")]
    assert not lost, lost  # nothing lost (a gate change during a step is only said)
    assert len(outcome.orders()) > 100 and outcome.recorded_reports == len(outcome.reports)
    assert outcome.identical, f"first difference at report {outcome.first_difference}"
    rep = subprocess.run([sys.executable, "-m", "tools.cli", "replay", *SIGNAL_ARGS, str(journal)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert rep.returncode == 0 and "identical to the" in rep.stdout, rep.stdout + rep.stderr


def test_recording_a_capture_at_full_speed_journals_every_event_as_recorded(live, tmp_path):
    """bot4 record at replay_speed 0 used to drop 11,509 of these 138,997 events and restamp the rest."""
    journal = tmp_path / "journal"
    conf = _replay_config(tmp_path, journal, 0, mode="record")
    expected, _ = load_recording(load(str(conf)))
    code, output = live(*SIGNAL_ARGS, "--quiet", "--config", str(conf)).finish(timeout=300)
    assert code == 0, output
    assert f"journal market: {len(expected):,} tapped, {len(expected):,} journalled, 0 lost" in output, output
    market = JournalReader(str(journal), "market").read_all()
    assert len(market) == len(expected) == 138_997
    assert market.tobytes() == expected.tobytes()  # every parsed event, its recorded receive and venue times
    rep = _cli_replay(conf, journal)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "nothing to compare with" in rep.stdout and f"replayed {len(expected):,} market events" in rep.stdout


def test_a_live_replay_at_full_speed_keeps_the_recorded_clock_and_replays_exactly(live, tmp_path):
    """Its clock used to collapse (every event restamped with the wall time it was published at)."""
    journal = tmp_path / "journal"
    conf = _replay_config(tmp_path, journal, 0)
    expected, _ = load_recording(load(str(conf)))
    code, output = live(*SIGNAL_ARGS, "--quiet", "--config", str(conf)).finish(timeout=300)
    assert code == 0, output
    assert "tick-to-order latency: not measured (an unpaced replay" in output
    assert f"journal market: {len(expected):,} tapped, {len(expected):,} journalled, 0 lost" in output, output
    market = JournalReader(str(journal), "market").read_all()
    assert market.tobytes() == expected.tobytes()
    span_s = (market["origin_ts"][-1] - market["origin_ts"][0]) / 1e9
    assert span_s > 300  # the recording's 346 s, not the fraction of a second the replay took
    intents = JournalReader(str(journal), "intent").read_all()
    assert len(intents) > 0
    # Downstream records carry the recorded time of the event they came from: event-time features, bars,
    # cooldowns saw the recorded market.
    assert np.array_equal(intents["origin_ts"], expected["origin_ts"][intents["origin_seq"] - 1])
    rep = _cli_replay(conf, journal)
    assert rep.returncode == 0 and "identical to the" in rep.stdout, rep.stdout + rep.stderr


def test_a_paced_replay_reports_latencies_of_the_pipeline_not_of_the_recording_age(live, tmp_path):
    conf = _replay_config(tmp_path, tmp_path / "journal", 100)  # 346 s of market in ~3.5 s
    code, output = live(*SIGNAL_ARGS, "--quiet", "--config", str(conf)).finish(timeout=300)
    assert code == 0, output
    line = re.search(r"tick-to-order latency \(market event received -> order sent or refused\): p50 (\S+) p99 (\S+)",
                     output)
    assert line, output
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3}
    for value in line.groups():
        number, unit = re.fullmatch(r"([\d.,]+)(ns|us|ms)", value).groups()
        assert float(number.replace(",", "")) * scale[unit] < 60  # restamp-free origins would read ~2 years
