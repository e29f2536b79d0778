"""``engine up`` of a trivial Ray task (head + 1 worker node) against plain Ray doing the same.

    python bench/bench_ray.py [--repeats 3] [--warmup 1]

taskrig: ``engine up bench/tasks_ray.py:one_call --state <temp>/state.db --json`` in a
subprocess (fresh state file each time): plan, journal, start a head and one worker node
(`ray start`, two nodes, on 127.0.0.1), ``ray.init()`` + one remote call in the task, tear both
nodes down, record everything. Anchor: ``bench/plain_ray.py`` in a subprocess: ``ray.init()``
(one local node, Ray's defaults), the same remote call, ``ray.shutdown()``. Both are timed wall
clock from outside, alternately, and the medians compared. Goal: at most 1.2x. The phase
columns come from each side's own report (engine: the create and delete steps of its
``--json``; plain: its printed timings).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, emit, ratio, table

HERE = Path(__file__).resolve().parent
TARGET = str(HERE / "tasks_ray.py") + ":one_call"


def leaked() -> int:
    """Live processes the engine tagged for this benchmark's stack (should be 0 after each up)."""
    from providers.local.process import find_tagged

    return len(find_tagged("bench_ray-", prefix=True))


def run_engine(x: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as d:
        cmd = [sys.executable, "-m", "engine.cli", "up", TARGET, "-i", f"x={x}", "--state", f"{d}/state.db", "--json"]
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"engine up failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    doc = json.loads(r.stdout)
    steps = {s["op"]: s.get("elapsed") for s in doc["applied"] + doc["teardown"]}
    return {"wall_s": wall, "result": doc["outputs"], "create_s": steps.get("create"),
            "delete_s": steps.get("delete"), "leaked": leaked()}


def run_plain(x: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-ray-plain-") as d:
        cmd = [sys.executable, str(HERE / "plain_ray.py"), str(x)]
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"plain ray failed ({r.returncode}):\n{r.stderr[-3000:]}")
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "result": doc["result"], "create_s": doc["start_s"], "delete_s": doc["close_s"],
            "call_s": doc["call_s"]}


def med(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--x", type=int, default=7, help="the number squared remotely")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each side first (file caches)")
    args = ap.parse_args()
    os.chdir(ROOT)
    expected = args.x * args.x

    for _ in range(args.warmup):
        run_engine(args.x)
        run_plain(args.x)
    eng, plain = [], []
    for i in range(args.repeats):
        # Alternate which side goes first, so that neither always follows the other's teardown.
        order = [("engine", run_engine), ("plain", run_plain)]
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            res = fn(args.x)
            if res["result"] != expected:
                raise SystemExit(f"{name} returned {res['result']!r}, expected {expected}")
            (eng if name == "engine" else plain).append(res)
            print(f"  run {i + 1} {name}: {res['wall_s']:.2f} s", file=sys.stderr, flush=True)

    e_med, p_med = med(eng, "wall_s"), med(plain, "wall_s")
    r = ratio(e_med, p_med)
    rows = [
        ["taskrig: engine up (state in a temp dir)", len(eng), e_med, min(x["wall_s"] for x in eng).__round__(3),
         med(eng, "create_s"), med(eng, "delete_s"), "1.000"],
        ["plain Ray: ray.init() (local, defaults)", len(plain), p_med, min(x["wall_s"] for x in plain).__round__(3),
         med(plain, "create_s"), med(plain, "delete_s"), r],
    ]
    print(f"Ray, head + 1 worker node, one remote call; wall clock of the whole process, "
          f"{args.repeats} alternating runs each (after {args.warmup} warm-up)")
    print(table(["", "runs", "median s", "min s", "init/create s", "shutdown/delete s", "taskrig/this"], rows))
    print(f"\ntaskrig / plain (median wall): {r}  (goal: <= 1.2)")
    leaks = [x["leaked"] for x in eng]
    print(f"tagged processes left after each engine up: {leaks}")
    deletes = [x["delete_s"] for x in eng]
    print(f"engine teardown (delete step) per run, s: {deletes}")
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at the end (2 cores, shared machine): {load}")
    emit({"bench": "ray", "x": args.x, "repeats": args.repeats,
          "taskrig": {"median_s": e_med, "walls_s": [round(x["wall_s"], 3) for x in eng],
                      "create_median_s": med(eng, "create_s"), "delete_median_s": med(eng, "delete_s"),
                      "deletes_s": deletes},
          "plain": {"median_s": p_med, "walls_s": [round(x["wall_s"], 3) for x in plain],
                    "start_median_s": med(plain, "create_s"), "close_median_s": med(plain, "delete_s")},
          "ratio_median": r, "goal_ratio": 1.2, "leaked_processes": leaks, "loadavg": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
