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

    def __init__(self, stack: str, holder: dict, pg: bool = False):
        self.stack = stack
        self.holder = holder
        who = ", ".join(f"{k} {holder[k]}" for k in ("pid", "host", "operation", "started") if k in holder)
        if pg:
            session = f"database session {holder['backend_pid']}" if holder.get("backend_pid") else "a database session"
            super().__init__(
                f"stack {stack!r} is locked by another engine ({who + ', ' if who else ''}{session}); "
                f"wait for it or pass --lock-timeout SECONDS (a PostgreSQL advisory lock is released as soon as "
                f"its holder's session ends: a dead engine's lock is free already)"
            )
            return
        super().__init__(
            f"stack {stack!r} is locked by another engine ({who}); "
            f"wait for it, pass --lock-timeout SECONDS, or if that process is gone from another host: "
            f"engine unlock {stack} {holder.get('lock_id', '?')}"
        )


class HostLocal(EngineError):
    """A shared state records local processes of another machine: only that host can act on them."""

    def __init__(self, stack: str, items: list[tuple[str, str, str, str]]):
        self.stack = stack
        self.items = items
        hosts = sorted({h for *_, h in items})
        listed = "; ".join(f"{t} {urn.rsplit('::', 1)[-1]!r} (id {id}) on host {h}" for urn, t, id, h in items)
        super().__init__(
            f"stack {stack!r} holds local processes of another host: {listed}. Only {', '.join(hosts)} can read, "
            f"recover or delete them: run the command there (a host gone for good: "
            f"ENGINE_HOSTNAME={hosts[0]} engine destroy {stack} drops what no longer exists)"
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


class BodyFailed(EngineError):
    """The body failed where it ran away from the engine (a pod): the message says where and
    how, with the body's own traceback when it raised."""
