import os
import re
import subprocess
import sys
import uuid

import pytest

from pipeline.config import Config, ConfigError, from_dict, load
from pipeline.hosting.topology import place
from shm import idle
from tests.conftest import ROOT


def test_defaults_are_valid_and_typed():
    config = Config().check()
    assert config.feed.rate_eps == 10_000.0 and config.rings.capacity == 4096


@pytest.mark.parametrize("data,message", [
    ({"feed": {"rate_epss": 5}}, "unknown key 'feed.rate_epss'; did you mean 'feed.rate_eps'?"),
    ({"fed": {}}, "unknown section [fed]; did you mean [feed]?"),
    ({"rings": {"capacity": 1000}}, "rings.capacity=1000 is invalid: use a power of two >= 16"),
    ({"feed": {"seed": "x"}}, "feed.seed='x' is invalid: expected a int"),
    ({"strategy": {"quoting": 1}}, "strategy.quoting=1 is invalid: use true or false"),
    ({"topology": {"idle": "spin"}}, "topology.idle='spin' is invalid"),
    ({"feed": {"symbols": ["DOGE-USDT"]}}, "feed.symbols=('DOGE-USDT',) is invalid: choose from"),
    ({"execute": {"max_order_qty_by_symbol": ["DOGE-USDT=5"]}},
     "execute.max_order_qty_by_symbol='DOGE-USDT=5' is invalid: 'DOGE-USDT' is not one of feed.symbols"),
    ({"feed": {"source": "ccxt", "venues": ["spot"]}}, 'feed.ccxt_exchanges=() is invalid: give "spot=EXCHANGE"'),
    ({"feed": {"source": "ccxt", "venues": ["spot"], "ccxt_exchanges": ["spot=binanse"]}},
     "'binanse' is not a ccxt.pro exchange id"),
    ({"feed": {"source": "ccxt", "venues": ["spot"], "ccxt_exchanges": ["spot=binance"],
               "ccxt_ws_urls": ["spot=http://127.0.0.1:1"]}}, 'use "VENUE=ws://HOST:PORT"'),
    ({"feed": {"source": "ccxt", "venues": ["spot"], "ccxt_exchanges": ["spot=binance"], "ccxt_reconnect_min_ms": 0}},
     "feed.ccxt_reconnect_min_ms=(0.0, 10000.0) is invalid"),
])
def test_a_bad_value_names_the_key_and_the_fix(data, message):
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    assert message in str(err.value)


def test_toml_file_overrides_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[feed]\nrate_eps = 500\nvenues = ["a"]\n[strategy]\nquoting = false\n')
    config = load(path)
    assert config.feed.rate_eps == 500.0 and config.feed.venues == ("a",) and config.strategy.quoting is False
    with pytest.raises(ConfigError, match="not valid TOML"):
        (tmp_path / "bad.toml").write_text("[feed\n")
        load(tmp_path / "bad.toml")


def test_auto_topology_shares_two_cores_with_yielding_and_gives_sixteen_a_core_each():
    small = place(Config(), cores=[0, 1])
    assert {p.core for p in small.values()} == {0, 1}
    assert all(p.idle == idle.YIELDING and not p.dedicated for p in small.values())
    assert small["feed"].core != small["validate"].core  # neighbours on different cores
    big = place(Config(), cores=list(range(16)))
    cores = [p.core for p in big.values()]
    assert len(set(cores)) == len(cores) and 0 not in cores  # a core each, core 0 left to the OS
    assert all(p.idle == idle.BUSY_SPIN and p.dedicated for p in big.values())
    forced = place(Config().with_overrides(topology={"idle": "blocking"}), cores=list(range(16)))
    assert all(p.idle == idle.BLOCKING for p in forced.values())


def _numeric_fields():
    import dataclasses
    from typing import get_type_hints
    for section in dataclasses.fields(Config):
        cls = get_type_hints(Config)[section.name]
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (int, float):
                yield section.name, f.name, hints[f.name]


@pytest.mark.parametrize("section,key,value", [
    ("risk", "max_position_usd", float("inf")),
    ("risk", "max_order_usd", float("inf")),
    ("execute", "max_position_usd", float("inf")),
    ("execute", "max_order_usd", float("inf")),
    ("execute", "max_order_qty", float("inf")),
    ("watchdog", "heartbeat_stale_ms", float("inf")),
    ("feed", "rate_eps", float("inf")),
    ("feed", "rate_eps", float("nan")),
    ("rings", "capacity", 1099511627776),
    ("journal", "tap_capacity", 2 ** 40),
])
def test_the_issues_unbounded_values_are_refused_naming_key_and_range(section, key, value):
    from pipeline.config import RANGES
    with pytest.raises(ConfigError) as err:
        from_dict({section: {key: value}})
    assert f"{section}.{key}=" in str(err.value)
    assert str(RANGES[section][key]) in str(err.value)


def test_every_numeric_key_has_a_finite_range_and_inf_nan_and_huge_are_refused():
    import math

    from pipeline.config import RANGES
    walked = 0
    for section, key, kind in _numeric_fields():
        bounds = RANGES[section].get(key)
        assert bounds is not None, f"{section}.{key} has no declared range"
        assert math.isfinite(bounds.lo) and math.isfinite(bounds.hi), f"{section}.{key}: {bounds}"
        default = getattr(getattr(Config(), section), key)
        assert bounds.contains(default), f"{section}.{key}: default {default} outside {bounds}"
        bad = [bounds.hi + max(1, abs(bounds.hi)) if kind is float else int(bounds.hi) + 1,
               bounds.lo - max(1, abs(bounds.lo)) if kind is float else int(bounds.lo) - 1]
        if kind is float:
            bad += [float("inf"), float("-inf"), float("nan")]
        for value in bad:
            with pytest.raises(ConfigError) as err:
                from_dict({section: {key: value}})
            message = str(err.value)
            assert key in message, (value, message)
            if f"{section}.{key}=" not in message or str(bounds) not in message:
                # only the section's own check (some name two keys) may say it another way
                with pytest.raises(ConfigError, match=re.escape(message)):
                    getattr(Config(), section).__class__(**{key: kind(value)}).check()
                assert math.isfinite(value), (value, message)
        walked += 1
    assert walked > 80


def test_topology_cores_must_name_cores_this_process_may_use():
    allowed = sorted(os.sched_getaffinity(0))
    for cores in ([0, 1, 2, 3, 4, 5, 6, 7, 8, 99], ["a"] * 10, [True] * 10, [-1] * 10):
        with pytest.raises(ConfigError, match=r"topology\.cores=.*is invalid") as err:
            from_dict({"topology": {"cores": cores}})
        assert "os.sched_getaffinity" in str(err.value) or "whole number" in str(err.value)
    config = from_dict({"topology": {"cores": [allowed[0]] * 10}})
    assert config.topology.cores == (allowed[0],) * 10


@pytest.mark.parametrize("toml,key", [
    ("[execute]\nmax_position_usd = inf\n", "execute.max_position_usd=inf"),
    ("[topology]\ncores = [0, 1, 2, 3, 4, 5, 6, 7, 8, 99]\n", "topology.cores="),
])
def test_the_cli_refuses_an_out_of_range_value_with_exit_2(tmp_path, toml, key):
    bad = tmp_path / "bad.toml"
    bad.write_text(toml)
    out = subprocess.run([sys.executable, "-m", "tools.cli", "run", "--config", str(bad), "--duration", "0.5",
                          "--name", f"t{uuid.uuid4().hex[:8]}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert key in out.stderr and "Traceback" not in out.stderr
    assert re.search(r"[\[(][-0-9,.]+, [-0-9,.]+[\])]", out.stderr), out.stderr


SECRET = "s3cr3t-pw"


def test_a_config_error_never_shows_the_database_password():
    with pytest.raises(ConfigError) as err:
        from_dict({"recorder": {"dsn": f"postgresql://bot4:{SECRET}@localhost/bot4"}})  # no journal.dir
    assert "recorder.dsn" in str(err.value) and SECRET not in str(err.value)
    with pytest.raises(ConfigError) as err:
        from_dict({"recorder": {"dsn": f"host=localhost password={SECRET} dbname=bot4"}})
    assert SECRET not in str(err.value)


def test_a_password_in_a_config_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f'[journal]\ndir = "{tmp_path}/j"\n[recorder]\ndsn = "postgresql://bot4:{SECRET}@localhost/bot4"\n')
    path.chmod(0o644)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert "chmod 600" in str(err.value) and SECRET not in str(err.value)
    path.chmod(0o600)
    assert load(path).recorder.dsn.endswith("@localhost/bot4")
    path.write_text(f'[journal]\ndir = "{tmp_path}/j"\n[recorder]\ndsn = "postgresql://bot4@localhost/bot4"\n')
    path.chmod(0o644)  # no password in it: readable is fine
    assert load(path).recorder.dsn == "postgresql://bot4@localhost/bot4"


@pytest.mark.parametrize("command", ["run", "record"])
def test_a_password_on_the_command_line_is_refused(tmp_path, command):
    out = subprocess.run([sys.executable, "-m", "tools.cli", command, "--journal", str(tmp_path / "j"),
                          "--dsn", f"postgresql://bot4:{SECRET}@localhost/bot4", "--duration", "0.5",
                          "--name", f"t{uuid.uuid4().hex[:8]}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "PGPASSFILE" in out.stderr and "PGPASSWORD" in out.stderr
    assert SECRET not in out.stdout + out.stderr


def test_a_config_file_completed_by_a_flag_loads(tmp_path):
    # record mode needs a journal: a file that says so and a --journal flag make a whole config together.
    path = tmp_path / "record.toml"
    path.write_text('[run]\nmode = "record"\n')
    config = load(str(path), {"journal": {"dir": str(tmp_path / "j")}})
    assert config.run.mode == "record" and config.journal.dir == str(tmp_path / "j")
    with pytest.raises(ConfigError, match="journal.dir"):
        load(str(path))
