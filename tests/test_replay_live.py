"""A live run fed from a real recording: every recorded event goes through all seven stages."""
import re
from pathlib import Path

from stages.sources import SymbolTable, parse_file

CAPTURE = Path(__file__).resolve().parents[2] / "shared" / "data" / "binance-ws-capture" / "spot_ethusdt_20240808.gz"


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
