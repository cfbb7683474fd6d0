"""A live run whose ensemble holds every member kind serves it fused: ``bot4 status`` shows the fused run's calls and
latency beside the members' (whose calls count on), every member alive, and the run stops clean."""
import re
import shutil
import signal
import uuid
from pathlib import Path

import numpy as np

from pipeline import names
from shm import segment
from stages.records import N_FEATURES
from tests.conftest import SIGNAL_ARGS
from tests.onnx_members import coefficients, logistic_graph, nodes_graph, window_graph, write_ensemble, write_member
from tests.tools.test_model_cli import _status

NODES = [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
SHIPPED_GBT = Path(__file__).resolve().parents[3] / "models" / "gbt" / "v2"


def test_a_live_run_should_serve_every_kind_fused_and_say_so_in_status(live, tmp_path):
    rng = np.random.default_rng(5)
    write_member(tmp_path, "lin", "v1", logistic_graph(coefficients(1), 0.0))
    shutil.copytree(SHIPPED_GBT, tmp_path / "gbt" / "v1")
    write_member(tmp_path, "seq", "v1", window_graph(rng.normal(0, 0.01, (8, N_FEATURES))), member_kind="sequence",
                 window=8)
    write_member(tmp_path, "gnn", "v1", nodes_graph(rng.normal(0, 0.01, (6, N_FEATURES)), np.zeros(6)),
                 member_kind="graph", nodes=NODES)
    ens = write_ensemble(tmp_path, 1, [{"path": f"{m}/v1", "weight": 1.0} for m in ("lin", "gbt", "seq", "gnn")])
    # No budget: on a loaded machine a late fused run would leave a batch without votes.
    run = live(*SIGNAL_ARGS, "--quiet", "--set", f"inference.ensemble={ens}", "--set",
               "inference.member_timeout_us=0", name=f"latfuse-{uuid.uuid4().hex[:8]}")
    run.wait_for(r"bot4: running", timeout=1500)
    status = ""
    for _ in range(50):
        status = _status(run.name)
        fused = re.search(r"fused \(all members, one run\): calls ([0-9,]+) p50 .* fell back to one by one 0 late 0",
                          status)
        if fused and int(fused.group(1).replace(",", "")) > 5:
            break
    assert fused and "OFF" not in status, status
    assert re.search(r"model: ensemble: lin\+gbt\+seq\+gnn version 1 .*members alive 4/4", status), status
    calls = [int(c.replace(",", "")) for c in re.findall(r"member \d \S+: calls ([0-9,]+)", status)]
    assert len(calls) == 4 and min(calls) > 0, status
    run.proc.send_signal(signal.SIGTERM)
    code, output = run.finish()
    assert code == 0, output
    assert not segment.list_segments(names.run_prefix(run.name))
