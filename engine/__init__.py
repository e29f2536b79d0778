"""taskrig's engine: per-task infrastructure with a plan, applied and recorded in SQLite.

The user-facing names follow Flyte 2 (``import engine as flyte``).
"""

from . import extend
from .context import TaskContext, ctx
from .errors import ConfigError, EngineError, LockHeld, ProviderError, StateError
from .image import Image
from .lifecycle import RunResult, Session, preview, run, with_runcontext
from .plan import Plan, Step
from .sdk import Resources, ReusePolicy, Secret, Task, TaskEnvironment

__all__ = [
    "ConfigError", "EngineError", "Image", "LockHeld", "Plan", "ProviderError", "Resources", "ReusePolicy",
    "RunResult", "Secret", "Session", "StateError", "Step", "Task", "TaskContext", "TaskEnvironment",
    "ctx", "extend", "preview", "run", "with_runcontext",
]
