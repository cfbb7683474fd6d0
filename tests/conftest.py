import os
import uuid

import psutil
import pytest

from shm import segment


@pytest.fixture
def shm_prefix():
    """A unique segment-name prefix; asserts the test left no segment or semaphore behind, and cleans up."""
    prefix = f"{segment.NAME_PREFIX}t{uuid.uuid4().hex[:10]}"
    yield prefix
    left = segment.list_segments(prefix)
    for name in left:
        segment.reclaim_if_stale(name)
        try:
            import posix_ipc
            posix_ipc.unlink_shared_memory(name)
        except Exception:
            pass
        try:
            import posix_ipc
            posix_ipc.unlink_semaphore(name)
        except Exception:
            pass
    assert not left, f"test left shared memory behind: {left}"


@pytest.fixture(autouse=True)
def no_child_left():
    yield
    me = psutil.Process(os.getpid())
    children = me.children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=5)
