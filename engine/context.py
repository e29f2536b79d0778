"""The run a piece of code is inside, carried in a context variable (threads and tasks copy it)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TaskContext:
    """What ``engine.ctx()`` returns inside a task: the run, its stack, and plugin data
    (``data["spark_session"]``, ``data["dask_scheduler_address"]``)."""

    run_id: str
    stack: str
    task: str
    env: Any
    session: Any
    data: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict] = field(default_factory=dict)
    # The body and its inputs, for launcher plugins that run it in other processes (torch elastic).
    fn: Any = None
    inputs: dict[str, Any] = field(default_factory=dict)


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar("engine_task_context", default=None)


def ctx() -> TaskContext | None:
    """The current task's context, or None outside a task."""
    return _current.get()


def enter(tc: TaskContext) -> contextvars.Token:
    return _current.set(tc)


def leave(token: contextvars.Token) -> None:
    _current.reset(token)
