"""Flyte 2's local run of the trivial task, timed per call; run by bench_overhead.py inside a
venv that has ``flyte`` (not taskrig) installed. Prints one JSON document as its last line.

    python flyte_local_run.py --warmup 20 --n 200 [--persistence]

The run is Flyte's documented local run: ``flyte.init()`` (no endpoint, so no control plane)
then ``flyte.with_runcontext(mode="local").run(task, ...)``. With ``--persistence`` Flyte is
initialized with ``local_persistence=True``, its own SQLite record of local runs
(``~/.flyte/local-cache/cache.db``; the parent points HOME at a temporary directory).
"""

import argparse
import json
import logging
import statistics
import sys
import time

import flyte

env = flyte.TaskEnvironment(name="bench")


@env.task
def add(a: int, b: int) -> int:
    return a + b


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--persistence", action="store_true")
    args = ap.parse_args()
    logging.getLogger("flyte").setLevel(logging.WARNING)
    flyte.init(local_persistence=args.persistence)

    def call(i: int) -> None:
        out = flyte.with_runcontext(mode="local").run(add, a=1, b=i).outputs()[0]
        if out != 1 + i:
            raise SystemExit(f"wrong result {out!r} for add(1, {i})")

    t0 = time.perf_counter()
    call(0)
    first = time.perf_counter() - t0
    for i in range(args.warmup):
        call(i)
    samples = []
    for i in range(args.n):
        t = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - t)
    print(json.dumps({"flyte_version": flyte.__version__, "python": sys.version.split()[0],
                      "persistence": args.persistence, "first_call_s": first, "samples_s": samples}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
