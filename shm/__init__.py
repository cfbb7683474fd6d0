"""Transport: POSIX shared-memory segments, SPSC rings, idle strategies, the control block.

Knows nothing about trading: records are opaque fixed-size numpy structured dtypes.
"""
