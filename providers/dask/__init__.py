"""Dask clusters for tasks (Flyte 2's ``flyteintegrations.dask``): ``Dask(scheduler=..., workers=...)``."""

from .config import Dask, Scheduler, WorkerGroup
from .plugin import DaskPlugin
from . import local  # noqa: F401  registers the local provider

__all__ = ["Dask", "DaskPlugin", "Scheduler", "WorkerGroup"]
