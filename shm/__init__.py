"""Transport: POSIX shared-memory segments, SPSC rings, idle strategies, the control block.

Knows nothing about trading: records are opaque fixed-size numpy structured dtypes.
"""
from shm import jit_cache

jit_cache.install()  # before any cached kernel of this checkout is decorated: every one imports shm
