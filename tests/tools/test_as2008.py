"""tools.as2008: a 300-path run of the paper's simulation against its Tables 1-3 within Monte-Carlo error, and the
--json output. The checks fail if the quotes ignore inventory (the inventory std alone is 3x the paper's then)."""
import json
import math

import pytest

from tools import as2008

PATHS = 300
SEED = 12
PAPER_PATHS = 1000
SE = 4.0  # standard errors of the difference of two Monte-Carlo estimates (ours, the paper's)
# Within one step the paper fills first and moves the mid after; judging the fills against the moved mid instead
# (an O(dt) choice) lowers mean profits by 1.2-1.5 at gamma = 0.1 and 0.01 (20,000 paths). The paper's profits
# sit at or below that reading, so profit means get that much room on top of the standard errors.
PROFIT_ALLOWANCE = 1.5
SPREAD_COL, PROFIT_COL, PROFIT_STD_COL, Q_COL, Q_STD_COL = range(5)


@pytest.fixture(scope="module")
def results():
    return as2008.run(PATHS, SEED, (0.1, 0.01, 0.5))


def _profit_bound(ours, paper):
    se = math.sqrt(ours["profit_std"] ** 2 / PATHS + paper[PROFIT_STD_COL] ** 2 / PAPER_PATHS)
    return SE * se + PROFIT_ALLOWANCE


def _q_std_bound(ours, paper):
    # the standard error of a sample std of n normal draws is about std / sqrt(2 (n - 1))
    se = math.sqrt(ours["q_std"] ** 2 / (2 * (PATHS - 1)) + paper[Q_STD_COL] ** 2 / (2 * (PAPER_PATHS - 1)))
    return SE * se


@pytest.mark.parametrize("gamma", [0.1, 0.01])
@pytest.mark.parametrize("strategy", ["inventory", "symmetric"])
def test_profit_means_and_inventory_stds_match_the_paper_within_monte_carlo_error(results, gamma, strategy):
    ours, paper = results[gamma][strategy], as2008.PAPER[gamma][strategy]
    assert abs(ours["profit_mean"] - paper[PROFIT_COL]) <= _profit_bound(ours, paper), (ours, paper)
    assert abs(ours["q_std"] - paper[Q_STD_COL]) <= _q_std_bound(ours, paper), (ours, paper)


def test_gamma_half_keeps_the_papers_inventory_risk_and_its_ordering(results):
    # The paper's gamma = 0.5 profits are not those of its own stated procedure (the public replications found in the
    # search corpora finds ~48 and ~58, not 33.92 and 66.20); its inventory std is, and so is the ordering.
    inv, sym = results[0.5]["inventory"], results[0.5]["symmetric"]
    paper = as2008.PAPER[0.5]["inventory"]
    assert abs(inv["q_std"] - paper[Q_STD_COL]) <= _q_std_bound(inv, paper)
    assert inv["profit_mean"] < sym["profit_mean"] and inv["profit_std"] < 0.6 * sym["profit_std"]
    assert inv["q_std"] < 0.4 * sym["q_std"]


def test_inventory_strategy_trades_profit_for_lower_risk_and_more_so_with_more_risk_aversion(results):
    for gamma in (0.1, 0.01, 0.5):
        inv, sym = results[gamma]["inventory"], results[gamma]["symmetric"]
        assert inv["profit_std"] < sym["profit_std"] and inv["q_std"] < sym["q_std"]
        assert inv["spread"] == pytest.approx(sym["spread"], abs=1e-12)  # same spread, centred differently
    assert results[0.5]["inventory"]["q_std"] < results[0.1]["inventory"]["q_std"] < results[0.01]["inventory"]["q_std"]
    # the average quoted spread: (2/g) ln(1 + g/k) + g sigma^2 * mean(T - t), mean(T - t) = (T + dt) / 2 over the steps
    for gamma in (0.1, 0.01, 0.5):
        expected = 2 / gamma * math.log(1 + gamma / as2008.K) + gamma * as2008.SIGMA ** 2 * (1 + as2008.DT) / 2
        assert results[gamma]["inventory"]["spread"] == pytest.approx(expected, abs=1e-9)


def test_the_same_seed_gives_the_same_figures_and_another_seed_others():
    a = as2008.run(50, 3, (0.1,))
    assert a == as2008.run(50, 3, (0.1,))
    assert a != as2008.run(50, 4, (0.1,))


def test_json_has_every_gamma_strategy_and_field_beside_the_paper(capsys):
    assert as2008.main(["--json", "--paths", "40", "--seed", "5", "--gammas", "0.1,0.01,0.5,1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["params"] == {"s0": 100.0, "T": 1.0, "sigma": 2.0, "dt": 0.005, "A": 140.0, "k": 1.5, "paths": 40,
                             "seed": 5}
    assert set(doc["results"]) == {"0.1", "0.01", "0.5", "1.0"}
    for gamma, by_strategy in doc["results"].items():
        assert set(by_strategy) == {"inventory", "symmetric"}
        for name, entry in by_strategy.items():
            assert set(entry["ours"]) == set(as2008.FIELDS) and all(math.isfinite(v) for v in entry["ours"].values())
            if gamma == "1.0":
                assert entry["paper"] is None
            else:
                assert entry["paper"] == dict(zip(as2008.FIELDS, as2008.PAPER[float(gamma)][name]))


def test_the_table_prints_ours_beside_the_papers_and_bad_arguments_exit_2(capsys):
    assert as2008.main(["--paths", "20", "--gammas", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "ours" in out and "paper" in out and "62.94" in out and "13.43" in out
    assert as2008.main(["--paths", "1"]) == 2
    assert "--paths=1" in capsys.readouterr().err
