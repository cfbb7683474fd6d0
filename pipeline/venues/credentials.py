"""A live venue's API credentials: from environment variables, or from a file only its owner can read.

Where they come from, in order:

1. ``path`` when the caller names a file (the config's credentials file for the venue);
2. the environment: ``BOT4_<VENUE>_API_KEY`` and ``BOT4_<VENUE>_API_SECRET`` (and ``BOT4_<VENUE>_API_PASSWORD``
   for venues that want a passphrase), ``<VENUE>`` being the venue's name upper-cased with every character
   outside ``A-Z0-9`` made ``_``;
3. the file named by ``BOT4_<VENUE>_CREDENTIALS``.

A file is TOML: ``api_key = "..."``, ``api_secret = "..."`` (optional ``api_password``), at the top level or in a
table named for the venue (one file may then hold several venues). It must belong to the user running the
process and be readable by nobody else (no group or other permission bits): anything else is refused with the
fix (``chmod 600 <file>``), before a byte of it is read.

The secret never leaves the object in clear except through :meth:`Credentials.ccxt_config` (what the ccxt client
is built with): ``repr``/``str`` show the venue, where the credentials came from and the key's first 4
characters only; errors name variables and files, never values; the object refuses to be pickled (so it cannot
ride into a journal or another process by accident); :meth:`Credentials.mask` blanks the key and the secret out
of any text (log lines, exception messages) before it is shown.
"""
from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path

MASK = "***"
KEY_SHOWN = 4   # characters of the API key shown by repr/str


class CredentialsError(ValueError):
    """Credentials missing, malformed or unsafely stored. The message never holds a credential."""


def env_prefix(venue: str) -> str:
    """``BOT4_<VENUE>_``: the prefix of the venue's environment variables."""
    name = re.sub(r"[^A-Z0-9]", "_", venue.upper())
    if not name:
        raise CredentialsError("a venue name is needed to find its credentials")
    return f"BOT4_{name}_"


class Credentials:
    """A venue's API key and secret (and passphrase, where the venue has one)."""

    __slots__ = ("venue", "source", "_key", "_secret", "_password")

    def __init__(self, venue: str, api_key: str, api_secret: str, password: str = "", source: str = ""):
        for what, value in (("API key", api_key), ("API secret", api_secret)):
            if not isinstance(value, str) or not value.strip():
                raise CredentialsError(f"{venue}: the {what} is empty{_from(source)}")
            if value != value.strip() or any(ch.isspace() for ch in value):
                raise CredentialsError(f"{venue}: the {what} holds whitespace{_from(source)}")
        self.venue, self.source = venue, source
        self._key, self._secret, self._password = api_key, api_secret, password or ""

    @property
    def api_key(self) -> str:
        return self._key

    def key_hint(self) -> str:
        """The key's first few characters: enough to tell keys apart in a status line, not to use one."""
        return self._key[:KEY_SHOWN] + "…" if len(self._key) > KEY_SHOWN else MASK

    def ccxt_config(self) -> dict:
        """The ccxt client's credential settings (``apiKey``, ``secret``, ``password`` where set)."""
        config = {"apiKey": self._key, "secret": self._secret}
        if self._password:
            config["password"] = self._password
        return config

    def mask(self, text) -> str:
        """``text`` with the key, the secret and the passphrase replaced by ``***``."""
        text = str(text)
        for value in sorted((v for v in (self._secret, self._password, self._key) if v), key=len, reverse=True):
            text = text.replace(value, MASK)
        return text

    def __repr__(self) -> str:
        return f"Credentials(venue={self.venue!r}, key={self.key_hint()!r}, source={self.source!r})"

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return (isinstance(other, Credentials) and self.venue == other.venue and self._key == other._key
                and self._secret == other._secret and self._password == other._password)

    __hash__ = None

    def __reduce__(self):
        raise TypeError("credentials are not serialised: each process loads its own (pipeline.venues.credentials)")

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def _from(source: str) -> str:
    return f" (from {source})" if source else ""


def load(venue: str, path: str | os.PathLike | None = None, env=None) -> Credentials:
    """``venue``'s credentials: from ``path`` when given, else the environment (see the module's doc)."""
    env = os.environ if env is None else env
    prefix = env_prefix(venue)
    if path is not None:
        return from_file(venue, path)
    key_var, secret_var, password_var = prefix + "API_KEY", prefix + "API_SECRET", prefix + "API_PASSWORD"
    key, secret = env.get(key_var), env.get(secret_var)
    if key is not None or secret is not None:
        if key is None or secret is None:
            missing, given = (key_var, secret_var) if key is None else (secret_var, key_var)
            raise CredentialsError(f"{venue}: {given} is set but {missing} is not: set both, or neither and use a "
                                   f"credentials file ({prefix}CREDENTIALS)")
        return Credentials(venue, key, secret, env.get(password_var, ""), source=f"environment {key_var}, {secret_var}")
    file_var = prefix + "CREDENTIALS"
    if env.get(file_var):
        return from_file(venue, env[file_var])
    raise CredentialsError(f"{venue}: no credentials: set {key_var} and {secret_var}, or {file_var} to a file only "
                           f"you can read (chmod 600) holding api_key and api_secret")


def from_file(venue: str, path: str | os.PathLike) -> Credentials:
    """Credentials from a TOML file that belongs to this user and that nobody else can read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CredentialsError(f"{venue}: credentials file {path} does not exist") from None
    except PermissionError:
        raise CredentialsError(f"{venue}: credentials file {path} cannot be read by this user") from None
    try:
        st = os.fstat(fd)  # the file opened, not the name: nothing can swap it between the check and the read
        if not stat.S_ISREG(st.st_mode):
            raise CredentialsError(f"{venue}: credentials file {path} is not a regular file")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise CredentialsError(f"{venue}: credentials file {path} belongs to uid {st.st_uid}, not to this user "
                                   f"(uid {os.geteuid()}): give it to this user (chown) and chmod 600 {path}")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise CredentialsError(f"{venue}: credentials file {path} can be read or written by others (mode "
                                   f"{mode:04o}): make it readable by its owner only with: chmod 600 {path}")
        with os.fdopen(fd, "rb") as f:
            fd = -1
            raw = f.read()
    finally:
        if fd >= 0:
            os.close(fd)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        # the decoder's message gives a position, not the text; the cause is dropped all the same
        where = f" ({exc})" if isinstance(exc, tomllib.TOMLDecodeError) else " (not UTF-8)"
        raise CredentialsError(f"{venue}: credentials file {path} is not valid TOML{where}") from None
    table = data.get(venue) if isinstance(data.get(venue), dict) else data
    source = f"file {path}"
    missing = [k for k in ("api_key", "api_secret") if not isinstance(table.get(k), str)]
    if missing:
        raise CredentialsError(f"{venue}: credentials file {path} has no {' or '.join(missing)} (strings, at the top "
                               f"level or in a [{venue}] table)")
    password = table.get("api_password", "")
    if not isinstance(password, str):
        raise CredentialsError(f"{venue}: credentials file {path}: api_password must be a string")
    return Credentials(venue, table["api_key"], table["api_secret"], password, source=source)
