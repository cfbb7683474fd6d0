"""The ensemble's vote (stages.ensemble): agreement, spread, coverage, the no-view gate and calibration."""
import math

import numpy as np
import pytest

from stages import ensemble


def vote(rows, weights=None, alive=None, min_confidence=0.0):
    probs = np.array(rows, np.float64).reshape(len(rows), -1)
    m, n = probs.shape
    weights = np.ones(m) if weights is None else np.array(weights, np.float64)
    alive = np.ones(m, np.bool_) if alive is None else np.array(alive, np.bool_)
    prob, conf = np.zeros(n), np.zeros(n)
    assert ensemble.combine(probs, weights, alive, n, min_confidence, prob, conf) == n
    return prob, conf


def test_unanimous_members_that_give_the_same_number_are_as_confident_as_their_view_is_strong():
    prob, conf = vote([[0.7], [0.7], [0.7]])
    assert prob[0] == pytest.approx(0.7) and conf[0] == pytest.approx(0.4)
    _, none = vote([[0.5], [0.5]])  # every member agrees on having no view: no confidence
    assert none[0] == 0.0


def test_weight_split_evenly_across_sides_gives_no_confidence_and_no_view_behind_the_gate():
    prob, conf = vote([[0.8], [0.2]], min_confidence=0.01)
    assert conf[0] == 0.0 and prob[0] == 0.5
    prob, conf = vote([[0.6], [0.4], [0.7]], weights=[1, 1, 0.0])  # a zero weight has no vote
    assert conf[0] == 0.0


def test_confidence_grows_with_agreement_and_strength_and_falls_with_spread():
    _, split = vote([[0.6], [0.6], [0.45]])
    _, same = vote([[0.6], [0.6], [0.55]])
    _, tight = vote([[0.7], [0.7], [0.7]])
    _, wide = vote([[0.95], [0.55], [0.6]])  # the same mean as tight, far apart
    assert split[0] < same[0] < tight[0] and wide[0] < tight[0]
    w = np.array([1, 1, 1]) / 3
    p = np.array([0.6, 0.6, 0.45])
    std = math.sqrt(float(np.sum(w * (p - p.mean()) ** 2)))
    assert split[0] == pytest.approx(2 * abs(p.mean() - 0.5) * (2 * (2 / 3) - 1) * (1 - 2 * std))


def test_a_dead_member_has_no_vote_and_the_coverage_says_so():
    prob, conf = vote([[0.7], [0.1]], weights=[3, 1], alive=[True, False])
    assert prob[0] == pytest.approx(0.7) and conf[0] == pytest.approx(0.75 * 0.4)
    prob, conf = vote([[float("nan")], [0.7]], weights=[1, 1])  # a NaN answer: not a vote for that decision
    assert prob[0] == pytest.approx(0.7) and conf[0] == pytest.approx(0.5 * 0.4)
    prob, conf = vote([[0.7], [0.6]], alive=[False, False], min_confidence=0.0)
    assert prob[0] == 0.5 and conf[0] == 0.0


def test_the_gate_says_no_view_below_the_threshold_and_passes_the_mean_at_or_above_it():
    prob, conf = vote([[0.62, 0.62], [0.58, 0.40]], min_confidence=0.15)
    assert conf[0] > 0.15 and prob[0] == pytest.approx(0.6)
    assert conf[1] < 0.15 and prob[1] == 0.5


def test_platt_and_isotonic_calibration():
    p = np.array([0.1, 0.5, 0.9, float("nan"), 0.0, 1.0])
    out = np.zeros_like(p)
    xs, ys = np.array([0.0, 0.5, 1.0]), np.array([0.2, 0.5, 0.6])
    ensemble.calibrate(p, len(p), ensemble.CAL_PLATT, 2.0, 0.1, xs, ys, out)
    logit = np.log(0.9 / 0.1)
    assert out[2] == pytest.approx(1 / (1 + math.exp(-(2 * logit + 0.1))))
    assert math.isnan(out[3]) and 0.0 < out[4] < out[0] and out[5] < 1.0
    ensemble.calibrate(p, len(p), ensemble.CAL_ISOTONIC, 0.0, 0.0, xs, ys, out)
    assert list(out[[0, 1, 2, 4, 5]]) == pytest.approx([0.26, 0.5, 0.58, 0.2, 0.6])
    ensemble.calibrate(p, 3, ensemble.CAL_NONE, 0.0, 0.0, xs, ys, out)
    assert list(out[:3]) == pytest.approx([0.1, 0.5, 0.9])


def test_interp_gives_numpys_bits_inside_at_the_knots_outside_and_on_flat_and_steep_steps():
    xs = np.array([0.0, 0.1, np.nextafter(0.1, 1), 0.3, 0.3000001, 0.7, 1.0])  # a near-vertical step, then a steep one
    ys = np.array([0.02, 0.2, 0.4, 0.4, 0.9, 0.9, 0.97])
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.uniform(-0.2, 1.2, 5000), xs, np.nextafter(xs, 2), np.nextafter(xs, -1),
                             [-np.inf, np.inf], rng.uniform(0, 1, 500).astype(np.float32)])
    got = np.array([ensemble.interp(v, xs, ys) for v in values])
    assert np.array_equal(got, np.interp(values, xs, ys))


def test_the_fused_vote_is_calibrate_then_combine_bit_for_bit_and_refuses_a_batch_with_a_non_finite_answer():
    rng = np.random.default_rng(11)
    m, n = 4, 64
    raws = rng.uniform(0, 1, (m, n)).astype(np.float32)
    curves = [np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.sort(rng.uniform(0, 1, 40)), np.array([0.0, 1.0])]
    levels = [np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.sort(rng.uniform(0, 1, 40)), np.array([0.0, 1.0])]
    methods = np.array([ensemble.CAL_NONE, ensemble.CAL_PLATT, ensemble.CAL_ISOTONIC, ensemble.CAL_PLATT])
    a, b = np.array([1.0, 1.4, 1.0, 0.8]), np.array([0.0, -0.1, 0.0, 0.2])
    k = max(len(c) for c in curves)
    xs, ys = np.zeros((m, k)), np.zeros((m, k))
    for i in range(m):
        xs[i, :len(curves[i])], ys[i, :len(levels[i])] = curves[i], levels[i]
    curve_len = np.array([len(c) for c in curves])
    no_view = np.array([False, False, False, True])  # the graph member's row
    off_graph = rng.uniform(size=n) < 0.2
    weights, alive = np.array([1.0, 0.5, 1.0, 2.0]), np.array([1, 1, 0, 1], np.uint8)

    expected = np.zeros((m, n))
    for i in range(m):
        if alive[i]:
            ensemble.calibrate(raws[i], n, methods[i], a[i], b[i], curves[i], levels[i], expected[i])
            if no_view[i]:
                expected[i][off_graph] = 0.5
    prob, conf = np.zeros(n), np.zeros(n)
    ensemble.combine(expected, weights, alive, n, 0.05, prob, conf)

    probs, got_prob, got_conf = np.zeros((m, n)), np.zeros(n), np.zeros(n)
    assert ensemble.vote_members(raws, n, alive, methods, a, b, xs, ys, curve_len, no_view, off_graph, weights, 0.05,
                                 probs, got_prob, got_conf) == n
    assert np.array_equal(probs, expected) and np.array_equal(got_prob, prob) and np.array_equal(got_conf, conf)
    assert (got_conf > 0).any() and (got_prob == 0.5).any()  # the gate is exercised both ways

    raws[1, 7] = np.inf
    before = (probs.copy(), got_prob.copy())
    assert ensemble.vote_members(raws, n, alive, methods, a, b, xs, ys, curve_len, no_view, off_graph, weights, 0.05,
                                 probs, got_prob, got_conf) == -1
    assert np.array_equal(probs, before[0]) and np.array_equal(got_prob, before[1])  # nothing written
