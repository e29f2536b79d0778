"""Deciding: desired declarations against recorded state, into a list of steps.

The plan is data. It never calls a provider (the caller passes each provider's ``Diff``
in) and never writes state; ``apply`` executes it and ``render`` shows it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from . import paths
from .errors import ConfigError
from .paths import Path
from .resource import NO_DIFF, Declaration, Diff, Record

OPS = ("create", "update", "replace", "delete", "same", "read", "options")
# Ops that change something (``options``: only what the state records about a resource, its
# options, dependencies, parent, idle TTL or reusability: no provider call, as Pulumi's update
# of options alone).
CHANGING = ("create", "update", "replace", "delete", "options")
# The change a new type token shows as (it always forces a replacement).
TYPE_PATH: Path = ("type",)


@dataclass
class Change:
    path: Path  # ``engine.paths``: shown as ``paths.render(path)``
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
    replace_keys: tuple[Path, ...] = ()
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


def apply_ignore_changes(old: dict, new: dict, ignore: tuple[Path, ...]) -> dict:
    """New inputs with the recorded value kept at every ignored path (Pulumi's ``ignoreChanges``);
    a wildcard names every key or index that either side has there."""
    if not ignore:
        return new
    merged = copy.deepcopy(new)
    for pattern in ignore:
        for path in paths.expand(pattern, old, new):
            paths.reset(merged, path, old)
    return merged


def _check_paths(d: Declaration) -> None:
    """A bad path is an error at the first plan, a create's too, not at the first change."""
    if d.options.ignore_changes:
        paths.patterns(d.options.ignore_changes, "options.ignore_changes", d.urn)
    if d.options.replace_on_changes:
        paths.patterns(d.options.replace_on_changes, "options.replace_on_changes", d.urn)


def _ignore_changes(old: Record, d: Declaration, changed) -> tuple[Declaration, list[Path]]:
    """The declaration with its ignored paths reset to the record, and the changes left. The
    provider's changes under an ignored path go; one above it (a provider that reports a whole
    map) stays only if something else in it still differs."""
    ignore = paths.patterns(d.options.ignore_changes, "options.ignore_changes", d.urn)
    changed = [p for p in changed if not paths.covered(p, ignore)]
    differ = old.inputs != d.inputs and any(paths.lookup(old.inputs, p) != paths.lookup(d.inputs, p)
                                            for pattern in ignore for p in paths.expand(pattern, old.inputs, d.inputs))
    if not differ:  # the common case copies nothing: a no-change plan of 100,000 stays cheap
        return d, changed
    d = dataclasses.replace(d, inputs=apply_ignore_changes(old.inputs, d.inputs, ignore))
    return d, [p for p in changed if not any(paths.above(p, i) for i in ignore)
               or paths.lookup(old.inputs, p) != paths.lookup(d.inputs, p)]


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
    delete_first: list[str] = []  # URNs replaced delete-first: their dependents follow them
    for d in desired:
        if d.urn in seen:
            raise ConfigError(f"two resources declare the URN {d.urn}", "urn")
        seen.add(d.urn)
        _check_paths(d)
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
        diff = diffs.get(d.urn, NO_DIFF)
        changed = diff.changed
        if d.options.ignore_changes:
            d, changed = _ignore_changes(old, d, changed)
        if old.type != d.type:
            changed = changed or [TYPE_PATH]
        if not changed:  # first: a no-change plan of 100,000 is all this branch
            meta = option_changes(old, d)
            steps.append(Step("options", d.urn, d.type, new=d, old=old, changes=meta) if meta
                         else Step("same", d.urn, d.type, new=d, old=old))
            continue
        changes = [Change(p, paths.get(old.inputs, p), paths.get(d.inputs, p)) for p in changed]
        replace_on = (paths.patterns(d.options.replace_on_changes, "options.replace_on_changes", d.urn)
                      if d.options.replace_on_changes else ())
        replace = tuple(p for p in changed
                        if p in diff.replace_keys or p == TYPE_PATH or paths.covered(p, replace_on))
        if replace:
            _refuse_if_protected(old, "replace")
            first = d.options.delete_before_replace or diff.delete_before_replace
            steps.append(Step("replace", d.urn, d.type, new=d, old=old, changes=changes, replace_keys=replace,
                              delete_before_replace=first))
            if first:
                delete_first.append(d.urn)
        else:
            steps.append(Step("update", d.urn, d.type, new=d, old=old, changes=changes))
    if prune:
        for r in recorded:
            if r.urn not in seen and not (r.options.resume_on_recover and r.run_id != run_id):
                _refuse_if_protected(r, "delete")
                steps.append(Step("delete", r.urn, r.type, old=r))
    return Plan(stack, _follow_delete_first_replaces(steps, by_urn, delete_first) if delete_first else steps)


# Steps of a resource that stays declared, and so can follow a delete-first replacement.
_FOLLOWERS = ("same", "update", "options", "replace")


def _follow_delete_first_replaces(steps: list[Step], recorded: dict[str, Record], roots: list[str]) -> list[Step]:
    """Pulumi's dependent replacements (``calculateDependentReplacements``). The old copy of a
    resource replaced delete-first is gone before its replacement exists, so a declared resource
    recorded as depending on it or sitting under it, directly or through another such, would name
    a deleted resource (for good, were the create to fail). Each is replaced delete-first too: the
    applier deletes them dependents first, before it, and creates them again after it. Pulumi also
    asks the provider whether the dependent's inputs force a replacement; a dependency recorded
    here has no property path, so every dependent is replaced. (A dependent no longer declared is
    simply deleted before it: the applier's rule.)"""
    dependents: dict[str, list[str]] = {}
    for r in recorded.values():
        for on in (*r.deps, *((r.parent,) if r.parent else ())):
            dependents.setdefault(on, []).append(r.urn)
    follows: dict[str, str] = {}  # a dependent's URN -> the replaced resource it depends on
    seen, todo = set(roots), list(roots)
    while todo:  # bounded: each recorded URN is queued at most once
        on = todo.pop()
        for urn in dependents.get(on, ()):
            if urn not in seen:
                seen.add(urn)
                follows[urn] = on
                todo.append(urn)
    if not follows:
        return steps
    out = []
    for s in steps:
        on = follows.get(s.urn)
        if on is None or s.op not in _FOLLOWERS or s.old is None:
            out.append(s)
            continue
        why = f"depends on {on.rsplit('::', 1)[-1]}, which is replaced delete-first"
        _refuse_if_protected(s.old, "replace", f"depends on {on}, which is replaced delete-first")
        out.append(dataclasses.replace(s, op="replace", delete_before_replace=True, reason=why))
    return out


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
                    out.append(Change(("options", k), before["options"].get(k), after["options"][k]))
        elif before[key] != after[key]:
            out.append(Change((key,), before[key], after[key]))
    return out


def _resumable(old: Record, d: Declaration, diff: Diff | None) -> bool:
    """A dead run's external job that this run asks for unchanged: adopted, not recreated.
    (Recorded resumable jobs nobody asks for are left to the run's teardown, not pruned here.)"""
    return old.options.resume_on_recover and d.options.resume_on_recover and not (diff and diff.changed)


def _refuse_if_protected(rec: Record, op: str, why: str | None = None) -> None:
    if rec.options.protect:
        raise ConfigError(
            f"{rec.urn} is protected and the plan would {op} it{f' (it {why})' if why else ''}; "
            f"set protect=False on it first",
            "options.protect",
        )


def deletion_plan(stack: str, records: list[Record], reason: str | None = None) -> Plan:
    """Tear down: delete every given record (children and dependents first, in apply)."""
    for r in records:
        _refuse_if_protected(r, "delete")
    return Plan(stack, [Step("delete", r.urn, r.type, old=r, reason=reason) for r in records])
