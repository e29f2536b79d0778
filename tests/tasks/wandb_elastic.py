"""W&B beside PyTorch elastic: the body runs on every rank; W&B is initialised per rank."""

import engine
from providers.pytorch import Elastic
from providers.wandb import WandB, get_wandb_run

env = engine.TaskEnvironment(name="wandb_elastic", plugin_config=[
    Elastic(nproc_per_node=2, monitor_interval=0.2), WandB(mode="offline", run_mode="new")])


@env.task
def ranks() -> dict:
    """Rank 0's return value is the task's: its own run id; every rank logs its rank."""
    import torch.distributed as dist

    run = get_wandb_run()
    run.log({"rank": dist.get_rank()})
    return {"run": run.id, "world_size": dist.get_world_size()}
