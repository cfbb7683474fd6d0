import pytest

from stages import execute, validate
from stages.counters import Counters
from stages.records import REJ_NAMES


def test_each_counter_is_the_word_its_label_names_and_a_label_is_declared_once():
    c = Counters()
    first, second = c.add("first"), c.add("second")
    reasons = c.add_range(("a", "b"))
    last = c.add("last")
    assert c.labels == ("first", "second", "a", "b", "last")
    assert [c.labels[i] for i in (first, second, reasons, reasons + 1, last)] == list(c.labels)
    with pytest.raises(ValueError, match="'a' declared twice"):
        c.add("a")


def test_per_reason_ranges_follow_the_reason_codes():
    assert all(validate.STATS[validate.ST_REASON_BASE + code - 1] == label
               for code, (label, _) in validate.REASONS.items())
    assert all(execute.STATS[execute.ST_REJ_BASE + code - 1] == "rej_" + name.replace(" ", "_")
               for code, name in REJ_NAMES.items())
