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
import os
import sys
import tempfile
from pathlib import Path

from _common import (ROOT, alternate, anchor, emit, engine_up, headline, leaked, med, print_leaks, print_load, ratio,
                     row, table, walls)

STACK = "bench_pytorch"

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


def run_engine(d: Path) -> dict:
    try:
        doc, wall, cpu = engine_up(f"{d}/tasks.py:allreduce", f"{d}/state.db", d, timeout=300)
    finally:
        for suffix in ("", "-wal", "-shm"):
            (d / f"state.db{suffix}").unlink(missing_ok=True)
    return {"wall_s": wall, "cpu_s": cpu, "result": doc["outputs"], "leaked": leaked(STACK)}


def run_torchrun(d: Path) -> dict:
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    doc, wall, cpu = anchor([*launcher, "--standalone", "--nproc_per_node=2", str(d / "script.py")], d, "torchrun",
                            timeout=300)
    return {"wall_s": wall, "cpu_s": cpu, "result": doc["result"]}


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
        runs = alternate({"engine": lambda: run_engine(d), "torchrun": lambda: run_torchrun(d)},
                         args.repeats, args.warmup, 3.0)
    eng, tr = runs["engine"], runs["torchrun"]

    e_med, t_med = med(eng), med(tr)
    r = ratio(e_med, t_med)
    e_cpu, t_cpu = med(eng, "cpu_s"), med(tr, "cpu_s")
    rows = [
        row(f"taskrig: engine up, Elastic(nproc_per_node=2, monitor_interval={args.monitor_interval})", eng,
            ["cpu_s"], "1.000"),
        row("torchrun --standalone --nproc_per_node=2 script.py", tr, ["cpu_s"], r),
    ]
    headline("PyTorch elastic, all_reduce over 2 gloo ranks (CPU)", args.repeats, args.warmup)
    print(table(["", "runs", "median s", "min s", "median CPU s", "taskrig/this"], rows))
    print(f"\ntaskrig / torchrun (median wall): {r}  (goal: <= 1.2); CPU seconds: {ratio(e_cpu, t_cpu)}")
    leaks = print_leaks(eng)
    load = print_load()
    emit({"bench": "pytorch", "repeats": args.repeats, "monitor_interval": args.monitor_interval,
          "taskrig": {"median_s": e_med, "walls_s": walls(eng), "cpu_median_s": e_cpu},
          "torchrun": {"median_s": t_med, "walls_s": walls(tr), "cpu_median_s": t_cpu},
          "ratio_median": r, "ratio_cpu": ratio(e_cpu, t_cpu), "goal_ratio": 1.2, "leaked_processes": leaks, "loadavg": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
