"""Nothing lost, nothing left open: journal taps count every record their dead or slow consumer did not
take, record mode never drops, and a trip keeps execute and its market data running until it is flat."""
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import names
from pipeline.config import ConfigError, from_dict
from pipeline.hosting import duty_cycle
from pipeline.status_view import PROCESS_NAMES, StatusView
from pipeline.store.journal import JournalReader
from shm import control as cb
from shm import ring
from stages import records as records_mod
from tests.conftest import SIGNAL_ARGS, assert_flat_after_stop

CAPTURE = Path(__file__).resolve().parents[2] / "data" / "binance-ws-capture" / "spot_ethusdt_20240808.gz"


def _full_ring(capacity=16):
    producer, consumer, records = ring.local_ring(records_mod.MARKET_EVENT, capacity)
    batch = np.zeros(capacity, records_mod.MARKET_EVENT)
    assert ring.try_write(producer, consumer, records, batch, capacity) == capacity
    return (producer, consumer, records), batch


def _slot():
    return np.zeros(cb.STAGE_WORDS, np.int64)


def test_a_full_ring_whose_consumer_died_is_discarded_into_and_counted():
    out, batch = _full_ring()
    out[1][ring.C_GONE] = 1
    slot = _slot()
    idle_params = np.zeros(8, np.int64)
    # Before: a full ring with a dead consumer held its producer until the stop said abandon.
    assert duty_cycle.publish((out,), np.zeros(1, np.int64), batch, 10, slot, idle_params, np.zeros(2, np.int64))
    assert out[0][ring.P_DISCARDED] == 10
    assert out[0][ring.P_TAIL] == 16 and slot[cb.S_BLOCKED_SINCE_NS] == 0


def test_a_full_lossless_tap_waits_and_counts_what_it_gives_up_on():
    tap, batch = _full_ring()
    slot = _slot()
    duty_cycle.tap_records(tap, batch, 5, slot)  # an ordinary tap never waits: refused, counted
    assert (slot[cb.S_TAP_WRITTEN], slot[cb.S_TAP_DROPPED], slot[cb.S_BLOCKED_NS]) == (0, 5, 0)
    tap[1][ring.C_LOSSLESS] = 1
    tap[1][ring.C_GONE] = 1  # the journal died: waiting would never end
    duty_cycle.tap_records(tap, batch, 3, slot)
    assert (slot[cb.S_TAP_WRITTEN], slot[cb.S_TAP_DROPPED]) == (0, 8)
    assert tap[0][ring.P_FULL_COUNT] == 1 and slot[cb.S_BLOCKED_SINCE_NS] == 0
    tap[1][ring.C_GONE] = 0
    slot[cb.S_STOP] = 2  # the supervisor abandons a stop that takes too long
    duty_cycle.tap_records(tap, batch, 2, slot)
    assert (slot[cb.S_TAP_WRITTEN], slot[cb.S_TAP_DROPPED]) == (0, 10)
    tap[1][ring.C_HEAD] = 4  # the journal took four: a lossless tap writes them, then waits for the rest
    duty_cycle.tap_records(tap, batch, 6, slot)
    assert (slot[cb.S_TAP_WRITTEN], slot[cb.S_TAP_DROPPED]) == (4, 12)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0, 601.0])
def test_a_flatten_timeout_out_of_range_names_the_key_and_the_range(value):
    with pytest.raises(ConfigError, match=r"run\.flatten_timeout_s=\S+ is invalid: use .*\b600\b"):
        from_dict({"run": {"flatten_timeout_s": value}})


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _journal_lines(output: str) -> dict[str, tuple[int, int, int, str]]:
    """{stream: (tapped, journalled, lost, why)} from the summary's per-stream journal lines."""
    return {m["stream"]: (_number(m["tapped"]), _number(m["journalled"]), _number(m["lost"]), m["why"] or "")
            for m in re.finditer(r"journal (?P<stream>\w+): (?P<tapped>[\d,]+) tapped, (?P<journalled>[\d,]+) "
                                 r"journalled, (?P<lost>[\d,]+) lost(?: \((?P<why>[^)]*)\))?", output)}


def _pid(run_name: str, process: str) -> int:
    block = cb.ControlBlock.attach(names.control(run_name))
    try:
        return int(block.stages[PROCESS_NAMES.index(process)][cb.S_PID])
    finally:
        block.close()


def test_a_killed_journal_is_reported_with_every_record_it_lost(live, tmp_path):
    journal = tmp_path / "journal"
    run = live(*SIGNAL_ARGS, "--quiet", "--journal", str(journal))
    run.wait_for(r"bot4: running")
    time.sleep(1.0)
    os.kill(_pid(run.name, "journal"), signal.SIGKILL)
    code, output = run.finish(timeout=60)
    assert code == 3, output
    lines = _journal_lines(output)
    assert set(lines) == {"market", "intent", "exec", "quarantine", "execute_step"}, output
    held = {stream: JournalReader(str(journal), stream).record_count for stream in lines}
    for stream, (tapped, journalled, lost, why) in lines.items():
        assert journalled == held[stream], (stream, output)
        assert lost == tapped - held[stream], (stream, output)
        if lost:
            assert why.startswith("the journal died"), output
    assert lines["market"][2] > 0, output  # the feed kept tapping after the journal died


def test_record_mode_back_pressures_the_feed_and_journals_every_event(live, tmp_path):
    expected = 138_997  # records in the capture (tests/test_replay_live.py parses the same file)
    journal = tmp_path / "journal"
    conf = tmp_path / "record.toml"
    conf.write_text(f'[run]\nmode = "record"\n[journal]\ndir = "{journal}"\ntap_capacity = 64\n'
                    f'[feed]\nsource = "replay"\nvenues = ["spot"]\nsymbols = ["ETH-USDT"]\n'
                    f'files = ["spot={CAPTURE}"]\nreplay_speed = 0\n')
    run = live(*SIGNAL_ARGS, "--quiet", "--config", str(conf))
    code, output = run.finish(timeout=300)
    assert code == 0, output
    assert "stopped (feed finished)" in output
    assert f"events in: {expected:,} " in output, output
    lines = _journal_lines(output)
    assert "market" in lines and "quarantine" in lines, output
    assert lines["market"] == (expected, expected, 0, ""), output
    assert lines["quarantine"][2] == 0, output
    assert JournalReader(str(journal), "market").record_count == expected
    assert JournalReader(str(journal), "quarantine").record_count == lines["quarantine"][0]
    assert re.search(r"blocked on full rings: feed \d", output), output  # the tap held the feed back


def _execute_counters(run_name: str) -> dict[str, int]:
    block = cb.ControlBlock.attach(names.control(run_name))
    try:
        return StatusView(block).execute_stats()
    finally:
        block.close()


def _wait_for_execute(run_name: str, label: str, timeout_s: float = 10) -> int:
    """Execute's counter ``label`` once it is non-zero (or at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while (value := _execute_counters(run_name)[label]) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_a_killed_risk_stage_still_lets_execute_flatten_before_the_run_stops(live):
    run = live(*SIGNAL_ARGS, "--quiet")
    run.wait_for(r"bot4: running")
    assert _wait_for_execute(run.name, "gross_position_usd") > 0  # something to flatten
    os.kill(_pid(run.name, "risk"), signal.SIGKILL)
    code, output = run.finish(timeout=60)
    assert code == 3, output
    assert "stage risk" in output and "died (signal SIGKILL)" in output
    assert_flat_after_stop(output)
    # The feature stage kept running into the dead stage's ring (until full, then discarding): counted.
    m = re.search(r"lost to dead consumers: .*feature\.risk ([\d,]+) unread \+ ([\d,]+) discarded \(risk died\)",
                  output)
    assert m and _number(m[1]) + _number(m[2]) > 0, output


def test_a_killed_execute_is_reported_with_what_it_left_open(live):
    run = live(*SIGNAL_ARGS, "--quiet")
    run.wait_for(r"bot4: running")
    _wait_for_execute(run.name, "open_orders")
    os.kill(_pid(run.name, "execute"), signal.SIGKILL)
    time.sleep(0.2)
    last = _execute_counters(run.name)  # frozen: nobody writes a dead stage's slot
    code, output = run.finish(timeout=60)
    assert code == 3, output
    assert (f"execute died: {last['open_orders']:,} open orders and ${last['gross_position_usd']:,} gross "
            "position left unflattened (a dead execute cannot cancel or flatten)") in output, output
