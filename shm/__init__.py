"""Transport: POSIX shared-memory segments, SPSC rings, idle strategies, the control block.

Knows nothing about trading: records are opaque fixed-size numpy structured dtypes.

Importing this package first points numba's on-disk cache at a directory keyed by a hash of the
project's sources. numba checks only the timestamp of a cached function's own file, so a kernel
inlined into the duty cycle from another module would otherwise run stale machine code after an edit.
"""
import hashlib
import os
from pathlib import Path


def _source_hash() -> str:
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.blake2b(digest_size=8)
    for package in ("shm", "stages", "pipeline"):
        for path in sorted((root / package).rglob("*.py")):  # subpackages too (stages/sources has kernels)
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _configure_numba_cache() -> None:
    import numba

    if os.environ.get("NUMBA_CACHE_DIR"):
        return  # the operator chose
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bot4" / "numba"
    numba.config.CACHE_DIR = str(base / _source_hash())
    _prune(base, keep=Path(numba.config.CACHE_DIR).name)


def _prune(base: Path, keep: str, max_age_s: float = 7 * 86400) -> None:
    """Caches of source versions unused for a week go (another checkout may still use a recent one)."""
    import shutil
    import time
    try:
        for entry in base.iterdir():
            if entry.name != keep and time.time() - entry.stat().st_mtime > max_age_s:
                shutil.rmtree(entry, ignore_errors=True)
    except OSError:
        pass


_configure_numba_cache()
