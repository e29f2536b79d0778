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


@dataclass(frozen=True)
class Diff:
    """What a provider says about old versus new inputs.

    ``changed`` are dotted property paths; a path in ``replace_keys`` forces a replacement.
    """

    changed: tuple[str, ...] = ()
    replace_keys: tuple[str, ...] = ()
    delete_before_replace: bool = False

    @property
    def changes(self) -> bool:
        return bool(self.changed)


def property_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like values differ (dicts recursed, lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            p = f"{prefix}.{k}" if prefix else str(k)
            if k not in old or k not in new:
                out.append(p)
            else:
                out.extend(property_paths(old[k], new[k], p))
        return out
    return [] if old == new else [prefix or "."]


def get_path(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value


def covers(pattern: str, path: str) -> bool:
    """``workers`` covers ``workers.number_of_workers``; ``*`` covers everything."""
    return pattern == "*" or path == pattern or path.startswith(pattern + ".")


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
    replace_keys: tuple[str, ...] = ()
    refresh_on_up: bool = False
    delete_before_replace: bool = False

    def __init__(self, context: ProviderContext | None = None):
        self.context = context

    def check(self, inputs: dict) -> dict:
        return inputs

    def diff(self, old_inputs: dict, new_inputs: dict) -> Diff:
        changed = tuple(property_paths(old_inputs, new_inputs))
        replace = tuple(p for p in changed if any(covers(k, p) for k in self.replace_keys))
        return Diff(changed=changed, replace_keys=replace)

    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        raise NotImplementedError

    def read(self, id: str, inputs: dict, outputs: dict | None) -> dict | None:
        return outputs

    def update(self, id: str, old_inputs: dict, new_inputs: dict, outputs: dict | None = None) -> dict:
        raise NotImplementedError(f"{type(self).__name__} cannot update in place")

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        raise NotImplementedError

    def owned(self, stack: str) -> list[Owned] | None:
        """Everything that exists labelled as ``stack``'s, for the orphan sweep of recovery
        (a safety net behind the journal: what a lost intent or state row left behind).
        None: this provider cannot list by stack."""
        return None
