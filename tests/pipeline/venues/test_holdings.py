"""Spot holdings against the run's fills: a difference counts only when three checks in a row see one of the same
sign (a fill the venue booked but has not reported yet shows for a moment), and the line names the currency, its
symbols and the smallest difference seen."""
import numpy as np

from pipeline.venues.holdings import HoldingsCheck
from stages.records import ANS_ACK, ANS_FILL, BUY, SELL, VENUE_ANSWER


def fill(key, side, qty, kind=ANS_FILL):
    a = np.zeros(1, VENUE_ANSWER)
    a["kind"], a["key"], a["side"], a["qty"], a["price"] = kind, key, side, qty, 100.0
    return a


def balances(**totals):
    return {c: {"free": v, "used": 0.0, "total": v} for c, v in totals.items()}


def check():
    c = HoldingsCheck("spot", bases={0: "BTC", 1: "ETH"}, symbols={0: "BTC/USDT", 1: "ETH/USDT"}, tolerance=1e-9)
    c.start(balances(BTC=10.0, USDT=1e6), {})
    return c


def test_fills_move_the_expected_holdings_and_matching_balances_pass():
    c = check()
    c.on_answers(np.concatenate([fill(0, BUY, 0.25), fill(0, SELL, 0.05), fill(0, BUY, 9.0, kind=ANS_ACK),
                                 fill(7, BUY, 1.0)]))  # an ack, and a key that is not the run's: ignored
    assert c.expected({}) == {"BTC": 10.2, "ETH": 0.0}
    assert c.check(balances(BTC=10.2), {}) == [] and c.check(balances(BTC=10.2), {}) == []


def test_a_difference_is_confirmed_only_when_three_checks_in_a_row_see_it():
    c = check()
    assert c.check(balances(BTC=10.5), {}) == []  # first sight: maybe a fill on its way
    c.on_answers(fill(0, BUY, 0.5))  # it was: the fill came
    assert c.check(balances(BTC=10.5), {}) == []
    assert c.check(balances(BTC=11.0), {}) == [] and c.check(balances(BTC=11.2), {}) == []  # a fill in flight too
    (line,) = c.check(balances(BTC=11.0), {})  # three in a row, all above: confirmed at the smallest
    assert "BTC (BTC/USDT)" in line and "holds 11" in line and "make it 10.5" in line and "+0.5 at least" in line


def test_a_fee_taken_in_the_base_currency_is_part_of_the_expected_holdings():
    c = HoldingsCheck("spot", bases={0: "BTC"}, symbols={0: "BTC/USDT"}, tolerance=1e-9)
    c.start(balances(BTC=1.0), {"BTC": 0.003})  # fees before the run are not the run's
    c.on_answers(fill(0, BUY, 1.0))
    assert c.expected({"BTC": 0.004}) == {"BTC": 1.999}
    assert c.check(balances(BTC=1.999), {"BTC": 0.004}) == [] and c.check(balances(BTC=1.999), {"BTC": 0.004}) == []


def test_a_check_taken_while_the_session_was_not_settled_judges_nothing_and_starts_the_count_again():
    c = check()
    assert c.check(balances(BTC=10.5), {}) == [] and c.check(balances(BTC=10.5), {}) == []
    assert c.check(balances(BTC=10.5), {}, settled=False) == []  # a stream drop or an order in doubt meanwhile
    assert c.check(balances(BTC=10.5), {}) == [] and c.check(balances(BTC=10.5), {}) == []
    (line,) = c.check(balances(BTC=10.5), {})  # three settled checks in a row after it
    assert "difference +0.5 at least" in line
