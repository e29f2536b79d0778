"""Ray clusters for tasks (Flyte 2's ``flyteplugins.ray``): ``RayJobConfig(worker_node_config=[...])``."""

from .config import HeadNodeConfig, RayJobConfig, WorkerNodeConfig
from .plugin import RayPlugin
from . import local  # noqa: F401  registers the local providers

__all__ = ["HeadNodeConfig", "RayJobConfig", "RayPlugin", "WorkerNodeConfig"]


def __getattr__(name: str):
    # The Pulumi component needs the pulumi extra: imported on first use, not with the plugin.
    if name == "RayClusterComponent":
        from .component import RayClusterComponent

        return RayClusterComponent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
