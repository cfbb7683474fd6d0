"""The universe a run can hold: venues, symbols, and the instrument key that numbers each (venue, symbol).

A venue and a symbol are the small indices carried by every record (``venue``, ``symbol``); the key is the
row of that instrument in every per-instrument table (books, features, positions, limits, GARCH). The key
functions are plain Python, so a Python caller (a config check, a store reader) pays no numba dispatch or
start-up, and ``register_jitable`` compiles them into any kernel that calls them, where LLVM inlines them (no
call is left in the kernels' machine code). Not ``inline="always"``: numba 0.68's IR inlining of an overload
mis-compiled execute's intent path (the fused digest changed).
"""
from numba.extending import register_jitable

MAX_VENUES = 4
MAX_SYMBOLS = 8
MAX_KEYS = MAX_VENUES * MAX_SYMBOLS


@register_jitable
def instrument_key(venue, symbol):
    """The key of (venue, symbol): venue-major, so one venue's symbols are adjacent rows."""
    return int(venue) * MAX_SYMBOLS + int(symbol)


@register_jitable
def key_venue(key):
    return int(key) // MAX_SYMBOLS


@register_jitable
def key_symbol(key):
    return int(key) % MAX_SYMBOLS
