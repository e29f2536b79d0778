"""One engine process of ``bench_state_pg_engines.py``'s concurrent figure: a trivial task on a
stack of its own, ``--runs`` timed runs after ``--warmup``, on the state ``ENGINE_STATE`` names
(an environment variable, so that a PostgreSQL password stays off the command line).

    ENGINE_STATE=URL|PATH python bench/state_engine_worker.py --stack S --runs 200 --warmup 10

It prints ``ready`` once warm and starts timing when a line arrives on stdin, so that the
parent can release every engine at once and no interpreter's start-up is in the figure. The
last line of output is one JSON document: the run ids (warm-up included), the start and end
of the timed runs on the system-wide monotonic clock, each run's seconds and this process's
CPU seconds over them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import _common  # noqa: F401  puts the checkout on sys.path

import engine


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stack", required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=10)
    args = ap.parse_args()

    env = engine.TaskEnvironment(name=args.stack)

    @env.task
    def add(a: int, b: int) -> int:
        return a + b

    session = engine.with_runcontext()  # the state: ENGINE_STATE

    def one(i: int) -> str:
        result = session.run(add, a=1, b=i)
        if result.outputs != 1 + i or result.run["status"] != "succeeded":
            raise SystemExit(f"{args.stack}: run {i} gave {result.outputs!r}, status {result.run['status']}")
        return result.run["run_id"]

    ids = [one(i) for i in range(args.warmup)]
    print("ready", flush=True)
    if not sys.stdin.readline():
        return 1  # the parent went away before the start
    samples = []
    cpu0, start = time.process_time(), time.monotonic()
    for i in range(args.runs):
        t = time.perf_counter()
        ids.append(one(i))
        samples.append(time.perf_counter() - t)
    end, cpu = time.monotonic(), time.process_time() - cpu0
    print(json.dumps({"stack": args.stack, "pid": os.getpid(), "run_ids": ids, "start": start, "end": end,
                      "samples_s": samples, "cpu_s": cpu}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
