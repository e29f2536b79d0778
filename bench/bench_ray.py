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
import os
import sys
import tempfile
from pathlib import Path

from _common import (ROOT, alternate, anchor, emit, fresh_up, headline, med, print_leaks, print_load, ratio,
                     row, table, walls)

HERE = Path(__file__).resolve().parent
TARGET = str(HERE / "tasks_ray.py") + ":one_call"
STACK = "bench_ray"


def run_engine(x: int) -> dict:
    return fresh_up(TARGET, STACK, "bench-ray-", {"x": x})


def run_plain(x: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-ray-plain-") as d:
        doc, wall, _ = anchor([sys.executable, str(HERE / "plain_ray.py"), str(x)], d, "plain ray")
    return {"wall_s": wall, "result": doc["result"], "create_s": doc["start_s"], "delete_s": doc["close_s"],
            "call_s": doc["call_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--x", type=int, default=7, help="the number squared remotely")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each side first (file caches)")
    args = ap.parse_args()
    os.chdir(ROOT)
    expected = args.x * args.x

    runs = alternate({"engine": lambda: run_engine(args.x), "plain": lambda: run_plain(args.x)},
                     args.repeats, args.warmup, expected)
    eng, plain = runs["engine"], runs["plain"]

    e_med, p_med = med(eng), med(plain)
    r = ratio(e_med, p_med)
    phases = ["create_s", "delete_s"]
    rows = [row("taskrig: engine up (state in a temp dir)", eng, phases, "1.000"),
            row("plain Ray: ray.init() (local, defaults)", plain, phases, r)]
    headline("Ray, head + 1 worker node, one remote call", args.repeats, args.warmup)
    print(table(["", "runs", "median s", "min s", "init/create s", "shutdown/delete s", "taskrig/this"], rows))
    print(f"\ntaskrig / plain (median wall): {r}  (goal: <= 1.2)")
    leaks = print_leaks(eng)
    deletes = [x["delete_s"] for x in eng]
    print(f"engine teardown (delete step) per run, s: {deletes}")
    load = print_load()
    emit({"bench": "ray", "x": args.x, "repeats": args.repeats,
          "taskrig": {"median_s": e_med, "walls_s": walls(eng),
                      "create_median_s": med(eng, "create_s"), "delete_median_s": med(eng, "delete_s"),
                      "deletes_s": deletes},
          "plain": {"median_s": p_med, "walls_s": walls(plain),
                    "start_median_s": med(plain, "create_s"), "close_median_s": med(plain, "delete_s")},
          "ratio_median": r, "goal_ratio": 1.2, "leaked_processes": leaks, "loadavg": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
