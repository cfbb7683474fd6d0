"""Standby swaps' protocol against real segments and real processes: the offer, the handover, the supervisor's
cancel racing it, and the answers for a standby that failed, died or hung (pipeline.hosting.standby)."""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pipeline.hosting import model_swap, standby
from shm import control as cb
from shm import segment
from shm.segment import NAME_PREFIX


@pytest.fixture
def tables(shm_prefix):
    run = shm_prefix[len(NAME_PREFIX):]
    table = model_swap.table(run, create=True)
    shared = standby.InferenceShared.create(run)
    yield table, shared
    table.close()
    table.segment.unlink()
    shared.close()
    shared.unlink()


def _answer(table):
    rec, _ = table.read(model_swap.RESULT)
    return int(rec["seq"]), bool(rec["ok"]), model_swap.text_of(rec)


def _request(table, action, path=""):
    return table.publish(model_swap.REQUEST, model_swap.message(action, str(path)))


def test_a_ready_standby_should_be_handed_the_slot_and_reset_the_word(tables):
    _, shared = tables
    slot = np.zeros(cb.STAGE_WORDS, np.int64)
    assert shared.offered() == 0
    standby.offer(shared)  # this process plays the standby
    assert shared.offered() == os.getpid()
    with pytest.raises(RuntimeError, match="another standby"):
        standby.offer(shared)
    assert _in_thread(lambda: standby.hand_over(shared, os.getpid(), slot))  # it lowers its caller's priority
    assert slot[cb.S_PID] == os.getpid() and slot[cb.S_PID_START_NS] == segment.process_start_ns(os.getpid())
    paused = standby.await_takeover(shared, lambda: False)
    assert paused > 0 and int(shared.words[standby.HANDOVER]) == 0 and shared.offered() == 0


def _in_thread(call):
    out = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    thread.join()
    return out[0]


def test_a_cancel_and_a_handover_should_never_both_win(tables):
    table, shared = tables
    serving = [0]
    swaps = standby.StandbySwaps(table, shared, None, 60.0, lambda text: None, np.zeros(1, np.int64),
                                 lambda: serving[0])
    for server_first in (True, False):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            shared.words[standby.HANDOVER] = child.pid  # its offer
            swaps.standby = child
            slot = np.zeros(cb.STAGE_WORDS, np.int64)
            if server_first:
                assert _in_thread(lambda: standby.hand_over(shared, child.pid, slot))
                serving[0] = int(slot[cb.S_PID])
                assert not swaps._cancel()
                shared.words[standby.HANDOVER] = 0  # the standby serves and reset the word: still not cancellable
                assert not swaps._cancel()  # handed over: it is the stage now, not to be killed
                assert swaps.adopt(int(slot[cb.S_PID])) is child and swaps.standby is None
            else:
                assert swaps._cancel() and int(shared.words[standby.HANDOVER]) == 0
                assert not standby.hand_over(shared, child.pid, slot) and slot[cb.S_PID] == 0
        finally:
            child.kill()
            child.wait()
            shared.words[standby.HANDOVER] = 0
            swaps.standby, serving[0] = None, 0


def test_a_standby_handed_the_stage_as_the_run_stops_should_be_returned_for_adoption_not_killed(tables):
    """The shutdown race: the server hands over after the supervisor's last poll and before its cancel. The cancel
    then hands back the standby (the stage now, for the stop sequence to stop and wait on), unkilled."""
    table, shared = tables
    serving = [0]
    said = []
    swaps = standby.StandbySwaps(table, shared, None, 60.0, said.append, np.zeros(1, np.int64), lambda: serving[0])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        shared.words[standby.HANDOVER] = child.pid
        swaps.standby = child
        slot = np.zeros(cb.STAGE_WORDS, np.int64)
        assert _in_thread(lambda: standby.hand_over(shared, child.pid, slot))
        assert swaps.cancel("the run stopped before the swap") is child
        assert child.poll() is None and swaps.standby is None and said == [] and _answer(table)[0] == 0
        assert swaps.cancel("again") is None  # nothing left to cancel
    finally:
        child.kill()
        child.wait()
        shared.words[standby.HANDOVER] = 0


def test_the_server_should_not_hand_over_to_a_dead_standby(tables):
    _, shared = tables
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    shared.words[standby.HANDOVER] = child.pid
    slot = np.zeros(cb.STAGE_WORDS, np.int64)
    assert not standby.hand_over(shared, child.pid, slot) and slot[cb.S_PID] == 0


def _swaps(table, shared, script, timeout_s=60.0):
    said, spawned = [], []

    def spawn(seq, action, path):
        spawned.append((seq, action, path))
        return subprocess.Popen([sys.executable, "-c", script])
    swaps = standby.StandbySwaps(table, shared, spawn, timeout_s, said.append, np.zeros(1, np.int64), lambda: 0)
    return swaps, said, spawned


def _until(predicate, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize("script, why", [("import sys; sys.exit(1)", "exited (code 1) without taking over"),
                                         ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                                          "died (signal SIGKILL)")])
def test_a_standby_that_ends_without_taking_over_should_have_its_publisher_told(tables, script, why):
    table, shared = tables
    swaps, said, spawned = _swaps(table, shared, script)
    seq = _request(table, model_swap.PUBLISH, "/models/x")
    swaps.tick(serving=True)
    assert spawned == [(seq, model_swap.PUBLISH, "/models/x")]
    _until(lambda: (swaps.tick(serving=True), swaps.standby is None)[1])
    got = _answer(table)
    assert got[:2] == (seq, False) and why in got[2] and "the model set in use stays" in got[2]
    assert swaps.refused[0] == 1 and said


def test_a_hung_standby_should_be_stopped_at_its_timeout_and_its_publisher_told(tables):
    table, shared = tables
    swaps, _, _ = _swaps(table, shared, "import time; time.sleep(600)", timeout_s=0.3)
    seq = _request(table, model_swap.PUBLISH, "/models/x")
    swaps.tick(serving=True)
    child = swaps.standby
    _until(lambda: (swaps.tick(serving=True), swaps.standby is None)[1])
    assert child.returncode == -signal.SIGKILL
    assert _answer(table)[:2] == (seq, False) and "inference.standby_timeout_s" in _answer(table)[2]


def test_requests_should_wait_while_the_stage_is_down_and_a_rollback_needs_a_set_before(tables):
    table, shared = tables
    swaps, _, spawned = _swaps(table, shared, "pass")
    seq = _request(table, model_swap.ROLLBACK)
    swaps.tick(serving=False)
    assert spawned == [] and _answer(table)[0] == 0  # not seen while no inference process serves
    swaps.tick(serving=True)
    assert spawned == [] and _answer(table) == (seq, False, "nothing to roll back to: no swap since the run started")
    table.publish(model_swap.PREVIOUS, model_swap.message(0, "/models/before"))
    seq = _request(table, model_swap.ROLLBACK)
    swaps.tick(serving=True)
    assert spawned == [(seq, model_swap.ROLLBACK, "/models/before")]
    swaps.cancel("the run stopped before the swap")
    assert _answer(table)[:2] == (seq, False) and "the run stopped" in _answer(table)[2]


def test_the_loader_thread_should_run_at_idle_priority_and_hand_back_its_error():
    seen = []

    def load():
        seen.append(os.sched_getscheduler(threading.get_native_id()))
        return 7
    assert standby.load_at_idle(load) == 7 and seen == [os.SCHED_IDLE]
    with pytest.raises(ValueError, match="bad model"):
        standby.load_at_idle(lambda: (_ for _ in ()).throw(ValueError("bad model")))
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's thread is untouched


def test_a_standby_should_wait_for_its_handover_at_a_real_time_policy_where_allowed_and_serve_at_the_normal_one():
    def body():
        standby.brace()
        braced = os.sched_getscheduler(0)
        standby.settle()
        out.extend([braced, os.sched_getscheduler(0)])
    out = []
    thread = threading.Thread(target=body)  # its own thread: the test's keeps its policy
    thread.start()
    thread.join()
    assert out[0] in ((os.SCHED_FIFO,) if standby.can_leave_idle() else (os.SCHED_OTHER,)) and out[1] == os.SCHED_OTHER


def test_a_server_that_dies_while_a_standby_loads_should_have_the_standby_cancelled_and_its_publisher_told(tables):
    table, shared = tables
    swaps, _, _ = _swaps(table, shared, "import time; time.sleep(600)")
    seq = _request(table, model_swap.PUBLISH, "/models/x")
    swaps.tick(serving=True)
    child = swaps.standby
    assert swaps.adopt(serving_pid_in_slot=12345) is None  # the slot names the dead server, not the standby
    assert child.poll() == -signal.SIGKILL and swaps.standby is None
    assert _answer(table)[:2] == (seq, False) and "the inference stage died before the swap" in _answer(table)[2]


def test_warming_the_host_should_leave_the_history_and_every_counter_as_they_were(tmp_path):
    from pipeline.hosting import models
    from stages import records
    from tests.onnx_members import registry_with_members, write_ensemble
    paths = registry_with_members(tmp_path, 2)
    path = write_ensemble(tmp_path, 1, [{"path": paths[0], "weight": 1.0}, {"path": paths[1], "weight": 1.0}])
    decisions = np.zeros(4, records.RISK_DECISION)
    decisions["values"] = np.linspace(-1, 1, 28)
    x = np.asarray(decisions["values"], np.float32)
    warmed, cold = (models.Models(models.load(path), 4, 0.0, 100, models.History()) for _ in range(2))
    warmed.warm_host(np.zeros(4, records.RISK_DECISION), np.zeros_like(x))
    assert not warmed.history.counts.any() and not warmed.history.ring.any()
    assert all(m.stats.calls == 0 for m in warmed.members) and warmed.no_view_batches == 0
    got, want = warmed.predict(decisions, x, 4), cold.predict(decisions, x, 4)
    for a, b in zip(got, want):
        assert np.array_equal(a, b)
    assert [m.stats.calls for m in warmed.members] == [m.stats.calls for m in cold.members] != [0, 0]
