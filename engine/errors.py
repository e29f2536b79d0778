"""The errors the engine raises, each carrying the exit code a pipeline branches on.

0 success, 1 the task or a provider failed, 2 bad input (target, config, state file),
3 a stack lock held past ``--lock-timeout``.
"""

from __future__ import annotations


class EngineError(Exception):
    exit_code = 1


class ConfigError(EngineError, ValueError):
    """Bad input: names the field path (``plugin_config.workers.number_of_workers``)."""

    exit_code = 2

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class TargetError(ConfigError):
    """The TARGET (``file.py:task`` or ``module:task``) cannot be loaded."""


class StateError(EngineError):
    """The state file is unreadable, foreign, or from a newer engine; it is left untouched."""

    exit_code = 2


class LockHeld(EngineError):
    exit_code = 3

    def __init__(self, stack: str, holder: dict):
        self.stack = stack
        self.holder = holder
        who = ", ".join(f"{k} {holder[k]}" for k in ("pid", "host", "operation", "started") if k in holder)
        super().__init__(
            f"stack {stack!r} is locked by another engine ({who}); "
            f"wait for it, pass --lock-timeout SECONDS, or if that process is gone from another host: "
            f"engine unlock {stack} {holder.get('lock_id', '?')}"
        )


class ProviderError(EngineError):
    """A provider call failed; names the resource and the operation."""

    def __init__(self, urn: str, op: str, cause: BaseException):
        self.urn = urn
        self.op = op
        self.cause = cause
        super().__init__(f"{op} of {urn} failed: {type(cause).__name__}: {cause}")


class TaskFailed(EngineError):
    """The task body raised; the original exception is ``__cause__``."""

    def __init__(self, run_id: str, task: str, cause: BaseException):
        self.run_id = run_id
        self.task = task
        self.cause = cause
        super().__init__(f"task {task} (run {run_id}) failed: {type(cause).__name__}: {cause}")


class NotFound(EngineError):
    """A provider says the thing is gone; on delete that counts as success."""
