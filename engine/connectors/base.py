"""The connector SDK, with Flyte 2's names and signatures: a connector written for Flyte runs
here with only its imports changed.

A connector is three idempotent calls against an external system: ``create`` launches a job
and returns its ResourceMeta (the only thing the engine keeps, encoded, in its state),
``get`` reports the job's phase, ``delete`` cancels it.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from typing import Any, ClassVar, Dict, List, Optional

import pydantic
from flyteidl2.core.execution_pb2 import TaskExecution, TaskLog

from ..errors import EngineError

# RETRYABLE_FAILED is terminal here: Flyte's propeller would retry the task; a local run fails
# and the user runs it again (Flyte's own local executor polls it forever).
TERMINAL = frozenset({TaskExecution.SUCCEEDED, TaskExecution.FAILED, TaskExecution.ABORTED,
                      TaskExecution.RETRYABLE_FAILED})


def is_terminal_phase(phase: int) -> bool:
    return phase in TERMINAL


def phase_name(phase: int) -> str:
    try:
        return TaskExecution.Phase.Name(phase)
    except ValueError:
        return str(phase)


class ConnectorNotFound(LookupError):
    """No connector serves a task type and version (the gRPC service answers NOT_FOUND)."""


class ConnectorJobFailed(EngineError):
    """The external job failed, was aborted, or missed its deadline; the run's teardown
    cancels it (exit code 1, one line, no traceback)."""


@dataclasses.dataclass
class ResourceMeta:
    """What identifies a job in the external system (a job id, an endpoint). Subclasses are
    dataclasses; ``encode`` must round-trip through ``decode``, because the bytes are all that
    the state keeps and all that a resumed run or another process has."""

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes):
        # pydantic rebuilds nested dataclasses and coerces JSON's types back to the annotations;
        # its adapter is built once per class (building it costs more than a whole GetTask).
        adapter = _ADAPTERS.get(cls)
        if adapter is None:
            adapter = _ADAPTERS[cls] = pydantic.TypeAdapter(cls)
        return adapter.validate_python(json.loads(data.decode("utf-8")))


_ADAPTERS: dict[type, pydantic.TypeAdapter] = {}


@dataclasses.dataclass
class Resource:
    """A job's state as ``get`` reports it; ``outputs`` become the task's return value."""

    phase: int
    message: Optional[str] = None
    log_links: Optional[List[TaskLog]] = None
    outputs: Optional[Dict[str, Any]] = None
    custom_info: Optional[Dict[str, Any]] = None


class AsyncConnector(abc.ABC):
    """Base class of connectors. Every method must be idempotent: the engine calls ``get``
    again after a crash, and ``delete`` on a job that finished or never existed."""

    name: ClassVar[str] = "Async Connector"
    task_type_name: ClassVar[str]
    task_type_version: ClassVar[int] = 0
    metadata_type: ClassVar[type] = ResourceMeta

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "task_type_name" in cls.__dict__:
            _DEFINED.append(cls)

    @abc.abstractmethod
    async def create(self, task_template, output_prefix: Optional[str] = None,
                     inputs: Optional[Dict[str, Any]] = None, task_execution_metadata=None, **kwargs) -> ResourceMeta:
        """Launch the job; everything needed to find it again goes into the ResourceMeta."""

    @abc.abstractmethod
    async def get(self, resource_meta, **kwargs) -> Resource:
        """The job's phase (and outputs once it succeeded)."""

    @abc.abstractmethod
    async def delete(self, resource_meta, **kwargs) -> None:
        """Cancel the job; success when it already finished or was never found."""

    async def get_metrics(self, resource_meta, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not report metrics")

    async def get_logs(self, resource_meta, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not report logs")


# Connector classes in definition order. Flyte's examples define a connector and never register
# it; a lookup that finds no registered connector instantiates the one class defined for the type.
_DEFINED: list[type] = []


class ConnectorRegistry:
    """(task type, version) -> connector instance, as in Flyte; a duplicate is an error."""

    _connectors: ClassVar[dict[tuple[str, int], AsyncConnector]] = {}

    @classmethod
    def register(cls, connector: AsyncConnector, override: bool = False) -> AsyncConnector:
        key = (connector.task_type_name, int(connector.task_type_version))
        if key in cls._connectors and cls._connectors[key] is not connector and not override:
            raise ValueError(f"a connector for task type {key[0]!r} version {key[1]} is already registered "
                             f"({type(cls._connectors[key]).__qualname__}); pass override=True")
        cls._connectors[key] = connector
        return connector

    @classmethod
    def get_connector(cls, task_type_name: str, task_type_version: int = 0) -> AsyncConnector:
        key = (task_type_name, int(task_type_version))
        if key not in cls._connectors:
            defined = [c for c in _defined() if (c.task_type_name, int(c.task_type_version)) == key]
            if len(defined) > 1:
                raise ConnectorNotFound(f"{len(defined)} connector classes serve task type {key[0]!r} version "
                                        f"{key[1]} ({', '.join(c.__qualname__ for c in defined)}) and none is "
                                        f"registered: register one with ConnectorRegistry.register")
            if not defined:
                raise ConnectorNotFound(f"no connector for task type {key[0]!r} version {key[1]}")
            cls.register(defined[0]())
        return cls._connectors[key]

    @classmethod
    def list_connectors(cls) -> list[AsyncConnector]:
        """Registered connectors, and the defined-but-unregistered ones a lookup would create."""
        for c in _defined():
            key = (c.task_type_name, int(c.task_type_version))
            if key not in cls._connectors:
                try:
                    cls.get_connector(*key)
                except (ConnectorNotFound, TypeError):
                    continue  # ambiguous, or a constructor that needs arguments: only explicit use
        return list(cls._connectors.values())

    def __repr__(self) -> str:
        return f"ConnectorRegistry({', '.join(f'{t}:{v}' for t, v in self._connectors)})"


def _defined() -> list[type]:
    return [c for c in _DEFINED if not getattr(c, "__abstractmethods__", None)]
