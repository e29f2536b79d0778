"""Ray clusters for tasks (Flyte 2's ``flyteplugins.ray``): ``RayJobConfig(worker_node_config=[...])``."""

from .config import HeadNodeConfig, RayJobConfig, WorkerNodeConfig
from .plugin import RayPlugin
from . import local  # noqa: F401  registers the local providers

__all__ = ["HeadNodeConfig", "RayJobConfig", "RayPlugin", "WorkerNodeConfig"]
