import numpy as np
from numba import njit

from stages.records import MARKET_EVENT
from stages.universe import MAX_KEYS, MAX_SYMBOLS, MAX_VENUES, instrument_key, key_symbol, key_venue


def test_every_instrument_has_its_own_key_and_the_key_gives_it_back():
    pairs = [(v, s) for v in range(MAX_VENUES) for s in range(MAX_SYMBOLS)]
    assert sorted(instrument_key(v, s) for v, s in pairs) == list(range(MAX_KEYS))
    assert all((key_venue(instrument_key(v, s)), key_symbol(instrument_key(v, s))) == (v, s) for v, s in pairs)


@njit
def _keys_of(events):
    out = np.empty(len(events), np.int64)
    for i in range(len(events)):
        out[i] = instrument_key(events[i]["venue"], events[i]["symbol"])
    return out


def test_a_kernel_keys_a_records_unsigned_fields_as_python_keys_ints():
    events = np.zeros(3, MARKET_EVENT)
    events["venue"], events["symbol"] = (0, 1, MAX_VENUES - 1), (MAX_SYMBOLS - 1, 0, 5)
    assert _keys_of(events).tolist() == [instrument_key(int(e["venue"]), int(e["symbol"])) for e in events]
    assert _keys_of(events).tolist() == [MAX_SYMBOLS - 1, MAX_SYMBOLS, MAX_KEYS - 3]
