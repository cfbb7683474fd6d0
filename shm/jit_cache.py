"""Where numba keeps its on-disk cache: a directory per function keyed by a hash of the sources it may inline.

numba checks only a function's own file, so a kernel inlined from another module would otherwise run stale
machine code after an edit. The key of a function defined in this checkout is:

- in ``shm``: every source of ``shm``;
- in ``stages``: every source of ``shm`` and ``stages`` (kernels inline shm's atomics and rings, and are
  handed to each other and to the duty cycles as first-class functions, so the two floors are keyed whole);
- anywhere else (``pipeline``, ``tools``, ``bench``, ``tests``): those two floors, plus the sources its module
  imports, transitively, found by reading the import statements. An edit of the supervisor or the config
  then recompiles no duty cycle; an edit of a module a numba function imports recompiles that function.

The directory is ``<base>/<key>/<package path>``: relative to the checkout, so another clone of the same
sources (CI's) finds the cache warm. ``<base>`` is NUMBA_CACHE_DIR when the operator sets it (never pruned:
it may hold anything), else ``$XDG_CACHE_HOME/bot4/numba`` (``~/.cache`` by default), where keys unused for
a week are removed.

numba writes each cache file atomically (a temporary file renamed over it) but reads, extends and rewrites a
function's index without a lock: two processes saving different signatures of one function at once can drop
one, or leave the index naming the other's data file. Every save of a process that imported this module holds
an exclusive flock on a file in the function's cache directory, so kernels may compile in parallel processes.
"""
import ast
import fcntl
import functools
import hashlib
import os
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ("shm", "stages")  # keyed whole, in this order: each floor's key covers itself and those below
SAVE_LOCK = ".bot4-save.lock"
UNUSED_S = 7 * 86400


def install() -> None:
    """Put this checkout's locator first in numba's list and serialise index saves (once per process).

    Must run before any cached function of ours is decorated: ``shm`` is imported by every module with one."""
    import numba
    from numba.core import caching

    _lock_saves()
    if ChecksumLocator not in caching.CacheImpl._locator_classes:
        caching.CacheImpl._locator_classes.insert(0, ChecksumLocator)
    numba.config.CACHE_DIR = str(base_dir())  # what `bot4 warmup` names; numba's own locator ignores it for ours


def base_dir() -> Path:
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if chosen:
        return Path(chosen)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bot4" / "numba"


def key_of(source: Path) -> str | None:
    """The cache key of functions defined in ``source``; None for a file outside this checkout."""
    try:
        relative = source.resolve().relative_to(ROOT)
    except ValueError:
        return None
    top = relative.parts[0]
    digest = hashlib.blake2b(digest_size=8)
    for floor in FLOORS:
        digest.update(_floor_digest(floor))
        if top == floor:
            return digest.hexdigest()
    for path in sorted(_imported_closure(source.resolve())):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _floor_digest(floor: str) -> bytes:
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted((ROOT / floor).rglob("*.py")):  # subpackages too
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.digest()


@functools.lru_cache(maxsize=None)
def _imported_closure(source: Path) -> frozenset:
    """``source`` and every file of this checkout outside the floors that it imports, transitively (packages'
    ``__init__`` files included: importing ``a.b`` runs ``a/__init__.py``). Imports inside functions count."""
    seen: set[Path] = set()
    todo = [source] + _module_files(list(source.relative_to(ROOT).parent.parts))  # its packages run first
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.relative_to(ROOT).parts[0] not in FLOORS:  # the floors import nothing above them
            todo += [p for p in _imports_of(path) if p not in seen]
    return frozenset(p for p in seen if p.relative_to(ROOT).parts[0] not in FLOORS)


def _imports_of(path: Path) -> list[Path]:
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError):
        return []
    package = path.relative_to(ROOT).parent.parts
    found: list[Path] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += _module_files(alias.name.split("."))
        elif isinstance(node, ast.ImportFrom):
            above = list(package[:len(package) - node.level + 1]) if node.level else []
            parts = above + (node.module.split(".") if node.module else [])
            for alias in node.names:  # `from pkg import module` runs the module; an attribute ends the walk
                found += _module_files(parts + [alias.name])
    return found


def _module_files(parts: list[str]) -> list[Path]:
    """The files of this checkout that importing ``parts`` runs: each package's ``__init__.py``, the module."""
    files = []
    for depth in range(1, len(parts) + 1):
        here = ROOT.joinpath(*parts[:depth])
        if (here / "__init__.py").is_file():
            files.append(here / "__init__.py")
        elif here.with_suffix(".py").is_file():
            files.append(here.with_suffix(".py"))
            break  # what follows is a name in the module
        else:
            break
    return files


def _prune(base: Path, keep: Path) -> None:
    """Keys unused for a week go (another checkout may still use a recent one); the one in use is touched, so a
    key whose files are never rewritten is not taken for unused."""
    try:
        keep.mkdir(parents=True, exist_ok=True)
        os.utime(keep)
        for entry in base.iterdir():
            if entry != keep and time.time() - entry.stat().st_mtime > UNUSED_S:
                shutil.rmtree(entry, ignore_errors=True)
    except OSError:
        pass


def _locator_base():
    from numba.core import caching
    return caching._SourceFileBackedLocatorMixin, caching._CacheLocator


class ChecksumLocator(*_locator_base()):
    """numba's cache locator for functions of this checkout: ``<base>/<key>/<package path>``."""

    _pruned: set = set()

    def __init__(self, py_func, py_file, key):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        relative = Path(py_file).resolve().parent.relative_to(ROOT)
        base = base_dir()
        self._cache_path = str(base / key / ("_".join(relative.parts) or "_root"))
        if not os.environ.get("NUMBA_CACHE_DIR") and key not in self._pruned:
            self._pruned.add(key)
            _prune(base, base / key)

    def get_cache_path(self):
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file):
        if not os.path.exists(py_file):
            return None
        key = key_of(Path(py_file))
        if key is None:
            return None
        self = cls(py_func, py_file, key)
        try:
            self.ensure_cache_path()
        except OSError:
            return None  # numba's next locator (beside the sources) then; `bot4 warmup` says so
        return self


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
