"""Recovery: what the next command on a stack does about a dead engine's leftovers.

It runs only while holding the stack's lock, so every run still marked active is dead (a
live run holds the lock for its whole life). Open journal intents are settled first (a
create is read back by its deterministic name: adopted when the resource outlives runs,
deleted otherwise; a delete is issued again), then each dead run's ephemeral resources are
torn down and the run is marked crashed, then reusable resources past their idle TTL go.
Before a dead run is marked crashed, providers that can list by label (``Provider.owned``)
are asked what exists for the stack: a thing that run made and that neither the state nor the
journal knows (a lost intent) is an orphan, and is deleted. Once per dead run, so a stack
whose cluster is long gone does not pay for the question on every command.
"""

from __future__ import annotations

import json
import time

from .apply import Applier
from .errors import NotFound
from .plan import deletion_plan
from .resource import Options, Read, Record
from .state import State

ACTIVE = ("provisioning", "running", "tearing_down")


def _outputs(read):
    return read.outputs if isinstance(read, Read) else read


def settle_intents(state: State, stack: str, providers, report=lambda msg: None) -> int:
    n = 0
    for row in state.open_intents(stack):
        provider = providers(row["type"])
        inputs = json.loads(row["inputs"] or "{}")
        decl = json.loads(row["decl"] or "null") or {}
        op, urn, name = row["op"], row["urn"], row["name"]
        if op == "create":
            found = _outputs(provider.read(name, inputs, None))
            if found is not None and not decl.get("ephemeral", True):
                state.put_resource(Record(
                    urn=urn, type=row["type"], stack=stack, id=name, inputs=inputs, outputs=found,
                    deps=decl.get("deps", []), options=Options.from_dict(decl.get("options")), ephemeral=False,
                    parent=decl.get("parent"), idle_ttl=decl.get("idle_ttl"), last_used=time.time(),
                ))
                report(f"adopted {urn} ({name}), created by the dead run {row['run_id']}")
            elif found is not None:
                _delete(provider, name, inputs, found)
                report(f"deleted {urn} ({name}), half-created by the dead run {row['run_id']}")
        elif op == "update":
            rec = state.resource(urn)
            if rec is not None:
                read = provider.read(rec.id, inputs, rec.outputs)
                if read is None:
                    state.remove_resource(urn)
                else:
                    rec.inputs, rec.outputs = (read.inputs, read.outputs) if isinstance(read, Read) else (inputs, read)
                    state.put_resource(rec)
                report(f"re-read {urn} after an interrupted update")
        elif op == "delete":
            rec = state.resource(urn)
            _delete(provider, name, inputs, rec.outputs if rec else None)
            state.remove_resource(urn)
            report(f"finished deleting {urn} ({name})")
        state.journal_close(row["seq"], "recovered")
        n += 1
    return n


def _delete(provider, id, inputs, outputs) -> None:
    try:
        provider.delete(id, inputs, outputs)
    except NotFound:
        pass


def sweep_orphans(state: State, stack: str, run_id: str, providers, report=lambda msg: None) -> list[str]:
    """Delete what a provider finds labelled as ``stack``'s and made by the dead run
    ``run_id``, that the state does not record. Only the types the run journaled are asked;
    things of runs this state does not know (another engine's, same stack name) are never
    touched. Best effort: a failure is reported, not raised (the operators' TTLs remain)."""
    known = {r.id for r in state.resources(stack)}
    deleted = []
    for type_ in state.run_types(run_id):
        try:
            provider = providers(type_)
            found = provider.owned(stack)
        except Exception as e:  # noqa: BLE001 - a safety net must not block the command
            report(f"could not look for orphans of run {run_id} ({type_}): {e}")
            continue
        for o in found or ():
            if o.run_id != run_id or o.id in known:
                continue
            try:
                _delete(provider, o.id, {}, None)
            except Exception as e:  # noqa: BLE001
                report(f"could not delete the orphan {o.id} ({type_}) of run {run_id}: {e}")
                continue
            deleted.append(o.id)
            report(f"deleted the orphan {o.id} ({type_}) of the dead run {run_id}, found by its labels")
    return deleted


def recover_stack(state: State, stack: str, providers, report=lambda msg: None, on_start=None, on_done=None) -> list[str]:
    """Settle everything dead runs left on ``stack``; returns the ids of the runs marked crashed."""
    settle_intents(state, stack, providers, report)
    crashed = []
    for run in state.runs(stack, status=ACTIVE):
        leftovers = [r for r in state.resources(stack) if r.ephemeral and r.run_id == run["run_id"]]
        if run["status"] != "tearing_down":
            # An external job of a run that died before its end is not ours to cancel: the next
            # run that asks for the same job resumes polling it (plan adopts it); ``destroy``
            # deletes it. A run that died tearing down wanted it gone, so that still happens.
            kept = [r for r in leftovers if r.options.resume_on_recover]
            leftovers = [r for r in leftovers if not r.options.resume_on_recover]
            if kept:
                report(f"run {run['run_id']} died during {run['status']}; kept {len(kept)} external job(s) for the next "
                       f"run to resume (engine destroy {stack} cancels them)")
        if leftovers:
            report(f"run {run['run_id']} died during {run['status']}; tearing down {len(leftovers)} resource(s) it left")
            Applier(state, providers, stack, run["run_id"], reason=f"recovery of crashed run {run['run_id']}",
                    on_start=on_start, on_done=on_done).apply(deletion_plan(stack, leftovers))
        sweep_orphans(state, stack, run["run_id"], providers, report)
        state.update_run(run["run_id"], status="crashed", finished=time.time(),
                         error=f"engine process {run['pid']} on {run['host']} died during {run['status']}")
        crashed.append(run["run_id"])
    return crashed


def expired(state: State, stack: str, now: float | None = None) -> list[Record]:
    return state.expired(stack, now or time.time())
