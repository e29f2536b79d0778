"""Step kinds: how each kind of plan step acts, and how a dead run's open intent of it is settled.

Pulumi's deploy package gives every step its own type (``step.go``: CreateStep, UpdateStep,
ReplaceStep, DeleteStep, SameStep, ReadStep); here too, so the rule for one kind of change,
forward and in recovery, lives in one class. The journal knows four ops: ``create``,
``update``, ``delete`` and ``options``; a replacement is a create of the new copy and a delete
of the old one, in the order the provider or the options ask for (the applier schedules the two;
a delete-first one's dependents are deleted before it and created after it).

Every row change goes through the SnapshotManager; a step never touches the state itself.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import hashlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from .errors import NotFound
from .plan import Step
from .resource import Declaration, Provider, Read, Record, _call_deadline
from .secrets import error_text
from .snapshot import Intent, SnapshotManager, decl_record
from .resource import Options

# A call that outlives its timeout is waited for this much longer (at most), so that what it
# makes is recorded; past that its intent stays open and recovery reads it back.
LATE_GRACE_MAX = 30.0


# ---------------------------------------------------------------------- fault points (tests)
_fault_counts: dict[tuple[str, str], int] = {}
_fault_lock = threading.Lock()


def fault_point(op: str, point: str) -> None:
    """Crash-test hooks. ``TASKRIG_FAULT_KILL=create:after:2`` SIGKILLs this process at the
    second point where a create's provider call has returned and its journal is not closed yet
    (``before``: the intent is committed and the provider not yet called).
    ``TASKRIG_FAULT_PAUSE=delete:3`` sleeps 3 s after a delete's intent is committed."""
    kill = os.environ.get("TASKRIG_FAULT_KILL")
    if kill:
        for item in kill.split(","):
            parts = item.strip().split(":")
            if len(parts) >= 2 and parts[0] == op and parts[1] == point:
                with _fault_lock:
                    n = _fault_counts[(op, point)] = _fault_counts.get((op, point), 0) + 1
                if n == int(parts[2] if len(parts) > 2 else 1):
                    os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get("TASKRIG_FAULT_PAUSE")
    if pause and point == "before":
        for item in pause.split(","):
            name, _, secs = item.partition(":")
            if name == op:
                time.sleep(float(secs or 1))


def _error_text(e: BaseException) -> str:
    return error_text(e)  # the chain, redacted (the state redacts what it writes again)


# ---------------------------------------------------------------------- the executor's context
@dataclass
class StepContext:
    """What a step acts with: the providers, the snapshot manager, the run."""

    providers: Callable[[str], Provider]
    snap: SnapshotManager
    stack: str
    run_id: str

    def inputs(self, d: Declaration) -> dict:
        return {**d.inputs, **d.secret_inputs} if d.secret_inputs else d.inputs

    def record(self, d: Declaration, id: str, outputs: dict, created: float | None = None,
               run_id: str | None = None) -> Record:
        now = time.time()
        return Record(urn=d.urn, type=d.type, stack=self.stack, id=id, inputs=d.inputs, outputs=outputs,
                      deps=list(d.deps), options=d.options, ephemeral=d.ephemeral,
                      run_id=(run_id or self.run_id) if d.ephemeral else None, parent=d.parent,
                      idle_ttl=d.idle_ttl, last_used=now, created=created or now)

    def call(self, op: str, timeout: float | None, fn, *args, on_late: Callable[[Any], None] | None = None):
        """Call a provider between the two fault points. With a timeout the provider is given
        its deadline (``engine.extend.call_deadline``); past it the call is still waited for a
        grace (what it makes gets recorded, then the step fails); past the grace the intent is
        left open, and ``on_late`` gets the result if the call ever returns in this process."""
        fault_point(op, "before")
        if not timeout:
            result = fn(*args)
            fault_point(op, "after")
            return result
        deadline = time.monotonic() + timeout
        ctx = contextvars.copy_context()
        ctx.run(_call_deadline.set, deadline)
        fut: cf.Future = cf.Future()

        def work() -> None:
            try:
                fut.set_result(ctx.run(fn, *args))
            except BaseException as e:  # noqa: BLE001 - handed to the waiting step
                fut.set_exception(e)

        # A daemon thread, not an executor's: a call that never returns must not keep the engine
        # from exiting (its intent stays open, and the next command reads the thing back).
        threading.Thread(target=work, name=f"{op}-call", daemon=True).start()
        # cf.wait, not fut.result(timeout=): the provider's own TimeoutError (one that honours its
        # deadline) is the builtin cf.TimeoutError too, and must not read as "still running".
        if cf.wait([fut], timeout=timeout).done:
            result = fut.result()
            fault_point(op, "after")
            return result
        grace = min(timeout, LATE_GRACE_MAX)
        if cf.wait([fut], timeout=grace).done:
            result = fut.result()  # the provider's error, if it raised late: nothing was made
        else:
            if on_late is not None:
                fut.add_done_callback(lambda f: f.exception() is None and on_late(f.result()))
            raise OpenIntent(f"{op} did not finish within {timeout} s (options.timeouts) nor {grace:g} s after; "
                             f"its intent stays open: the next command on stack {self.stack} reads it back") from None
        fault_point(op, "after")
        raise LateResult(result, f"{op} finished after its timeout of {timeout} s (options.timeouts)")


class OpenIntent(TimeoutError):
    """A provider call outlived its timeout and its grace: the intent is left open."""


class LateResult(TimeoutError):
    """A provider call returned after its timeout: its result is recorded, then the step fails."""

    def __init__(self, result, message: str):
        super().__init__(message)
        self.result = result


def _timeout(options: Options, op: str) -> float | None:
    t = options.timeouts
    return {"create": t.create, "update": t.update, "delete": t.delete}.get(op)


# ---------------------------------------------------------------------- step kinds
class StepKind:
    """One kind of step: ``apply`` acts, ``recover`` settles a dead run's open intent of it."""

    op = ""

    def apply(self, ctx: StepContext, step: Step) -> Record | None:
        raise NotImplementedError

    @staticmethod
    def recover(rctx: "RecoveryContext", row: dict) -> None:
        rctx.snap.settle(row["seq"])


def create(ctx: StepContext, d: Declaration, name: str, replaces: Record | None = None) -> Record:
    """Create ``d`` as ``name``; the record (and, for a replacement, the old copy's move to
    pending deletion) is written in the transaction that closes the intent."""
    provider = ctx.providers(d.type)
    decl = decl_record(d)
    if replaces is not None:
        decl["replaces"] = replaces.id
    intent = ctx.snap.begin("create", d.urn, d.type, name, d.inputs, decl)

    def late(result) -> None:  # the create returned after the run gave up on it
        rec = ctx.record(d, *result)
        if not ctx.snap.created(intent, rec, replaces):
            # Recovery settled the intent meanwhile: it adopted the thing (then it is recorded,
            # and stays) or found nothing yet (then nothing records it, and it goes).
            recorded = ctx.snap.state.resource(d.urn)
            if recorded is None or recorded.id != rec.id:
                _delete_quietly(provider, rec.id, d.inputs, rec.outputs)

    try:
        id, outputs = ctx.call("create", _timeout(d.options, "create"), provider.create, d.urn, ctx.inputs(d), name,
                               on_late=late)
    except LateResult as e:
        ctx.snap.created(intent, ctx.record(d, *e.result), replaces)
        raise
    except OpenIntent:
        raise
    except BaseException as e:
        ctx.snap.failed(intent, _error_text(e))
        raise
    rec = ctx.record(d, id, outputs)
    ctx.snap.created(intent, rec, replaces)
    return rec


def delete(ctx: StepContext, rec: Record, reason: str | None = None) -> None:
    provider = ctx.providers(rec.type)
    intent = ctx.snap.begin("delete", rec.urn, rec.type, rec.id, rec.inputs,
                            {"pending_delete": rec.pending_delete}, reason)
    try:
        if not rec.options.retain_on_delete:
            try:
                ctx.call("delete", _timeout(rec.options, "delete"), provider.delete, rec.id, rec.inputs, rec.outputs)
            except NotFound:
                pass
        else:
            fault_point("delete", "before")
            fault_point("delete", "after")
    except BaseException as e:
        ctx.snap.failed(intent, _error_text(e))
        raise
    ctx.snap.deleted(intent, rec)


def _delete_quietly(provider: Provider, id: str, inputs: dict, outputs) -> None:
    try:
        provider.delete(id, inputs, outputs)
    except NotFound:
        pass


class CreateStep(StepKind):
    op = "create"

    def apply(self, ctx, step):
        return create(ctx, step.new, step.new.physical_name)

    @staticmethod
    def recover(rctx, row):
        """Read the half-done create back by its deterministic name: a reusable thing is adopted
        (a replacement's old copy then moves to pending deletion), an ephemeral one is deleted."""
        provider = rctx.providers(row["type"])
        inputs = json.loads(row["inputs"] or "{}")
        decl = json.loads(row["decl"] or "null") or {}
        urn, name = row["urn"], row["name"]
        found = provider.read(name, inputs, None)
        if found is None:
            rctx.snap.settle(row["seq"])
            return
        if isinstance(found, Read):
            inputs, outputs = found.inputs, found.outputs
        else:
            outputs = found
        if decl.get("ephemeral", True):
            _delete_quietly(provider, name, inputs, outputs)
            rctx.snap.settle(row["seq"])
            rctx.report(f"deleted {urn} ({name}), half-created by the dead run {row['run_id']}")
            return
        rec = Record(urn=urn, type=row["type"], stack=rctx.stack, id=name, inputs=inputs, outputs=outputs,
                     deps=decl.get("deps", []), options=Options.from_dict(decl.get("options")), ephemeral=False,
                     parent=decl.get("parent"), idle_ttl=decl.get("idle_ttl"), last_used=time.time())
        old = rctx.state.resource(urn)
        pending = old if old is not None and old.id != name else None
        rctx.snap.settle(row["seq"], put=rec, pending=pending)
        rctx.report(f"adopted {urn} ({name}), created by the dead run {row['run_id']}"
                    + (f"; its old copy {old.id} is pending deletion" if pending else ""))


class UpdateStep(StepKind):
    op = "update"

    def apply(self, ctx, step):
        d, old = step.new, step.old
        provider = ctx.providers(d.type)
        intent = ctx.snap.begin("update", d.urn, d.type, old.id, d.inputs, decl_record(d))
        try:
            outputs = ctx.call("update", _timeout(d.options, "update"), provider.update, old.id, old.inputs,
                               ctx.inputs(d), old.outputs)
        except LateResult as e:
            ctx.snap.updated(intent, self._record(ctx, d, old, e.result))
            raise
        except OpenIntent:
            raise
        except BaseException as e:
            ctx.snap.failed(intent, _error_text(e))
            raise
        rec = self._record(ctx, d, old, outputs)
        ctx.snap.updated(intent, rec)
        return rec

    @staticmethod
    def _record(ctx, d, old, outputs) -> Record:
        rec = ctx.record(d, old.id, outputs, created=old.created)
        rec.run_id = old.run_id if not d.ephemeral else ctx.run_id
        return rec

    @staticmethod
    def recover(rctx, row):
        """What is recorded is what the provider reports: a read naming its inputs is recorded
        as is; plain outputs keep the old inputs (the update may not have happened), so the next
        plan shows the update again rather than hiding it."""
        rec = rctx.state.resource(row["urn"])
        if rec is None or rec.id != row["name"]:
            rctx.snap.settle(row["seq"])
            return
        read = rctx.providers(row["type"]).read(rec.id, rec.inputs, rec.outputs)
        if read is None:
            rctx.snap.settle(row["seq"], remove=rec)
            rctx.report(f"{row['urn']} is gone after an interrupted update")
            return
        if isinstance(read, Read):
            new = replace(rec, inputs=read.inputs, outputs=read.outputs)
        else:
            new = replace(rec, outputs=read)
        rctx.snap.settle(row["seq"], put=new)
        rctx.report(f"re-read {row['urn']} after an interrupted update")


class ReplaceStep(StepKind):
    """The new copy of a replaced resource. Delete-before-replace (the provider's, the option's,
    or a dependent's of such a one): created under the same name (``delete_first_name``), once
    the old copy's delete, a ``DeleteStep`` of its own that the applier runs first (its
    dependents' before it), is done.
    Create-before-delete: the replacement under a suffixed name; the old copy is pending deletion
    from then on, and its delete is scheduled after every create and update (so that dependents
    point at the new copy before the old one goes): ``ReplacedDeleteStep``. Either way the
    journal holds a create and a delete, each settled by its own rule."""

    op = "replace"

    def apply(self, ctx, step):
        if step.delete_before_replace:
            return create(ctx, step.new, delete_first_name(step.new, step.old))
        return create(ctx, step.new, replacement_name(step.new, step.old), replaces=step.old)


def replacement_name(d: Declaration, old: Record) -> str:
    """A create-before-delete copy needs a name of its own; never the old copy's."""
    suffix = hashlib.sha1(json.dumps(d.inputs, sort_keys=True, default=str).encode()).hexdigest()[:6]
    name = f"{d.physical_name}-{suffix}"
    if name == old.id:
        suffix = hashlib.sha1((name + old.id).encode()).hexdigest()[:6]
        name = f"{d.physical_name}-{suffix}"
    return name


def delete_first_name(d: Declaration, old: Record) -> str:
    """The name a delete-first replacement is created under: the declared one, unless the old
    copy was itself a create-before-delete copy (``replacement_name``; a dependent replaced
    delete-first with what it depends on): then that copy's name, free once it is deleted, since
    the declared name may still be held by an older copy pending deletion."""
    base, _, suffix = old.id.rpartition("-")
    if base == d.physical_name and len(suffix) == 6 and all(c in "0123456789abcdef" for c in suffix):
        return old.id
    return d.physical_name


class ReplacedDeleteStep(StepKind):
    """The old copy of a create-before-delete replacement, once the new copy is recorded."""

    op = "delete"

    def apply(self, ctx, step):
        delete(ctx, replace(step.old, pending_delete=True), "replace")
        return None


class DeleteStep(StepKind):
    op = "delete"

    def apply(self, ctx, step):
        delete(ctx, step.old, step.reason or ctx.snap.reason)
        return None

    @staticmethod
    def recover(rctx, row):
        """Delete again (deletes are idempotent) and drop the row of that copy only."""
        provider = rctx.providers(row["type"])
        inputs = json.loads(row["inputs"] or "{}")
        decl = json.loads(row["decl"] or "null") or {}
        urn, id = row["urn"], row["name"]
        pending = bool(decl.get("pending_delete"))
        rec = next((r for r in rctx.state.pending_deletes(rctx.stack) if r.urn == urn and r.id == id), None) \
            if pending else rctx.state.resource(urn)
        if rec is not None and rec.id != id:
            rec = None  # the URN's row records a newer copy: not the one this intent deleted
        if rec is None or not rec.options.retain_on_delete:
            try:
                _delete_quietly(provider, id, inputs, rec.outputs if rec else None)
            except Exception as e:
                if rec is None or not rec.pending_delete:
                    raise
                # A replaced copy stays recorded, pending deletion, and is retried (best effort)
                # like any pending copy: a refused delete must not block every command on the stack.
                rctx.snap.settle(row["seq"])
                rctx.report(f"could not delete {urn} ({id}), still pending deletion: {e}")
                return
        rctx.snap.settle(row["seq"], remove=rec)
        rctx.report(f"finished deleting {urn} ({id})")


class SameStep(StepKind):
    op = "same"

    def apply(self, ctx, step):
        rec = step.old
        if rec.ephemeral and rec.run_id != ctx.run_id:
            rec = ctx.snap.adopt(rec)
        return rec


class ReadStep(StepKind):
    op = "read"

    def apply(self, ctx, step):
        d = step.new
        id = d.inputs.get("id") or d.physical_name
        found = ctx.providers(d.type).read(id, ctx.inputs(d), None)
        if found is None:
            raise NotFound(f"{d.urn}: the existing resource {id!r} was not found")
        return ctx.record(d, id, found.outputs if isinstance(found, Read) else found)


class OptionsStep(StepKind):
    """Only what the state records changed (options, dependencies, reusability): no provider
    call; journaled, so a crash between leaves an intent that recovery closes, and the next
    plan shows the same change again."""

    op = "options"

    def apply(self, ctx, step):
        d, old = step.new, step.old
        intent = ctx.snap.begin("options", d.urn, d.type, old.id, d.inputs, decl_record(d))
        fault_point("options", "before")
        fault_point("options", "after")
        rec = replace(old, deps=list(d.deps), options=d.options, ephemeral=d.ephemeral, parent=d.parent,
                      idle_ttl=d.idle_ttl, run_id=ctx.run_id if d.ephemeral else None, last_used=time.time())
        ctx.snap.updated(intent, rec)
        return rec


KINDS: dict[str, StepKind] = {k.op: k for k in (CreateStep(), UpdateStep(), ReplaceStep(), DeleteStep(), SameStep(),
                                                 ReadStep(), OptionsStep())}
# Journal op -> the rule that settles a dead run's open intent of it.
RECOVERY: dict[str, Callable] = {"create": CreateStep.recover, "update": UpdateStep.recover,
                                 "delete": DeleteStep.recover, "options": OptionsStep.recover}


@dataclass
class RecoveryContext:
    state: Any
    stack: str
    providers: Callable[[str], Provider]
    snap: SnapshotManager
    report: Callable[[str], None]
