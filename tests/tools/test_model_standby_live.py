"""Standby swaps in a live run (pipeline.hosting.standby): each swap hands the stage to a new inference process with
no batch lost and the stage without a server for under a millisecond; a standby killed while it loads changes nothing
but its publisher's answer, and trading stays as it was (a hung one: tests/pipeline/hosting/test_standby.py)."""
import os
import signal
import threading
import time
import uuid

import psutil

from pipeline import names, registry
from pipeline.hosting.model_swap import PUBLISH, ROLLBACK
from pipeline.store import model_store
from shm import control as cb
from shm import ring, segment
from stages import records
from tests.conftest import SIGNAL_ARGS
from tests.onnx_members import registry_with_members, write_ensemble

BATCH = 256  # rings.batch: the most one batch takes


def _standby(run, serving: int) -> psutil.Process:
    """The run's standby: a stage host among the supervisor's children that is not the one serving."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for child in psutil.Process(run.proc.pid).children():
            try:
                if child.pid != serving and "pipeline.hosting.stage_host" in " ".join(child.cmdline()):
                    slots = {int(s[cb.S_PID]) for s in _block(run).stages}
                    if child.pid not in slots:
                        return child
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.05)
    seen = [(c.pid, c.cmdline()) for c in psutil.Process(run.proc.pid).children()]
    raise AssertionError(f"no standby process appeared: children {seen}, slots "
                         f"{[int(s[cb.S_PID]) for s in _block(run).stages]}")


_blocks = {}


def _block(run):
    if run.name not in _blocks:
        _blocks[run.name] = cb.ControlBlock.attach(names.control(run.name))
    return _blocks[run.name]


def _in_background(action, run_name, path=""):
    out = {}
    thread = threading.Thread(target=lambda: out.update(answer=model_store.request(run_name, action, str(path), 120.0)))
    thread.start()
    return thread, out


def test_standby_swaps_should_hand_the_stage_over_losing_nothing_and_survive_a_killed_or_hung_standby(live, tmp_path):
    paths = registry_with_members(tmp_path, 3)
    first = write_ensemble(tmp_path, 1, [{"path": paths[0], "weight": 1.0}, {"path": paths[1], "weight": 1.0}])
    second = write_ensemble(tmp_path, 2, [{"path": paths[0], "weight": 1.0}, {"path": paths[2], "weight": 2.0}])
    run = live(*SIGNAL_ARGS, "--quiet", "--set", f"inference.ensemble={first}", "--set", "inference.member_timeout_us=0",
               "--set", "watchdog.hard_drawdown_pct=99",
               name=f"sby{uuid.uuid4().hex[:8]}")
    try:
        run.wait_for(r"bot4: running", timeout=1500)
        g = _block(run).globals
        slot = _block(run).stages[registry.slot("inference")]
        counter = registry.BY_NAME["inference"].counter
        view = ring.attach_ring(names.ring(run.name, "risk.inference"), records.RISK_DECISION,
                                _ring_capacity(run.name))
        try:
            servers = [int(slot[cb.S_PID])]
            for action, path, version in ((PUBLISH, second, 2), (ROLLBACK, "", 1), (PUBLISH, second, 2)):
                ok, got, text = model_store.request(run.name, action, str(path), 120.0)
                assert ok and got == version, text
                servers.append(int(slot[cb.S_PID]))
                assert servers[-1] != servers[-2]  # a new process serves
                deadline = time.monotonic() + 30  # the one before exits (at idle priority: when the core allows)
                while segment.pid_alive(servers[-2]) and not _zombie(servers[-2]):
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                # Nothing lost: every decision the ring gave up was served by one process or the next.
                head, served = int(view.consumer[ring.C_HEAD]), int(slot[cb.S_IN])
                assert 0 <= head - served <= BATCH, (head, served)
            assert int(slot[cb.S_CUSTOM + counter("swaps")]) == 3
            handover = int(slot[cb.S_CUSTOM + counter("handover_max_ns")])
            print(f"standby swaps: longest handover {handover / 1e3:.0f} us; longest batch wait around swaps "
                  f"{int(slot[cb.S_CUSTOM + counter('swap_wait_max_ns')]) / 1e3:.0f} us, apart "
                  f"{int(slot[cb.S_CUSTOM + counter('wait_max_ns')]) / 1e3:.0f} us")
            assert 0 < handover < 1_000_000  # the stage had no process serving for under a millisecond

            reason_before = int(g[cb.G_KILL_REASON])
            serving = int(slot[cb.S_PID])
            thread, out = _in_background(PUBLISH, run.name, second)
            _standby(run, serving).kill()  # SIGKILL while it starts or loads
            thread.join()
            ok, got, text = out["answer"]
            assert not ok and got == 2 and "died (signal SIGKILL)" in text, text
            assert int(slot[cb.S_PID]) == serving and int(slot[cb.S_STATE]) == cb.RUNNING
            assert int(slot[cb.S_CUSTOM + counter("publish_refused")]) == 1
            assert int(g[cb.G_KILL_REASON]) == reason_before, cb.kill_text(g)  # a standby is not the stage
        finally:
            view.close()
        run.proc.send_signal(signal.SIGINT)
        code, output = run.finish(timeout=120)
        assert "refused: the standby inference process died (signal SIGKILL)" in output
        assert not segment.list_segments(names.run_prefix(run.name))
    finally:
        block = _blocks.pop(run.name, None)
        if block is not None:
            block.close()


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _ring_capacity(run_name: str) -> int:
    header = segment.header_of(names.ring(run_name, "risk.inference"))
    return int(header[segment.H_CAPACITY])
