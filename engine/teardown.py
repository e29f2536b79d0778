"""Deleting what a stack holds: a run's own resources at its end, a whole stack (``engine
destroy``), reusable resources idle past their TTL, and the detached reaper that waits for it.

Each deletion is a deletion plan applied through the journaled applier, under the stack's
lock; this module only chooses the records that go.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .pgstate import PgTarget
from .plan import Plan, deletion_plan
from .recover import foreign_records
from .resource import Record
from .runs import recorded_run
from .snapshot import SnapshotManager
from .state import State

if TYPE_CHECKING:
    from .lifecycle import Session


def teardown_run(session: Session, state: State, stack: str, run_id: str, nested: bool = False, urns=()) -> None:
    """Delete the ephemeral resources ``run_id`` made; a run of its own stack also marks the
    stack's reusable resources used now and starts the reaper that waits out their TTL."""
    if nested:  # its own declared resources, by key (as the plan reads them); the caller handles the rest
        records = [r for r in map(state.resource, urns) if r is not None and r.ephemeral]
    else:
        records = state.resources(stack, ephemeral=True)
    mine = [r for r in records if r.run_id == run_id]
    if not nested:  # old copies this run replaced and could not delete yet
        mine += [r for r in state.pending_deletes(stack) if r.ephemeral and r.run_id == run_id]
    if not nested:
        # External jobs of crashed runs that this run could have resumed and did not ask
        # for: stale now, so they go with this run's own resources.
        mine += [r for r in records if r.options.resume_on_recover
                 and r.run_id != run_id and (state.run(r.run_id) or {}).get("status") == "crashed"]
    if mine:
        plan = deletion_plan(stack, mine)
        session.reporter.plan(plan, "teardown")
        session._applier(state, stack, run_id).apply(plan)
    if not nested and state.has_reusable(stack):
        SnapshotManager(state, stack, run_id).touch_reusable()
        spawn_reaper(session.state_path, stack)


def destroy_stack(session: Session, stack: str) -> Plan:
    """Delete everything the stack holds, recovering dead runs first. Another host's local
    processes are left to it: the error that names them comes after the rest is deleted."""
    state = session.open_state()
    try:
        with session.lock(stack, "destroy", state):
            session.recover(state, stack)
            records, theirs = foreign_records(state, state.resources(stack) + state.pending_deletes(stack),
                                              session.provider)
            plan = deletion_plan(stack, records)
            session.reporter.plan(plan, "destroy")
            if plan.steps:
                with recorded_run(state, stack, "destroy", kind="destroy", status="tearing_down") as run_id:
                    session._applier(state, stack, run_id, reason="destroy").apply(plan)
            if theirs:  # deleted what this host can reach; the rest is another host's
                session._refuse_foreign(state, stack, theirs)
            return plan
    finally:
        state.close()


def reap_idle(session: Session, state: State, stack: str, records: list[Record]) -> None:
    """Destroy reusable resources idle past their TTL, recorded as a run of kind ``reap``."""
    with recorded_run(state, stack, "idle_ttl expired", kind="reap", status="tearing_down") as run_id:
        session.reporter.message(f"{len(records)} reusable resource(s) of {stack} idle past their TTL: destroying")
        session._applier(state, stack, run_id, reason="idle_ttl expired").apply(deletion_plan(stack, records))


def spawn_reaper(state_path, stack: str) -> None:
    """A detached process (``engine.reaper``) that destroys the stack's reusable resources once
    idle past their TTL. For a PostgreSQL state its arguments carry the URL without the password
    (a command line is public) and the runtime folder; the password goes in its environment, as
    PGPASSWORD."""
    env = None
    if isinstance(state_path, PgTarget):
        args = [state_path.public, stack, str(state_path.runtime_dir)]
        if state_path.password:
            env = {**os.environ, "PGPASSWORD": state_path.password}
    else:
        args = [str(Path(state_path).resolve()), stack]
    subprocess.Popen(
        [sys.executable, "-m", "engine.reaper", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True, cwd=os.getcwd(), env=env,
    )
