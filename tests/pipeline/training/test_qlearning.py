"""Fitted Q-iteration for the sizer (pipeline.training.qlearning): the rewards are the instruments' marked-to-market
net PnL in steps, a tiny training runs, exports and loads as the host's sizer, the same bytes twice; the CLI refuses
bad flags by name."""
import numpy as np
import pytest

from pipeline.hosting import models
from pipeline.training import qlearning, registry
from stages import records
from stages.records import N_FEATURES


def _behaviour_log(rows):
    """A Behaviour that 'saw' ``rows`` = [(venue, symbol, ts, bid, ask, action)] in one batch."""
    b = qlearning.Behaviour(np.array([0.0, 1.0]), seed=0)
    d = np.zeros(len(rows), records.FEATURE_VECTOR)
    for i, (venue, symbol, ts, bid, ask, _) in enumerate(rows):
        d[i]["venue"], d[i]["symbol"], d[i]["origin_ts"], d[i]["bid"], d[i]["ask"] = venue, symbol, ts, bid, ask
    x = np.arange(len(rows) * N_FEATURES, dtype=np.float32).reshape(len(rows), N_FEATURES)
    b.choose(d, x, len(rows), np.zeros(len(rows)))
    b.actions[-1][:] = [r[5] for r in rows]  # the actions the test says were taken
    return b


def _fill(venue, symbol, ts, side, qty, price, fee):
    r = np.zeros(1, records.EXEC_REPORT)
    r["venue"], r["symbol"], r["stage_ts"], r["side"], r["qty"], r["price"], r["fee"] = \
        venue, symbol, ts, side, qty, price, fee
    r["state"], r["liquidity"] = records.ORD_FILLED, -1
    return r


def test_rewards_should_be_the_instruments_marked_to_market_pnl_steps():
    log = _behaviour_log([(0, 1, 100, 99.0, 101.0, 1),   # mid 100: buys 2 at 101 (fee 0.5) at ts 150
                          (1, 0, 110, 0.0, 0.0, 0),      # no market yet: dropped
                          (0, 1, 200, 101.0, 103.0, 0),  # mid 102
                          (1, 0, 210, 9.0, 11.0, 1),     # mid 10: sells 1 at 10 (fee 0.1) at ts 260
                          (0, 1, 300, 103.0, 105.0, 1),  # mid 104: the instrument's last decision
                          (1, 0, 310, 7.0, 9.0, 0)])     # mid 8
    ack = _fill(0, 1, 120, records.BUY, 5.0, 101.0, 0.0)
    ack["state"], ack["liquidity"] = records.ORD_ACKED, 0  # an ack is no fill
    reports = np.concatenate([ack, _fill(0, 1, 150, records.BUY, 2.0, 101.0, 0.5),
                              _fill(1, 0, 260, records.SELL, 1.0, 10.0, 0.1)])
    t = qlearning.transitions(log, reports)
    # kept rows in order: (0,1)@100, (0,1)@200, (1,0)@210, (0,1)@300, (1,0)@310
    assert len(t) == 5
    # (0,1): MTM 0 at 100; at 200: cash -202.5, pos 2 at 102 -> +1.5; at 300 (last): 2 * 104 - 202.5 = 5.5
    # (1,0): MTM 0 at 210; at 310: cash 9.9, pos -1 at 8 -> 1.9 (terminal: the same, no fill after)
    np.testing.assert_allclose(t.reward, [1.5, 4.0, 1.9, 0.0, 0.0], atol=1e-12)
    np.testing.assert_array_equal(t.next_row, [1, 3, 4, -1, -1])
    np.testing.assert_array_equal(t.action, [1, 0, 1, 1, 0])
    assert t.net_pnl == pytest.approx(5.5 + 1.9)
    assert t.reward.sum() == pytest.approx(t.net_pnl)  # the rewards add up to the net PnL
    assert t.x[2, 0] == 3 * N_FEATURES  # the row of the (1,0)@210 decision


def test_a_tiny_training_should_export_a_sizer_the_host_loads_and_the_same_bytes_twice(tmp_path):
    from tests.conftest import signal_config
    settings = qlearning.Settings(seeds=(1,), events=1_500, passes=2, iterations=1, rounds=8)
    first = qlearning.train(signal_config(), settings, log=lambda _: None)
    assert first.rows > 1_000 and first.export_error <= qlearning.EXPORT_TOLERANCE * 1e3
    assert [p["epsilon"] for p in first.passes] == [1.0, settings.epsilon]
    assert first.passes[1]["rows"] == 2 * first.passes[0]["rows"]  # every pass's transitions are kept
    second = qlearning.train(signal_config(), settings, log=lambda _: None)
    assert first.onnx_bytes == second.onnx_bytes
    _, directory = registry.claim(tmp_path, "qnet")
    from stages.records import FEATURE_NAMES, FEATURE_SCHEMA_HASH
    registry.write_member(directory, first.onnx_bytes, {
        "name": "qnet", "version": 1, "member_kind": "qvalue", "size_scales": list(settings.actions),
        "feature_names": list(FEATURE_NAMES), "feature_schema_hash": FEATURE_SCHEMA_HASH})
    sizer = models.load(models.inference.DEFAULT_MODEL, sizer=directory).sizer
    x = np.random.default_rng(2).normal(0.0, 3.0, (64, N_FEATURES)).astype(np.float32)
    out = np.zeros(64)
    sizer.choose(np.zeros(64, records.RISK_DECISION), x, 64, out)
    np.testing.assert_array_equal(out, np.array(settings.actions)[np.argmax(first.fit.q(x), axis=1)])


def test_too_few_rows_of_an_action_should_be_refused_by_name():
    data = qlearning.Transitions(np.zeros((30, N_FEATURES), np.float32), np.zeros(30, np.int64), np.zeros(30),
                                 np.full(30, -1), 0.0)
    with pytest.raises(ValueError, match=r"action 1 \(size_scale 0.5\) was taken 0 times"):
        qlearning.fit_q(data, qlearning.Settings())


@pytest.mark.parametrize("argv, words", [
    (["--actions", "0.5"], ["--actions"]),
    (["--actions", "0,9"], ["--actions", "[0, 4]"]),
    (["--gamma", "1"], ["--gamma"]),
    (["--seeds", "1-8", "--validation-seeds", "8,9"], ["--validation-seeds", "[8]"]),
    (["--seeds", "x"], ["--seeds", "1-8"]),
    (["--set", "inference.sizer=models/qnet/v1"], ["inference.sizer"]),
    (["--events", "10"], ["--events"]),
])
def test_the_cli_should_refuse_bad_flags_by_name(capsys, argv, words):
    from tools import train_q
    with pytest.raises(SystemExit) as done:
        train_q.main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
