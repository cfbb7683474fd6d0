"""Spot holdings against what the run traded: a spot venue keeps balances, not positions, so what execute's
journal says the run bought and sold is checked against how the venue's balance of each base currency moved.

At the run's start the gateway takes each base currency's total balance as the baseline; every fill it hands to
execute (the journal's fills) moves the expected balance by its signed quantity, less any fee the venue charged
in that currency. A check compares the venue's totals with the expected ones. A fill the venue has booked but
not yet reported shows as a difference for a moment (and a run that trades all the time always has one in
flight), so a difference is confirmed only when CONFIRM_CHECKS checks in a row see one of the same sign: its
smallest is then the part no report in flight explains, and the gateway disables trading naming it. A check taken
while the session was not settled (its user stream down or resyncing, an order's outcome unknown: fills the venue
booked may not have reached the run yet) judges nothing and starts the count again.

Pure bookkeeping over plain data (no I/O); the gateway fetches the balances. Concurrency: one thread (the
gateway's main thread) calls everything.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.records import ANS_FILL

CONFIRM_CHECKS = 3


@dataclass
class HoldingsCheck:
    venue: str
    bases: dict[int, str]                  # instrument key -> its base currency
    symbols: dict[int, str]                # instrument key -> its market symbol (for the operator)
    tolerance: float                       # base units: a smaller difference is rounding
    baseline: dict[str, float] = field(default_factory=dict)
    traded: dict[str, float] = field(default_factory=dict)   # currency -> signed quantity filled since the baseline
    fills: int = 0
    _seen: dict[str, list] = field(default_factory=dict)  # currency -> the differences of the last checks
    base_fees_at_start: dict[str, float] = field(default_factory=dict)

    @property
    def started(self) -> bool:
        return bool(self.baseline)

    def start(self, balances: dict[str, dict], base_fees: dict[str, float]) -> None:
        """The baseline: each base currency's total now (a currency the venue does not list holds 0).
        ``base_fees``: what the session has counted so far of fees taken in each base currency (a running sum)."""
        self.baseline = {c: _total(balances, c) for c in sorted(set(self.bases.values()))}
        self.traded = dict.fromkeys(self.baseline, 0.0)
        self.base_fees_at_start = {c: float(base_fees.get(c, 0.0)) for c in self.baseline}
        self._seen = {}

    def on_answers(self, answers: np.ndarray) -> None:
        """The answers handed to execute: each fill moves its base currency's expected balance."""
        for a in answers[answers["kind"] == ANS_FILL]:
            currency = self.bases.get(int(a["key"]))
            if currency is None:
                continue
            self.traded[currency] = self.traded.get(currency, 0.0) + int(a["side"]) * float(a["qty"])
            self.fills += 1

    def expected(self, base_fees: dict[str, float]) -> dict[str, float]:
        """Each base currency's balance the run's fills imply; ``base_fees``: the session's running sums of fees
        taken in a base currency (Binance spot without BNB takes it from the bought asset)."""
        return {c: self.baseline[c] + self.traded.get(c, 0.0) - (float(base_fees.get(c, 0.0))
                                                                 - self.base_fees_at_start.get(c, 0.0))
                for c in self.baseline}

    def check(self, balances: dict[str, dict], base_fees: dict[str, float], settled: bool = True) -> list[str]:
        """Confirmed mismatches, one line each naming the currency, its symbols and both figures ([] = none).
        ``settled``: the session knew of every fill the venue may have booked when the balances were taken."""
        if not settled:
            self._seen = {}
            return []
        differences = {}
        for currency, want in self.expected(base_fees).items():
            have = _total(balances, currency)
            if abs(have - want) > self.tolerance:
                differences[currency] = (have, want)
        confirmed = []
        for currency in self.baseline:
            have, want = differences.get(currency, (0.0, 0.0))
            seen = self._seen.setdefault(currency, [])
            seen.append(have - want)
            del seen[:-CONFIRM_CHECKS]
            if len(seen) < CONFIRM_CHECKS or not (all(d > 0 for d in seen) or all(d < 0 for d in seen)):
                continue
            least = min(seen, key=abs)
            symbols = ", ".join(s for k, s in sorted(self.symbols.items()) if self.bases.get(k) == currency)
            confirmed.append(f"{self.venue} {currency} ({symbols}): the venue holds {have:.10g}, the run's fills "
                             f"since its start make it {want:.10g} (baseline {self.baseline[currency]:.10g}, traded "
                             f"{self.traded.get(currency, 0.0):+.10g}; difference {least:+.10g} at least, "
                             f"{CONFIRM_CHECKS} checks in a row)")
        return confirmed


def _total(balances: dict[str, dict], currency: str) -> float:
    entry = balances.get(currency) or {}
    total = entry.get("total")
    if total is None:
        total = float(entry.get("free") or 0.0) + float(entry.get("used") or 0.0)
    return float(total or 0.0)
