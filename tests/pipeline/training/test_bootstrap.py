import numpy as np
import pytest

from pipeline.training.bootstrap import block_rows, standard_errors
from tests.pipeline.training.conftest import make_dataset


def _ar1(n: int, phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0] / np.sqrt(1 - phi * phi)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def _mean(x):
    return np.array([x.mean()])


def test_block_bootstrap_should_recover_the_standard_error_of_a_correlated_mean():
    n, phi = 20_000, 0.8
    x = _ar1(n, phi, seed=3)
    # long-run variance of AR(1) with unit innovations: 1 / (1 - phi)^2
    expected = 1.0 / (1.0 - phi) / np.sqrt(n)
    iid = 1.0 / np.sqrt(1.0 - phi * phi) / np.sqrt(n)   # what treating rows as independent would say (3x less)
    se = standard_errors(_mean, 200, 300, 1, x)[0]
    assert se == pytest.approx(expected, rel=0.2)
    assert standard_errors(_mean, 1, 300, 1, x)[0] == pytest.approx(iid, rel=0.2)


def test_standard_errors_should_be_seeded():
    x = _ar1(2000, 0.5, seed=1)
    assert standard_errors(_mean, 20, 50, 7, x)[0] == standard_errors(_mean, 20, 50, 7, x)[0]


def test_block_rows_should_cover_a_label_span_in_rows():
    # labels read 9 records ahead, rows are every other record: 4.5 rows -> 5
    assert block_rows(make_dataset(500, span=9)) == 5
