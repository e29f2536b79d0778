"""Preview of an in-process Pulumi program with 200 Dask components: time and peak memory.

    python bench/bench_pulumi.py [--teams 200] [--repeats 3] [--no-profile]

The program (written to a temp dir) gives each of N teams a ``DaskClusterComponent`` and, as
a team's program would, a ServiceAccount and a ConfigMap holding the cluster's scheduler
address (an output of the component, so the ConfigMap depends on it). A Dask component is
two resources (the component and its DaskCluster), so N teams are 4 N resources: 800 for 200.

Each measurement runs in a fresh process (``--child``), so imports and memory are its own:

  cold      the first ``Session.preview_program(DIR)`` in a new process, imports included
            (pulumi, pulumi_kubernetes, the components), on a state file that does not exist
  warm      the same call again in that process (the program re-runs; imports are cached)
  no-change ``preview_program`` after the stack was applied, with the providers of the two
            kubernetes types replaced in that process by ones that only record (no cluster):
            the plan over 800 recorded resources, all "same"
  cli       ``engine preview DIR --json`` end to end (a subprocess, what a user waits for)

Peak memory is the child process's maximum RSS (``ru_maxrss``). Goal: preview under 2 s;
the ratio to it is printed for each. The load average is printed too (a shared 2-core
machine makes single figures noisy). When the warm preview is over the goal, its cProfile
top costs are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, emit, ratio, table

GOAL_S = 2.0

PROGRAM = '''"""{teams} teams, each with a Dask cluster component, a service account and a config map."""
import pulumi
import pulumi_kubernetes as k8s

from engine import Resources
from providers.dask import Dask, DaskClusterComponent, WorkerGroup

for i in range({teams}):
    team = f"team{{i:03d}}"
    cluster = DaskClusterComponent(team, Dask(workers=WorkerGroup(number_of_workers=2,
                                   resources=Resources(cpu=1, memory="2Gi"))), namespace="analytics")
    k8s.core.v1.ServiceAccount(team, metadata={{"name": team, "namespace": "analytics"}})
    k8s.core.v1.ConfigMap(team, metadata={{"name": f"{{team}}-dask", "namespace": "analytics"}},
                          data={{"DASK_SCHEDULER_ADDRESS": cluster.scheduler_address}})
'''


def write_program(folder: Path, teams: int) -> Path:
    (folder / "prog").mkdir(parents=True, exist_ok=True)
    (folder / "Pulumi.yaml").write_text("name: bench\nruntime: python\nmain: prog/\n")
    (folder / "prog" / "__main__.py").write_text(PROGRAM.format(teams=teams))
    return folder


def max_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(kb / 1024, 1)


def child(folder: str, repeats: int, mode: str, profile: bool) -> dict:
    """One measurement in this (fresh) process; prints one JSON line."""
    t0, c0 = time.perf_counter(), time.process_time()
    import pulumi  # noqa: F401
    import pulumi_kubernetes  # noqa: F401

    import providers.dask.component  # noqa: F401
    from engine import Session
    from engine.extend import Provider, ProviderRegistry

    imports_s = time.perf_counter() - t0
    state_dir = tempfile.TemporaryDirectory(prefix="bench-pulumi-")
    session = Session(state=Path(state_dir.name) / "state.db")
    out: dict = {"imports_s": round(imports_s, 3)}
    if mode == "cold":
        t1 = time.perf_counter()
        plan = session.preview_program(folder)
        out["preview_s"] = round(time.perf_counter() - t1, 3)
        out["with_imports_s"] = round(time.perf_counter() - t0, 3)
        out["cpu_s"] = round(time.process_time() - c0, 3)
    else:
        if mode == "no-change":
            from providers.kubernetes.generic import KubernetesObject
            from providers.kubernetes.provider import DaskCluster

            class Recorded(Provider):
                """Creates nothing: the state rows are all this benchmark needs."""

                def check(self, inputs):
                    return inputs

                def create(self, urn, inputs, key):
                    return key, {}

                def delete(self, id, inputs, outputs):
                    return None

            for base in (KubernetesObject, DaskCluster):
                ProviderRegistry.register(type("Recorded", (Recorded,), {"type_token": base.type_token}),
                                          override=True)
            session.up_program(folder)
        session.preview_program(folder)  # warm-up: imports of the program's own modules, caches
        times, cpus = [], []
        for _ in range(repeats):
            t1, c1 = time.perf_counter(), time.process_time()
            plan = session.preview_program(folder)
            times.append(time.perf_counter() - t1)
            cpus.append(time.process_time() - c1)
        out["preview_s"] = round(statistics.median(times), 3)
        out["cpu_s"] = round(statistics.median(cpus), 3)
        if profile and out["preview_s"] > GOAL_S:
            prof = cProfile.Profile()
            prof.enable()
            session.preview_program(folder)
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
            out["profile"] = buf.getvalue()
    out["resources"] = len(plan.steps)
    out["summary"] = plan.summary()
    out["max_rss_mb"] = max_rss_mb()
    state_dir.cleanup()
    return out


def run_child(folder: Path, repeats: int, mode: str, profile: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(folder), "--mode", mode, "--repeats", str(repeats)]
    if not profile:
        cmd.append("--no-profile")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_cli(folder: Path) -> dict:
    """``engine preview DIR --json`` as a user runs it; the subprocess's peak RSS from wait4."""
    with tempfile.TemporaryDirectory(prefix="bench-pulumi-") as d:
        env = {**os.environ, "ENGINE_STATE": str(Path(d) / "state.db")}
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "engine.cli", "preview", str(folder), "--json"], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = p.communicate(timeout=600)
        wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"engine preview failed:\n{err.decode()[-4000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the largest child so far: run it first
    return {"preview_s": round(wall, 3), "resources": len(json.loads(out)["steps"]),
            "max_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teams", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--child", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="warm", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats, args.mode, not args.no_profile)))
        return

    tmp = tempfile.TemporaryDirectory(prefix="bench-pulumi-prog-")
    folder = write_program(Path(tmp.name), args.teams)
    print(f"Pulumi program: {args.teams} Dask components (+ a ServiceAccount and a ConfigMap per team); "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = {"cli": run_cli(folder)}  # first: RUSAGE_CHILDREN then holds its peak alone
    for mode in ("cold", "warm", "no-change"):
        results[mode] = run_child(folder, args.repeats, mode, not args.no_profile)
    rows = []
    for mode in ("cold", "warm", "no-change", "cli"):
        r = results[mode]
        rows.append([mode, r["resources"], r["preview_s"], r.get("cpu_s"), r.get("imports_s"), r["max_rss_mb"],
                     ratio(r["preview_s"], GOAL_S)])
    print(table(["preview", "resources", "wall s", "cpu s", "imports s", "peak RSS MB", "ratio to 2 s"], rows))
    print(f"cold, imports included: {results['cold']['with_imports_s']} s "
          f"(ratio {ratio(results['cold']['with_imports_s'], GOAL_S)})")
    for mode in ("warm", "no-change"):
        if results[mode].get("profile"):
            print(f"--- {mode} preview over the goal; top costs:\n{results[mode]['profile']}")
    tmp.cleanup()
    emit({"bench": "pulumi_preview", "teams": args.teams, "goal_s": GOAL_S, "load": os.getloadavg()[0],
          **{mode: {k: v for k, v in r.items() if k != "profile"} for mode, r in results.items()}})


if __name__ == "__main__":
    main()
