"""Dask clusters for tasks (Flyte 2's ``flyteintegrations.dask``): ``Dask(scheduler=..., workers=...)``."""

from .config import Dask, Scheduler, WorkerGroup
from .plugin import DaskPlugin
from . import local  # noqa: F401  registers the local provider

__all__ = ["Dask", "DaskPlugin", "Scheduler", "WorkerGroup"]


def __getattr__(name: str):
    # The Pulumi component needs the pulumi extra: imported on first use, not with the plugin.
    if name == "DaskClusterComponent":
        from .component import DaskClusterComponent

        return DaskClusterComponent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
