import numpy as np
import pytest

from pipeline.training.folds import label_span_records, walk_forward
from tests.pipeline.training.conftest import make_dataset


@pytest.mark.parametrize("embargo", [0, 7])
def test_folds_should_purge_labels_crossing_a_boundary_and_embargo_rows_after_it(embargo):
    ds = make_dataset(1000, span=9)
    folds = walk_forward(ds, n_folds=3, embargo=embargo, validation_fraction=0.25)
    assert [f.index for f in folds] == [1, 2, 3]
    edges = [0, 250, 500, 750, 1000]
    for fold, (test_start, test_end) in zip(folds, zip(edges[1:], edges[2:])):
        valid_start = round(test_start * 0.75)
        b_valid, b_test = ds.position[valid_start], ds.position[test_start]
        # purge: nothing before a boundary reads a label at or after it
        assert (ds.label_end[fold.train] < b_valid).all()
        assert (ds.label_end[fold.validation] < b_test).all()
        # embargo: nothing after a boundary within `embargo` records of it
        assert (ds.position[fold.validation] >= b_valid + embargo).all()
        assert (ds.position[fold.test] >= b_test + embargo).all()
        # what is dropped is exactly that: a row is every other record and a label reads 9 records ahead, so the
        # last 4 rows of a period are purged, and ceil(embargo / 2) rows after a boundary are embargoed
        assert fold.train[-1] == valid_start - 5 and fold.train[0] == 0
        assert fold.validation[0] == valid_start + (embargo + 1) // 2
        assert fold.validation[-1] == test_start - 5
        assert fold.test[0] == test_start + (embargo + 1) // 2 and fold.test[-1] == test_end - 1
        # time order: train < validation < test, disjoint
        assert fold.train[-1] < fold.validation[0] and fold.validation[-1] < fold.test[0]


def test_folds_should_grow_the_training_window_and_tile_the_test_blocks():
    ds = make_dataset(600)
    folds = walk_forward(ds, n_folds=5, embargo=0)
    assert [f.train.size for f in folds] == sorted(f.train.size for f in folds)
    tested = np.concatenate([f.test for f in folds])
    np.testing.assert_array_equal(tested, np.arange(100, 600))


def test_label_span_should_be_the_records_a_label_reads_ahead():
    assert label_span_records(make_dataset(100, span=9)) == 9


@pytest.mark.parametrize("kwargs, message", [({"n_folds": 0, "embargo": 0}, "n_folds"),
                                             ({"n_folds": 2, "embargo": -1}, "embargo"),
                                             ({"n_folds": 2, "embargo": 0, "validation_fraction": 1.0},
                                              "validation_fraction")])
def test_folds_should_refuse_bad_settings_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        walk_forward(make_dataset(100), **kwargs)
