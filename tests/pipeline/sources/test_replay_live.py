"""A live run fed from a real recording: every recorded event goes through all seven stages."""
import re
from pathlib import Path

from pipeline.sources import SymbolTable, parse_file

CAPTURE = Path(__file__).resolve().parents[2] / "data" / "binance-ws-capture" / "spot_ethusdt_20240808.gz"


def test_a_replayed_capture_flows_through_every_stage_unquarantined(live, tmp_path):
    expected = len(parse_file(str(CAPTURE), SymbolTable(venues=["spot"], symbols=["ETH-USDT"]), venue="spot").records)
    conf = tmp_path / "replay.toml"
    conf.write_text(f'[feed]\nsource = "replay"\nvenues = ["spot"]\nsymbols = ["ETH-USDT"]\n'
                    f'files = ["spot={CAPTURE}"]\nreplay_speed = 0\n')
    run = live("--quiet", "--config", str(conf))
    code, output = run.finish(timeout=300)
    assert code == 0, output
    assert "stopped (feed finished)" in output
    assert f"events in: {expected:,} (quarantined 0)" in output
    counts = dict((n, int(b.replace(",", ""))) for n, a, b in
                  re.findall(r"(\w+) ([\d,]+)->([\d,]+)", re.search(r"records per stage.*", output).group(0)))
    assert counts["inference"] == expected


def test_lines_the_parser_refused_are_quarantined_counted_and_journalled(live, tmp_path):
    """They used to vanish at parse time: not counted by validate, not in the journal, not in the guard."""
    import gzip

    import numpy as np

    from pipeline.store.journal import JournalReader
    from stages import validate
    with gzip.open(CAPTURE) as f:
        good = b"".join(f.readline() for _ in range(2000))
    half = good.index(b"\n", len(good) // 2) + 1
    mixed = tmp_path / "mixed.ws"
    mixed.write_bytes(good[:half] + b"".join(b"1723161254024619568 {garbage %d\n" % i for i in range(40)) + good[half:])
    journal = tmp_path / "journal"
    conf = tmp_path / "replay.toml"
    conf.write_text(f'[feed]\nsource = "replay"\nvenues = ["spot"]\nsymbols = ["ETH-USDT"]\n'
                    f'files = ["spot={mixed}"]\nreplay_speed = 0\n[journal]\ndir = "{journal}"\n'
                    '[watchdog]\nheartbeat_stale_ms = 5000\n')  # a loaded 2-core CI box: this test is not about it
    code, output = live("--quiet", "--config", str(conf)).finish(timeout=300)
    assert code == 0, output
    assert "40 bad (quarantined as unparsable; refused: bad_json 40)" in output
    assert re.search(r"events in: [\d,]+ \(quarantined 40: unparsable 40\)", output), output
    refused = JournalReader(str(journal), "quarantine").read_all()
    assert len(refused) == 40 and np.all(refused["reason"] == validate.R_UNPARSABLE)
