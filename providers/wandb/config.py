"""The W&B plugin's configuration: ``WandB(project, entity, mode, tags, config, ...)``.

A pydantic dataclass with ``extra="forbid"``, like the PyTorch plugin's: a misspelt field or a
config that cannot be recorded fails where the environment is written, before any state.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Literal, Optional

from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass

from engine import Secret

_STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

API_KEY = "wandb_api_key"


@dataclass(config=_STRICT)
class WandB:
    """A W&B run for every run of the task, created before the body and finished after it.

    ``mode``: ``None`` means online when there is an API key, offline otherwise. The key is the
    secret ``api_key`` names, by default the environment's ``engine.Secret(key="wandb_api_key")``
    when it declares one. ``run_mode`` and ``rank_scope`` say which ranks of a PyTorch elastic
    task log, with Flyte's meanings (see ``providers.wandb.runtime.RankInit``).
    """

    project: Optional[str] = None
    entity: Optional[str] = None
    mode: Optional[Literal["online", "offline", "disabled"]] = None
    tags: List[str] = Field(default_factory=list)
    config: Dict[str, Any] = Field(default_factory=dict)
    name: Optional[str] = None
    group: Optional[str] = None
    job_type: Optional[str] = None
    notes: Optional[str] = None
    dir: Optional[str] = None
    run_mode: Literal["auto", "new", "shared"] = "auto"
    rank_scope: Literal["global", "worker"] = "global"
    api_key: Optional[Secret] = None

    @field_validator("config")
    @classmethod
    def _recordable(cls, v):
        # The config is part of the resource's inputs, which the state records as JSON.
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"must be JSON-serialisable (it is recorded in the state): {e}") from None
        return v

    @field_validator("project", "entity", "group", "job_type")
    @classmethod
    def _w_and_b_name(cls, v):
        if v is not None and (not v.strip() or any(c in v for c in "/\\#?%:")):
            raise ValueError(f"{v!r} is not a W&B name (no '/', '\\\\', '#', '?', '%', ':')")
        return v
