"""``bot4 allocator weights``: show the allocator weights a running pipeline uses, or publish new ones.

    bot4 allocator weights --name RUN                          # the table in force, by regime
    bot4 allocator weights --name RUN --trending momentum=1 --volatile off

Each ``--REGIME`` takes "STRATEGY=WEIGHT,..." (weights in [0, 10]) or "off"; a regime not named keeps its
weights. The run's strategy stage takes the table at its next batch of predictions; ``bot4 status`` shows the
version in force. A strategy whose weight drops to 0 only closes what it holds (the maker withdraws its quotes).
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone

from pipeline.config import ConfigError
from pipeline.store import weights_store


def _print_table(header: str, weights) -> None:
    print(header)
    for regime, text in weights_store.describe(weights).items():
        print(f"  {regime:<12} {text}")


def main(run: str, changes: dict[str, str]) -> int:
    try:
        if not changes:
            weights, version, published_ns = weights_store.current(run)
            when = datetime.fromtimestamp(published_ns / 1e9, timezone.utc).isoformat(timespec="seconds")
            _print_table(f"version {version} (published {when}; 1 = the run's config)", weights)
            return 0
        parsed = weights_store.parse(changes)
        version, weights = weights_store.publish(run, parsed)
    except ConfigError as exc:
        print(f"bot4 allocator weights: {exc}", file=sys.stderr)
        return 2
    except TimeoutError as exc:  # a publisher killed mid-write leaves the slot odd: no one can write it again
        print(f"bot4 allocator weights: the run's weights table is stuck mid-write ({exc}); a publisher was "
              "probably killed while writing: the weights in force stay; restart the run to reset the table",
              file=sys.stderr)
        return 1
    except weights_store.PublishError as exc:
        print(f"bot4 allocator weights: {'nothing published: ' if changes else ''}{exc}", file=sys.stderr)
        return 1
    _print_table(f"published to run {run!r} as version {version}:", weights)
    return 0
