"""What a plugin is to the engine: it declares resources and attaches their outputs to a task.

A plugin never provisions anything itself; it says what the task needs (``declare``) and
how the task sees it once it exists (``attach``), and may wrap how the body runs
(``execute``, for launchers such as torch elastic). Providers do the provisioning.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

from .resource import DEFAULT_OPTIONS, Declaration, Options, make_urn


@dataclass
class DeclareContext:
    """What a plugin knows when it declares: the stack, the run, the backend, the environment."""

    stack: str
    run_id: str
    backend: str
    env: Any  # TaskEnvironment
    reusable: bool = False
    idle_ttl: float | None = None
    task_name: str = ""
    # The run's inputs, for plugins whose resource is made from them (a connector's job).
    inputs: dict[str, Any] = field(default_factory=dict)
    # The Task itself, for plugins that ship its body to run elsewhere (its module, its source).
    task: Any = None

    def declaration(self, type_token: str, name: str, inputs: dict, deps: list[str] | None = None,
                    options: Options | None = None, **kw) -> Declaration:
        """A declaration named the engine's way: URN from the stack, physical name from the run
        (ephemeral) or the stack (reusable), so recovery can find what a crash left."""
        ephemeral = kw.pop("ephemeral", not self.reusable)
        physical = f"{self.stack}-{self.run_id}-{name}" if ephemeral else f"{self.stack}-{name}"
        return Declaration(urn=make_urn(self.stack, type_token, name), type=type_token, inputs=inputs,
                           deps=deps or [], options=options or DEFAULT_OPTIONS, ephemeral=ephemeral,
                           physical_name=physical, idle_ttl=None if ephemeral else self.idle_ttl, **kw)


@dataclass
class Attachment:
    """What the task sees: environment variables, ``engine.ctx().data`` entries, and context
    managers entered around the body (a client configuration, a session to stop after).

    ``remote``: the body runs elsewhere (a pod the plugin declared); calling it waits for that
    body, shows its output as it comes, and returns its result or raises its error. The engine
    then calls it instead of the body."""

    env_vars: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    contexts: list[Callable[[], ContextManager]] = field(default_factory=list)
    remote: Callable[[], Any] | None = None


class TaskPlugin:
    """Base class of plugins; register an instance with ``TaskPluginRegistry.register``."""

    def declare(self, config: Any, ctx: DeclareContext) -> list[Declaration]:
        return []

    def attach(self, config: Any, outputs: dict[str, dict], ctx: DeclareContext) -> Attachment:
        """``outputs`` maps each declared resource's name to its provider outputs."""
        return Attachment()

    def execute(self, config: Any, call: Callable[[], Any], ctx: DeclareContext) -> Any:
        """Run the task body; a launcher plugin overrides this. ``call()`` runs it in-process."""
        return call()

    @contextlib.contextmanager
    def running(self, config: Any, ctx: DeclareContext):
        """Around the whole run, for plugins that must see its end (the exit status)."""
        yield
