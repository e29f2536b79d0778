"""PyTorch elastic tasks the tests run through the real CLI. Bodies run on every rank, in
torch elastic workers, with torch.distributed already initialised."""

import os
import time
from pathlib import Path

import engine
from providers.pytorch import Elastic, RunPolicy

# A small monitor interval: the agents notice finished workers (and failures) sooner.
env = engine.TaskEnvironment(name="pt_t", plugin_config=Elastic(nproc_per_node=2, monitor_interval=0.2))
retry_env = engine.TaskEnvironment(name="pt_retry",
                                   plugin_config=Elastic(nproc_per_node=2, max_restarts=1, monitor_interval=0.2))
two_nodes = engine.TaskEnvironment(name="pt_nodes",
                                   plugin_config=Elastic(nnodes=2, nproc_per_node=1, monitor_interval=0.2))
deadline_env = engine.TaskEnvironment(name="pt_deadline", plugin_config=Elastic(
    nproc_per_node=2, monitor_interval=0.2, run_policy=RunPolicy(active_deadline_seconds=3)))
plain = engine.TaskEnvironment(name="pt_plain")


@env.task
def allreduce(base: int = 1) -> dict:
    """Each rank contributes base + rank; every rank must see the same sum."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(base + dist.get_rank())])
    dist.all_reduce(t)
    print(f"rank {dist.get_rank()} of {dist.get_world_size()} sees {t.item()}")
    return {"sum": t.item(), "world_size": dist.get_world_size(), "backend": dist.get_backend(),
            "rank": dist.get_rank(), "omp": os.environ.get("OMP_NUM_THREADS")}


@two_nodes.task
def nodes() -> dict:
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0])
    dist.all_reduce(t)
    return {"sum": t.item(), "world_size": dist.get_world_size(), "group_rank": int(os.environ["GROUP_RANK"])}


def _flaky(marker: str) -> dict:
    """Rank 1 raises the first time (no marker yet); both ranks then all-reduce."""
    import torch
    import torch.distributed as dist

    if dist.get_rank() == 1 and not Path(marker).exists():
        Path(marker).write_text(os.environ.get("TORCHELASTIC_RESTART_COUNT", "?"))
        raise RuntimeError("rank 1 fails its first attempt on purpose")
    t = torch.tensor([1.0])
    dist.all_reduce(t)
    return {"sum": t.item(), "restart": int(os.environ["TORCHELASTIC_RESTART_COUNT"])}


@retry_env.task
def flaky_retried(marker: str) -> dict:
    return _flaky(marker)


@env.task
def flaky(marker: str) -> dict:
    return _flaky(marker)


@env.task
def slow(marker: str, seconds: float = 120.0) -> str:
    """Signals that the body runs (a marker per rank), then sleeps: the crash test kills here."""
    import torch.distributed as dist

    Path(f"{marker}.{dist.get_rank()}").write_text(str(os.getpid()))
    time.sleep(seconds)
    return "done"


@deadline_env.task
def overdue(seconds: float = 120.0) -> str:
    time.sleep(seconds)
    return "done"


@plain.task
def one() -> int:
    return 1
