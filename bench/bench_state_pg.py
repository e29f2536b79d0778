"""The PostgreSQL state against the SQLite one: per-run overhead of a trivial task, and preview
and a no-change ``up`` over 10,000 (``--n``) recorded resources.

    python bench/bench_state_pg.py [--runs 200] [--warmup 20] [--n 10000] [--repeats 3] [--url URL]

PostgreSQL: ``--url`` (a postgresql:// URL whose schema the benchmark may create and drop),
else a server of its own started by ``scripts/postgres.sh`` in a temporary folder (Debian's
postgresql; that script runs it with ``fsync=off``, so the commit's flush is not priced: say so
beside the figures) and stopped at the end. SQLite: a fresh file in a temporary folder with the
engine's ``synchronous=FULL``.

(1) ``engine.with_runcontext(state=...).run(add, a=1, b=i)`` in this process, ``--runs`` calls
after ``--warmup``: each call opens the state (PostgreSQL: a new connection, the one the stack's
advisory lock lives on), locks the stack, records its run (start, status changes, end) and
unlocks. (2) bench_plan's synthetic provider and plugin (``--n`` reusable rows): a first ``up``
creates them, then ``Session.preview`` and a no-change ``up`` are timed ``--repeats`` times
each (median). Ratios are PostgreSQL / SQLite (above 1: PostgreSQL is slower).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import ROOT, emit, ratio, summarize, table
from bench_plan import make_task, wait_for_reapers

import engine  # noqa: E402

env = engine.TaskEnvironment(name="bench_state_pg")


@env.task
def add(a: int, b: int) -> int:
    return a + b


def per_run(state, warmup: int, n: int) -> list[float]:
    session = engine.with_runcontext(state=state)
    for i in range(warmup):
        session.run(add, a=1, b=i)
    out = []
    for i in range(n):
        t = time.perf_counter()
        got = session.run(add, a=1, b=i).outputs
        out.append(time.perf_counter() - t)
        if got != 1 + i:
            raise SystemExit(f"wrong result {got!r}")
    return out


def plan_figures(state, n: int, repeats: int) -> dict:
    task = make_task(n)
    session = engine.Session(state=state)
    t = time.perf_counter()
    first = session.run(task)
    create = time.perf_counter() - t
    wait_for_reapers()
    if first.run["status"] != "succeeded":
        raise SystemExit(f"first up: {first.run['status']}")
    previews, noops = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        plan = session.preview(task)
        previews.append(time.perf_counter() - t)
        if plan.has_changes or plan.summary()["same"] != n:
            raise SystemExit(f"preview is not all 'same': {plan.summary()}")
    for _ in range(repeats):
        t = time.perf_counter()
        again = session.run(task)
        noops.append(time.perf_counter() - t)
        wait_for_reapers()
        if again.run["status"] != "succeeded":
            raise SystemExit(f"no-change up: {again.run['status']}")
    return {"create_s": round(create, 3), "preview_s": round(statistics.median(previews), 3),
            "noop_up_s": round(statistics.median(noops), 3)}


def start_server(folder: Path) -> tuple[str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    password = "pw-" + secrets.token_hex(8)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh"), "start", str(folder), str(port)],
                       env={**os.environ, "TASKRIG_PG_PASSWORD": password}, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"scripts/postgres.sh failed:\n{r.stderr[-2000:]}")
    return f"postgresql://taskrig:{password}@127.0.0.1:{port}/taskrig_test", str(port)


@contextlib.contextmanager
def postgres(url: str | None, prefix: str = "bench-pg-"):
    """(base URL, the server's folder or None): ``url`` when given, else a server of the
    benchmark's own in a folder of its own (the script opens it to postgres), stopped and
    removed on the way out, on failure too."""
    if url is not None:
        yield url, None
        return
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        base, _ = start_server(folder)
        yield base, folder
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh"), "stop", str(folder)], capture_output=True,
                       timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--n", type=int, default=10_000, help="recorded resources for preview / no-change up")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--url", default=None, help="an existing PostgreSQL (default: one started for the benchmark)")
    args = ap.parse_args()
    with postgres(args.url) as (base, server):
        tmp = Path(tempfile.mkdtemp(prefix="bench-state-pg-"))
        try:
            sep = "&" if "?" in base else "?"
            schemas = [f"bench_{uuid.uuid4().hex[:8]}" for _ in range(2)]
            pg_runs, pg_plan = (f"{base}{sep}schema={s}" for s in schemas)
            os.chdir(tmp)  # the PostgreSQL state's runtime folder: .engine/runtime here
            sq = per_run(tmp / "runs" / "state.db", args.warmup, args.runs)
            pg = per_run(pg_runs, args.warmup, args.runs)
            sq_s, pg_s = summarize(sq), summarize(pg)
            plan_sq = plan_figures(tmp / "plan" / "state.db", args.n, args.repeats)
            plan_pg = plan_figures(pg_plan, args.n, args.repeats)
            rows = [
                ["engine.run, trivial task: median ms", sq_s["median_ms"], pg_s["median_ms"],
                 ratio(pg_s["median_ms"], sq_s["median_ms"])],
                ["  p90 ms", sq_s["p90_ms"], pg_s["p90_ms"], ratio(pg_s["p90_ms"], sq_s["p90_ms"])],
                [f"first up: create {args.n} resources, s", plan_sq["create_s"], plan_pg["create_s"],
                 ratio(plan_pg["create_s"], plan_sq["create_s"])],
                [f"preview over {args.n}, median s", plan_sq["preview_s"], plan_pg["preview_s"],
                 ratio(plan_pg["preview_s"], plan_sq["preview_s"])],
                [f"no-change up over {args.n}, median s", plan_sq["noop_up_s"], plan_pg["noop_up_s"],
                 ratio(plan_pg["noop_up_s"], plan_sq["noop_up_s"])],
            ]
            print(f"State backends: SQLite (synchronous=FULL) against PostgreSQL "
                  f"({'scripts/postgres.sh, fsync=off' if server else 'given --url'}); {args.runs} runs, n={args.n}")
            print(table(["", "SQLite", "PostgreSQL", "PG / SQLite"], rows))
            load = [round(x, 2) for x in os.getloadavg()]
            print(f"\nload average at the end (2 cores): {load}")
            emit({"bench": "state_pg", "runs": args.runs, "n": args.n, "sqlite_run": sq_s, "pg_run": pg_s,
                  "run_ratio": ratio(pg_s["median_ms"], sq_s["median_ms"]), "sqlite_plan": plan_sq, "pg_plan": plan_pg,
                  "preview_ratio": ratio(plan_pg["preview_s"], plan_sq["preview_s"]),
                  "noop_up_ratio": ratio(plan_pg["noop_up_s"], plan_sq["noop_up_s"]), "own_server": server is not None,
                  "loadavg": load})
        finally:
            os.chdir(ROOT)
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
