"""Deciding: desired declarations against recorded state, into a list of steps.

The plan is data. It never calls a provider (the caller passes each provider's ``Diff``
in) and never writes state; ``apply`` executes it and ``render`` shows it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .resource import Declaration, Diff, Record, covers, get_path

OPS = ("create", "update", "replace", "delete", "same", "read", "options")
# Ops that change something (``options``: only what the state records about a resource, its
# options, dependencies, parent, idle TTL or reusability: no provider call, as Pulumi's update
# of options alone).
CHANGING = ("create", "update", "replace", "delete", "options")


@dataclass
class Change:
    path: str
    old: Any
    new: Any


@dataclass
class Step:
    op: str
    urn: str
    type: str
    new: Declaration | None = None
    old: Record | None = None
    changes: list[Change] = field(default_factory=list)
    replace_keys: tuple[str, ...] = ()
    delete_before_replace: bool = False
    reason: str | None = None

    @property
    def inputs(self) -> dict:
        if self.new is not None:
            return self.new.inputs
        return self.old.inputs if self.old else {}


@dataclass
class Plan:
    stack: str
    steps: list[Step]

    def summary(self) -> dict[str, int]:
        out = {op: 0 for op in ("create", "update", "replace", "delete", "options", "same")}
        for s in self.steps:
            if s.op in out:
                out[s.op] += 1
        return out

    @property
    def has_changes(self) -> bool:
        return any(s.op in CHANGING for s in self.steps)


def _set_path(target: dict, path: str, value: Any, present: bool) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        nxt = target.get(p)
        if not isinstance(nxt, dict):
            if not present:
                return
            nxt = target[p] = {}
        target = nxt
    if present:
        target[parts[-1]] = value
    else:
        target.pop(parts[-1], None)


def _missing(value: dict, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return True
        value = value[part]
    return False


def apply_ignore_changes(old: dict, new: dict, ignore: tuple[str, ...]) -> dict:
    """New inputs with the recorded value kept at every ignored path (Pulumi's ``ignoreChanges``)."""
    if not ignore:
        return new
    merged = copy.deepcopy(new)
    for path in ignore:
        _set_path(merged, path, copy.deepcopy(get_path(old, path)), not _missing(old, path))
    return merged


def plan(stack: str, desired: list[Declaration], recorded: list[Record], diffs: dict[str, Diff],
         run_id: str | None = None, prune: bool = True) -> Plan:
    """Steps that take ``recorded`` to ``desired``.

    ``diffs`` holds the provider's Diff for every desired URN that is recorded. A recorded
    ephemeral resource of another run is a crashed run's leftover: it is deleted and created
    anew, never adopted. ``prune=False`` keeps recorded resources that are not desired.
    """
    by_urn = {r.urn: r for r in recorded}
    steps: list[Step] = []
    seen: set[str] = set()
    for d in desired:
        if d.urn in seen:
            raise ConfigError(f"two resources declare the URN {d.urn}", "urn")
        seen.add(d.urn)
        if d.read_only:
            steps.append(Step("read", d.urn, d.type, new=d))
            continue
        old = by_urn.get(d.urn)
        if old is not None and old.ephemeral and old.run_id != run_id and _resumable(old, d, diffs.get(d.urn)):
            steps.append(Step("same", d.urn, d.type, new=d, old=old, reason=f"resumes the job of run {old.run_id}"))
            continue
        if old is not None and old.ephemeral and old.run_id != run_id:
            steps.append(Step("delete", old.urn, old.type, old=old, reason=f"left by run {old.run_id}"))
            old = None
        if old is None:
            steps.append(Step("create", d.urn, d.type, new=d))
            continue
        diff = diffs.get(d.urn, Diff())
        ignore = d.options.ignore_changes
        changed = [p for p in diff.changed if not any(covers(i, p) for i in ignore)]
        if ignore:  # a copy only when inputs change: a no-change plan of 100,000 makes none
            d = dataclasses.replace(d, inputs=apply_ignore_changes(old.inputs, d.inputs, ignore))
        if old.type != d.type:
            changed = changed or ["type"]
        changes = [Change(p, get_path(old.inputs, p), get_path(d.inputs, p)) for p in changed]
        replace = tuple(p for p in changed
                        if p in diff.replace_keys or p == "type"
                        or any(covers(k, p) for k in d.options.replace_on_changes))
        if not changed:
            meta = option_changes(old, d)
            steps.append(Step("options", d.urn, d.type, new=d, old=old, changes=meta) if meta
                         else Step("same", d.urn, d.type, new=d, old=old))
        elif replace:
            _refuse_if_protected(old, "replace")
            steps.append(Step("replace", d.urn, d.type, new=d, old=old, changes=changes, replace_keys=replace,
                              delete_before_replace=d.options.delete_before_replace or diff.delete_before_replace))
        else:
            steps.append(Step("update", d.urn, d.type, new=d, old=old, changes=changes))
    if prune:
        for r in recorded:
            if r.urn not in seen and not (r.options.resume_on_recover and r.run_id != run_id):
                _refuse_if_protected(r, "delete")
                steps.append(Step("delete", r.urn, r.type, old=r))
    return Plan(stack, steps)


# Read from the declaration at every plan, never from the record: changing them alone changes nothing.
PLAN_TIME_OPTIONS = ("ignore_changes", "replace_on_changes")


def _recorded_settings(r: Record | Declaration) -> dict:
    return {"options": r.options.to_dict(), "deps": sorted(r.deps), "parent": r.parent,
            "idle_ttl": r.idle_ttl, "ephemeral": r.ephemeral}


def _settings_equal(old: Record, d: Declaration) -> bool:
    """Equal options (frozen dataclasses: field-wise), deps, parent, idle TTL and reusability:
    ``option_changes`` would find nothing."""
    return ((old.options is d.options or old.options == d.options) and old.parent == d.parent
            and old.idle_ttl == d.idle_ttl and old.ephemeral == d.ephemeral
            and (old.deps == d.deps or sorted(old.deps) == sorted(d.deps)))


def option_changes(old: Record, d: Declaration) -> list[Change]:
    """What the state records beyond the inputs that the declaration changes."""
    if _settings_equal(old, d):  # the common case, without building the dicts (asdict is slow)
        return []
    before, after = _recorded_settings(old), _recorded_settings(d)
    out = []
    for key in ("options", "deps", "parent", "idle_ttl", "ephemeral"):
        if key == "options":
            for k in sorted(after["options"]):
                if k in PLAN_TIME_OPTIONS:
                    continue
                if before["options"].get(k) != after["options"][k]:
                    out.append(Change(f"options.{k}", before["options"].get(k), after["options"][k]))
        elif before[key] != after[key]:
            out.append(Change(key, before[key], after[key]))
    return out


def _resumable(old: Record, d: Declaration, diff: Diff | None) -> bool:
    """A dead run's external job that this run asks for unchanged: adopted, not recreated.
    (Recorded resumable jobs nobody asks for are left to the run's teardown, not pruned here.)"""
    return old.options.resume_on_recover and d.options.resume_on_recover and not (diff and diff.changed)


def _refuse_if_protected(rec: Record, op: str) -> None:
    if rec.options.protect:
        raise ConfigError(
            f"{rec.urn} is protected and the plan would {op} it; set protect=False on it first",
            "options.protect",
        )


def deletion_plan(stack: str, records: list[Record], reason: str | None = None) -> Plan:
    """Tear down: delete every given record (children and dependents first, in apply)."""
    for r in records:
        _refuse_if_protected(r, "delete")
    return Plan(stack, [Step("delete", r.urn, r.type, old=r, reason=reason) for r in records])
