"""The Dask plugin's configuration: Flyte 2's ``flyteintegrations.dask`` dataclasses.

Plain dataclasses, as in Flyte; the constraints ride on the annotations and the engine
validates the whole tree when an environment takes it, so errors name the full path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Optional

from pydantic import Field

from engine import Resources


@dataclass
class Scheduler:
    image: Optional[str] = None
    resources: Optional[Resources] = None


@dataclass
class WorkerGroup:
    number_of_workers: Annotated[int, Field(ge=1, strict=True)] = 1
    image: Optional[str] = None
    resources: Optional[Resources] = None


@dataclass
class Dask:
    scheduler: Scheduler = field(default_factory=Scheduler)
    workers: WorkerGroup = field(default_factory=WorkerGroup)
