"""Where numba keeps its on-disk cache: a directory keyed by a hash of the sources a cached function may
inline. numba checks only the timestamp of a function's own file, so a kernel inlined from another module
would otherwise run stale machine code after an edit.

Each floor of the project (``shm``, then ``stages``, then ``pipeline``) calls :func:`use_sources` with its own
package and the ones below it when it is imported; a function's cache directory is fixed when it is
decorated, so each floor's functions are keyed by the sources they can reach. The set only widens: a lower
floor imported after a higher one keeps the wider key (a pipeline function decorated then may still inline
another pipeline module).

numba writes each cache file atomically (a temporary file renamed over it) but reads, extends and rewrites a
function's index without a lock: two processes saving different signatures of one function at once can drop
one, or leave the index naming the other's data file. Every save of a process that imported this module holds
an exclusive flock on a file in the function's cache directory, so kernels may compile in parallel processes.
"""
import fcntl
import hashlib
import os
import shutil
import time
from pathlib import Path


_hashed: frozenset = frozenset()
SAVE_LOCK = ".bot4-save.lock"


def use_sources(*packages: Path) -> None:
    global _hashed
    import numba

    _lock_saves()
    if os.environ.get("NUMBA_CACHE_DIR") or frozenset(packages) <= _hashed:
        return  # the operator chose, or a wider key is in use
    _hashed = frozenset(packages)
    digest = hashlib.blake2b(digest_size=8)
    root = packages[0].parent
    for package in packages:
        for path in sorted(package.rglob("*.py")):  # subpackages too
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bot4" / "numba"
    chosen = base / digest.hexdigest()
    numba.config.CACHE_DIR = str(chosen)
    _prune(base, keep=chosen)


def _prune(base: Path, keep: Path, max_age_s: float = 7 * 86400) -> None:
    """Caches of source versions unused for a week go (another checkout may still use a recent one); the one
    in use is touched, so an in-use floor's cache that is never rewritten is not taken for unused."""
    try:
        keep.mkdir(parents=True, exist_ok=True)
        os.utime(keep)
        for entry in base.iterdir():
            if entry != keep and time.time() - entry.stat().st_mtime > max_age_s:
                shutil.rmtree(entry, ignore_errors=True)
    except OSError:
        pass


def _lock_saves() -> None:
    """numba's index read-modify-write under an exclusive flock per cache directory (once per process)."""
    from numba.core import caching

    save = caching.IndexDataCacheFile.save
    if getattr(save, "bot4_locked", False):
        return

    def locked_save(self, key, data):
        with open(os.path.join(self._cache_path, SAVE_LOCK), "a") as lock:  # numba created the directory
            fcntl.flock(lock, fcntl.LOCK_EX)
            save(self, key, data)

    locked_save.bot4_locked = True
    caching.IndexDataCacheFile.save = locked_save
