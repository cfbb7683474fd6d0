"""The offline feature store: Parquet rows from the same kernels, equal to fused mode's vectors bit for bit."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import Config, ConfigError
from pipeline.hosting.fused import run_fused
from pipeline.store import feature_build
from stages import records
from stages.universe import instrument_key
from tests.conftest import ROOT

CAPTURE = Path(__file__).resolve().parents[2] / "data" / "binance-ws-capture" / "spot_ethusdt_20240808.gz"


def replay_config(tmp_path):
    text = (f'[feed]\nsource = "replay"\nvenues = ["spot"]\nsymbols = ["ETH-USDT"]\nfiles = ["spot={CAPTURE}"]\n'
            'replay_speed = 0\n')
    path = tmp_path / "replay.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The capture through fused mode (online vectors) and through `bot4 features build` (Parquet)."""
    from pipeline.config import load
    tmp = tmp_path_factory.mktemp("features")
    cfg_path = replay_config(tmp)
    config = load(cfg_path)
    market, _ = feature_build.market_source(config, None)
    online = []
    run_fused(config, market_source=iter(market), feature_sink=lambda v: online.append(v.copy()))
    out = tmp / "eth.parquet"
    done = subprocess.run([sys.executable, "-m", "tools.cli", "features", "build", "--config", str(cfg_path),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return config, market[0], np.concatenate(online), out, done.stdout


def test_offline_rows_equal_fused_modes_vectors_bit_for_bit(built):
    config, market, online, path, stdout = built
    offline, meta = feature_build.read(path)
    assert len(online) > 100_000 and len(offline) == len(online)
    assert f"wrote {len(offline):,} feature rows" in stdout
    online["stage_ts"] = 0  # when the stage ran: not part of a row
    assert offline.tobytes() == online.tobytes()
    assert np.isfinite(offline["values"]).all()
    assert meta["bot4.feature_schema_hash"] == str(records.FEATURE_SCHEMA_HASH)
    assert json.loads(meta["bot4.feature_names"]) == list(records.FEATURE_NAMES)
    assert json.loads(meta["bot4.symbols"]) == ["ETH-USDT"]
    columns = pq.read_schema(path).names
    assert columns[-records.N_FEATURES:] == list(records.FEATURE_NAMES)


def test_rows_are_point_in_time_a_prefix_of_the_input_gives_the_same_rows(built):
    config, market, _, path, _ = built
    full, _ = feature_build.read(path)
    cut_ts = int(market["origin_ts"][len(market) // 3])
    prefix = market[market["origin_ts"] <= cut_ts]
    runner = feature_build.FeatureRunner(config)
    rows = np.concatenate([v.copy() for v in runner.run([prefix])])
    assert rows["origin_ts"].max() <= cut_ts < full["origin_ts"].max()
    rows["stage_ts"] = 0
    assert rows.tobytes() == full[:len(rows)].tobytes()


def test_the_online_store_after_a_build_holds_each_instruments_last_row(built):
    config, market, _, path, _ = built
    full, _ = feature_build.read(path)
    runner = feature_build.FeatureRunner(config)
    for _ in runner.run([market]):
        pass
    seqs, slots = runner.state[4], runner.state[5]
    key = instrument_key(0, 0)
    assert seqs[key * 8] > 0 and seqs[key * 8] % 2 == 0
    stored = slots[key:key + 1].copy()
    stored["stage_ts"] = 0
    assert stored.tobytes() == full[-1:].tobytes()


def test_build_without_recorded_data_names_the_key_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"feed.source='synthetic'.*feed.files.*--journal"):
        feature_build.market_source(Config(), None)
    done = subprocess.run([sys.executable, "-m", "tools.cli", "features", "build", "--out", str(tmp_path / "x")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "feed.source" in done.stderr
    with pytest.raises(ConfigError, match=r"--journal .*: no market stream there"):
        feature_build.market_source(Config(), str(tmp_path))


def test_a_file_from_another_feature_schema_is_refused(built, tmp_path):
    *_, path, _ = built
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[b"bot4.feature_schema_hash"] = b"12345"
    other = tmp_path / "other.parquet"
    pq.write_table(table.replace_schema_metadata(meta), other)
    with pytest.raises(ValueError, match="feature_schema_hash=12345.*rebuild"):
        feature_build.read(other)
