"""Shared-memory segments a local user (or a bad config) planted: checked before mapping, never a traceback."""
import os
import subprocess
import sys
import uuid

import pytest

from pipeline import names
from shm import control as cb
from shm import segment
from tests.conftest import ROOT

HUGE = 1 << 48  # 256 TiB sparse: more than the address space can map (ENOMEM), what rings.capacity = 2**40 made
NOBODY = 65534


def _plant(name: str, size: int, uid: int | None = None) -> str:
    path = "/dev/shm/" + name.lstrip("/")
    with open(path, "wb") as fh:
        os.truncate(fh.fileno(), size)
    if uid is not None:
        os.chown(path, uid, uid)
    return path


def _gone(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def test_an_oversized_segment_of_ours_is_reclaimed_without_mapping_it(shm_prefix):
    name = f"{shm_prefix}.control"
    path = _plant(name, HUGE)
    try:
        assert segment.reclaim_if_stale(name)
        assert not os.path.exists(path)
    finally:
        _gone(path)


def test_attach_refuses_a_segment_whose_size_is_not_what_its_header_says(shm_prefix):
    name = f"{shm_prefix}.control"
    block = cb.ControlBlock.create(name)
    try:
        os.truncate("/dev/shm/" + name.lstrip("/"), HUGE)
        with pytest.raises(segment.SegmentError, match=r"size") as err:
            cb.ControlBlock.attach(name)
        assert name in str(err.value)
    finally:
        seg = block.segment
        block.close()
        seg.unlink()


def test_create_refuses_an_absurd_size_and_leaves_nothing(shm_prefix):
    free = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
    for payload in (HUGE, free + (1 << 20)):
        with pytest.raises(segment.SegmentError, match="/dev/shm") as err:
            segment.create(f"{shm_prefix}.ring.x", payload, 1, 1, 1)
        assert f"{shm_prefix}.ring.x" in str(err.value)
    assert not segment.list_segments(shm_prefix)


def test_a_foreign_owned_segment_is_a_clear_error_naming_it_and_is_left_alone():
    name = f"{segment.NAME_PREFIX}t{uuid.uuid4().hex[:10]}.control"
    path = _plant(name, 4096, uid=NOBODY)
    try:
        for call in (lambda: segment.reclaim_if_stale(name), lambda: cb.ControlBlock.attach(name),
                     lambda: cb.ControlBlock.create(name)):
            with pytest.raises(segment.SegmentError) as err:
                call()
            assert path in str(err.value) and "nobody" in str(err.value) and "run.name" in str(err.value)
        assert os.stat(path).st_uid == NOBODY
    finally:
        _gone(path)


def _bot4(command: str, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.cli", command, "--name", name, "--quiet", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_bot4_run_over_a_foreign_segment_fails_clearly_without_a_traceback():
    run = f"t{uuid.uuid4().hex[:8]}"
    path = _plant(names.control(run), HUGE, uid=NOBODY)
    try:
        out = _bot4("run", run, "--duration", "1")
        output = out.stdout + out.stderr
        assert out.returncode == 4, output
        assert "start-up failed" in output and path in output and "nobody" in output, output
        assert "Traceback" not in output, output
        assert segment.list_segments(names.run_prefix(run)) == [names.control(run)]  # only the planted one
    finally:
        _gone(path)


def test_bot4_over_an_oversized_segment_of_a_dead_run_of_ours_reclaims_it_and_runs(tmp_path):
    run = f"t{uuid.uuid4().hex[:8]}"
    path = _plant(names.control(run), HUGE)
    try:  # record mode: the same start-up path with three processes instead of eight
        out = _bot4("record", run, "--journal", str(tmp_path / "j"), "--duration", "1", "--events", "2000")
        output = out.stdout + out.stderr
        assert out.returncode == 0 and "reclaimed 1 stale" in output and "Traceback" not in output, output
        assert not segment.list_segments(names.run_prefix(run))
    finally:
        _gone(path)


def test_a_semaphore_is_unlinked_only_when_ours_and_older_than_asked():
    import posix_ipc
    name = f"{segment.NAME_PREFIX}t{uuid.uuid4().hex[:10]}.sem.risk"
    path = f"/dev/shm/sem.{name[1:]}"
    posix_ipc.Semaphore(name, posix_ipc.O_CREX).close()
    try:
        created = os.stat(path).st_ctime_ns
        assert not segment.unlink_semaphore(name, created_before_ns=created)  # a new run's, made after the death
        os.chown(path, NOBODY, -1)
        assert not segment.unlink_semaphore(name) and os.path.exists(path)  # another user's
        os.chown(path, os.geteuid(), -1)
        changed = os.stat(path).st_ctime_ns  # its inode's change time: creation, here the chown
        assert segment.unlink_semaphore(name, created_before_ns=changed + 1) and not os.path.exists(path)
    finally:
        _gone(path)
