"""The Dask plugin's configuration, with the fields of Flyte 2's ``flyteintegrations.dask``."""

from __future__ import annotations

from typing import Optional

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from engine import Resources

_STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


@dataclass(config=_STRICT)
class Scheduler:
    image: Optional[str] = None
    resources: Optional[Resources] = None


@dataclass(config=_STRICT)
class WorkerGroup:
    number_of_workers: int = Field(default=1, ge=1)
    image: Optional[str] = None
    resources: Optional[Resources] = None


@dataclass(config=_STRICT)
class Dask:
    scheduler: Scheduler = Field(default_factory=Scheduler)
    workers: WorkerGroup = Field(default_factory=WorkerGroup)
