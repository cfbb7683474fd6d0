"""Fused mode's inner loop, compiled: risk -> inference -> strategy -> execute, piece by piece over one batch.

A batch of validated market events is cut into pieces whose event times span at most ``span_ns`` each (0: the
whole batch is one piece); each piece runs the four stages in pipeline order, and the execution reports of one
piece reach risk and strategy with the next, as the feedback rings deliver them later in live mode. The feature
stage and the model run once per batch before this loop (a feature vector depends on the market alone, one per
event, and the model's probability on the vector alone), so Python calls onnxruntime once per batch, not once
per piece, and no piece costs a Python round.

The pieces, the order of the calls and every kernel's inputs are exactly those of the same loop written in
Python (the digest test of fused mode runs this module without the JIT too).
"""
import numpy as np
from numba import literally, njit, types
from numba.extending import overload

from stages import execute, fixed_quote, inference, risk, strategy

STRATEGY_SIGNAL, STRATEGY_FIXED_QUOTE = 0, 1  # the strategy stage's kernel: stages.strategy or stages.fixed_quote
# counts[stage, 0] records in, counts[stage, 1] records out, for the host's per-stage counters
C_RISK, C_INFERENCE, C_STRATEGY, C_EXECUTE = range(4)
# what run_pieces returns in ``progress``: where the next call starts, what this one wrote, the feedback it left
R_NEXT, R_INTENTS, R_REPORTS, R_FEEDBACK_START, R_FEEDBACK_N, R_NOW = range(6)


def strategy_kind(module) -> int:
    return STRATEGY_FIXED_QUOTE if module is fixed_quote else STRATEGY_SIGNAL


def strategy_step(kind, in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    """The strategy kernel of ``kind`` (interpreted, with the JIT off; compiled code uses the overload below)."""
    step = fixed_quote.step if kind == STRATEGY_FIXED_QUOTE else strategy.step
    return step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns)


@overload(strategy_step)
def _strategy_step(kind, in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
    """The strategy kernel of ``kind`` chosen at compile time: each has its own state type."""
    if not isinstance(kind, types.IntegerLiteral):
        return None
    step = fixed_quote.step if kind.literal_value == STRATEGY_FIXED_QUOTE else strategy.step

    def impl(kind, in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns):
        return step(in_a, n_a, in_b, n_b, state, params, ctl, stats, out, now_ns)
    return impl


@njit(cache=True, _nrt=False)
def piece_end(valid, lo, hi, start, span_ns):
    """End (exclusive) of the piece that starts at ``start`` in the batch ``valid[lo:hi]``: the first event later
    than ``span_ns`` after it, found as ``np.searchsorted(valid["origin_ts"][lo:hi], t, side="right")`` does."""
    if span_ns <= 0 or valid[hi - 1]["origin_ts"] - valid[lo]["origin_ts"] <= span_ns:
        return hi
    limit = valid[start]["origin_ts"] + span_ns
    a, b = lo, hi
    while a < b:
        mid = a + ((b - a) >> 1)
        if valid[mid]["origin_ts"] <= limit:
            a = mid + 1
        else:
            b = mid
    return max(a, start + 1)


@njit(cache=True, _nrt=False)
def run_pieces(valid, batch_ends, n_batches, prob, confidence, alive, size_scale, start, span_ns, feedback,
               n_feedback, ctl, vectors, risk_state, risk_params, risk_stats, decisions, predictions,
               kind, strategy_state, strategy_params, strategy_stats,
               execute_state, execute_params, execute_stats,
               intents, reports, counts, progress):
    """Pieces of ``valid[start:]`` (``vectors``: its feature vectors, one per event; ``prob``: the model's
    probability for each, ``confidence`` and ``alive`` the ensemble's, ``size_scale`` the sizer's,
    stages.inference.finish) until its batches end or ``intents`` / ``reports`` could not hold another piece's
    output; every piece's intents and reports are appended to those two. ``feedback[:n_feedback]``: the reports
    of the piece before ``start``. ``valid`` holds ``n_batches`` batches, the b-th ending at ``batch_ends[b]``:
    no piece spans two (each batch is cut as if it came alone). Writes ``progress`` (R_*): the call after this
    one starts at R_NEXT, and the last piece's reports, ``reports[R_FEEDBACK_START:][:R_FEEDBACK_N]``, are its
    feedback. ``kind`` (STRATEGY_*) is compiled in: one specialisation per strategy kernel."""
    literally(kind)
    n_int = 0
    n_rep = 0
    fb_start = 0
    now = np.int64(0)
    s = start
    b = 0
    n_valid = batch_ends[n_batches - 1]
    while s < n_valid:
        while batch_ends[b] <= s:
            b += 1
        e = piece_end(valid, 0 if b == 0 else batch_ends[b - 1], batch_ends[b], s, span_ns)
        m = e - s
        if intents.shape[0] - n_int < strategy.out_capacity(m) or reports.shape[0] - n_rep < execute.out_capacity(m):
            break  # the host empties the buffers and calls again from here (numba checks no bounds)
        now = valid[e - 1]["origin_ts"]
        piece = valid[s:e]
        k = risk.step(vectors[s:e], m, feedback, n_feedback, risk_state, risk_params, ctl, risk_stats,
                      decisions, now)
        counts[C_RISK, 0] += m
        counts[C_RISK, 1] += k
        inference.finish(decisions, k, prob[s:s + k], confidence[s:s + k], alive[s:s + k], size_scale[s:s + k],
                         predictions, now)
        counts[C_INFERENCE, 0] += k
        counts[C_INFERENCE, 1] += k
        out = intents[n_int:]
        i = strategy_step(kind, predictions, k, feedback, n_feedback, strategy_state, strategy_params, ctl,
                          strategy_stats, out, now)
        counts[C_STRATEGY, 0] += k
        counts[C_STRATEGY, 1] += i
        r = execute.step(out, i, piece, m, execute_state, execute_params, ctl, execute_stats, reports[n_rep:], now)
        counts[C_EXECUTE, 0] += i
        counts[C_EXECUTE, 1] += r
        feedback = reports[n_rep:n_rep + r]
        n_feedback = r
        fb_start = n_rep
        n_int += i
        n_rep += r
        s = e
    progress[R_NEXT] = s
    progress[R_INTENTS] = n_int
    progress[R_REPORTS] = n_rep
    progress[R_FEEDBACK_START] = fb_start
    progress[R_FEEDBACK_N] = n_feedback if s > start else 0
    progress[R_NOW] = now
