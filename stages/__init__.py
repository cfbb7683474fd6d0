"""Stage kernels: pure numba functions over record batches. Their process hosts live in ``pipeline/``."""
