"""shm.seqlock on its own: version counting, a write caught in progress, a writer that never finishes.

Torn-free reads against a writer in another process are tested in test_feature_store.py (one writer) and
test_garch_publish.py (contended writers); here the states a race produces are set up directly, so each is
met every run.
"""
import numpy as np
import pytest

from shm import seqlock

RECORD = np.dtype([("n", np.int64), ("check", np.int64, (15,))])


def record(n: int) -> np.ndarray:
    src = np.zeros(1, RECORD)
    src[0]["n"], src[0]["check"][:] = n, n
    return src


@pytest.fixture
def tables(shm_prefix):
    """A table in shared memory, as its writer creates it and as a reader attaches to it."""
    writer = seqlock.SeqlockTable.create(f"{shm_prefix}.table", RECORD, 3)
    reader = seqlock.SeqlockTable.attach(writer.segment.name, RECORD, 3)
    yield writer, reader
    reader.close()
    writer.close()
    writer.segment.unlink()


def test_each_slot_counts_its_own_writes_in_its_own_line(tables):
    writer, reader = tables
    for n in range(1, 6):
        seqlock.write(writer.seqs, writer.records, 1, record(n), 0)
    seqlock.write(writer.seqs, writer.records, 2, record(40), 0)
    assert [reader.read(slot)[1] for slot in range(3)] == [0, 5, 1]
    got, _ = reader.read(1)
    assert got["n"] == 5 and (got["check"] == 5).all()
    assert reader.read(0)[0]["n"] == 0  # never written: the zeroed record, version 0
    line = reader.seqs.reshape(3, seqlock.SEQ_STRIDE)
    assert list(line[:, 0]) == [0, 10, 2] and not line[:, 1:].any()  # one sequence word per 64-byte line


def test_a_read_never_returns_a_record_caught_mid_write_and_gets_the_whole_one_after(tables):
    writer, reader = tables
    seqlock.write(writer.seqs, writer.records, 0, record(1), 0)
    w = 0 * seqlock.SEQ_STRIDE
    writer.seqs[w] += 1  # a writer between its odd sequence and its record copy (preempted there)
    writer.records[0]["n"] = 2  # half of the new record in place
    dst = np.zeros(1, RECORD)
    assert seqlock.read(reader.seqs, reader.records, 0, dst, 0, seqlock.SPIN_TRIES + 5) == -1
    with pytest.raises(TimeoutError, match="changed during each of 10 reads"):
        reader.read(0, max_tries=10)
    writer.records[0]["check"][:] = 2
    writer.seqs[w] += 1  # the write completes
    got, version = reader.read(0)
    assert version == 2 and got["n"] == 2 and (got["check"] == 2).all()


def test_a_contended_write_waits_out_another_writers_claim_then_gives_up_untouched(tables):
    writer, reader = tables
    assert writer.publish(0, record(1)) == 1 and writer.publish(0, record(2)) == 2
    writer.seqs[0] += 1  # another writer claimed the slot and has not finished
    assert seqlock.write_contended(writer.seqs, writer.records, 0, record(3), 0, seqlock.SPIN_TRIES + 5) == -1
    with pytest.raises(TimeoutError, match="was being written during each of 10 tries"):
        writer.publish(0, record(3), max_tries=10)
    assert writer.seqs[0] == 5 and writer.records[0]["n"] == 2  # nothing of ours went in
    writer.seqs[0] += 1  # its write completes: the slot has been written three times
    assert writer.publish(0, record(4)) == 4
    got, version = reader.read(0)
    assert version == 4 and got["n"] == 4


def test_a_single_writer_restarted_after_dying_mid_write_publishes_whole_records(tables):
    writer, reader = tables
    seqlock.write(writer.seqs, writer.records, 0, record(1), 0)
    writer.seqs[0] += 1  # the feature stage was killed between its odd sequence and its record copy
    seqlock.write(writer.seqs, writer.records, 0, record(2), 0)  # the restarted stage's first write
    got, _ = reader.read(0, max_tries=100)
    assert got["n"] == 2
