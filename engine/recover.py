"""Recovery: what the next command on a stack does about a dead engine's leftovers.

It runs only while holding the stack's lock, so every run still marked active is dead (a
live run holds the lock for its whole life). In order:

1. open journal intents are settled, each by the rule of its step kind (``engine.steps``):
   a create is read back by its deterministic name and adopted or deleted, an update is read
   back and what the provider reports is recorded, a delete is issued again;
2. old copies of replaced resources still pending deletion are deleted (best effort: a
   failure is reported and the copy stays recorded, for the next command to try again);
3. each dead run's ephemeral resources are torn down, and before the run is marked crashed,
   providers that can list by label (``Provider.owned``) are asked what exists for the stack:
   a thing made by a run this state knows, that neither the state nor the journal records (a
   lost row), is an orphan and is deleted. Once per dead run, so a stack whose cluster is long
   gone does not pay for the question on every command;
4. reusable resources past their idle TTL go (the caller, ``Session.recover``).

With a shared (PostgreSQL) state, whoever takes the lock recovers what any machine can reach
(Kubernetes objects, connector jobs); what a host-local provider made (``Provider.host_local``:
local processes) belongs to the host that recorded it. Another host reports it, naming that
host, and leaves it, and the dead run stays active until that host's next command recovers it.
"""

from __future__ import annotations

import time

from .apply import Applier
from .errors import NotFound
from .plan import Plan, Step, deletion_plan
from .resource import Provider, Record
from .snapshot import SnapshotManager
from .state import State, this_host
from .steps import RECOVERY, RecoveryContext

ACTIVE = ("provisioning", "running", "tearing_down")


def foreign_host(state: State, type_: str, host: str | None, providers) -> str | None:
    """The other host that owns a row of ``type_`` recorded by ``host``, or None when this
    engine may act on it: a file state (one machine), an unknown recorder, this host, or a
    provider whose things any machine reaches. (The provider is asked before the host name is
    read: ``up`` asks this of every step, 100,000 of them on a large stack.)"""
    if state.pg is None or not host:
        return None
    try:
        provider = providers(type_)
    except Exception:  # noqa: BLE001 - an uninstalled provider: nothing to decide here
        return None
    return host if getattr(provider, "host_local", False) and host != this_host() else None


def foreign_records(state: State, records, providers) -> tuple[list[Record], list[Record]]:
    """``records`` split into (this engine's to act on, another host's local things)."""
    mine, theirs = [], []
    for r in records:
        (theirs if foreign_host(state, r.type, r.host, providers) else mine).append(r)
    return mine, theirs


def settle_intents(state: State, stack: str, providers, report=lambda msg: None) -> int:
    """Settle every open intent of ``stack`` (all of them are dead runs'); returns how many.
    Another host's intents of local processes are left open for that host."""
    rows = state.open_intents(stack)
    for row in rows:
        host = foreign_host(state, row["type"], row.get("host"), providers)
        if host:
            report(f"intent {row['seq']} ({row['op']} {row['urn']}) of run {row['run_id']} was recorded on host {host}: "
                   f"local processes there; left for {host}'s next command on {stack}")
            continue
        rctx = RecoveryContext(state, stack, providers, SnapshotManager(state, stack, row["run_id"], "recovery"), report)
        RECOVERY.get(row["op"], RECOVERY["options"])(rctx, row)
    return len(rows)


def finish_pending_deletes(state: State, stack: str, providers, report=lambda msg: None,
                           on_start=None, on_done=None) -> int:
    """Delete the old copies that replaced resources left; returns how many remain."""
    pending, theirs = foreign_records(state, state.pending_deletes(stack), providers)
    for rec in theirs:
        report(f"{rec.urn} ({rec.id}), pending deletion, is a local process of host {rec.host}: left for that host")
    if not pending:
        return len(theirs)
    report(f"{len(pending)} replaced resource(s) of {stack} still pending deletion: deleting")
    for rec in pending:
        step = Step("delete", rec.urn, rec.type, old=rec, reason="replace")
        try:
            Applier(state, providers, stack, rec.run_id or "recovery", reason="replace", on_start=on_start,
                    on_done=on_done).apply(Plan(stack, [step]))
        except Exception as e:  # noqa: BLE001 - kept recorded; the next command tries again
            report(f"could not delete {rec.urn} ({rec.id}), pending deletion: {e}")
    return len(state.pending_deletes(stack))


def _delete(provider, id, inputs, outputs) -> None:
    try:
        provider.delete(id, inputs, outputs)
    except NotFound:
        pass


def sweep_orphans(state: State, stack: str, run_id: str, providers, report=lambda msg: None) -> list[str]:
    """Delete what a provider finds labelled as ``stack``'s and made by a run this state knows,
    that the state does not record (a row lost, reusable or not). Only the types the dead run
    ``run_id`` journaled are asked; things of runs this state does not know (another engine's,
    same stack name) are never touched. Best effort: a failure is reported, not raised (the
    operators' TTLs remain)."""
    known = {r.id for r in state.resources(stack)} | {r.id for r in state.pending_deletes(stack)}
    known |= {row["name"] for row in state.open_intents(stack)}
    runs = {r["run_id"] for r in state.runs(stack)}
    deleted = []
    for type_ in state.run_types(run_id):
        try:
            provider = providers(type_)
            found = provider.owned(stack)
        except Exception as e:  # noqa: BLE001 - a safety net must not block the command
            report(f"could not look for orphans of run {run_id} ({type_}): {e}")
            continue
        for o in found or ():
            if o.run_id not in runs or o.id in known:
                continue
            try:
                _delete(provider, o.id, {}, None)
            except Exception as e:  # noqa: BLE001
                report(f"could not delete the orphan {o.id} ({type_}) of run {o.run_id}: {e}")
                continue
            deleted.append(o.id)
            report(f"deleted the orphan {o.id} ({type_}) of run {o.run_id}, found by its labels")
    return deleted


def tidy(state: State, stack: str, providers, report=lambda msg: None) -> None:
    """Providers' own cleanup of what their reads only look at (a dead local cluster's
    processes and folder): here, under the lock, never in ``read``."""
    records: list[Record] | None = None
    for type_ in state.resource_types(stack):
        try:
            provider = providers(type_)
        except Exception:  # noqa: BLE001 - an uninstalled provider has nothing running here
            continue
        if type(provider).tidy is Provider.tidy:
            continue  # most providers have nothing to tidy: no need to load the stack's rows
        if records is None:
            records, _ = foreign_records(state, state.resources(stack) + state.pending_deletes(stack), providers)
        try:
            for msg in provider.tidy(stack, [r for r in records if r.type == type_]) or ():
                report(msg)
        except Exception as e:  # noqa: BLE001
            report(f"could not tidy {type_} of {stack}: {e}")


def recover_stack(state: State, stack: str, providers, report=lambda msg: None, on_start=None, on_done=None) -> list[str]:
    """Settle everything dead runs left on ``stack``; returns the ids of the runs marked crashed."""
    settle_intents(state, stack, providers, report)
    finish_pending_deletes(state, stack, providers, report, on_start, on_done)
    crashed = []
    for run in state.runs(stack, status=ACTIVE):
        leftovers = [r for r in state.resources(stack) if r.ephemeral and r.run_id == run["run_id"]]
        leftovers, theirs = foreign_records(state, leftovers, providers)
        theirs_open = [row for row in state.open_intents(stack) if row["run_id"] == run["run_id"]]
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
        if theirs or theirs_open:
            # Still holding things only their host can reach: the run stays active (dead), so
            # that host's next command on the stack finds it and finishes the recovery.
            hosts = sorted({r.host for r in theirs} | {row["host"] for row in theirs_open})
            report(f"run {run['run_id']} of host {', '.join(hosts)} died during {run['status']}; "
                   f"{len(theirs) + len(theirs_open)} local resource(s) or intent(s) of it live on {', '.join(hosts)}: "
                   f"left for that host's next command on {stack}")
            continue
        sweep_orphans(state, stack, run["run_id"], providers, report)
        state.update_run(run["run_id"], status="crashed", finished=time.time(),
                         error=f"engine process {run['pid']} on {run['host']} died during {run['status']}")
        crashed.append(run["run_id"])
    tidy(state, stack, providers, report)
    return crashed


def expired(state: State, stack: str, now: float | None = None, providers=None) -> list[Record]:
    """Reusable resources past their idle TTL that this engine may reap (with ``providers``:
    another host's local processes are that host's reaper's)."""
    gone = state.expired(stack, now or time.time())
    return foreign_records(state, gone, providers)[0] if providers is not None else gone
