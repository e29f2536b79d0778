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
import os
import sys
import tempfile
from pathlib import Path

from _common import (ROOT, alternate, anchor, emit, fresh_up, headline, med, print_leaks, print_load, ratio,
                     row, table, walls)

HERE = Path(__file__).resolve().parent
TARGET = str(HERE / "tasks_dask.py") + ":square_sum"
STACK = "bench_dask"


def run_engine(n: int) -> dict:
    return fresh_up(TARGET, STACK, "bench-dask-", {"n": n})


def run_plain(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-dask-plain-") as d:
        doc, wall, cpu = anchor([sys.executable, str(HERE / "plain_dask.py"), str(n)], d, "plain dask")
    return {"wall_s": wall, "cpu_s": cpu, "result": doc["result"], "create_s": doc["start_s"], "delete_s": doc["close_s"],
            "map_s": doc["map_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=100, help="items mapped")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each side first (file caches)")
    args = ap.parse_args()
    os.chdir(ROOT)
    expected = sum(x * x for x in range(args.n))

    runs = alternate({"engine": lambda: run_engine(args.n), "plain": lambda: run_plain(args.n)},
                     args.repeats, args.warmup, expected)
    eng, plain = runs["engine"], runs["plain"]

    e_med, p_med = med(eng), med(plain)
    r = ratio(e_med, p_med)
    phases = ["cpu_s", "create_s", "delete_s"]
    rows = [row("taskrig: engine up (state in a temp dir)", eng, phases, "1.000"),
            row("plain Dask: LocalCluster(n_workers=4)", plain, phases, r)]
    headline(f"Dask, 4 workers, map of {args.n} squares", args.repeats, args.warmup)
    print(table(["", "runs", "median s", "min s", "cpu s (tree)", "start/create s", "close/delete s", "taskrig/this"],
                rows))
    print(f"\ntaskrig / plain (median wall): {r}  (goal: <= 1.2)")
    leaks = print_leaks(eng)
    deletes = [x["delete_s"] for x in eng]
    print(f"engine teardown (delete step) per run, s: {deletes}")
    if any(x is not None and x >= 9.5 for x in deletes):
        print("  a teardown near 10 s is terminate()'s SIGTERM grace running out: a dask worker did not exit on "
              "SIGTERM (it was signalled together with its scheduler)")
    load = print_load()
    emit({"bench": "dask", "n": args.n, "repeats": args.repeats,
          "taskrig": {"median_s": e_med, "cpu_median_s": med(eng, "cpu_s"), "walls_s": walls(eng),
                      "create_median_s": med(eng, "create_s"), "delete_median_s": med(eng, "delete_s"),
                      "deletes_s": deletes},
          "plain": {"median_s": p_med, "cpu_median_s": med(plain, "cpu_s"), "walls_s": walls(plain),
                    "start_median_s": med(plain, "create_s"), "close_median_s": med(plain, "delete_s")},
          "ratio_median": r, "goal_ratio": 1.2, "leaked_processes": leaks, "loadavg": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
