"""The Ray plugin's configuration, with the fields of Flyte 2's ``flyteplugins.ray``.

Validation happens at construction (pydantic, ``extra="forbid"``), so a bad value fails where
the task module builds it and the CLI exits 2 naming the field, before any state is touched.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional

from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass

from engine import Resources

_STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
_GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_PARAM_RE = re.compile(r"^[a-z][a-z0-9_-]*$")


def _check_params(v: Optional[Dict[str, str]]) -> Optional[Dict[str, str]]:
    """KubeRay's ``rayStartParams``: option names without dashes (``num-cpus``) to string values."""
    for k in v or {}:
        if not _PARAM_RE.match(k.lstrip("-")):
            raise ValueError(f"{k!r} is not a `ray start` option name (such as 'num-cpus')")
    return v


@dataclass(config=_STRICT)
class HeadNodeConfig:
    ray_start_params: Optional[Dict[str, str]] = None
    # Kubernetes-backend only (the head pod's template); the local backend ignores it.
    pod_template: Optional[Any] = None
    requests: Optional[Resources] = None
    limits: Optional[Resources] = None

    @field_validator("ray_start_params")
    @classmethod
    def _params(cls, v):
        return _check_params(v)


@dataclass(config=_STRICT)
class WorkerNodeConfig:
    group_name: str
    replicas: int = Field(default=1, ge=0)
    min_replicas: Optional[int] = Field(default=None, ge=0)
    max_replicas: Optional[int] = Field(default=None, ge=0)
    ray_start_params: Optional[Dict[str, str]] = None
    pod_template: Optional[Any] = None
    requests: Optional[Resources] = None
    limits: Optional[Resources] = None

    @field_validator("group_name")
    @classmethod
    def _group_name(cls, v: str) -> str:
        if not _GROUP_RE.match(v):
            raise ValueError("must be 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit")
        return v

    @field_validator("min_replicas")
    @classmethod
    def _min(cls, v: Optional[int], info: ValidationInfo) -> Optional[int]:
        replicas = info.data.get("replicas")
        if v is not None and replicas is not None and v > replicas:
            raise ValueError(f"must not exceed replicas ({replicas})")
        return v

    @field_validator("max_replicas")
    @classmethod
    def _max(cls, v: Optional[int], info: ValidationInfo) -> Optional[int]:
        if v is None:
            return v
        for other in ("replicas", "min_replicas"):
            if info.data.get(other) is not None and v < info.data[other]:
                raise ValueError(f"must be at least {other} ({info.data[other]})")
        return v

    @field_validator("ray_start_params")
    @classmethod
    def _params(cls, v):
        return _check_params(v)


@dataclass(config=_STRICT)
class RayJobConfig:
    """A Ray cluster for the task (head plus worker groups), or an existing one (``address``)."""

    worker_node_config: List[WorkerNodeConfig] = Field(default_factory=list)
    head_node_config: Optional[HeadNodeConfig] = None
    # Locally the cluster has exactly ``replicas`` nodes per group (within min/max); the
    # autoscaler runs on the kubernetes backend.
    enable_autoscaling: bool = False
    runtime_env: Optional[dict] = None
    address: Optional[str] = None
    # RayJob lifecycle fields (kubernetes backend). Locally a run's cluster always goes when
    # the run ends, and a reusable one when its ReusePolicy's idle_ttl expires.
    shutdown_after_job_finishes: bool = False
    ttl_seconds_after_finished: Optional[int] = Field(default=None, ge=0)

    @field_validator("worker_node_config")
    @classmethod
    def _unique_groups(cls, v: List[WorkerNodeConfig]) -> List[WorkerNodeConfig]:
        seen = set()
        for g in v:
            if g.group_name in seen:
                raise ValueError(f"group_name {g.group_name!r} appears twice")
            seen.add(g.group_name)
        return v

    @field_validator("runtime_env")
    @classmethod
    def _json(cls, v: Optional[dict]) -> Optional[dict]:
        if v is not None:
            try:
                json.dumps(v)
            except (TypeError, ValueError) as e:
                raise ValueError(f"must be JSON-serializable (it is handed to ray.init): {e}") from None
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        m = re.match(r"^(?:ray://)?(\[[0-9a-fA-F:]+\]|[^:/\s]+):(\d{1,5})$", v.strip())
        if not m or not 0 < int(m.group(2)) < 65536:
            raise ValueError("must be HOST:PORT (the GCS address) or ray://HOST:PORT")
        return v.strip()
