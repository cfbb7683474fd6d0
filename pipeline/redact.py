"""Secrets never leave the process in clear: every message that may carry a DSN goes through ``mask``.

A DSN's password is written either in the URL (``postgresql://user:PASSWORD@host/db``) or as a libpq
keyword (``password=PASSWORD``, in a keyword DSN or a URL query); both are masked. The password itself
belongs in PostgreSQL's own places (``PGPASSFILE``, ``~/.pgpass``, ``PGPASSWORD``), which asyncpg reads.
"""
from __future__ import annotations

import re

MASK = "***"

# user:password@ in a URL's authority (the password may hold any character but '@' and '/').
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@/\s]*)(?=@)")
# password=... as a keyword (keyword DSN, or ?password= / &password= in a URL), quoted or bare.
_KEYWORD_PASSWORD = re.compile(r"(?P<head>(?:^|[\s?&])password\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|[^\s&]*)",
                               re.IGNORECASE)


def mask(text: str) -> str:
    """``text`` with every DSN password replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    return _KEYWORD_PASSWORD.sub(lambda m: m["head"] + MASK, text)


def has_password(dsn: str) -> bool:
    """Whether ``dsn`` carries a password in itself (it should not: use PGPASSFILE or PGPASSWORD)."""
    return mask(dsn) != dsn
