"""``bot4 model publish`` / ``rollback`` against a live run serving a two-member ensemble, and without a run."""
import os
import re
import signal
import subprocess
import sys
import uuid

from pipeline import names, registry
from pipeline.hosting.model_swap import PUBLISH
from pipeline.store import model_store
from shm import control as cb
from shm import segment
from tests.conftest import ROOT, SIGNAL_ARGS
from tests.onnx_members import coefficients, logistic_graph, registry_with_members, write_ensemble, write_member


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _status(run: str) -> str:
    out = _cli("status", "--name", run)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_publishing_to_a_run_that_does_not_exist_should_say_so_and_exit_1(tmp_path):
    run = f"ens{uuid.uuid4().hex[:8]}"
    member = tmp_path / registry_with_members(tmp_path, 1)[0]
    out = _cli("model", "publish", run, str(member))
    assert out.returncode == 1 and f"no run named {run!r}" in out.stderr and out.stdout == ""
    out = _cli("model", "rollback", run)
    assert out.returncode == 1 and f"no run named {run!r}" in out.stderr


def test_a_live_run_should_swap_to_a_published_ensemble_roll_back_and_keep_it_across_a_restart(live, tmp_path):
    paths = registry_with_members(tmp_path, 3)
    first = write_ensemble(tmp_path, 1, [{"path": paths[0], "weight": 1.0}, {"path": paths[1], "weight": 1.0}])
    second = write_ensemble(tmp_path, 2, [{"path": paths[0], "weight": 1.0}, {"path": paths[2], "weight": 2.0}])
    write_member(tmp_path, "alien", "v1", logistic_graph(coefficients(7), 0.0), feature_schema_hash=1)
    alien = write_ensemble(tmp_path, 3, [{"path": "alien/v1", "weight": 1.0}])
    # No member budget: on a loaded machine a late member would leave a batch without its vote ("alive 1/2").
    run = live(*SIGNAL_ARGS, "--quiet", "--set", f"inference.ensemble={first}", "--set", "run.restart=restart",
               "--set", "inference.member_timeout_us=0", name=f"ens{uuid.uuid4().hex[:8]}")
    run.wait_for(r"bot4: running", timeout=1500)
    status = _status(run.name)
    assert re.search(r"model: ensemble: lin0\+lin1 version 1 .*members alive 2/2", status), status
    assert re.search(r"member 1 lin1: calls [1-9]", status), status

    out = _cli("model", "publish", run.name, str(second))
    assert out.returncode == 0, out.stderr
    assert "now serves ensemble: lin0+lin2 (version 2)" in out.stdout
    status = _status(run.name)
    assert "model: ensemble: lin0+lin2 version 2" in status and "swaps 1," in status, status

    out = _cli("model", "publish", run.name, str(alien))  # refused before it reaches the run
    assert out.returncode == 1 and "nothing published" in out.stderr and "feature_schema_hash" in out.stderr
    ok, version, text = model_store.request(run.name, PUBLISH, str(tmp_path / "gone"))  # the host refuses
    assert not ok and version == 2 and "no such file" in text

    out = _cli("model", "rollback", run.name)
    assert out.returncode == 0 and "(version 1)" in out.stdout, out.stdout + out.stderr
    status = _status(run.name)
    assert "model: ensemble: lin0+lin1 version 1" in status and "swaps 2, refused 1" in status, status
    block = cb.ControlBlock.attach(names.control(run.name))
    try:
        inf = block.stages[registry.slot("inference")]
        counter = registry.BY_NAME["inference"].counter
        waited = int(inf[cb.S_CUSTOM + counter("wait_max_ns")]), int(inf[cb.S_CUSTOM + counter("swap_wait_max_ns")])
        assert int(inf[cb.S_CUSTOM + counter("m0_calls")]) > 0
        # A figure, not an assertion (the machine is shared): the longest a batch waited, apart and around swaps.
        print(f"inference: longest batch wait {waited[0] / 1e3:.0f} us, around swaps {waited[1] / 1e3:.0f} us")

        out = _cli("model", "publish", run.name, str(second))
        assert out.returncode == 0, out.stderr
        inference_pid = int(inf[cb.S_PID])  # the standby that took the stage over
    finally:
        block.close()
    os.kill(inference_pid, signal.SIGKILL)  # the restarted stage serves what was published, not the config
    run.wait_for(r"restarted inference", timeout=300)
    run.wait_for(r"resumed the model set in use before the restart: ensemble: lin0\+lin2", timeout=300)
    out = _cli("model", "rollback", run.name)  # the set before it died with the process: loaded again
    assert out.returncode == 0 and "(version 1)" in out.stdout, out.stdout + out.stderr
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish()
    assert code == 5, output  # the stage's death tripped the run, and the restart does not re-arm it
    assert not segment.list_segments(names.run_prefix(run.name))
