"""Issue 13's remaining state figures, in one run: the per-run overhead of a trivial task with
the state in PostgreSQL against SQLite and against Flyte's local run, and 8 engines on 8
stacks at once, PostgreSQL against SQLite.

    python bench/bench_state_pg_engines.py [--runs 200] [--warmup 20] [--rounds 3]
        [--engines 8] [--engine-runs 200] [--engine-rounds 5] [--url URL]

PostgreSQL: ``--url``, else a server of its own from ``scripts/postgres.sh`` (``fsync=off``:
the commit's flush is not priced), stopped at the end, also on failure; SQLite: fresh files
with the engine's ``synchronous=FULL``.

(1) Per run: ``bench_state_pg.per_run`` on SQLite and on PostgreSQL, and Flyte 2's
``flyte.with_runcontext(mode="local").run`` timed in its own venv (``bench_overhead``'s
functions: by default, nothing recorded, and with ``local_persistence=True``), ``--rounds``
alternating blocks so that all sides see the same background load.

(2) Concurrent: ``--engines`` processes (``bench/state_engine_worker.py``), each on a stack of
its own, warm up, then are released at once and do ``--engine-runs`` runs each; runs per
second is the timed runs over the span from the first start to the last end. The sides
alternate over ``--engine-rounds``. Then the state is read back: every run ``succeeded``, each
stack holds exactly the runs its engine reported (none lost, none extra), no open journal
intent, no resource, no lock row left. CPU per run: the engines' own, and (PostgreSQL) the
server's, read from its processes.

Ratios are PostgreSQL (or taskrig) / the other side: for time above 1 is slower, for runs per
second above 1 serves more.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import ROOT, emit, ratio, summarize, table
from bench_overhead import flyte_python, time_flyte
from bench_state_pg import per_run, postgres

from engine.state import State  # noqa: E402

WORKER = Path(__file__).resolve().parent / "state_engine_worker.py"


# ---------------------------------------------------------------- (1) per run, against Flyte
def per_run_figures(states: dict[str, object], flyte_py: str, warmup: int, n: int, rounds: int) -> dict:
    """Samples of each state (label -> state) and of Flyte's default local run, in alternating rounds."""
    per_round = max(1, n // rounds)
    samples: dict[str, list[float]] = {label: [] for label in [*states, "flyte"]}
    for _ in range(rounds):
        for label, state in states.items():
            samples[label] += per_run(state, warmup, per_round)
        samples["flyte"] += time_flyte(flyte_py, warmup, per_round, persistence=False)["samples_s"]
    return samples


# ---------------------------------------------------------------- (2) engines at once
def _read_line(p: subprocess.Popen, deadline: float, what: str) -> str:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
        raise SystemExit(f"timed out waiting for {what}")
    return p.stdout.readline().strip()


def server_cpu(data_dir: Path | None) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster, its live children (the
    engines' sessions among them) and the children it has reaped. 0 without a server of ours."""
    if data_dir is None:
        return 0.0
    import psutil

    master = psutil.Process(int((data_dir / "postmaster.pid").read_text().split()[0]))
    t = master.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in master.children():
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            continue  # it ended meanwhile: its time is in children_* from now on
    return total


def engines_round(state_env: str, stacks: list[str], cwd: Path, runs: int, warmup: int,
                  data_dir: Path | None, timeout: float) -> dict:
    """One round: an engine per stack, all released at once; their reports and the span."""
    env = {**os.environ, "ENGINE_STATE": state_env, "PYTHONUNBUFFERED": "1"}
    procs, logs = [], []
    deadline = time.monotonic() + timeout
    try:
        for stack in stacks:
            log = tempfile.TemporaryFile(mode="w+")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, str(WORKER), "--stack", stack, "--runs", str(runs),
                                           "--warmup", str(warmup)], cwd=cwd, env=env, text=True,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log))
        for p, stack in zip(procs, stacks):
            if _read_line(p, deadline, f"engine {stack} to warm up") != "ready":
                raise SystemExit(f"engine {stack} did not get ready")
        cpu0 = server_cpu(data_dir)
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        docs = []
        for p, stack, log in zip(procs, stacks, logs):
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if p.returncode != 0:
                log.seek(0)
                raise SystemExit(f"engine {stack} failed ({p.returncode}):\n{log.read()[-3000:]}")
            docs.append(json.loads(out.strip().splitlines()[-1]))
        server = server_cpu(data_dir) - cpu0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for log in logs:
            log.close()
    span = max(d["end"] for d in docs) - min(d["start"] for d in docs)
    return {"docs": docs, "span_s": span, "runs_per_s": runs * len(docs) / span,
            "engine_cpu_s": sum(d["cpu_s"] for d in docs), "server_cpu_s": server}


def check_state(state, stacks: list[str], reported: dict[str, list[str]]) -> int:
    """Exit unless every stack holds exactly the runs its engines reported, all succeeded and
    closed, with nothing else left; returns the number of runs checked."""
    st = State(state)
    try:
        rows = st.runs()
        by_stack: dict[str, list[dict]] = {}
        for r in rows:
            by_stack.setdefault(r["stack"], []).append(r)
        for stack in stacks:
            got = by_stack.get(stack, [])
            ids = [r["run_id"] for r in got]
            if sorted(ids) != sorted(reported[stack]):
                lost, extra = set(reported[stack]) - set(ids), set(ids) - set(reported[stack])
                raise SystemExit(f"stack {stack}: {len(got)} runs recorded, {len(reported[stack])} reported; "
                                 f"lost {sorted(lost)[:5]}, not reported {sorted(extra)[:5]}")
            bad = [r for r in got if r["status"] != "succeeded" or r["finished"] is None or r["finished"] < r["started"]]
            if bad:
                raise SystemExit(f"stack {stack}: runs not closed as succeeded: {bad[:3]}")
            if st.open_intents(stack) or st.resources(stack):
                raise SystemExit(f"stack {stack}: open journal intents or resources left")
        if getattr(st, "pg", None) is not None and st.conn.execute("select count(*) from locks").fetchone()[0]:
            raise SystemExit("lock rows left in the PostgreSQL state")
        return sum(len(by_stack.get(s, [])) for s in stacks)
    finally:
        st.close()


def engines_figures(states: dict[str, str], cwd: Path, engines: int, runs: int, warmup: int, rounds: int,
                    data_dir: Path | None) -> dict:
    stacks = [f"concurrent_{i}" for i in range(engines)]
    results: dict[str, list[dict]] = {label: [] for label in states}
    reported: dict[str, dict[str, list[str]]] = {label: {s: [] for s in stacks} for label in states}
    order = list(states.items())
    for i in range(rounds):
        for label, state in (order if i % 2 == 0 else order[::-1]):
            res = engines_round(state, stacks, cwd, runs, warmup, data_dir if label == "postgresql" else None,
                                timeout=600)
            for d in res["docs"]:
                reported[label][d["stack"]] += d["run_ids"]
            results[label].append(res)
            print(f"  round {i + 1} {label}: {res['runs_per_s']:.0f} runs/s over {res['span_s']:.2f} s",
                  file=sys.stderr, flush=True)
    out = {}
    for label, state in states.items():
        checked = check_state(state, stacks, reported[label])
        rs = results[label]
        timed = runs * engines * rounds
        out[label] = {
            "runs_per_s": round(statistics.median(r["runs_per_s"] for r in rs), 1),
            "rounds_runs_per_s": [round(r["runs_per_s"], 1) for r in rs],
            "run_latency": summarize([s for r in rs for d in r["docs"] for s in d["samples_s"]]),
            "engine_cpu_ms_per_run": round(1000 * sum(r["engine_cpu_s"] for r in rs) / timed, 3),
            "server_cpu_ms_per_run": round(1000 * sum(r["server_cpu_s"] for r in rs) / timed, 3),
            "runs_checked": checked,
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200, help="timed runs per side for the per-run figure")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--flyte-n-persist", type=int, default=50)
    ap.add_argument("--flyte-venv", type=Path, default=Path("/tmp/flyte-venv"))
    ap.add_argument("--engines", type=int, default=8)
    ap.add_argument("--engine-runs", type=int, default=200, help="timed runs of each engine per round")
    ap.add_argument("--engine-warmup", type=int, default=10)
    ap.add_argument("--engine-rounds", type=int, default=5)
    ap.add_argument("--url", default=None, help="an existing PostgreSQL (default: one started for the benchmark)")
    args = ap.parse_args()
    flyte_py = flyte_python(args.flyte_venv)
    t_start, load_start = time.time(), [round(x, 2) for x in os.getloadavg()]
    with postgres(args.url) as (base, server):
        tmp = Path(tempfile.mkdtemp(prefix="bench-state-pg-engines-"))
        try:
            sep = "&" if "?" in base else "?"
            pg_run, pg_engines = (f"{base}{sep}schema=bench_{uuid.uuid4().hex[:8]}" for _ in range(2))
            os.chdir(tmp)  # the PostgreSQL state's runtime folder: .engine/runtime here
            samples = per_run_figures({"sqlite": tmp / "runs" / "state.db", "postgresql": pg_run}, flyte_py,
                                      args.warmup, args.runs, args.rounds)
            sq, pg, fl = (summarize(samples[k]) for k in ("sqlite", "postgresql", "flyte"))
            flp_doc = time_flyte(flyte_py, min(args.warmup, 5), args.flyte_n_persist, persistence=True)
            flp, version = summarize(flp_doc["samples_s"]), flp_doc["flyte_version"]

            engine_states = {"sqlite": str(tmp / "engines" / "state.db"), "postgresql": pg_engines}
            for state in engine_states.values():
                State(state).close()  # the state exists before the engines start, as a team's does
            conc = engines_figures(engine_states, tmp, args.engines, args.engine_runs, args.engine_warmup,
                                   args.engine_rounds, server / "data" if server is not None else None)
            csq, cpg = conc["sqlite"], conc["postgresql"]
        finally:
            os.chdir(ROOT)
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"(1) engine.run of a trivial task, one process: {args.rounds} alternating rounds of {args.warmup} warm-up "
          f"+ {max(1, args.runs // args.rounds)} timed calls per side")
    print(table(["", "calls", "median ms", "p90 ms", "PostgreSQL / this (median)"], [
        ["taskrig, SQLite (synchronous=FULL)", sq["n"], sq["median_ms"], sq["p90_ms"],
         ratio(pg["median_ms"], sq["median_ms"])],
        [f"taskrig, PostgreSQL ({'scripts/postgres.sh, fsync=off' if server else '--url'})", pg["n"],
         pg["median_ms"], pg["p90_ms"], "1.0"],
        [f"flyte {version} local run (nothing recorded)", fl["n"], fl["median_ms"], fl["p90_ms"],
         ratio(pg["median_ms"], fl["median_ms"])],
        [f"flyte {version} local run (local_persistence=True)", flp["n"], flp["median_ms"], flp["p90_ms"],
         ratio(pg["median_ms"], flp["median_ms"])],
    ]))
    print(f"\n(2) {args.engines} engine processes on {args.engines} stacks at once, {args.engine_runs} runs each "
          f"(after {args.engine_warmup} warm-up), {args.engine_rounds} alternating rounds per side")
    print(table(["", "SQLite", "PostgreSQL", "PG / SQLite"], [
        ["runs per second, median of rounds", csq["runs_per_s"], cpg["runs_per_s"],
         ratio(cpg["runs_per_s"], csq["runs_per_s"])],
        ["  per round", " ".join(map(str, csq["rounds_runs_per_s"])), " ".join(map(str, cpg["rounds_runs_per_s"])), ""],
        ["one run under contention, median ms", csq["run_latency"]["median_ms"], cpg["run_latency"]["median_ms"],
         ratio(cpg["run_latency"]["median_ms"], csq["run_latency"]["median_ms"])],
        ["  p90 ms", csq["run_latency"]["p90_ms"], cpg["run_latency"]["p90_ms"],
         ratio(cpg["run_latency"]["p90_ms"], csq["run_latency"]["p90_ms"])],
        ["engines' CPU per run, ms", csq["engine_cpu_ms_per_run"], cpg["engine_cpu_ms_per_run"],
         ratio(cpg["engine_cpu_ms_per_run"], csq["engine_cpu_ms_per_run"])],
        ["server's CPU per run, ms", "-", cpg["server_cpu_ms_per_run"] if server else "n/a (--url)", ""],
        ["runs in the state, all succeeded, none lost or extra", csq["runs_checked"], cpg["runs_checked"], ""],
    ]))
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"\nload average (2 cores, shared machine): {load_start} at the start, {load} at the end; "
          f"{time.time() - t_start:.0f} s in all")
    emit({"bench": "state_pg_engines", "flyte_version": version, "sqlite_run": sq, "pg_run": pg, "flyte_local": fl,
          "flyte_local_persistence": flp, "pg_over_flyte": ratio(pg["median_ms"], fl["median_ms"]),
          "pg_over_flyte_persistence": ratio(pg["median_ms"], flp["median_ms"]),
          "pg_over_sqlite": ratio(pg["median_ms"], sq["median_ms"]), "engines": args.engines,
          "engine_runs": args.engine_runs, "engine_rounds": args.engine_rounds, "concurrent": conc,
          "concurrent_pg_over_sqlite": ratio(cpg["runs_per_s"], csq["runs_per_s"]), "own_server": server is not None,
          "loadavg_start": load_start, "loadavg": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
