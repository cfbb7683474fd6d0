"""GARCH(1,1) conditional variance: the online recursion, arch's start-up value, h-step forecasts, and bars.

The model, on residuals ``e_t = r_t - mu`` of bar returns in basis points::

    h_t = omega + alpha * e_{t-1}**2 + beta * h_{t-1}

Parameters are fitted offline with ``arch`` (``tools.fit_garch``); the risk stage calls :func:`update` once
per closed bar. :func:`filter_variance` runs the same update over a whole series started the way arch starts
it (the first variance uses the backcast for both the lagged shock and the lagged variance), so the online
recursion can be checked against ``arch``'s ``conditional_volatility``.

Bars are cut by event time: bar ``b`` holds events with ``b * bar_ns <= ts < (b + 1) * bar_ns`` and its
close is the last mid seen by then; a bar without events closes at the previous close (return 0). The fit
tool and the risk stage both go through :func:`bar_returns`' rule, so they see the same returns.

The fitted parameters live in a JSON file (``risk.garch_params``; the shipped one is
``models/garch_params.json``): :func:`load_params` checks it against the bar length and :func:`params_for`
picks a symbol's entry or the pooled ``default``. Plain Python, read when a risk kernel is built; a running
pipeline takes refits through its published table (:data:`PUBLISHED_GARCH`, ``pipeline.store.garch_store``), which
the risk stage checks at each bar boundary.
"""
import json
import math
from pathlib import Path

import numpy as np
from numba import njit

from stages.universe import MAX_KEYS, MAX_SYMBOLS, MAX_VENUES, instrument_key

FORMAT_VERSION = 1
DEFAULT_PARAMS_PATH = Path(__file__).resolve().parent.parent / "models" / "garch_params.json"
DEFAULT_KEY = "default"
BACKCAST_BARS = 75       # arch's backcast: EWMA (0.94) of the first 75 squared residuals
BACKCAST_DECAY = 0.94
SYMBOL_NAME_BYTES = 32

# The parameters a running pipeline uses, as published to it (one seqlock slot: ``pipeline.store.garch_store``).
PUBLISHED_GARCH = np.dtype([
    ("params", np.float64, (MAX_KEYS, 3)),   # omega, alpha, beta per instrument key
    ("bar_ns", np.int64),                    # the bar they are per; a publisher must match the run's
    ("fitted_ns", np.int64),                 # the newest fit among the entries used (0: not known)
    ("published_ns", np.int64),
    ("symbols", np.uint8, (MAX_SYMBOLS, SYMBOL_NAME_BYTES)),  # the run's symbols by index, UTF-8, NUL-padded
])


@njit(cache=True)
def update(h, e, omega, alpha, beta):
    """The next bar's conditional variance from this bar's variance ``h`` and residual ``e``."""
    return omega + alpha * e * e + beta * h


@njit(cache=True)
def backcast(resids):
    """arch's start-up variance: an EWMA (weights 0.94**i, normalised) of the first 75 squared residuals."""
    tau = min(BACKCAST_BARS, resids.shape[0])
    num = 0.0
    den = 0.0
    w = 1.0
    for i in range(tau):
        num += w * resids[i] * resids[i]
        den += w
        w *= BACKCAST_DECAY
    return num / den if den > 0.0 else 0.0


@njit(cache=True)
def filter_variance(resids, omega, alpha, beta, start, out):
    """Conditional variances of ``resids`` into ``out`` (same length), started from the backcast ``start``."""
    h = start
    e = math.sqrt(start)  # the lagged shock before the sample is the backcast too
    for t in range(resids.shape[0]):
        h = update(h, e, omega, alpha, beta)
        out[t] = h
        e = resids[t]
    return out


@njit(cache=True)
def forecast(h_next, omega, alpha, beta, steps, out):
    """Variance forecasts 1..steps bars ahead into ``out[:steps]``, given the next bar's variance ``h_next``;
    returns their sum (the variance of the ``steps``-bar return)."""
    persistence = alpha + beta
    h = h_next
    total = 0.0
    for k in range(steps):
        out[k] = h
        total += h
        h = omega + persistence * h
    return total


@njit(cache=True)
def horizon_variance(h_next, omega, alpha, beta, steps):
    """Variance of the ``steps``-bar return: the sum of the 1..steps-ahead forecasts, in closed form."""
    persistence = alpha + beta
    if steps <= 0:
        return 0.0
    if abs(1.0 - persistence) < 1e-12:
        return steps * h_next + omega * steps * (steps - 1) / 2.0
    unconditional = omega / (1.0 - persistence)
    geometric = (1.0 - persistence ** steps) / (1.0 - persistence)
    return steps * unconditional + (h_next - unconditional) * geometric


@njit(cache=True)
def bar_returns(ts, mids, bar_ns, out):
    """Close-to-close log returns (bps) of the bars cut from ``(ts, mids)`` (ts ascending); empty bars give 0.
    Returns the number written to ``out``: the first bar only sets the first close, the last (open) bar is
    not closed."""
    n = 0
    if ts.shape[0] == 0:
        return 0
    bar = ts[0] // bar_ns
    close = mids[0]
    prev_close = 0.0  # the first bar has no previous close: it only starts the series
    for i in range(ts.shape[0]):
        b = ts[i] // bar_ns
        if b > bar:
            if prev_close > 0.0:
                out[n] = 1e4 * math.log(close / prev_close)
                n += 1
            for _ in range(b - bar - 1):
                out[n] = 0.0
                n += 1
            prev_close = close
            bar = b
        close = mids[i]
    return n


def returns_capacity(ts: np.ndarray, bar_ns: int) -> int:
    return 0 if len(ts) == 0 else int(ts[-1] // bar_ns - ts[0] // bar_ns) + 1


class GarchParamsError(ValueError):
    """A GARCH parameter file is missing, malformed or does not fit the configured bar length."""


def symbol_key(name: str) -> str:
    """Symbols match across spellings: BTC-USDT, btc_usdt and BTCUSDT are one key."""
    return "".join(ch for ch in name if ch.isalnum()).upper()


def usable(entry: dict) -> bool:
    return all(k in entry for k in ("omega", "alpha", "beta"))


def load_params(path: str | Path, bar_s: float) -> dict:
    """The parameter document at ``path``, checked against the configured bar length."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise GarchParamsError(f"risk.garch_params={str(path)!r} does not exist; run `bot4 risk fit-garch --out "
                               f"{path}` or leave risk.garch_params empty for the shipped file") from None
    except json.JSONDecodeError as exc:
        raise GarchParamsError(f"risk.garch_params={str(path)!r} is not valid JSON ({exc}); refit it") from None
    if doc.get("version") != FORMAT_VERSION or "symbols" not in doc:
        raise GarchParamsError(f"risk.garch_params={str(path)!r} is not a version {FORMAT_VERSION} GARCH file")
    if abs(float(doc.get("bar_s", -1)) - bar_s) > 1e-12:
        raise GarchParamsError(f"risk.garch_params={str(path)!r} was fitted on {doc.get('bar_s')} s bars but "
                               f"risk.bar_s={bar_s}; refit with --bar-s {bar_s} or set risk.bar_s={doc.get('bar_s')}")
    if not usable(doc["symbols"].get(DEFAULT_KEY, {})):
        raise GarchParamsError(f"risk.garch_params={str(path)!r} has no usable '{DEFAULT_KEY}' entry; refit it")
    return doc


def entry_for(doc: dict, symbol: str) -> dict:
    entry = doc["symbols"].get(symbol_key(symbol), {})
    return entry if usable(entry) else doc["symbols"][DEFAULT_KEY]


def params_for(doc: dict, symbol: str) -> tuple[float, float, float]:
    entry = entry_for(doc, symbol)
    return float(entry["omega"]), float(entry["alpha"]), float(entry["beta"])


def key_table(doc: dict, symbols: list[str]) -> np.ndarray:
    """(MAX_KEYS, 3) omega, alpha, beta per instrument key: symbol ``s`` on every venue takes its own entry
    (or ``default``); keys of unconfigured symbols take ``default``."""
    table = np.tile(params_for(doc, DEFAULT_KEY), (MAX_KEYS, 1))
    for s, symbol in enumerate(symbols):
        for venue in range(MAX_VENUES):
            table[instrument_key(venue, s)] = params_for(doc, symbol)
    return table


def fitted_ns(doc: dict, symbols: list[str]) -> int:
    """When the newest of the entries ``symbols`` use was fitted (ns since the epoch; 0 if none says)."""
    from datetime import datetime, timezone
    newest = 0
    for symbol in [*symbols, DEFAULT_KEY]:
        stamp = entry_for(doc, symbol).get("fitted_at")
        if stamp:
            when = datetime.fromisoformat(stamp)
            when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)  # fit-garch writes UTC
            newest = max(newest, int(when.timestamp()) * 10 ** 9 + when.microsecond * 1000)
    return newest


def published_record(doc: dict, symbols: list[str], bar_ns: int, now_ns: int) -> np.ndarray:
    """The :data:`PUBLISHED_GARCH` record of ``doc`` for a run trading ``symbols``."""
    record = np.zeros(1, PUBLISHED_GARCH)
    record[0]["params"] = key_table(doc, symbols)
    record[0]["bar_ns"] = bar_ns
    record[0]["fitted_ns"] = fitted_ns(doc, symbols)
    record[0]["published_ns"] = now_ns
    for s, symbol in enumerate(symbols):
        raw = symbol.encode()
        if len(raw) > SYMBOL_NAME_BYTES:
            raise ValueError(f"symbol {symbol!r} is longer than {SYMBOL_NAME_BYTES} bytes")
        record[0]["symbols"][s, :len(raw)] = np.frombuffer(raw, np.uint8)
    return record[0]


def published_symbols(record: np.void) -> list[str]:
    """The symbol names a :data:`PUBLISHED_GARCH` record was made for, by index."""
    names = [bytes(row).rstrip(b"\0").decode() for row in record["symbols"]]
    while names and not names[-1]:
        names.pop()
    return names
