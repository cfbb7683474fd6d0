import numpy as np
import onnx
import pytest

from pipeline.training.members import trainer
from pipeline.training.members.gbt import float32_thresholds
from pipeline.training.trainer import check_export, onnx_predict
from stages.records import N_FEATURES
from tests.pipeline.training.conftest import make_dataset


@pytest.mark.parametrize("name", ["logistic", "gbt"])
def test_member_graph_should_take_features_and_give_prob_up_equal_to_the_library(name):
    train, valid, test = make_dataset(4000, seed=1), make_dataset(1500, seed=2), make_dataset(1500, seed=3)
    fitted = trainer(name, fit_stride=1).fit(train, valid, seed=1)
    model = onnx.load_from_string(fitted.onnx_bytes)
    assert [i.name for i in model.graph.input] == ["features"] and [o.name for o in model.graph.output] == ["prob_up"]
    got, err = check_export(name, fitted, test.x)
    assert got.shape == (len(test),) and err <= 1e-6
    assert 0.6 < np.mean((got > 0.5) == (test.y == 1))  # it learned feature 0
    assert fitted.metadata["input"]["shape"] == ["N", N_FEATURES]


def test_float32_thresholds_should_not_change_lightgbm_on_float32_inputs():
    import lightgbm as lgb
    rng = np.random.default_rng(0)
    # values on a coarse float32 grid: many rows sit exactly on either side of a midpoint threshold
    x = (np.round(rng.normal(size=(3000, 4)) * 1e3) / 1e3 + 1000.0).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=3000) * 0.01 > 1000.0).astype(int)
    booster = lgb.train({"objective": "binary", "num_threads": 1, "verbose": -1, "num_leaves": 31}, lgb.Dataset(x, y), 20)
    edited = lgb.Booster(model_str=float32_thresholds(booster.model_to_string()))
    np.testing.assert_array_equal(edited.predict(x), booster.predict(x))


def test_gbt_should_be_deterministic_for_a_seed():
    train, valid = make_dataset(3000, seed=1), make_dataset(1000, seed=2)
    a = trainer("gbt").fit(train, valid, seed=5).onnx_bytes
    b = trainer("gbt").fit(train, valid, seed=5).onnx_bytes
    assert a == b
    np.testing.assert_array_equal(onnx_predict(a, valid.x), onnx_predict(b, valid.x))


def test_gbt_should_take_the_fewest_nodes_within_its_loss_tolerance():
    train, valid = make_dataset(3000, seed=1), make_dataset(1000, seed=2)
    exact = trainer("gbt", loss_tolerance=0.0).fit(train, valid, seed=5).metadata["fit"]
    chosen, table = exact["chosen"], exact["selection"]["candidates"]
    assert chosen["validation_log_loss_at_rounds"] == min(row["validation_log_loss"] for row in table)
    loose = trainer("gbt", loss_tolerance=0.05).fit(train, valid, seed=5).metadata["fit"]
    assert loose["chosen"]["nodes"] < chosen["nodes"] and loose["trees"] == loose["chosen"]["rounds"]
    assert loose["chosen"]["validation_log_loss_at_rounds"] <= chosen["validation_log_loss_at_rounds"] + 0.05


def test_gbt_with_a_node_budget_should_export_no_more_nodes_and_refuse_a_budget_no_tree_fits():
    train, valid = make_dataset(3000, seed=1), make_dataset(1000, seed=2)
    free = trainer("gbt", loss_tolerance=0.0).fit(train, valid, seed=5).metadata["fit"]
    budget = free["chosen"]["nodes"] // 2
    fitted = trainer("gbt", loss_tolerance=0.0, max_nodes=budget).fit(train, valid, seed=5)
    fit = fitted.metadata["fit"]
    model = onnx.load_from_string(fitted.onnx_bytes)
    trees = next(n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor")
    exported = len(next(a.ints for a in trees.attribute if a.name == "nodes_nodeids"))
    assert exported == fit["chosen"]["nodes"] <= budget < free["chosen"]["nodes"]
    assert fit["selection"]["max_nodes"] == budget and f"within {budget} nodes" in fit["selection"]["criterion"]
    with pytest.raises(ValueError, match="max_nodes=1 holds no tree"):
        trainer("gbt", max_nodes=1).fit(train, valid, seed=5)

