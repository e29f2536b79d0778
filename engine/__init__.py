"""taskrig's engine: per-task infrastructure with a plan, applied and recorded in SQLite.

The user-facing names follow Flyte 2 (``import engine as flyte``).
"""

from . import extend
from .context import TaskContext, ctx
from .errors import ConfigError, EngineError, LockHeld, ProviderError, StateError
from .image import Image
from .plan import Plan, Step
from .sdk import Resources, ReusePolicy, Secret, Task, TaskEnvironment

# Running needs the state (sqlite-utils, numpy behind it) and apply; declaring tasks does not.
# A module of tasks is imported wherever its functions are unpickled (a Dask or Spark worker,
# a torch rank), so ``import engine`` stays light and these load on first use.
_LIFECYCLE = {"RunResult", "Session", "preview", "run", "with_runcontext"}


def __getattr__(name: str):
    if name in _LIFECYCLE:
        from . import lifecycle

        return getattr(lifecycle, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConfigError", "EngineError", "Image", "LockHeld", "Plan", "ProviderError", "Resources", "ReusePolicy",
    "RunResult", "Secret", "Session", "StateError", "Step", "Task", "TaskContext", "TaskEnvironment",
    "ctx", "extend", "preview", "run", "with_runcontext",
]
