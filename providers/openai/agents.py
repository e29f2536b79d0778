"""``function_tool``: a drop-in for the OpenAI Agents SDK's, that also takes an ``@env.task``.

For a task it builds the tool with the SDK's own ``function_tool`` (so name, description, JSON
schema, argument validation and error text are the SDK's) over a stand-in function with the
task's signature and docstring, whose call runs the task through the engine: its environment
provisioned, the call recorded as a run (a child of the current run inside a task), torn
down, and the task's output handed back to the agent. A plain function goes to the SDK's
``function_tool`` unchanged. The SDK refuses a Task object itself (a callable wrapper), which
is why the stand-in exists.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from engine import Task


def _stand_in(task: Task) -> Callable:
    from engine.lifecycle import call_task

    if task.is_async:
        async def run(*args: Any, **kwargs: Any) -> Any:
            return await call_task(task, task.bind(*args, **kwargs))
    else:
        def run(*args: Any, **kwargs: Any) -> Any:
            # The SDK calls a sync tool in a worker thread (asyncio.to_thread), which copies the
            # context: a tool called from inside a task becomes a child run of that task's run.
            return call_task(task, task.bind(*args, **kwargs))
    functools.update_wrapper(run, task.fn)
    run.__name__ = task.short_name
    return run


def function_tool(func: Task | Callable | None = None, **kwargs: Any):
    """``@function_tool``, ``@function_tool(name_override=...)`` or ``function_tool(fn)``, with
    the SDK's keyword arguments; returns an ``agents.FunctionTool``."""
    from agents import function_tool as sdk_function_tool

    def make(f):
        return sdk_function_tool(_stand_in(f) if isinstance(f, Task) else f, **kwargs)

    return make(func) if func is not None else make
