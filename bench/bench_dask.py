"""``engine up`` of a Dask (4 workers) trivial map against plain Dask doing the same.

    python bench/bench_dask.py [--repeats 3] [--n 100] [--warmup 1]

taskrig: ``engine up bench/tasks_dask.py:square_sum -i n=N --state <temp>/state.db --json`` in a
subprocess (fresh state file each time): plan, journal, start a scheduler and 4 workers as
OS processes, run the map, tear them down, record everything. Anchor: ``bench/plain_dask.py``
in a subprocess: ``LocalCluster(n_workers=4)``, ``Client``, the same map, close. Both are
timed wall clock from outside, alternately, and the medians compared. Goal: at most 1.2x.
"cpu s (tree)" is the CPU time of the whole process tree (every reaped descendant), less
sensitive than wall clock to a busy machine. The phase columns come from each side's own
report (engine: the create and delete steps of its ``--json``; plain: its printed timings).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, emit, ratio, table

HERE = Path(__file__).resolve().parent
TARGET = str(HERE / "tasks_dask.py") + ":square_sum"


def leaked() -> int:
    """Live processes the engine tagged for this benchmark's stack (should be 0 after each up)."""
    from providers.local.process import find_tagged

    return len(find_tagged("bench_dask-", prefix=True))


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_engine(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as d:
        cmd = [sys.executable, "-m", "engine.cli", "up", TARGET, "-i", f"n={n}", "--state", f"{d}/state.db", "--json"]
        c, t = _children_cpu(), time.perf_counter()
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=600)
        wall, cpu = time.perf_counter() - t, _children_cpu() - c
    if r.returncode != 0:
        raise SystemExit(f"engine up failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    doc = json.loads(r.stdout)
    steps = {s["op"]: s.get("elapsed") for s in doc["applied"] + doc["teardown"]}
    return {"wall_s": wall, "cpu_s": cpu, "result": doc["outputs"], "create_s": steps.get("create"),
            "delete_s": steps.get("delete"), "leaked": leaked()}


def run_plain(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-dask-plain-") as d:
        cmd = [sys.executable, str(HERE / "plain_dask.py"), str(n)]
        c, t = _children_cpu(), time.perf_counter()
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=600)
        wall, cpu = time.perf_counter() - t, _children_cpu() - c
    if r.returncode != 0:
        raise SystemExit(f"plain dask failed ({r.returncode}):\n{r.stderr[-3000:]}")
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "cpu_s": cpu, "result": doc["result"], "create_s": doc["start_s"], "delete_s": doc["close_s"],
            "map_s": doc["map_s"]}


def med(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=100, help="items mapped")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each side first (file caches)")
    args = ap.parse_args()
    os.chdir(ROOT)
    expected = sum(x * x for x in range(args.n))

    for _ in range(args.warmup):
        run_engine(args.n)
        run_plain(args.n)
    eng, plain = [], []
    for i in range(args.repeats):
        # Alternate which side goes first, so that neither always follows the other's teardown.
        order = [("engine", run_engine), ("plain", run_plain)]
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            res = fn(args.n)
            if res["result"] != expected:
                raise SystemExit(f"{name} returned {res['result']!r}, expected {expected}")
            (eng if name == "engine" else plain).append(res)
            print(f"  run {i + 1} {name}: {res['wall_s']:.2f} s", file=sys.stderr, flush=True)

    e_med, p_med = med(eng, "wall_s"), med(plain, "wall_s")
    r = ratio(e_med, p_med)
    rows = [
        ["taskrig: engine up (state in a temp dir)", len(eng), e_med, min(x["wall_s"] for x in eng).__round__(3),
         med(eng, "cpu_s"), med(eng, "create_s"), med(eng, "delete_s"), "1.000"],
        ["plain Dask: LocalCluster(n_workers=4)", len(plain), p_med, min(x["wall_s"] for x in plain).__round__(3),
         med(plain, "cpu_s"), med(plain, "create_s"), med(plain, "delete_s"), r],
    ]
    print(f"Dask, 4 workers, map of {args.n} squares; wall clock of the whole process, "
          f"{args.repeats} alternating runs each (after {args.warmup} warm-up)")
    print(table(["", "runs", "median s", "min s", "cpu s (tree)", "start/create s", "close/delete s", "taskrig/this"],
                rows))
    print(f"\ntaskrig / plain (median wall): {r}  (goal: <= 1.2)")
    leaks = [x["leaked"] for x in eng]
    print(f"tagged processes left after each engine up: {leaks}")
    deletes = [x["delete_s"] for x in eng]
    print(f"engine teardown (delete step) per run, s: {deletes}")
    if any(x is not None and x >= 9.5 for x in deletes):
        print("  a teardown near 10 s is terminate()'s SIGTERM grace running out: a dask worker did not exit on "
              "SIGTERM (it was signalled together with its scheduler)")
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at the end (2 cores, shared machine): {load}")
    emit({"bench": "dask", "n": args.n, "repeats": args.repeats,
          "taskrig": {"median_s": e_med, "cpu_median_s": med(eng, "cpu_s"), "walls_s": [round(x["wall_s"], 3) for x in eng],
                      "create_median_s": med(eng, "create_s"), "delete_median_s": med(eng, "delete_s"),
                      "deletes_s": deletes},
          "plain": {"median_s": p_med, "cpu_median_s": med(plain, "cpu_s"), "walls_s": [round(x["wall_s"], 3) for x in plain],
                    "start_median_s": med(plain, "create_s"), "close_median_s": med(plain, "delete_s")},
          "ratio_median": r, "goal_ratio": 1.2, "leaked_processes": leaks, "loadavg": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
