"""The ensemble's vote: members' calibrated probabilities in, one probability and its confidence out.

Each member m gives p[m, i], the probability that the mid of decision i rises, already calibrated on validation
data (``calibrate``). A member that failed or ran out of time this batch is not alive and has no vote. With the
alive members' weights normalised to w (sum 1):

- ``prob_up = sum_m w_m p_m`` (the weighted mean);
- ``strength = 2 * |prob_up - 0.5|``: how much of a view the vote has (0 at 0.5, 1 at 0 or 1);
- ``agreement = 2 * share - 1``, where ``share`` is the weight on the side of 0.5 that the mean is on (a member at
  exactly 0.5 is on neither side): 1 when every member leans the same way, 0 when the weight is split evenly;
- ``spread = 1 - 2 * std``, with ``std`` the weighted standard deviation of the p_m (at most 0.5, for members at
  0 and 1): 1 when they give the same number;
- ``coverage``: the alive members' share of the configured weight, so a run missing a member says so;
- ``confidence = coverage * strength * agreement * spread``, in [0, 1].

Strength is in the product because agreement alone is highest when every member sits at 0.5 with no view: with
agreement times spread alone, the held-out precision of the two shipped members FELL as the threshold rose (0.615
at full coverage, 0.566 at 10 %: bot4 train on seeds 1-3, held-out seeds 11-12, 2026-12-06). This definition was
then fixed before any figure of it was seen, and is not tuned. One alive member: ``coverage * strength``. Below
``min_confidence`` the ensemble has no view: ``prob_up`` is exactly 0.5, which every strategy reads as "no edge".
"""
import numpy as np
from numba import njit

CAL_NONE = 0
CAL_PLATT = 1       # p' = sigmoid(a * logit(p) + b)
CAL_ISOTONIC = 2    # p' = interp(p, x, y): a step function fitted on validation data, joined linearly

_EPS = 1e-7


@njit(cache=True)
def interp(v, xs, ys):
    """``np.interp(v, xs, ys)`` for one value, bit for bit (numpy's arithmetic and edge rules); numba's np.interp
    on a scalar costs ~80 ns, this ~1 ns. ``xs`` increasing, at least one point."""
    last = xs.shape[0] - 1
    if v > xs[last]:
        return ys[last]
    if v < xs[0]:
        return ys[0]
    j = np.searchsorted(xs, v, side="right") - 1  # the last knot <= v (v is not NaN here: NaN compares false)
    if j >= last:
        return ys[last]
    if v == xs[j]:
        return ys[j]
    slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    r = slope * (v - xs[j]) + ys[j]
    if np.isnan(r):  # an infinite slope: numpy's fallback from the right knot
        r = slope * (v - xs[j + 1]) + ys[j + 1]
        if np.isnan(r) and ys[j] == ys[j + 1]:
            r = ys[j]
    return r


@njit(cache=True)
def calibrate(p, n, method, a, b, xs, ys, out):
    """Calibrated ``p[:n]`` into ``out[:n]``. ``xs``/``ys``: the isotonic curve (increasing ``xs``); NaN stays NaN."""
    for i in range(n):
        v = p[i]
        if method == CAL_PLATT:
            c = min(max(v, _EPS), 1.0 - _EPS)
            out[i] = 1.0 / (1.0 + np.exp(-(a * np.log(c / (1.0 - c)) + b)))
        elif method == CAL_ISOTONIC:
            out[i] = interp(v, xs, ys)
        else:
            out[i] = v
        if v != v:
            out[i] = v
    return n


@njit(cache=True)
def combine(probs, weights, alive, n, min_confidence, prob_out, confidence_out):
    """Vote of ``probs[m, :n]`` (members by rows) into ``prob_out[:n]`` and ``confidence_out[:n]``; returns n.

    ``alive[m]``: the member answered this batch. A probability that is not finite, or outside [0, 1], counts as
    that member not answering for that decision. No alive member: prob 0.5, confidence 0."""
    m_count = probs.shape[0]
    total = 0.0
    for m in range(m_count):
        total += weights[m]
    for i in range(n):
        w_sum = 0.0
        mean = 0.0
        for m in range(m_count):
            v = probs[m, i]
            if alive[m] and weights[m] > 0.0 and 0.0 <= v <= 1.0:
                w_sum += weights[m]
                mean += weights[m] * v
        if w_sum <= 0.0:
            prob_out[i] = 0.5
            confidence_out[i] = 0.0
            continue
        mean /= w_sum
        var = 0.0
        same_side = 0.0
        for m in range(m_count):
            v = probs[m, i]
            if alive[m] and weights[m] > 0.0 and 0.0 <= v <= 1.0:
                var += weights[m] * (v - mean) * (v - mean)
                if (v > 0.5 and mean > 0.5) or (v < 0.5 and mean < 0.5):
                    same_side += weights[m]
        std = np.sqrt(var / w_sum)
        agreement = max(0.0, 2.0 * same_side / w_sum - 1.0)
        spread = max(0.0, 1.0 - 2.0 * std)
        strength = 2.0 * abs(mean - 0.5)
        confidence = min(1.0, (w_sum / total) * strength * agreement * spread)
        confidence_out[i] = confidence
        prob_out[i] = mean if confidence >= min_confidence else 0.5
    return n


@njit(cache=True)
def answer(raw, n, method, a, b, xs, ys, no_view, off_graph, out):
    """One member's calibrated answer: ``calibrate`` into ``out[:n]``, then, for a member with ``no_view`` (the graph
    member), 0.5 on the rows ``off_graph[i]`` (an instrument that is not one of its nodes); returns n."""
    calibrate(raw, n, method, a, b, xs, ys, out)
    if no_view:
        for i in range(n):
            if off_graph[i]:
                out[i] = 0.5
    return n


@njit(cache=True)
def vote_members(raws, n, alive, methods, a, b, xs, ys, curve_len, no_view, off_graph, weights, min_confidence,
                 probs, prob_out, confidence_out):
    """A fused run's answer voted in one call: ``raws[m, :n]`` (float32, member m's raw prob_up) is ``answer``ed
    into ``probs[m, :n]`` for every ``alive`` member (with member m's ``methods[m]``, ``a[m]``, ``b[m]``, isotonic
    curve ``xs[m, :curve_len[m]]``, ``ys[m, :curve_len[m]]`` and ``no_view[m]``), then ``combine``d. Returns -1,
    writing nothing, when a number in ``raws[:, :n]`` is not finite (the caller runs the batch per member to find
    whose); else n. The per-member path calls the same ``answer`` and ``combine``: the same bits."""
    m_count = raws.shape[0]
    for m in range(m_count):
        for i in range(n):
            if not np.isfinite(raws[m, i]):
                return -1
    for m in range(m_count):
        if not alive[m]:
            continue
        k = curve_len[m]
        answer(raws[m], n, methods[m], a[m], b[m], xs[m, :k], ys[m, :k], no_view[m], off_graph, probs[m])
    return combine(probs, weights, alive, n, min_confidence, prob_out, confidence_out)
