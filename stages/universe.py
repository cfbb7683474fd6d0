"""The universe a run can hold: venues, symbols, and the instrument key that numbers each (venue, symbol).

A venue and a symbol are the small indices carried by every record (``venue``, ``symbol``); the key is the
row of that instrument in every per-instrument table (books, features, positions, limits, GARCH). The key
functions are njit (inlined where a kernel calls them) and plain callables from Python.
"""
from numba import njit

MAX_VENUES = 4
MAX_SYMBOLS = 8
MAX_KEYS = MAX_VENUES * MAX_SYMBOLS


@njit(cache=True, inline="always")
def instrument_key(venue, symbol):
    """The key of (venue, symbol): venue-major, so one venue's symbols are adjacent rows."""
    return int(venue) * MAX_SYMBOLS + int(symbol)


@njit(cache=True, inline="always")
def key_venue(key):
    return int(key) // MAX_SYMBOLS


@njit(cache=True, inline="always")
def key_symbol(key):
    return int(key) % MAX_SYMBOLS
