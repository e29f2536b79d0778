"""In-process overhead of ``engine.run`` on a trivial task, with state persisted, against
Flyte 2's local ``flyte.run`` of the same task.

    python bench/bench_overhead.py [--n 200] [--warmup 20] [--flyte-n-persist 50]

taskrig: ``engine.with_runcontext(state=<fresh file in a temp dir>).run(add, a=1, b=i)`` in
this process; every call records its run (start, status changes, end) in the SQLite state
and takes the stack's file lock. Flyte: ``flyte.init()`` then
``flyte.with_runcontext(mode="local").run(add, a=1, b=i)`` in a separate venv (``flyte`` and
taskrig do not share one), timed inside that process by ``bench/flyte_local_run.py``, once as
Flyte runs by default (nothing recorded) and once with ``local_persistence=True`` (Flyte's
own SQLite record of local runs), the like-for-like anchor for "persisting state".

The Flyte interpreter: ``$FLYTE_PYTHON`` if set, else ``--flyte-venv`` (default
/tmp/flyte-venv), created with ``python -m venv`` + ``pip install flyte==2.12.1`` when missing.
A third series prices ``synchronous=FULL`` (every commit fsynced, what the engine does): the same
calls on a state opened with NORMAL (``TASKRIG_SQLITE_SYNCHRONOUS=normal``, a benchmark knob).
Ratios are taskrig / Flyte (below 1: taskrig is faster). Goal (issue 9): FULL at or below 0.5x
Flyte.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, ratio, summarize, table

HERE = Path(__file__).resolve().parent
FLYTE_VERSION = "2.12.1"  # the anchor BENCHMARKS.md reports; a newer Flyte is a new anchor

import engine  # noqa: E402
from engine.state import State  # noqa: E402

env = engine.TaskEnvironment(name="bench_overhead")


@env.task
def add(a: int, b: int) -> int:
    return a + b


def time_engine(state_path: Path, warmup: int, n: int) -> tuple[list[float], float]:
    """Per-call seconds of ``n`` calls after ``warmup``, and the first call's (which may create the file)."""
    def call(i: int) -> None:
        out = engine.with_runcontext(state=state_path).run(add, a=1, b=i).outputs
        if out != 1 + i:
            raise SystemExit(f"wrong result {out!r} for add(1, {i})")

    t0 = time.perf_counter()
    call(0)
    first = time.perf_counter() - t0
    for i in range(warmup):
        call(i)
    samples = []
    for i in range(n):
        t = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - t)
    return samples, first


def flyte_python(venv: Path) -> str:
    explicit = os.environ.get("FLYTE_PYTHON")
    if explicit:
        return explicit
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"creating {venv} and installing flyte from PyPI (once)...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"flyte=={FLYTE_VERSION}"], check=True)
    return str(py)


def time_flyte(py: str, warmup: int, n: int, persistence: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-flyte-") as home:
        cmd = [py, str(HERE / "flyte_local_run.py"), "--warmup", str(warmup), "--n", str(n)]
        if persistence:
            cmd.append("--persistence")
        # HOME and cwd in a temp dir: Flyte's local cache DB and config lookup stay out of ~ and the repo.
        envv = {k: v for k, v in os.environ.items() if not k.startswith("FLYTE_")}
        r = subprocess.run(cmd, cwd=home, env={**envv, "HOME": home}, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"flyte run failed ({' '.join(cmd)}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="timed calls per side")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--flyte-n-persist", type=int, default=50,
                    help="timed calls for Flyte with local_persistence (about 0.1 s each)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of taskrig and Flyte blocks")
    ap.add_argument("--flyte-venv", type=Path, default=Path("/tmp/flyte-venv"))
    args = ap.parse_args()

    py = flyte_python(args.flyte_venv)
    per_round = max(1, args.n // args.rounds)
    eng_s, normal_s, fl_s, eng_first, fl_first = [], [], [], None, None
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as d:
        state_path, normal_path = Path(d) / "state.db", Path(d) / "normal" / "state.db"
        # Alternate the sides so that all see the same background load (the machine is shared).
        for i in range(args.rounds):
            samples, first = time_engine(state_path, args.warmup, per_round)
            eng_s += samples
            eng_first = first if eng_first is None else eng_first  # round 0 created the state file
            # The cost of synchronous=FULL: the same calls on a state opened with NORMAL (the
            # connection is kept for the process, so the setting holds for every round).
            if i == 0:
                os.environ["TASKRIG_SQLITE_SYNCHRONOUS"] = "normal"
            try:
                normal_s += time_engine(normal_path, args.warmup, per_round)[0]
            finally:
                os.environ.pop("TASKRIG_SQLITE_SYNCHRONOUS", None)
            doc = time_flyte(py, args.warmup, per_round, persistence=False)
            fl_s += doc["samples_s"]
            fl_first = doc["first_call_s"] if fl_first is None else fl_first
        recorded = 0
        for path in (state_path, normal_path):
            st = State(path)
            recorded += len(st.runs("bench_overhead", status=["succeeded"]))
            st.close()
    expected = 2 * args.rounds * (1 + args.warmup + per_round)
    if recorded != expected:
        raise SystemExit(f"the state recorded {recorded} succeeded runs, expected {expected}")
    eng, fl, normal = summarize(eng_s), summarize(fl_s), summarize(normal_s)
    fl_doc = time_flyte(py, min(args.warmup, 5), args.flyte_n_persist, persistence=True)
    flp = summarize(fl_doc["samples_s"])

    rows = [
        ["taskrig engine.run (state persisted, synchronous=FULL)", eng["n"], eng["median_ms"], eng["p90_ms"],
         eng["min_ms"], "1.000"],
        ["taskrig engine.run, synchronous=NORMAL (to price FULL)", normal["n"], normal["median_ms"],
         normal["p90_ms"], normal["min_ms"], ratio(eng["median_ms"], normal["median_ms"])],
        [f"flyte {fl_doc['flyte_version']} local run (default, nothing recorded)", fl["n"], fl["median_ms"],
         fl["p90_ms"], fl["min_ms"], ratio(eng["median_ms"], fl["median_ms"])],
        [f"flyte {fl_doc['flyte_version']} local run (local_persistence=True)", flp["n"], flp["median_ms"],
         flp["p90_ms"], flp["min_ms"], ratio(eng["median_ms"], flp["median_ms"])],
    ]
    print("Per-call overhead of a trivial task, add(a: int, b: int) -> int; "
          f"{args.rounds} alternating rounds of "
          f"{args.warmup} warm-up + {per_round} timed calls per side")
    print(table(["", "calls", "median ms", "p90 ms", "min ms", "taskrig/this (median)"], rows))
    r_default = ratio(eng["median_ms"], fl["median_ms"])
    print(f"\ntaskrig / flyte (median): {r_default}  (goal: <= 1.0, not slower than Flyte while persisting state)")
    print(f"synchronous=FULL costs {eng['median_ms'] - normal['median_ms']:.3f} ms per run "
          f"({ratio(eng['median_ms'], normal['median_ms'])}x NORMAL); goal for FULL: <= 0.5x Flyte")
    print(f"taskrig first call (creates the state file): {eng_first * 1000:.1f} ms; "
          f"flyte first call: {fl_first * 1000:.1f} ms")
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at the end (2 cores, shared machine): {load}")
    emit({"bench": "overhead", "taskrig": eng, "taskrig_synchronous_normal": normal,
          "full_over_normal": ratio(eng["median_ms"], normal["median_ms"]), "flyte_local": fl, "flyte_local_persistence": flp,
          "ratio_median_vs_flyte": r_default,
          "ratio_median_vs_flyte_persistence": ratio(eng["median_ms"], flp["median_ms"]),
          "goal_ratio": 1.0, "flyte_version": fl_doc["flyte_version"], "runs_recorded": recorded,
          "python": sys.version.split()[0],
          "rounds": args.rounds, "loadavg": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
