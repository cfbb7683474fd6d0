import pytest

from pipeline.config import Config, ConfigError, from_dict, load
from pipeline.topology import plan
from shm import idle


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
    small = plan(Config(), cores=[0, 1])
    assert {p.core for p in small.values()} == {0, 1}
    assert all(p.idle == idle.YIELDING and not p.dedicated for p in small.values())
    assert small["feed"].core != small["validate"].core  # neighbours on different cores
    big = plan(Config(), cores=list(range(16)))
    cores = [p.core for p in big.values()]
    assert len(set(cores)) == len(cores) and 0 not in cores  # a core each, core 0 left to the OS
    assert all(p.idle == idle.BUSY_SPIN and p.dedicated for p in big.values())
    forced = plan(Config().with_overrides(topology={"idle": "blocking"}), cores=list(range(16)))
    assert all(p.idle == idle.BLOCKING for p in forced.values())
