"""A live run serving sequence and graph members: every member answers risk's decisions batch after batch, a
published set with another sequence member is swapped in (reading the run's history), and the run stops clean."""
import re
import signal
import uuid

import numpy as np

from pipeline import names
from shm import segment
from stages.records import N_FEATURES
from tests.conftest import SIGNAL_ARGS
from tests.onnx_members import coefficients, logistic_graph, nodes_graph, window_graph, write_ensemble, write_member
from tests.tools.test_model_cli import _cli, _status

NODES = [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


def _calls(status: str, member: int) -> int:
    found = re.search(rf"member {member} \S+: calls ([0-9,]+) .*\| failures 0 timeouts", status)
    assert found, status
    return int(found.group(1).replace(",", ""))


def test_a_live_run_should_serve_sequence_and_graph_members_and_swap_in_another(live, tmp_path):
    rng = np.random.default_rng(5)
    write_member(tmp_path, "lin", "v1", logistic_graph(coefficients(1), 0.0))
    write_member(tmp_path, "seq", "v1", window_graph(rng.normal(0, 0.01, (8, N_FEATURES))), member_kind="sequence",
                 window=8)
    write_member(tmp_path, "seq", "v2", window_graph(rng.normal(0, 0.01, (32, N_FEATURES))), member_kind="sequence",
                 window=32)
    write_member(tmp_path, "gnn", "v1", nodes_graph(rng.normal(0, 0.01, (6, N_FEATURES)), np.zeros(6)),
                 member_kind="graph", nodes=NODES)
    first = write_ensemble(tmp_path, 1, [{"path": "lin/v1", "weight": 1.0}, {"path": "seq/v1", "weight": 1.0},
                                         {"path": "gnn/v1", "weight": 1.0}])
    second = write_ensemble(tmp_path, 2, [{"path": "seq/v2", "weight": 1.0}, {"path": "gnn/v1", "weight": 1.0}])
    # No budget: on a loaded machine a late member would leave a batch without its vote ("members alive 1/2"). No
    # drawdown trip: the signal strategy loses on the synthetic market, and a swap's standby loads for seconds.
    run = live(*SIGNAL_ARGS, "--quiet", "--set", f"inference.ensemble={first}", "--set",
               "inference.member_timeout_us=0", "--set", "watchdog.hard_drawdown_pct=99",
               name=f"members-{uuid.uuid4().hex[:8]}")
    run.wait_for(r"bot4: running", timeout=1500)
    status = _status(run.name)
    assert re.search(r"model: ensemble: lin\+seq\+gnn version 1 .*members alive 3/3", status), status
    assert all(_calls(status, m) > 0 for m in range(3))
    out = _cli("model", "publish", run.name, str(second))
    assert out.returncode == 0 and "now serves ensemble: seq+gnn (version 2)" in out.stdout, out.stdout + out.stderr
    before = _calls(_status(run.name), 0)
    for _ in range(50):  # the market keeps coming: the swapped-in members answer batch after batch
        status = _status(run.name)
        if _calls(status, 0) > before + 5:
            break
    assert re.search(r"members alive 2/2", status) and _calls(status, 1) > 0, status
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish()
    assert code == 0, output
    assert not segment.list_segments(names.run_prefix(run.name))
