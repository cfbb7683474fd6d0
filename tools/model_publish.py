"""``bot4 model``: hand a model or ensemble version to a running pipeline, or return to the one before.

    bot4 model publish RUN DIR     # DIR: models/ensemble/<v>, models/<name>/<v>, or an .onnx with its .json
    bot4 model rollback RUN

The model set is verified here first (a refused one never reaches the run), then by the run's inference stage,
which loads it beside the one in use and swaps at a batch boundary; ``bot4 status`` shows the version in use.
Exit 0: taken; 1: refused or no such run (nothing changed).
"""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.hosting import models
from pipeline.hosting.model_swap import PUBLISH, ROLLBACK
from pipeline.store import model_store


def main(action: str, run: str, path: str | None = None, timeout_s: float = 180.0) -> int:
    where = f"bot4 model {action}"
    try:
        if action == "publish":
            full = Path(path).resolve()
            try:
                models.load(full)
            except (OSError, ValueError) as exc:
                print(f"{where}: nothing published: {exc}", file=sys.stderr)
                return 1
            ok, version, text = model_store.request(run, PUBLISH, str(full), timeout_s)
        else:
            ok, version, text = model_store.request(run, ROLLBACK, "", timeout_s)
    except model_store.PublishError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 1
    except TimeoutError as exc:
        print(f"{where}: the run's model table is stuck mid-write ({exc}); restart the run to reset it",
              file=sys.stderr)
        return 1
    if not ok:
        print(f"{where}: run {run!r} kept version {version}: {text}", file=sys.stderr)
        return 1
    print(f"run {run!r} now serves {text} (version {version})")
    return 0
