"""When can a replay source vouch for an L2 book?  The F_UNSYNCED rule, per (venue, symbol).

A replay cannot ask the venue for a fresh snapshot, so it only says what the recording proves:

- Before the first snapshot (``F_SNAPSHOT`` message) of an instrument, every delta is unsynced.
- A snapshot with a sequence (Binance REST ``lastUpdateId`` = L, in ``first_seq`` and ``venue_seq``) is
  bridged by the first delta message with ``u >= L`` and ``U <= L + 1`` (Binance's spot and futures
  rules, which agree on this). A snapshot into which the source already folded the buffered diffs
  (``first_seq`` = L < ``venue_seq`` = u of the last diff folded) is the book as of that diff, so the
  next message must simply continue it. Messages
  with ``u < L`` are already inside the snapshot: stale, so unsynced (a book must not apply them).
  If the first message after the snapshot starts past ``L + 1`` the diff stream has a hole: unsynced
  until the next snapshot.
- Once bridged, each message must continue the previous one: ``pu == previous u`` when the venue sends
  ``pu`` (Binance futures), else ``U == previous u + 1`` (Binance spot). A break makes the instrument
  unsynced until the next snapshot.
- Sources without sequences (Tardis CSV) are synced from their first snapshot on.

The snapshot records themselves are never unsynced. Book-building stages still apply their own checks;
this flag is the source's statement, not a replacement for them. :func:`mark_unsynced` runs over one
file in each parser and again over the merged stream (so a capture split over two files, like
spot_btcusdt_20240808 and _20240809, stays synced across the boundary).
"""
import numpy as np
from numba import njit

from stages.records import EV_BOOK_DELTA, F_LAST, F_SNAPSHOT, F_UNSYNCED

_NONE, _BRIDGE, _SYNCED, _LOST = 0, 1, 2, 3


@njit(cache=True)
def _mark(kind, flags, key, first, last, prev, n_keys):
    state = np.zeros(n_keys, np.int8)
    base = np.zeros(n_keys, np.int64)
    in_msg = False
    unsynced = False
    cur_key = -1
    cur_last = 0
    cur_snap = 0
    clear = np.uint8(0xFF ^ F_UNSYNCED)
    for i in range(kind.shape[0]):
        if kind[i] != EV_BOOK_DELTA:
            continue
        k = key[i]
        snap = flags[i] & F_SNAPSHOT
        if in_msg and (k != cur_key or last[i] != cur_last or snap != cur_snap):
            in_msg = False  # a message without F_LAST: treat the change as a new message
        if not in_msg:
            in_msg = True
            cur_key = k
            cur_last = last[i]
            cur_snap = snap
            u = last[i]
            big_u = first[i] if first[i] != 0 else u
            pu = prev[i]
            st = state[k]
            if snap:
                unsynced = False
                # first_seq < venue_seq: buffered diffs were folded in, so the book is as of message u
                state[k] = _BRIDGE if u != 0 and first[i] >= u else _SYNCED
                base[k] = u
            elif st == _NONE or st == _LOST:
                unsynced = True
            elif u == 0 or base[k] == 0:
                unsynced = False
                state[k] = _SYNCED
                base[k] = u
            elif st == _BRIDGE:
                if u < base[k]:
                    unsynced = True
                elif big_u <= base[k] + 1:
                    unsynced = False
                    state[k] = _SYNCED
                    base[k] = u
                else:
                    unsynced = True
                    state[k] = _LOST
            else:
                contiguous = (pu == base[k]) if pu != 0 else (big_u == base[k] + 1)
                if contiguous:
                    unsynced = False
                    base[k] = u
                else:
                    unsynced = True
                    state[k] = _LOST
        if unsynced:
            flags[i] |= F_UNSYNCED
        else:
            flags[i] &= clear
        if flags[i] & F_LAST:
            in_msg = False


def instrument_keys(records: np.ndarray) -> tuple[np.ndarray, int]:
    """A dense int64 key per record for its (venue, symbol), and the number of keys."""
    packed = records["venue"].astype(np.int64) << 16 | records["symbol"].astype(np.int64)
    uniq, inverse = np.unique(packed, return_inverse=True)
    return inverse.astype(np.int64).reshape(-1), len(uniq)


def mark_unsynced(records: np.ndarray) -> None:
    """Set or clear F_UNSYNCED on every EV_BOOK_DELTA record in place, by the rule above, in stream order."""
    if len(records) == 0:
        return
    key, n_keys = instrument_keys(records)
    flags = np.ascontiguousarray(records["flags"])
    _mark(np.ascontiguousarray(records["kind"]), flags, key, np.ascontiguousarray(records["first_seq"]),
          np.ascontiguousarray(records["venue_seq"]), np.ascontiguousarray(records["prev_seq"]), n_keys)
    records["flags"] = flags
