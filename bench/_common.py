"""Helpers shared by the benchmarks: summary statistics, a plain-text table, and the parts
of the engine-against-anchor benchmarks (bench_dask, bench_ray, bench_spark, bench_pytorch)
that are the same in each: timing a subprocess, running ``engine up`` or an anchor, the
alternating runs, the table rows, and the anchors' own phase timings (``Laps``).

Benchmarks print figures side by side with their anchor, as ratios; nothing here asserts
on time. The anchors (plain_*.py) import this module too, so its top-level imports stay
light: ``statistics`` and the engine's modules are imported where they are used.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` from a checkout without an install
    sys.path.insert(0, str(ROOT))


def summarize(samples_s: list[float]) -> dict:
    """Median, p90, mean, min and max of timings given in seconds, reported in milliseconds."""
    import statistics

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


# ---------------------------------------------------------------- engine up against an anchor
def children_cpu() -> float:
    """CPU seconds (user + system) of every reaped descendant so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(cmd: list[str], cwd: str | Path, env: dict | None = None,
          timeout: float = 600) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd`` to its end (output captured); also its wall clock and its process tree's CPU
    seconds. ``env`` is added to this process's environment."""
    c, t = children_cpu(), time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env=None if env is None else {**os.environ, **env})
    return r, time.perf_counter() - t, children_cpu() - c


def engine_up(target: str, state: str, cwd: str | Path, inputs: dict | None = None, env: dict | None = None,
              timeout: float = 600) -> tuple[dict, float, float]:
    """``engine up TARGET [-i k=v ...] --state STATE --json`` in a subprocess, timed: its JSON
    document, wall clock and CPU seconds. Exits the benchmark if it fails."""
    cmd = [sys.executable, "-m", "engine.cli", "up", target,
           *(a for k, v in (inputs or {}).items() for a in ("-i", f"{k}={v}")), "--state", state, "--json"]
    r, wall, cpu = timed(cmd, cwd, env, timeout)
    if r.returncode != 0:
        raise SystemExit(f"engine up failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return json.loads(r.stdout), wall, cpu


def fresh_up(target: str, stack: str, prefix: str, inputs: dict, env: dict | None = None) -> dict:
    """``engine_up`` in a fresh temporary directory (its cwd and its state file's home): the run's
    wall clock and CPU seconds, its result (the outputs), the elapsed seconds of its create and
    delete steps, and the processes still tagged for ``stack`` once it is over."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        doc, wall, cpu = engine_up(target, f"{d}/state.db", d, inputs, env)
    steps = {s["op"]: s.get("elapsed") for s in doc["applied"] + doc["teardown"]}
    return {"wall_s": wall, "cpu_s": cpu, "result": doc["outputs"], "create_s": steps.get("create"),
            "delete_s": steps.get("delete"), "leaked": leaked(stack)}


def anchor(cmd: list[str], cwd: str | Path, name: str, timeout: float = 600) -> tuple[dict, float, float]:
    """Run an anchor in a subprocess, timed: the JSON of its last line of output, wall clock and
    CPU seconds. Exits the benchmark (``<name> failed``) if it fails."""
    r, wall, cpu = timed(cmd, cwd, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"{name} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1]), wall, cpu


def leaked(stack: str) -> int:
    """Live processes the engine tagged for ``stack`` (should be 0 after each up)."""
    from providers.local.process import find_tagged

    return len(find_tagged(f"{stack}-", prefix=True))


def alternate(sides: dict[str, Callable[[], dict]], repeats: int, warmup: int, expected) -> dict[str, list[dict]]:
    """``warmup`` untimed runs of each side in turn, then ``repeats`` rounds in which the side
    that goes first alternates, so that neither always follows the other's teardown. Each run
    returns a dict with its ``result`` (which must equal ``expected``, or the benchmark exits)
    and ``wall_s``; the runs of each side, in order."""
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    order = list(sides.items())
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for i in range(repeats):
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            res = fn()
            if res["result"] != expected:
                raise SystemExit(f"{name} returned {res['result']!r}, expected {expected}")
            runs[name].append(res)
            print(f"  run {i + 1} {name}: {res['wall_s']:.2f} s", file=sys.stderr, flush=True)
    return runs


def med(runs: list[dict], key: str = "wall_s") -> float | None:
    """The median of ``key`` over the runs that have it, to 3 places (None if none has)."""
    import statistics

    vals = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def walls(runs: list[dict]) -> list[float]:
    return [round(x["wall_s"], 3) for x in runs]


def row(label: str, runs: list[dict], keys: list[str], last) -> list:
    """A table row: label, runs, median and min wall clock, the median of each of ``keys``, ``last``."""
    return [label, len(runs), med(runs), round(min(x["wall_s"] for x in runs), 3), *(med(runs, k) for k in keys), last]


def headline(what: str, repeats: int, warmup: int) -> None:
    print(f"{what}; wall clock of the whole process, {repeats} alternating runs each (after {warmup} warm-up)")


def print_leaks(runs: list[dict]) -> list[int]:
    leaks = [x["leaked"] for x in runs]
    print(f"tagged processes left after each engine up: {leaks}")
    return leaks


def print_load() -> list[float]:
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at the end (2 cores, shared machine): {load}")
    return load


class Laps:
    """An anchor's own phase timings: ``lap(name)`` records the seconds since the previous lap
    (the first: since the Laps was made); ``report(result)`` prints the result and the laps as
    one JSON line, the anchor's last."""

    def __init__(self) -> None:
        self.s: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        t = time.perf_counter()
        self.s[name] = t - self._t
        self._t = t

    def report(self, result) -> None:
        print(json.dumps({"result": result, **self.s}))
