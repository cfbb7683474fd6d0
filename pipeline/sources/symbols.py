"""The symbol table: (venue name, symbol name) as written in a file -> (venue id, symbol id) in records.

Ids are positions in the caller's lists, so they are stable across runs, files and formats (journals,
the feature store and the risk limits all key on them). Symbol ids are global, not per venue: Binance
spot ``BTCUSDT`` and Binance USDⓈ-M ``BTCUSDT`` share the symbol id and differ by venue id, which is what
cross-venue logic wants.

Names match loosely: venue names ignore case; symbol names ignore case and the separators ``- _ / :``
and spaces, so a config's ``BTC-USDT`` matches Binance's ``BTCUSDT`` and Tardis's ``BTCUSDT``. An entry
may be a tuple of aliases that share one id, e.g. ``("binance-futures", "binance-usdm")`` or
``("BTCUSD_PERP", "BTC-USD")``.

Unknown instruments: with ``strict=True`` (the default) a well-formed name that is not in the table
raises :class:`UnknownInstrumentError` naming the file, line and name: replaying data nobody configured
is a configuration mistake, and quietly inventing ids would make them depend on file order. With
``strict=False`` the table grows: the name gets the next free id and is listed in ``added`` (for
exploration tools; validate's unknown-instrument rule still quarantines ids beyond the configured
counts). A name that is not even well-formed (empty, control bytes, absurdly long: corrupted input)
never raises; parsers count its line as malformed (``bad_symbol``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence, Union

Names = Union[str, Sequence[str]]

_SEPARATORS = re.compile(r"[-_/: ]")
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/ -]{0,63}")
MAX_ID = 0xFFFF  # records store ids as uint16


class UnknownInstrumentError(LookupError):
    """A well-formed venue or symbol name that the (strict) symbol table does not know."""

    def __init__(self, source: str, line: int, venue: str, symbol: str, what: str):
        self.source, self.line, self.venue, self.symbol = source, line, venue, symbol
        super().__init__(f"{source}:{line}: unknown {what} in instrument {venue!r}/{symbol!r}: "
                         f"add it to the symbol table (or use SymbolTable(strict=False))")


def well_formed(name) -> bool:
    return type(name) is str and _WELL_FORMED.fullmatch(name) is not None


def require_venue(venue) -> None:
    """A venue named by the caller (not read from a file) must be a well-formed name: a typo there is a
    programming error, not bad input, so it raises instead of turning every line into a bad one."""
    if not well_formed(venue):
        raise ValueError(f"venue must be a name like 'binance', not {venue!r}")


def _venue_key(name: str) -> str:
    return name.strip().lower()


def _symbol_key(name: str) -> str:
    return _SEPARATORS.sub("", name).upper()


@dataclass
class SymbolTable:
    venues: Sequence[Names]
    symbols: Sequence[Names]
    strict: bool = True
    added: list = field(default_factory=list)  # (kind, name, id) assigned when strict=False

    def __post_init__(self):
        self._venue_ids = self._index(self.venues, _venue_key)
        self._symbol_ids = self._index(self.symbols, _symbol_key)
        self._n_venues = len(self.venues)
        self._n_symbols = len(self.symbols)

    @staticmethod
    def _index(entries: Iterable[Names], key) -> dict:
        ids = {}
        for i, entry in enumerate(entries):
            for name in ((entry,) if isinstance(entry, str) else entry):
                k = key(name)
                if ids.setdefault(k, i) != i:
                    raise ValueError(f"symbol table: {name!r} is listed twice (ids {ids[k]} and {i})")
        if len(entries) > MAX_ID + 1:
            raise ValueError(f"symbol table: at most {MAX_ID + 1} entries")
        return ids

    @property
    def n_venues(self) -> int:
        return self._n_venues

    @property
    def n_symbols(self) -> int:
        return self._n_symbols

    def _resolve(self, ids: dict, key: str, name: str, kind: str, venue: str, symbol: str, source: str,
                 line: int) -> int:
        found = ids.get(key)
        if found is not None:
            return found
        if self.strict:
            raise UnknownInstrumentError(source, line, venue, symbol, kind)
        new_id = (self._n_venues if kind == "venue" else self._n_symbols)
        if new_id > MAX_ID:
            raise UnknownInstrumentError(source, line, venue, symbol, f"{kind} (table full)")
        ids[key] = new_id
        if kind == "venue":
            self._n_venues += 1
        else:
            self._n_symbols += 1
        self.added.append((kind, name, new_id))
        return new_id

    def lookup(self, venue: str, symbol: str, source: str = "<caller>", line: int = 0) -> tuple[int, int] | None:
        """(venue id, symbol id); None if a name is not well-formed (the caller counts the line as bad);
        raises UnknownInstrumentError for a well-formed unknown name when strict."""
        if not (well_formed(venue) and well_formed(symbol)):
            return None
        v = self._resolve(self._venue_ids, _venue_key(venue), venue, "venue", venue, symbol, source, line)
        s = self._resolve(self._symbol_ids, _symbol_key(symbol), symbol, "symbol", venue, symbol, source, line)
        return v, s
