"""The loopback Binance on its own, through a plain aiohttp client: the venue's stream formats, its
subscription protocol, and depth snapshots that the diffs served next continue."""
import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from tools.binance_loopback import Faults, LoopbackServer, OptionError, main

CAPTURE = Path(__file__).resolve().parents[1] / "data" / "binance-ws-capture" / "spot_ethusdt_20240808.gz"


def test_streams_in_raw_and_combined_format_and_snapshots_the_next_diff_continues():
    with LoopbackServer([CAPTURE], "spot", speed=10, wait_streams=2, restamp=False) as server:
        async def main():
            async with aiohttp.ClientSession() as http:
                raw = await http.ws_connect(f"{server.ws_url}/ws/ethusdt@depth@100ms")
                combined = await http.ws_connect(f"{server.ws_url}/stream?streams=ethusdt@trade")
                first_diff = orjson.loads((await raw.receive()).data)
                first_trade = orjson.loads((await combined.receive()).data)
                async with http.get(f"{server.rest_url}/api/v3/depth", params={"symbol": "ETHUSDT", "limit": "5"}) as r:
                    snapshot = await r.json()
                after = orjson.loads((await raw.receive()).data)
                while after["u"] <= snapshot["lastUpdateId"]:  # a diff already in flight when the snapshot was taken
                    after = orjson.loads((await raw.receive()).data)
                await raw.send_str('{"method": "SUBSCRIBE", "params": ["ethusdt@bookTicker"], "id": 7}')
                ack = None
                while ack is None or "id" not in ack:
                    ack = orjson.loads((await raw.receive()).data)
                await raw.send_str('{"method": "SUBSCRIBE", "params": ["dogeusdt@trade"], "id": 8}')
                refused = None
                while refused is None or "id" not in refused:
                    refused = orjson.loads((await raw.receive()).data)
                async with http.get(f"{server.rest_url}/api/v3/exchangeInfo") as r:
                    info = await r.json()
                await raw.close()
                await combined.close()
                return first_diff, first_trade, snapshot, after, ack, refused, info

        first_diff, first_trade, snapshot, after, ack, refused, info = asyncio.run(main())
        counts = dict(server.counts)
    assert first_diff["e"] == "depthUpdate" and first_diff["s"] == "ETHUSDT"  # raw: the payload itself
    assert first_trade["stream"] == "ethusdt@trade" and first_trade["data"]["e"] == "trade"  # combined: wrapped
    assert list(snapshot) == ["lastUpdateId", "bids", "asks"] and len(snapshot["bids"]) == len(snapshot["asks"]) == 5
    assert float(snapshot["bids"][0][0]) < float(snapshot["asks"][0][0])
    assert after["U"] == snapshot["lastUpdateId"] + 1  # Binance spot's rule: the stream continues the snapshot
    assert ack == {"result": None, "id": 7} and refused["id"] == 8 and "error" in refused
    symbol = info["symbols"][0]
    assert symbol["symbol"] == "ETHUSDT" and symbol["status"] == "TRADING"
    price_filter = {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "4529764", "tickSize": "0.01"}
    assert price_filter in symbol["filters"]
    assert counts["connections"] == 2 and counts["snapshots"] == 1 and counts["exchange_info"] == 1



@pytest.mark.parametrize("option,value,shown", [("--speed", "-1", "-1.0"), ("--speed", "nan", "nan"),
                                                ("--speed", "inf", "inf"), ("--snapshot-delay-ms", "-5", "-5.0"),
                                                ("--snapshot-delay-ms", "nan", "nan"),
                                                ("--snapshot-delay-ms", "inf", "inf"), ("--gap-at", "-3", "-3"),
                                                ("--drop-after", "-1", "-1")])
def test_an_option_out_of_range_is_refused_by_name_with_exit_2(option, value, shown, capsys):
    assert main([option, value, str(CAPTURE)]) == 2
    said = capsys.readouterr().out.rstrip()
    assert said.startswith(f"binance_loopback: {option} must be ") and said.endswith(f", not {shown}"), said


def test_a_fault_out_of_range_is_refused_by_the_server_itself():
    with pytest.raises(OptionError, match="snapshot_delay_ms"):
        LoopbackServer([CAPTURE], faults=Faults(snapshot_delay_ms=float("nan")))
