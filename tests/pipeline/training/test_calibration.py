import numpy as np
import pytest

from pipeline.training import calibration


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _miscalibrated(n: int, a: float, b: float, seed: int = 0):
    """p from a model whose true probability is sigmoid(a logit(p) + b)."""
    rng = np.random.default_rng(seed)
    p = _sigmoid(rng.normal(size=n) * 0.7)
    y = (rng.random(n) < _sigmoid(a * np.log(p / (1 - p)) + b)).astype(np.float64)
    return p, y


def test_platt_should_recover_the_miscalibration_and_apply_it_with_the_stage_kernel():
    p, y = _miscalibrated(40_000, a=2.0, b=0.3)
    fitted = calibration.fit("platt", p, y)
    assert fitted["a"] == pytest.approx(2.0, abs=0.1) and fitted["b"] == pytest.approx(0.3, abs=0.05)
    np.testing.assert_allclose(calibration.apply(fitted, p),
                               _sigmoid(fitted["a"] * np.log(p / (1 - p)) + fitted["b"]), rtol=1e-9)


def test_isotonic_should_give_an_increasing_curve_within_0_1():
    p, y = _miscalibrated(5_000, a=0.5, b=0.0)
    fitted = calibration.fit("isotonic", p, y)
    xs, ys = np.array(fitted["x"]), np.array(fitted["y"])
    assert (np.diff(xs) > 0).all() and (np.diff(ys) >= 0).all() and ys.min() >= 0 and ys.max() <= 1
    np.testing.assert_allclose(calibration.apply(fitted, p), np.interp(p, xs, ys))


def test_choose_should_pick_none_for_a_calibrated_model_and_fix_a_miscalibrated_one():
    p, y = _miscalibrated(40_000, a=1.0, b=0.0, seed=1)
    assert calibration.choose(p, y)[0]["method"] in ("none", "platt")
    p, y = _miscalibrated(40_000, a=3.0, b=0.5, seed=2)
    chosen, table = calibration.choose(p, y)
    assert chosen["method"] != "none"
    assert {row["method"] for row in table} == set(calibration.METHODS)


def test_apply_should_refuse_an_unknown_method_by_name():
    with pytest.raises(ValueError, match="beta"):
        calibration.apply({"method": "beta"}, np.array([0.5]))
