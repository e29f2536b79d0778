"""Helpers shared by the benchmarks: summary statistics and a plain-text table.

Benchmarks print figures side by side with their anchor, as ratios; nothing here asserts
on time.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` from a checkout without an install
    sys.path.insert(0, str(ROOT))


def summarize(samples_s: list[float]) -> dict:
    """Median, p90, mean, min and max of timings given in seconds, reported in milliseconds."""
    ms = sorted(s * 1000.0 for s in samples_s)
    n = len(ms)
    p90 = ms[max(0, math.ceil(0.9 * n) - 1)]  # nearest rank
    return {"n": n, "median_ms": round(statistics.median(ms), 3), "p90_ms": round(p90, 3),
            "mean_ms": round(statistics.fmean(ms), 3), "min_ms": round(ms[0], 3), "max_ms": round(ms[-1], 3)}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def emit(doc: dict) -> None:
    """The final line of every benchmark: one JSON document."""
    print(json.dumps(doc, sort_keys=False), flush=True)
