"""report.json's one way of writing numbers: sorted keys, floats to 12 significant digits, NaN/inf as null."""
from __future__ import annotations

import json
import math

import numpy as np

SIGNIFICANT_DIGITS = 12


def clean(value):
    """``value`` with numpy scalars made Python, floats rounded and non-finite floats None (recursively)."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [clean(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if not math.isfinite(x):
            return None
        x = float(f"{x:.{SIGNIFICANT_DIGITS}g}")
        return 0.0 if x == 0 else x  # no -0.0
    return value


def dumps(value) -> str:
    return json.dumps(clean(value), sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
