"""The PyTorch plugin's configuration: the fields of Flyte 2's ``flyteintegrations.pytorch``.

pydantic dataclasses with ``extra="forbid"``, so a bad value or a misspelt field fails where
the environment is written (``Elastic(nproc_per_node=0)`` raises ``ValidationError``), before
the engine opens the state. Importing this module never imports torch: the engine process
only plans and waits, the workers are the ones that need it.
"""

from __future__ import annotations

from typing import Any, Dict, Literal, Optional, Union

from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass

_STRICT = ConfigDict(extra="forbid")


def parse_nnodes(nnodes: Union[int, str]) -> tuple[int, int]:
    """``2`` or ``"2"`` -> (2, 2); ``"1:4"`` -> (1, 4), torchrun's ``MIN:MAX`` form."""
    parts = str(nnodes).split(":")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"{nnodes!r} is not a node count or MIN:MAX")
    lo, hi = int(parts[0]), int(parts[-1])
    if lo < 1 or hi < lo:
        raise ValueError(f"{nnodes!r}: need 1 <= MIN <= MAX")
    return lo, hi


@dataclass(config=_STRICT)
class RunPolicy:
    """Kubeflow's RunPolicy, as in Flyte. On the local backend ``active_deadline_seconds``
    bounds the job (its processes are stopped and the run fails); the other fields are
    recorded and apply to the kubernetes backend (locally, teardown always removes all)."""

    clean_pod_policy: Optional[Literal["None", "all", "Running"]] = None
    ttl_seconds_after_finished: Optional[int] = Field(default=None, ge=0, strict=True)
    active_deadline_seconds: Optional[int] = Field(default=None, gt=0, strict=True)
    backoff_limit: Optional[int] = Field(default=None, ge=0, strict=True)


@dataclass(config=_STRICT)
class Elastic:
    """Run the task under torch elastic: ``nnodes`` agents, each with ``nproc_per_node``
    workers, joined by a rendezvous; a failed worker group restarts up to ``max_restarts``
    times. ``monitor_interval`` is how often (seconds) an agent checks its workers: it also
    bounds how soon a finished job is noticed, so short jobs want a small one."""

    nnodes: Union[int, str] = 1
    nproc_per_node: int = Field(default=1, ge=1, strict=True)
    rdzv_backend: Literal["c10d", "etcd", "etcd-v2"] = "c10d"
    run_policy: Optional[RunPolicy] = None
    monitor_interval: float = Field(default=3, gt=0, strict=True)
    max_restarts: int = Field(default=0, ge=0, strict=True)
    rdzv_configs: Dict[str, Any] = Field(default_factory=lambda: {"timeout": 900, "join_timeout": 900})

    @field_validator("nnodes", mode="before")
    @classmethod
    def _nnodes(cls, v):
        if isinstance(v, bool):
            raise ValueError("must be a node count or 'MIN:MAX', not a bool")
        parse_nnodes(v)
        return v

    @field_validator("rdzv_configs")
    @classmethod
    def _rdzv_configs(cls, v):
        # They travel as torchrun's --rdzv-conf "k=v,k=v": keys and values must survive that.
        for k, val in v.items():
            if not k or any(c in k for c in ",= "):
                raise ValueError(f"key {k!r} cannot be passed to --rdzv-conf")
            if not isinstance(val, (str, int, float, bool)) or any(c in str(val) for c in ", "):
                raise ValueError(f"value of {k!r} must be a scalar without ',' or spaces")
        return v
