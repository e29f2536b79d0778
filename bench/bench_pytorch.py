"""``engine up`` of a trivial all_reduce over 2 ranks against ``torchrun --standalone`` doing the same.

    python bench/bench_pytorch.py [--repeats 5] [--warmup 1] [--monitor-interval 0.1]

taskrig: ``engine up <tmp>/tasks.py:allreduce --state <tmp>/state.db --json`` in a subprocess
(fresh state each time) with ``Elastic(nproc_per_node=2, monitor_interval=M)``: plan, journal
the ElasticJob resource, start ``torch.distributed.run`` (1 agent, 2 gloo workers) on a c10d
rendezvous, ship the function, return rank 0's value, tear down, record. Anchor:
``torchrun --standalone --nproc_per_node=2 script.py`` with the same body written as a script.
M defaults to torchrun's own default (0.1 s) so both agents poll their workers alike; Flyte's
default (3 s) adds up to 3 s to any job this short (``--monitor-interval 3`` shows it). Both
sides are timed wall clock from outside, alternately; medians compared. Goal: at most 1.2x.
On a shared machine the wall clock follows the load; the CPU seconds each side used (it and
every process it waited for: agents, workers) move much less, so they are printed too.
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

from _common import ROOT, emit, ratio, table

TASK = '''
import engine
from providers.pytorch import Elastic

env = engine.TaskEnvironment(name="bench_pytorch",
                             plugin_config=Elastic(nproc_per_node=2, monitor_interval={monitor}))


@env.task
def allreduce() -> float:
    import torch
    import torch.distributed as dist  # initialised by the plugin

    t = torch.tensor([dist.get_rank() + 1.0])
    dist.all_reduce(t)
    return t.item()
'''

SCRIPT = '''
import json
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
t = torch.tensor([dist.get_rank() + 1.0])
dist.all_reduce(t)
if dist.get_rank() == 0:
    print(json.dumps({"result": t.item()}))
dist.destroy_process_group()
'''


def leaked() -> int:
    from providers.local.process import find_tagged

    return len(find_tagged("bench_pytorch-", prefix=True))


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_engine(d: Path) -> dict:
    cmd = [sys.executable, "-m", "engine.cli", "up", f"{d}/tasks.py:allreduce", "--state", f"{d}/state.db", "--json"]
    c, t = _cpu(), time.perf_counter()
    r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=300)
    wall, cpu = time.perf_counter() - t, _cpu() - c
    (d / "state.db").unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        (d / f"state.db{suffix}").unlink(missing_ok=True)
    if r.returncode != 0:
        raise SystemExit(f"engine up failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "result": json.loads(r.stdout)["outputs"], "leaked": leaked()}


def run_torchrun(d: Path) -> dict:
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*launcher, "--standalone", "--nproc_per_node=2", str(d / "script.py")]
    c, t = _cpu(), time.perf_counter()
    r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=300)
    wall, cpu = time.perf_counter() - t, _cpu() - c
    if r.returncode != 0:
        raise SystemExit(f"torchrun failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "result": json.loads(r.stdout.strip().splitlines()[-1])["result"]}


def med(runs: list[dict], key: str = "wall_s") -> float:
    return round(statistics.median(r[key] for r in runs), 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each side first (file caches)")
    ap.add_argument("--monitor-interval", type=float, default=0.1, help="the Elastic config's (torchrun's default: 0.1)")
    args = ap.parse_args()
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory(prefix="bench-pytorch-") as tmp:
        d = Path(tmp)
        (d / "tasks.py").write_text(TASK.format(monitor=args.monitor_interval))
        (d / "script.py").write_text(SCRIPT)
        for _ in range(args.warmup):
            run_engine(d)
            run_torchrun(d)
        eng, tr = [], []
        for i in range(args.repeats):
            order = [("engine", run_engine, eng), ("torchrun", run_torchrun, tr)]
            for name, fn, into in (order if i % 2 == 0 else order[::-1]):  # neither always goes first
                res = fn(d)
                if res["result"] != 3.0:
                    raise SystemExit(f"{name} returned {res['result']!r}, expected 3.0")
                into.append(res)
                print(f"  run {i + 1} {name}: {res['wall_s']:.2f} s", file=sys.stderr, flush=True)

    e_med, t_med = med(eng), med(tr)
    r = ratio(e_med, t_med)
    e_cpu, t_cpu = med(eng, "cpu_s"), med(tr, "cpu_s")
    rows = [
        [f"taskrig: engine up, Elastic(nproc_per_node=2, monitor_interval={args.monitor_interval})", len(eng),
         e_med, round(min(x["wall_s"] for x in eng), 3), e_cpu, "1.000"],
        ["torchrun --standalone --nproc_per_node=2 script.py", len(tr), t_med,
         round(min(x["wall_s"] for x in tr), 3), t_cpu, r],
    ]
    print(f"PyTorch elastic, all_reduce over 2 gloo ranks (CPU); wall clock of the whole process, "
          f"{args.repeats} alternating runs each (after {args.warmup} warm-up)")
    print(table(["", "runs", "median s", "min s", "median CPU s", "taskrig/this"], rows))
    print(f"\ntaskrig / torchrun (median wall): {r}  (goal: <= 1.2); CPU seconds: {ratio(e_cpu, t_cpu)}")
    leaks = [x["leaked"] for x in eng]
    print(f"tagged processes left after each engine up: {leaks}")
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at the end (2 cores, shared machine): {load}")
    emit({"bench": "pytorch", "repeats": args.repeats, "monitor_interval": args.monitor_interval,
          "taskrig": {"median_s": e_med, "walls_s": [round(x["wall_s"], 3) for x in eng], "cpu_median_s": e_cpu},
          "torchrun": {"median_s": t_med, "walls_s": [round(x["wall_s"], 3) for x in tr], "cpu_median_s": t_cpu},
          "ratio_median": r, "ratio_cpu": ratio(e_cpu, t_cpu), "goal_ratio": 1.2, "leaked_processes": leaks, "loadavg": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
