"""``engine up`` of a trivial Spark DataFrame job against a plain script running it on local[2].

    python bench/bench_spark.py [--repeats 3] [--warmup 1] [--n 100000] [--no-cds]

taskrig: ``engine up bench/bench_spark.py:count_by_key -i n=N --state <temp>/state.db --json``
in a subprocess (fresh state file each time): plan, journal, start a standalone master and one
worker (1 core, 512m) from pyspark's distribution, connect a SparkSession, run the job (an
executor JVM is started for it), stop the session, tear the cluster down, record everything.
Anchor: this same file with ``--plain`` in a subprocess: ``SparkSession.builder
.master("local[2]").getOrCreate()``, the same job, ``stop()`` (everything in the driver JVM).
Both are timed wall clock from outside, alternately, and the medians compared. Goal: at most
1.5x. "cpu s (tree)" is the CPU time of the whole process tree (every reaped descendant:
the engine's driver, master, worker and executor JVMs; the anchor's one JVM).

The engine's JVMs map Spark's classes from class-data archives that the first run on a
machine writes (providers/spark/local.py, ``ClassArchives``; the warm-up run pays for that
if the cache is empty). ``--no-cds`` runs the engine without them (``TASKRIG_SPARK_CDS=0``).

The file is its own task module and its own anchor, so that one file holds the benchmark.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))  # _common, when run as a script or loaded as a target

from _common import (ROOT, Laps, alternate, anchor, emit, fresh_up, headline, med,  # noqa: E402
                     print_leaks, print_load, ratio, row, table, walls)

STACK = "bench_spark"


def job(spark, n: int) -> list:
    """The work both sides do: a shuffle (group by) over a generated range."""
    rows = spark.range(n).selectExpr("id % 10 AS k").groupBy("k").count().collect()
    return sorted([r["k"], r["count"]] for r in rows)


if __name__ != "__main__":  # loaded by `engine up` as its target; the anchor never imports the engine
    import engine
    from providers.spark import Spark

    env = engine.TaskEnvironment(name=STACK, plugin_config=Spark())

    @env.task
    def count_by_key(n: int = 100_000) -> list:
        return job(engine.ctx().data["spark_session"], n)


def plain(n: int) -> None:
    """The anchor: what a user writes without the engine. It then waits for its driver JVM to
    exit, as the engine does for its own, so that the JVM's CPU time is counted on both sides
    (an exiting Python leaves it to exit on its own, unreaped)."""
    laps = Laps()
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    laps.lap("import_s")
    spark = SparkSession.builder.master("local[2]").appName("plain").getOrCreate()
    laps.lap("session_s")
    result = job(spark, n)
    laps.lap("job_s")
    spark.stop()
    proc = SparkContext._gateway.proc
    proc.stdin.close()
    proc.wait(timeout=60)
    laps.lap("stop_s")
    laps.report(result)


# ---------------------------------------------------------------------- the benchmark
def run_engine(n: int, cds: bool = True) -> dict:
    return fresh_up(f"{HERE}:count_by_key", STACK, "bench-spark-", {"n": n}, {} if cds else {"TASKRIG_SPARK_CDS": "0"})


def run_plain(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-spark-plain-") as d:
        doc, wall, cpu = anchor([sys.executable, str(HERE), "--plain", "--n", str(n)], d, "plain spark")
    return {"wall_s": wall, "cpu_s": cpu, "result": doc["result"], "session_s": doc["session_s"],
            "job_s": doc["job_s"], "stop_s": doc["stop_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=100_000, help="rows in the generated range")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each side first (file caches)")
    ap.add_argument("--plain", action="store_true", help="run the anchor once (what the benchmark times)")
    ap.add_argument("--no-cds", action="store_true", help="the engine without its JVM class-data archives")
    args = ap.parse_args()
    if args.plain:
        plain(args.n)
        return 0
    os.chdir(ROOT)
    expected = [[k, args.n // 10 + (1 if k < args.n % 10 else 0)] for k in range(10)]

    cds = not args.no_cds
    runs = alternate({"engine": lambda: run_engine(args.n, cds), "plain": lambda: run_plain(args.n)},
                     args.repeats, args.warmup, expected)
    eng, pln = runs["engine"], runs["plain"]

    e_med, p_med = med(eng), med(pln)
    r = ratio(e_med, p_med)
    rows = [row(f"taskrig: engine up (standalone master + 1 worker{'' if cds else ', no CDS'})", eng,
                ["cpu_s", "create_s", "delete_s"], "1.000"),
            row("plain: SparkSession on local[2]", pln, ["cpu_s", "session_s", "stop_s"], r)]
    headline(f"Spark, group-by count over range({args.n})", args.repeats, args.warmup)
    print(table(["", "runs", "median s", "min s", "cpu s (tree)", "create/session s", "delete/stop s",
                 "taskrig/this"], rows))
    print(f"\ntaskrig / plain (median wall): {r}  (goal: <= 1.5)")
    leaks = print_leaks(eng)
    load = print_load()
    emit({"bench": "spark", "n": args.n, "repeats": args.repeats, "cds": cds,
          "taskrig": {"median_s": e_med, "cpu_median_s": med(eng, "cpu_s"),
                      "walls_s": walls(eng),
                      "create_median_s": med(eng, "create_s"), "delete_median_s": med(eng, "delete_s")},
          "plain": {"median_s": p_med, "cpu_median_s": med(pln, "cpu_s"),
                    "walls_s": walls(pln),
                    "session_median_s": med(pln, "session_s"), "job_median_s": med(pln, "job_s")},
          "ratio_median": r, "goal_ratio": 1.5, "leaked_processes": leaks, "loadavg": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
