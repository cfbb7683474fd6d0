"""Pointing a ccxt client at other origins (a loopback exchange in tests, a proxy in production): every REST and
websocket URL keeps its path, its scheme://host[:port] is replaced, so the venue's own URL layout is what gets served."""
from __future__ import annotations

from urllib.parse import urlsplit


def replace_origin(urls, origin: str):
    """Every URL string in a ccxt ``urls`` tree with its scheme://host[:port] replaced by ``origin``."""
    if isinstance(urls, dict):
        return {k: replace_origin(v, origin) for k, v in urls.items()}
    if isinstance(urls, str) and "://" in urls:
        return origin.rstrip("/") + urlsplit(urls).path
    return urls


def point_at(ex, rest_url: str = "", ws_url: str = "") -> None:
    """Replace the REST origins of ``ex`` by ``rest_url`` and its websocket origins by ``ws_url`` ("" = keep)."""
    api = dict(ex.urls["api"])
    ws = api.pop("ws", None)
    if rest_url:
        api = replace_origin(api, rest_url)
    if ws is not None:
        api["ws"] = replace_origin(ws, ws_url) if ws_url else ws
    ex.urls["api"] = api
