"""Preview and a no-change up over 10,000 (or ``--n``) recorded resources of a synthetic provider.

    python bench/bench_plan.py [--n 10000] [--repeats 5] [--no-profile] [--no-cli]
    python bench/bench_plan.py --n 100000 --repeats 3 --no-profile          (issue 9's figure)
    python bench/bench_plan.py --n 100000 --repeats 3 --no-profile --pg     (issue 13's figure)
    python bench/bench_plan.py --state 'postgresql://user:pw@host:port/db' ...

``bench/tasks_plan.py`` holds the provider (``bench:synthetic:Item``: create returns at once,
nothing exists outside the state), the plugin that declares N reusable resources through
``DeclareContext.declaration``, and the task. On a fresh state (an SQLite file; with ``--pg``
a PostgreSQL server of the benchmark's own from ``scripts/postgres.sh``, stopped at the end;
with ``--state URL`` a new schema there, dropped at the end): (0) a first ``up`` creates the N
resources (journaled, recorded; timed and reported). Then, timed ``--repeats`` times each
(median wall reported, the CPU time beside it: the machine may be shared):

- in this process, through the Python API: (a) ``Session.preview(task)``, (b) ``Session.run``
  of the same task again, whose plan is all "same" (the no-change apply);
- what a user of the CLI pays, each in a new process: (c) ``engine preview`` and (d) ``engine
  up`` of ``bench/tasks_plan.py:noop``, interpreter start, imports and the rendered plan
  included (the start alone, ``python -c "import engine.cli"``, is printed beside them), with
  the peak RSS of those processes.

Goal: (a) and (b) within 1 s each on SQLite, 2 s on PostgreSQL; the ratio to it is printed, and
the preview's cost per resource beside the anchors' (Terraform's and Pulumi's plans as their
issues report them). Whenever (a) or (b) is over, it is run again under cProfile and its top
costs are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import contextlib
import io
import os
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import ROOT, children_cpu, emit, ratio, table
from tasks_plan import STACK, TYPE, make_task

import engine  # noqa: E402
from engine.state import State  # noqa: E402

GOAL_S = {"SQLite": 1.0, "PostgreSQL": 2.0}
# (what, resources, seconds): Terraform's plan of 2,900 resources took 20-25 minutes
# (hashicorp/terraform#18981), Pulumi's preview of 1,300 about 4 minutes (pulumi/pulumi#7682).
ANCHORS = [("terraform plan (terraform#18981)", 2900, 22.5 * 60), ("pulumi preview (pulumi#7682)", 1300, 4 * 60)]
TARGET = "bench/tasks_plan.py:noop"
# The engine command as its console script runs it (engine.cli.main), printing its own peak RSS
# as it exits: a child's ru_maxrss would count the parent's pages it shared until its exec.
ENGINE_CLI = ("import atexit, sys\n"
              "def _peak():\n"
              "    with open('/proc/self/status') as f:\n"
              "        sys.stderr.write(''.join(line for line in f if line.startswith('VmHWM')))\n"
              "atexit.register(_peak)\n"
              "from engine.cli import main\n"
              "main(sys.argv[1:])\n")


def wait_for_reapers(folder: Path | None = None) -> None:
    """An up that keeps reusable resources starts a reaper process (it exits at once here: no
    idle_ttl); wait for it so that it does not share the CPU with the next measurement. A CLI
    up's reaper outlives the up (it is detached): found by its command line, which names the
    state file or the runtime folder under ``folder``."""
    import psutil

    deadline = time.monotonic() + 30
    procs = psutil.Process().children(recursive=True)
    if folder is not None:
        procs += [p for p in psutil.process_iter(["cmdline"]) if "engine.reaper" in (p.info["cmdline"] or [])
                  and any(str(folder) in a for a in p.info["cmdline"])]
    for p in procs:
        try:
            if "engine.reaper" in " ".join(p.cmdline()):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except (psutil.Error, psutil.TimeoutExpired):
            pass


CPU: dict[str, list[float]] = {}


def timed(fn, label: str = ""):
    """(result, wall seconds); the process CPU seconds go to CPU[label] (less sensitive to a busy machine)."""
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t
    CPU.setdefault(label, []).append(time.process_time() - c)
    return out, wall


def profile(fn, top: int = 18) -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf).strip_dirs()
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip() and not ln.startswith("   Ordered")
             and "List reduced" not in ln]
    return "\n".join(lines)


def cli(args: list[str], n: int, folder: Path) -> tuple[float, float, float | None]:
    """One ``engine`` command in a new process (none: only ``import engine.cli``): wall s, CPU s
    and peak RSS MB of that process. Exits the benchmark if it fails."""
    cmd = [sys.executable, "-c", ENGINE_CLI, *args] if args else [sys.executable, "-c", "import engine.cli"]
    env = {**os.environ, "BENCH_PLAN_N": str(n), "ENGINE_RUNTIME_DIR": str(folder / ".engine" / "runtime")}
    c, t = children_cpu(), time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    wall, cpu = time.perf_counter() - t, children_cpu() - c
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2]) or 'import'} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    if args[:1] == ["preview"] and "Resources: " not in r.stdout:
        raise SystemExit(f"engine preview printed no summary:\n{r.stdout[-2000:]}")
    if args[:1] == ["preview"] and f"Resources: {n} unchanged" not in r.stdout:
        raise SystemExit(f"engine preview is not all unchanged:\n{r.stdout[-2000:]}")
    wait_for_reapers(folder)
    peak = re.search(r"VmHWM:\s+(\d+) kB", r.stderr)
    return wall, cpu, round(int(peak.group(1)) / 1024, 1) if peak else None


@contextlib.contextmanager
def state_location(args, folder: Path):
    """(label, location) of a fresh state: a file in ``folder``; a new schema of ``--state``'s
    database (dropped at the end); or a server of the benchmark's own (``--pg``, stopped at the end)."""
    if not args.pg and not args.state:
        yield "SQLite", str(folder / "state.db")
        return
    from bench_state_pg import postgres

    with postgres(args.state, prefix="bench-plan-pg-") as (base, server):
        schema = f"bench_plan_{uuid.uuid4().hex[:8]}"
        url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
        try:
            yield "PostgreSQL", url
        finally:
            if server is None:  # a server of the caller's: drop what the benchmark made there
                import psycopg

                from engine.pgstate import parse

                with psycopg.connect(parse(url).conninfo, autocommit=True) as conn:
                    conn.execute(f'drop schema if exists "{schema}" cascade')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="recorded resources")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each operation (median reported)")
    ap.add_argument("--no-profile", action="store_true", help="do not profile an operation over the goal")
    ap.add_argument("--no-cli", action="store_true", help="time the Python API only, not the engine command")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--state", default=None, metavar="URL",
                       help="a postgresql:// database to use (a new schema in it, dropped at the end)")
    where.add_argument("--pg", action="store_true", help="a PostgreSQL server of the benchmark's own (scripts/postgres.sh)")
    args = ap.parse_args()
    task = make_task(args.n)
    folder = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    os.chdir(folder)  # a PostgreSQL state's runtime folder: .engine/runtime here
    try:
        with state_location(args, folder) as (backend, location):
            figures = measure(args, task, backend, location, folder)
    finally:
        os.chdir(ROOT)
        shutil.rmtree(folder, ignore_errors=True)
    report(args, backend, figures)
    return 0


def measure(args, task, backend: str, location: str, folder: Path) -> dict:
    session = engine.Session(state=location)
    first, t_create = timed(lambda: session.run(task), "create")
    wait_for_reapers()
    st = State(session.state_path)
    recorded = len(st.resources(STACK))
    st.close()
    if first.run["status"] != "succeeded" or recorded != args.n:
        raise SystemExit(f"first up: status {first.run['status']}, {recorded} resources recorded (expected {args.n})")
    del first
    previews, noops = [], []
    for _ in range(args.repeats):
        plan, t = timed(lambda: session.preview(task), "preview")
        previews.append(t)
        summary = plan.summary()
        if summary["same"] != args.n or plan.has_changes:
            raise SystemExit(f"preview after the first up is not all 'same': {summary}")
        del plan
    for _ in range(args.repeats):
        again, t = timed(lambda: session.run(task), "noop")
        noops.append(t)
        wait_for_reapers()
        if again.run["status"] != "succeeded":
            raise SystemExit(f"no-change up: status {again.run['status']}")
        del again
    st = State(session.state_path)
    journal_rows = len(st.journal(STACK))
    st.close()
    goal = GOAL_S[backend]
    profiles = {}
    if not args.no_profile:
        if statistics.median(previews) > goal:
            profiles["preview"] = profile(lambda: session.preview(task))
        if statistics.median(noops) > goal:
            profiles["no-change up"] = profile(lambda: session.run(task))
            wait_for_reapers()
    rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    runs = {"create": [t_create], "preview": previews, "noop": noops}
    if not args.no_cli:
        start = [cli([], args.n, folder) for _ in range(args.repeats)]
        cli_preview = [cli(["preview", TARGET, "--state", location], args.n, folder) for _ in range(args.repeats)]
        cli_up = [cli(["up", TARGET, "--state", location], args.n, folder) for _ in range(args.repeats)]
        for name, got in (("cli_start", start), ("cli_preview", cli_preview), ("cli_up", cli_up)):
            runs[name] = [w for w, _, _ in got]
            CPU[name] = [c for _, c, _ in got]
        runs["cli_rss"] = [max(m for _, _, m in cli_preview), max(m for _, _, m in cli_up)]
    return {"runs": runs, "summary": summary, "journal_rows": journal_rows, "profiles": profiles, "rss_mb": rss_mb,
            "location": str(session.state_path)}


def report(args, backend: str, f: dict) -> None:
    runs, goal = f["runs"], GOAL_S[backend]
    cpu = {k: round(statistics.median(v), 3) for k, v in CPU.items()}
    med = {k: round(statistics.median(v), 3) for k, v in runs.items() if k != "cli_rss"}

    def row(label: str, key: str, with_goal: bool = True) -> list:
        return [label, len(runs[key]), med[key], round(min(runs[key]), 3), cpu[key],
                ratio(med[key], goal) if with_goal else None]

    rows = [row(f"first up: create {args.n} resources", "create", False),
            row("(a) preview (all same)", "preview"), row("(b) up again: no-change apply", "noop")]
    if "cli_preview" in runs:
        rows += [row("(c) engine preview (new process)", "cli_preview"),
                 row("(d) engine up, no change (new process)", "cli_up"),
                 row("    of which: python -c 'import engine.cli'", "cli_start", False)]
    print(f"Plan and apply over {args.n} recorded resources of {TYPE} ({backend} state: {f['location']})")
    print(table(["", "runs", "median s", "min s", "median cpu s", f"median / {goal:g} s goal"], rows))
    extra = f["journal_rows"] - args.n
    print(f"\npreview summary: {f['summary']}; journal rows after all ups: {f['journal_rows']} "
          + ("(the first up's creates; the no-change ups journaled nothing)" if extra == 0 else
             f"({extra} more than the first up's creates)"))
    for name, text in f["profiles"].items():
        print(f"\n--- cProfile of {name} (over the {goal:g} s goal) ---\n{text}")
    # The anchors are the figures their issues report (neither CLI is installed here): per
    # resource, so that any --n compares.
    per_resource = med["preview"] / args.n
    anchors = [[name, count, seconds, round(seconds / count * 1000, 1), round(per_resource * 1000, 4),
                f"{per_resource / (seconds / count):.2e}"] for name, count, seconds in ANCHORS]
    print("\n" + table(["anchor (from its issue)", "resources", "plan s", "ms per resource",
                         "taskrig preview ms per resource", "taskrig / anchor"], anchors))
    print(f"peak RSS of this process (the first up included): {f['rss_mb']} MB")
    if "cli_rss" in runs:
        print(f"peak RSS of the engine command (its own VmHWM): preview {runs['cli_rss'][0]} MB, "
              f"up {runs['cli_rss'][1]} MB")
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"\nload average at the end (2 cores, shared machine): {load}")
    emit({"bench": "plan", "backend": backend, "n": args.n, "create_s": med["create"], "preview_s": med["preview"],
          "noop_up_s": med["noop"], "cli_preview_s": med.get("cli_preview"), "cli_up_s": med.get("cli_up"),
          "cli_start_s": med.get("cli_start"), "runs_s": {k: [round(x, 3) for x in v] for k, v in runs.items()},
          "cpu_median_s": cpu, "goal_s": goal, "preview_ratio_to_goal": ratio(med["preview"], goal),
          "noop_up_ratio_to_goal": ratio(med["noop"], goal), "journal_rows": f["journal_rows"],
          "profiled": sorted(f["profiles"]), "peak_rss_mb": f["rss_mb"],
          "cli_peak_rss_mb": runs.get("cli_rss"), "anchors": {a[0]: a[-1] for a in anchors}, "loadavg": load})


if __name__ == "__main__":
    sys.exit(main())
