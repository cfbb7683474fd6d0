"""bot4 train end to end on two short synthetic markets: the registry it writes, determinism, refusals."""
import json

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.training import datasets, trainer
from pipeline.training.registry import read_member
from stages.inference import OnnxModel, verify_files
from stages.records import FEATURE_SCHEMA_HASH, N_FEATURES
from tests.pipeline.training.conftest import make_dataset
from tools import cli

SMALL = ["--seeds", "1,2", "--events", "30000", "--folds", "2", "--bootstrap-reps", "10"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_registry")
    assert cli.main(["train", *SMALL, "--holdout-seeds", "3", "--out-registry", str(root)]) == 0
    return root


def test_train_should_write_both_members_and_an_ensemble_that_load(registry):
    for name in ("logistic", "gbt"):
        onnx_path = registry / name / "v1" / "model.onnx"
        verify_files(onnx_path)  # the inference stage's pre-flight: model.json beside, schema hash, sha256
        model = OnnxModel.load(onnx_path)
        prob = model.predict(np.zeros((4, N_FEATURES), np.float32))
        assert prob.shape == (4,) and ((0 < prob) & (prob < 1)).all()
        meta = json.loads((registry / name / "v1" / "model.json").read_text())
        assert meta["member_kind"] == "vector" and meta["feature_schema_hash"] == FEATURE_SCHEMA_HASH
        assert meta["calibration"]["method"] in ("none", "platt", "isotonic")
        assert meta["training"]["seeds"] == [1, 2] and meta["training"]["command"].startswith("bot4 train")
        periods = meta["training"]["periods"]
        assert periods["train"]["position"][1] < periods["validation"]["position"][0]
        assert periods["validation"]["position"][1] < periods["test"]["position"][0]
        assert len(meta["metrics"]["folds"]) == 2 and "holdout" in meta["metrics"]
        for m in meta["metrics"]["folds"]:
            assert np.isfinite([m["log_loss"], m["log_loss_se"], m["auc"], m["auc_se"]]).all()
        ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    spec = json.loads((registry / "ensemble" / "v1" / "ensemble.json").read_text())
    assert spec["version"] == 1 and spec["feature_schema_hash"] == FEATURE_SCHEMA_HASH
    assert spec["members"] and all(m["weight"] > 0 for m in spec["members"])
    assert abs(sum(m["weight"] for m in spec["members"]) - 1.0) < 1e-9
    assert {m["path"] for m in spec["members"]} | {m["path"] for m in spec["left_out"]} == {
        "logistic/v1", "gbt/v1", "sequence/v1", "graph/v1"}
    for m in spec["members"]:
        read_member(registry, m["path"])
    from pipeline.hosting import models
    for name, key in (("sequence", "window"), ("graph", "nodes")):  # the host reads what the trainer recorded
        meta = json.loads((registry / name / "v1" / "model.json").read_text())
        assert meta["member_kind"] == name and key in meta and meta["training"]["command"].startswith("bot4 train")
        assert len(meta["metrics"]["folds"]) == 2 and "holdout" in meta["metrics"]
        models.load(registry / name / "v1")
    models.load(registry / "ensemble" / "v1")
    assert 0.0 <= spec["min_confidence"] <= 1.0
    curve = spec["metrics"]["test"]["precision_coverage"]
    assert curve[0]["min_confidence"] == 0.0 and curve[0]["coverage"] > 0.9
    assert all(f["export_max_abs_error"]["gbt"] <= 1e-6 for f in spec["folds"])


def test_a_second_run_should_take_the_next_version_and_give_the_same_bytes(registry, tmp_path):
    assert cli.main(["train", *SMALL, "--out-registry", str(registry)]) == 0
    for name in ("logistic", "gbt"):
        assert (registry / name / "v2" / "model.onnx").read_bytes() == \
            (registry / name / "v1" / "model.onnx").read_bytes()
    assert (registry / "ensemble" / "v2" / "ensemble.json").is_file()


def test_read_member_should_refuse_an_unknown_member_kind(registry):
    meta_path = registry / "gbt" / "v1" / "model.json"
    meta = json.loads(meta_path.read_text())
    other = registry / "odd" / "v1"
    other.mkdir(parents=True)
    (other / "model.onnx").write_bytes((registry / "gbt" / "v1" / "model.onnx").read_bytes())
    (other / "model.json").write_text(json.dumps(dict(meta, member_kind="hologram")))
    with pytest.raises(ValueError, match="member_kind='hologram'"):
        read_member(registry, "odd/v1")


@pytest.mark.parametrize("args, flag", [
    (["--members", "logistic,forest"], "--members"),
    (["--members", "gbt"], "--members"),
    (["--folds", "0"], "--folds"),
    (["--events", "10"], "--events"),
    (["--parquet", "/nonexistent/train.parquet"], "--parquet"),
    (["--seeds", "1,x"], "--seeds"),
    (["--seeds", "1,2", "--holdout-seeds", "2"], "--holdout-seeds"),
    (["--min-coverage", "0"], "--min-coverage"),
])
def test_bad_arguments_should_exit_2_naming_the_flag(args, flag, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", *args, "--out-registry", str(tmp_path)])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_parquet_rows_should_equal_the_vectors_they_were_written_from(synthetic_vectors, tmp_path):
    from pipeline.config import Config
    from pipeline.store import feature_build
    import pyarrow.parquet as pq
    feats = synthetic_vectors[1]
    path = tmp_path / "f.parquet"
    schema = feature_build.arrow_schema(feature_build.file_metadata(Config(), "test"))
    pq.write_table(feature_build.to_table(feats, schema), path)
    a, b = datasets.from_parquet([path], 20), datasets.from_vectors(feats, 20)
    for name in ("x", "y", "stream", "position", "label_end", "origin_seq"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_training_should_refuse_empty_single_class_and_nan_data(synthetic_vectors):
    with pytest.raises(ValueError, match="no labelled rows"):
        trainer.train(datasets.from_vectors(synthetic_vectors[1][:10], 20), trainer.Settings())
    ds = make_dataset(2000)
    one_class = datasets.Dataset(ds.x, np.ones(len(ds)), ds.stream, ds.origin_ts, ds.origin_seq, ds.position,
                                 ds.label_end, ds.horizon)
    with pytest.raises(ValueError, match="all have label 1"):
        trainer.train(one_class, trainer.Settings())
    x = ds.x.copy()
    x[17, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        datasets.Dataset(x, ds.y, ds.stream, ds.origin_ts, ds.origin_seq, ds.position, ds.label_end, ds.horizon)
    # from recorded vectors, a row with a NaN feature gets no label (the label definition drops it)
    feats = synthetic_vectors[1].copy()
    feats["values"][100:200, 5] = np.nan
    labelled = datasets.from_vectors(feats, 20)
    assert not np.isin(labelled.position, np.arange(100, 200)).any() and np.isfinite(labelled.x).all()


def test_bot4_train_should_exit_2_when_the_data_cannot_be_trained_on(capsys, tmp_path):
    assert cli.main(["train", "--seeds", "1", "--events", "1000", "--horizon", "5000", "--out-registry",
                     str(tmp_path)]) == 2
    assert "no labelled rows" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
