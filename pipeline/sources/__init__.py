"""Replay sources: recorded market data files -> MARKET_EVENT records (``stages.records``).

Parsers (each takes a path or the file's bytes, plain, gzip or zip, and returns a :class:`ParseResult`):
:func:`parse_binance_ws` (raw websocket captures), :func:`parse_tardis` (Tardis.dev CSV),
:func:`parse_binance_depth` and :func:`parse_binance_trades` (Binance public-data CSV), and
:func:`parse_file`, which sniffs the format. :func:`merge` orders several results into one stream by
receive time and numbers it; :class:`Pacer` releases that stream at ×1, ×N or as fast as possible.
Ids come from a caller's :class:`SymbolTable`. Malformed input never raises: each bad line is counted
in ``ParseResult.bad`` with its reason.
"""
from pipeline.sources.binance_csv import parse_binance_depth, parse_binance_trades
from pipeline.sources.binance_ws import parse_binance_ws
from pipeline.sources.inputs import ParseResult
from pipeline.sources.recordings import Pacer, UnknownFormatError, merge, parse_file, refusal_markers, sniff
from pipeline.sources.symbols import SymbolTable, UnknownInstrumentError
from pipeline.sources.sync import mark_unsynced
from pipeline.sources.tardis import parse_tardis

__all__ = ["ParseResult", "Pacer", "SymbolTable", "UnknownFormatError", "UnknownInstrumentError", "mark_unsynced",
           "merge", "parse_binance_depth", "parse_binance_trades", "parse_binance_ws", "parse_file", "parse_tardis",
           "refusal_markers", "sniff"]
