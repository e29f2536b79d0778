"""Weights & Biases for tasks (Flyte 2's ``flyteintegrations.wandb``): a W&B run is a resource
of every run of the task, created before the body, finished at teardown with its exit status.

    env = engine.TaskEnvironment(name="train", plugin_config=WandB(project="p"),
                                 secrets=[engine.Secret(key="wandb_api_key")])

or ``@wandb_init(project="p")`` over ``@env.task``; inside, ``get_wandb_run()`` is the run.
"""

from .config import WandB
from .plugin import WandBPlugin, get_wandb_run, wandb_init
from .run import WandbRun  # noqa: F401  registers the provider

__all__ = ["WandB", "WandBPlugin", "WandbRun", "get_wandb_run", "wandb_init"]
