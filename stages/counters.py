"""A stage's custom counters, declared once in slot-word order.

Each ``add`` names one counter and returns its index, so a stage writes ``ST_BOOKS = counters.add("books")``
and its label tuple (``labels``, what ``pipeline.registry`` reads as the stage's counters) can never fall out
of step with the ``ST_*`` indices its kernels use: inserting a counter moves every later label and index
together. The indices are plain module ints, which numba freezes into the kernels as constants.
"""


class Counters:
    def __init__(self):
        self._labels: list[str] = []

    def add(self, label: str) -> int:
        """The index of a new counter labelled ``label``."""
        if label in self._labels:
            raise ValueError(f"counter {label!r} declared twice")
        self._labels.append(label)
        return len(self._labels) - 1

    def add_range(self, labels) -> int:
        """Consecutive counters, one per label in order; the index of the first."""
        first = len(self._labels)
        for label in labels:
            self.add(label)
        return first

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self._labels)
