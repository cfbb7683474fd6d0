"""Stage kernels: pure numba functions over record batches. Their process hosts live in ``pipeline/``."""
import shm  # noqa: F401  installs the kernel cache locator (shm.jit_cache) before any kernel is decorated
