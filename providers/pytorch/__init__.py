"""Elastic PyTorch for tasks (Flyte 2's ``flyteintegrations.pytorch``): ``Elastic(nproc_per_node=...)``.

On the local backend the task body runs on every rank under ``torch.distributed.run``, with
``torch.distributed`` initialised; rank 0's return value is the task's result.
"""

from .config import Elastic, RunPolicy
from .plugin import ElasticPlugin
from .local import ElasticJobError, LocalElasticJob  # noqa: F401  registers the local provider

__all__ = ["Elastic", "ElasticJobError", "ElasticPlugin", "RunPolicy"]


def __getattr__(name: str):
    # The Pulumi component needs the pulumi extra: imported on first use, not with the plugin.
    if name == "PyTorchJobComponent":
        from .component import PyTorchJobComponent

        return PyTorchJobComponent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
