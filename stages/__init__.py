"""Stage kernels: pure numba functions over record batches. Their process hosts live in ``pipeline/``."""
from pathlib import Path

from shm.jit_cache import use_sources

_ROOT = Path(__file__).resolve().parent.parent
use_sources(_ROOT / "shm", _ROOT / "stages")  # kernels inline shm's atomics and rings
