"""``tools.model_eval``: gates chosen on the tuning seeds only, candidates judged on the others, against real
backtests (a few thousand events each)."""
import json
import subprocess
import sys

from tests.conftest import ROOT
from tools import model_eval


def test_the_gate_should_be_chosen_on_the_tuning_seeds_and_every_candidate_judged_on_the_others(tmp_path, capsys):
    code = model_eval.main(["--out", str(tmp_path), "--events", "4000", "--tune-seeds", "9", "--eval-seeds", "11",
                            "--gates", "0,0.6"])
    assert code == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    logistic, ensemble = result["candidates"]
    assert logistic["gate"] is None and not logistic["tuning"]  # a single model has no gate
    assert set(ensemble["tuning"]) == {"0.0", "0.6"}
    best = max(ensemble["tuning"].items(), key=lambda kv: (kv[1], -float(kv[0])))
    assert ensemble["gate"] == float(best[0]) and f"inference.min_confidence={ensemble['gate']}" in ensemble["settings"]
    assert [r["seed"] for r in logistic["runs"]] == [11] == [r["seed"] for r in ensemble["runs"]]
    pair = ensemble["runs"][0]["net_pnl"] - logistic["runs"][0]["net_pnl"]
    assert ensemble["vs_baseline"]["mean"] == pair and ensemble["vs_baseline"]["seeds"] == 1
    assert (tmp_path / "ensemble" / "tune" / "point-001" / "report.json").is_file()
    out = capsys.readouterr().out
    assert "ensemble gate" in out and "vs logistic: net PnL difference" in out


def test_evaluation_seeds_that_also_tune_or_a_bad_candidate_should_be_refused(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "tools.model_eval", "--out", str(tmp_path), *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    out = cli("--tune-seeds", "9,10", "--eval-seeds", "10-12")
    assert out.returncode == 2 and "share [10]" in out.stderr
    out = cli("--candidate", "x=inference.ensemble=/nowhere")
    assert out.returncode == 2 and "inference.ensemble" in out.stderr and "/nowhere" in out.stderr
    out = cli("--gates", "0,2")
    assert out.returncode == 2 and "--gates" in out.stderr
    assert not list(tmp_path.iterdir())  # nothing ran
