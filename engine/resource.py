"""Declarations, the provider contract and the records the state keeps.

The contract is Terraform's and Pulumi's, in Python: ``check`` validates, ``diff`` says what
changed and whether that forces a replacement, ``create`` is transactional, ``read`` returns
None when the thing is gone, ``delete`` is idempotent.
"""

from __future__ import annotations

import contextvars
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import paths
from .paths import Path

URN_PREFIX = "urn:engine:"


def make_urn(stack: str, type_token: str, name: str, parent_type: str | None = None) -> str:
    qualified = f"{parent_type}${type_token}" if parent_type else type_token
    return f"{URN_PREFIX}{stack}::{qualified}::{name}"


def urn_parts(urn: str) -> tuple[str, str, str]:
    """(stack, type, name) of a URN."""
    if not urn.startswith(URN_PREFIX):
        raise ValueError(f"not an engine URN: {urn!r}")
    stack, qualified, name = urn[len(URN_PREFIX):].split("::", 2)
    return stack, qualified.rsplit("$", 1)[-1], name


@dataclass(frozen=True)
class Timeouts:
    create: float | None = None
    update: float | None = None
    delete: float | None = None


@dataclass(frozen=True)
class Options:
    """Per-resource options with Pulumi's meaning."""

    protect: bool = False
    delete_before_replace: bool = False
    # Property paths in Pulumi's syntax (``labels["app.kubernetes.io/version"]``), kept as
    # written: ``engine.plan`` parses them (cached) and names the option if one does not parse.
    replace_on_changes: tuple[str, ...] = ()
    ignore_changes: tuple[str, ...] = ()
    retain_on_delete: bool = False
    timeouts: Timeouts = field(default_factory=Timeouts)
    # Not Pulumi's: an external job (a connector's) that outlives a dead engine. Recovery of a run
    # that died while it ran keeps it for the next run of the stack to resume polling; a run that
    # died tearing down, and ``destroy``, still delete it.
    resume_on_recover: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Options":
        if not d:
            return cls()
        d = dict(d)
        d["replace_on_changes"] = tuple(d.get("replace_on_changes") or ())
        d["ignore_changes"] = tuple(d.get("ignore_changes") or ())
        d["timeouts"] = Timeouts(**(d.get("timeouts") or {}))
        return cls(**d)


# Options is frozen: one default instance serves every declaration that sets none.
DEFAULT_OPTIONS = Options()


@dataclass
class Declaration:
    """One desired resource: what a plugin (or a Pulumi program) asks for.

    ``ephemeral`` resources belong to one run and are torn down when it ends; their physical
    name comes from the run id so that recovery after a crash can find what a create left.
    """

    urn: str
    type: str
    inputs: dict
    deps: list[str] = field(default_factory=list)
    options: Options = field(default_factory=Options)
    ephemeral: bool = True
    parent: str | None = None
    physical_name: str = ""
    idle_ttl: float | None = None
    # An existing thing that is only read (Ray's ``address=``): never created, updated or deleted.
    read_only: bool = False
    # Inputs kept out of the state and the plan (resolved secrets), merged in at provider calls.
    secret_inputs: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return urn_parts(self.urn)[2]


@dataclass
class Record:
    """A resource as the state recorded it."""

    urn: str
    type: str
    stack: str
    id: str
    inputs: dict
    outputs: dict
    deps: list[str] = field(default_factory=list)
    options: Options = field(default_factory=Options)
    ephemeral: bool = True
    run_id: str | None = None
    parent: str | None = None
    idle_ttl: float | None = None
    last_used: float | None = None
    created: float | None = None
    # The old copy of a create-before-delete replacement: still exists, to be deleted.
    pending_delete: bool = False
    # The machine that recorded it (schema 3); None for rows whose writer is unknown.
    host: str | None = None


@dataclass(frozen=True)
class Diff:
    """What a provider says about old versus new inputs.

    ``changed`` are property paths (``engine.paths``: tuples of keys and indices, or strings in
    Pulumi's syntax, parsed here once); a path in ``replace_keys`` forces a replacement.
    """

    changed: tuple[Path, ...] = ()
    replace_keys: tuple[Path, ...] = ()
    delete_before_replace: bool = False

    def __post_init__(self):
        for name in ("changed", "replace_keys"):
            value = getattr(self, name)
            if value == ():
                continue
            if type(value) is not tuple or not all(type(p) is tuple for p in value):
                try:
                    object.__setattr__(self, name, paths.as_paths(value))
                except paths.PathError as e:
                    raise paths.PathError(f"Diff.{name}: {e}") from None

    @property
    def changes(self) -> bool:
        return bool(self.changed)


NO_DIFF = Diff()


@dataclass
class Read:
    """A read that found the thing changed out of band: its actual inputs and outputs.

    ``read`` may return this instead of plain outputs when what exists differs from what was
    asked (two of four workers died); refresh records the actual inputs, and the next plan
    shows the update that restores the declared ones.
    """

    inputs: dict
    outputs: dict


@dataclass(frozen=True)
class Owned:
    """Something a provider found carrying a stack's label: its id and the run that made it."""

    id: str
    run_id: str | None = None


_call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("call_deadline", default=None)


def call_deadline() -> float | None:
    """The ``time.monotonic()`` by which the provider call in progress should return (from
    ``options.timeouts``), or None. A provider that waits (for readiness, a rollout) stops
    waiting and raises once it passes; one that ignores it is still waited for, so that what it
    makes is recorded, and its intent stays open for recovery if it outlives the grace."""
    return _call_deadline.get()


@dataclass(frozen=True)
class ProviderContext:
    """Where a provider may keep files (logs, pid files) for the state it serves."""

    state_path: str
    runtime_dir: str
    backend_options: dict = field(default_factory=dict)


class Provider:
    """Base class of resource providers; subclasses set ``type_token`` and override the calls.

    ``refresh_on_up``: read recorded resources before a run reuses them (cheap for local
    processes; off for providers where a read costs a round trip per resource).
    """

    type_token: str = ""
    # True: what it makes exists on the machine that made it (local processes), so only that
    # host can read, recover or delete it; with a shared state other hosts leave it alone.
    host_local: bool = False
    # Property paths (Pulumi syntax or tuples) whose change forces a replacement; ``*``: any.
    replace_keys: tuple[str | Path, ...] = ()
    refresh_on_up: bool = False
    delete_before_replace: bool = False

    def __init__(self, context: ProviderContext | None = None):
        self.context = context

    def check(self, inputs: dict) -> dict:
        return inputs

    def diff(self, old_inputs: dict, new_inputs: dict) -> Diff:
        if old_inputs == new_inputs:  # the common case, compared in C
            return NO_DIFF
        changed = tuple(paths.diff(old_inputs, new_inputs))
        if not changed:
            return NO_DIFF
        keys = paths.patterns(self.replace_keys, "replace_keys", type(self).__name__)
        return Diff(changed=changed, replace_keys=tuple(p for p in changed if paths.covered(p, keys)))

    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        raise NotImplementedError

    def read(self, id: str, inputs: dict, outputs: dict | None) -> dict | None:
        return outputs

    def update(self, id: str, old_inputs: dict, new_inputs: dict, outputs: dict | None = None) -> dict:
        raise NotImplementedError(f"{type(self).__name__} cannot update in place")

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        raise NotImplementedError

    def tidy(self, stack: str, records: list[Record]):
        """Cleanup that a read only observes (a dead local cluster's processes and folder, nodes
        the record does not list), done by recovery under the stack's lock: ``read`` never
        changes anything, since a preview may call it while an ``up`` is running. ``records``
        are this type's rows of ``stack``; returns messages saying what was done."""
        return ()

    def owned(self, stack: str) -> list[Owned] | None:
        """Everything that exists labelled as ``stack``'s, for the orphan sweep of recovery
        (a safety net behind the journal: what a lost intent or state row left behind).
        None: this provider cannot list by stack."""
        return None
