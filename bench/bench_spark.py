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
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))  # _common, when run as a script or loaded as a target

from _common import ROOT, emit, ratio, table  # noqa: E402

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
    t0 = time.perf_counter()
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    t1 = time.perf_counter()
    spark = SparkSession.builder.master("local[2]").appName("plain").getOrCreate()
    t2 = time.perf_counter()
    result = job(spark, n)
    t3 = time.perf_counter()
    spark.stop()
    proc = SparkContext._gateway.proc
    proc.stdin.close()
    proc.wait(timeout=60)
    t4 = time.perf_counter()
    print(json.dumps({"result": result, "import_s": t1 - t0, "session_s": t2 - t1, "job_s": t3 - t2,
                      "stop_s": t4 - t3}))


# ---------------------------------------------------------------------- the benchmark
def leaked() -> int:
    """Live processes the engine tagged for this benchmark's stack (should be 0 after each up)."""
    from providers.local.process import find_tagged

    return len(find_tagged(f"{STACK}-", prefix=True))


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _timed(cmd: list[str], cwd: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    c, t = _children_cpu(), time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    return r, time.perf_counter() - t, _children_cpu() - c


def run_engine(n: int, cds: bool = True) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as d:
        r, wall, cpu = _timed([sys.executable, "-m", "engine.cli", "up", f"{HERE}:count_by_key", "-i", f"n={n}",
                               "--state", f"{d}/state.db", "--json"], d, {} if cds else {"TASKRIG_SPARK_CDS": "0"})
    if r.returncode != 0:
        raise SystemExit(f"engine up failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    doc = json.loads(r.stdout)
    steps = {s["op"]: s.get("elapsed") for s in doc["applied"] + doc["teardown"]}
    return {"wall_s": wall, "cpu_s": cpu, "result": doc["outputs"], "create_s": steps.get("create"),
            "delete_s": steps.get("delete"), "leaked": leaked()}


def run_plain(n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-spark-plain-") as d:
        r, wall, cpu = _timed([sys.executable, str(HERE), "--plain", "--n", str(n)], d)
    if r.returncode != 0:
        raise SystemExit(f"plain spark failed ({r.returncode}):\n{r.stderr[-3000:]}")
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "cpu_s": cpu, "result": doc["result"], "session_s": doc["session_s"],
            "job_s": doc["job_s"], "stop_s": doc["stop_s"]}


def med(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


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
    for _ in range(args.warmup):
        run_engine(args.n, cds)
        run_plain(args.n)
    eng, pln = [], []
    for i in range(args.repeats):
        # Alternate which side goes first, so that neither always follows the other's teardown.
        order = [("engine", lambda n: run_engine(n, cds)), ("plain", run_plain)]
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            res = fn(args.n)
            if res["result"] != expected:
                raise SystemExit(f"{name} returned {res['result']!r}, expected {expected}")
            (eng if name == "engine" else pln).append(res)
            print(f"  run {i + 1} {name}: {res['wall_s']:.2f} s", file=sys.stderr, flush=True)

    e_med, p_med = med(eng, "wall_s"), med(pln, "wall_s")
    r = ratio(e_med, p_med)
    rows = [
        [f"taskrig: engine up (standalone master + 1 worker{'' if cds else ', no CDS'})", len(eng), e_med, round(min(x["wall_s"] for x in eng), 3),
         med(eng, "cpu_s"), med(eng, "create_s"), med(eng, "delete_s"), "1.000"],
        ["plain: SparkSession on local[2]", len(pln), p_med, round(min(x["wall_s"] for x in pln), 3),
         med(pln, "cpu_s"), med(pln, "session_s"), med(pln, "stop_s"), r],
    ]
    print(f"Spark, group-by count over range({args.n}); wall clock of the whole process, "
          f"{args.repeats} alternating runs each (after {args.warmup} warm-up)")
    print(table(["", "runs", "median s", "min s", "cpu s (tree)", "create/session s", "delete/stop s",
                 "taskrig/this"], rows))
    print(f"\ntaskrig / plain (median wall): {r}  (goal: <= 1.5)")
    leaks = [x["leaked"] for x in eng]
    print(f"tagged processes left after each engine up: {leaks}")
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at the end (2 cores, shared machine): {load}")
    emit({"bench": "spark", "n": args.n, "repeats": args.repeats, "cds": cds,
          "taskrig": {"median_s": e_med, "cpu_median_s": med(eng, "cpu_s"),
                      "walls_s": [round(x["wall_s"], 3) for x in eng],
                      "create_median_s": med(eng, "create_s"), "delete_median_s": med(eng, "delete_s")},
          "plain": {"median_s": p_med, "cpu_median_s": med(pln, "cpu_s"),
                    "walls_s": [round(x["wall_s"], 3) for x in pln],
                    "session_median_s": med(pln, "session_s"), "job_median_s": med(pln, "job_s")},
          "ratio_median": r, "goal_ratio": 1.5, "leaked_processes": leaks, "loadavg": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
