"""Spark for tasks (Flyte 2's ``flyteintegrations.spark``): ``Spark(spark_conf=..., hadoop_conf=...)``.

The task gets a SparkSession on a standalone cluster of its own in
``engine.ctx().data["spark_session"]``.
"""

from .config import PodTemplate, Spark
from .plugin import SparkPlugin
from . import local  # noqa: F401  registers the local provider

__all__ = ["PodTemplate", "Spark", "SparkPlugin"]


def __getattr__(name: str):
    # The Pulumi component needs the pulumi extra: imported on first use, not with the plugin.
    if name == "SparkApplicationComponent":
        from .component import SparkApplicationComponent

        return SparkApplicationComponent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
