"""Transport: POSIX shared-memory segments, SPSC rings, idle strategies, the control block.

Knows nothing about trading: records are opaque fixed-size numpy structured dtypes.
"""
from pathlib import Path

from shm.jit_cache import use_sources

use_sources(Path(__file__).resolve().parent)
