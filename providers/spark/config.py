"""The Spark plugin's configuration, with the fields of Flyte 2's ``flyteintegrations.spark``.

A bad value fails at construction (``ValidationError``), so ``engine up`` exits 2 naming the
field before anything starts. ``executor_sizing`` turns a config into what the local backend
starts: one standalone worker per executor, each exactly the size of one executor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass as plain_dataclass
from typing import Any, Dict, Optional

from pydantic import ConfigDict, field_validator
from pydantic.dataclasses import dataclass

from engine.sdk import parse_cpu, parse_memory

_STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

DEFAULT_EXECUTOR_MEMORY_MB = 512
DEFAULT_DRIVER_MEMORY_MB = 512
# Spark refuses a JVM below 1.5 x its 300 MiB reserve ("System memory ... must be at least
# 471859200"); saying so at construction beats an executor that dies at launch.
MIN_JVM_MEMORY_MB = 450

_JVM_MEM_RE = re.compile(r"^\s*([0-9]+)\s*([kmgtp]?)b?\s*$", re.IGNORECASE)
_JVM_UNITS_MB = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024**2, "p": 1024**3}


def jvm_memory_mb(value: str) -> int:
    """Spark's memory strings (``512m``, ``2g``, ``1000M``; a bare number is MiB) to MiB."""
    m = _JVM_MEM_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a JVM memory size (e.g. 512m, 2g)")
    return int(int(m.group(1)) * _JVM_UNITS_MB[(m.group(2) or "m").lower()])


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise ValueError(f"{value!r} must be at least 1")
    return n


def _memory_at_least_min(value: str) -> int:
    mb = jvm_memory_mb(value)
    if mb < MIN_JVM_MEMORY_MB:
        raise ValueError(f"{value!r} is below Spark's minimum of {MIN_JVM_MEMORY_MB}m")
    return mb


# spark_conf keys the local backend reads to size the cluster, with how each must parse.
_SIZING_KEYS = {
    "spark.executor.instances": _positive_int,
    "spark.executor.cores": _positive_int,
    "spark.executor.memory": _memory_at_least_min,
    "spark.driver.memory": _memory_at_least_min,
}


@dataclass(config=_STRICT)
class PodTemplate:
    """Flyte 2's ``PodTemplate``: a Kubernetes pod spec (a ``V1PodSpec`` or its dict form) whose
    primary container's resources size the local backend's driver or executors."""

    pod_spec: Optional[Any] = None
    primary_container_name: str = "primary"
    labels: Optional[Dict[str, str]] = None
    annotations: Optional[Dict[str, str]] = None

    @field_validator("pod_spec")
    @classmethod
    def _spec(cls, v):
        if v is not None and not isinstance(v, dict) and not hasattr(v, "to_dict"):
            raise ValueError(f"expected a kubernetes V1PodSpec or a dict, got {type(v).__name__}")
        for c in _containers(v):  # a malformed quantity fails here, not at provisioning
            _container_resources(c)
        return v

    def resources(self) -> tuple[Optional[float], Optional[int]]:
        """(cpu, memory in bytes) of the primary container: limits, else requests."""
        return _resources_of(self.pod_spec, self.primary_container_name)


def _containers(spec: Any) -> list[dict]:
    if spec is None:
        return []
    d = spec if isinstance(spec, dict) else spec.to_dict()
    return list(d.get("containers") or [])


def _resources_of(spec: Any, primary: str) -> tuple[Optional[float], Optional[int]]:
    containers = _containers(spec)
    chosen = next((c for c in containers if c.get("name") == primary), None)
    if chosen is None and len(containers) == 1:
        chosen = containers[0]
    return _container_resources(chosen or {})


def _container_resources(container: dict) -> tuple[Optional[float], Optional[int]]:
    res = container.get("resources") or {}
    cpu = mem = None
    for kind in ("requests", "limits"):  # limits win: read last
        q = res.get(kind) or {}
        if q.get("cpu") is not None:
            cpu = parse_cpu(q["cpu"])
        if q.get("memory") is not None:
            mem = parse_memory(q["memory"])
    return cpu, mem


@dataclass(config=_STRICT)
class Spark:
    """What a task's Spark looks like. ``spark_conf`` reaches the task's session as is
    (``spark.executor.instances|cores|memory`` also size the local workers), ``hadoop_conf``
    as ``spark.hadoop.*``; ``executor_path`` is the Python the executors run
    (default: the engine's). ``applications_path`` is the entry file a Kubernetes driver
    runs; locally the task body runs in the engine's process, so it is recorded only."""

    spark_conf: Optional[Dict[str, str]] = None
    hadoop_conf: Optional[Dict[str, str]] = None
    executor_path: Optional[str] = None
    applications_path: Optional[str] = None
    driver_pod: Optional[PodTemplate] = None
    executor_pod: Optional[PodTemplate] = None

    @field_validator("spark_conf")
    @classmethod
    def _spark_conf(cls, v):
        for key, parse in _SIZING_KEYS.items():
            if v and key in v:
                try:
                    parse(v[key])
                except ValueError as e:
                    raise ValueError(f"{key}: {e}") from None
        return v

    def __post_init__(self):
        # As in Flyte: absent maps are empty maps, so callers never test for None.
        if self.spark_conf is None:
            self.spark_conf = {}
        if self.hadoop_conf is None:
            self.hadoop_conf = {}


@plain_dataclass(frozen=True)
class Sizing:
    """What the local backend starts: ``instances`` workers of ``cores`` and ``memory_mb``
    each (one executor apiece), and the driver JVM's heap."""

    instances: int
    cores: int
    memory_mb: int
    driver_memory_mb: int


def executor_sizing(config: Spark) -> Sizing:
    """spark_conf wins, then the pod templates' primary containers, then small defaults."""
    conf = config.spark_conf or {}
    ex_cpu, ex_mem = config.executor_pod.resources() if config.executor_pod else (None, None)
    _, drv_mem = config.driver_pod.resources() if config.driver_pod else (None, None)

    def mb(key: str, pod_bytes: Optional[int], default: int) -> int:
        if key in conf:
            return jvm_memory_mb(conf[key])
        if pod_bytes:
            return max(MIN_JVM_MEMORY_MB, pod_bytes // 2**20)
        return default

    cores = int(conf["spark.executor.cores"]) if "spark.executor.cores" in conf else \
        (max(1, math.ceil(ex_cpu)) if ex_cpu else 1)
    return Sizing(
        instances=int(conf.get("spark.executor.instances", 1)),
        cores=cores,
        memory_mb=mb("spark.executor.memory", ex_mem, DEFAULT_EXECUTOR_MEMORY_MB),
        driver_memory_mb=mb("spark.driver.memory", drv_mem, DEFAULT_DRIVER_MEMORY_MB),
    )
