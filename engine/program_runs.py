"""A Pulumi program's stack against the state: its resources checked, previewed, and applied.

``engine.program`` records what the program declares; here those declarations go through the
same plan and journaled apply as a task's resources, but they persist: an ``up`` of a program
has no teardown, and its stack is the program's project.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError
from .plan import Plan, plan as make_plan
from .runs import recorded_run
from .state import State

if TYPE_CHECKING:
    from .lifecycle import Session


def program_declarations(session: Session, target: str, stack: str | None = None):
    """The project found at ``target`` and its resources' declarations, each checked by its
    provider; a bad one is named by the program's resource name and type."""
    from .program import declarations, find_project

    project = find_project(target, stack)
    decls = declarations(project)
    for d in decls:
        try:
            d.inputs = session.provider(d.type).check(d.inputs)
        except ConfigError as e:  # which of the program's resources: its name and type
            err = ConfigError(f"resource {d.physical_name!r} ({d.type}) of stack {project.name}: {e}")
            err.field = e.field
            raise err from None
    return project, decls


def preview_program(session: Session, target: str, stack: str | None = None) -> Plan:
    """The program's plan, lock-free and read-only (an ``up`` may be running)."""
    project, decls = program_declarations(session, target, stack)
    if not session.state_path.exists():
        return make_plan(project.name, decls, [], {})
    state = State.reader(session.state_path)
    try:
        return session._plan(state, project.name, decls, None)
    finally:
        state.close()


def up_program(session: Session, target: str, stack: str | None = None) -> tuple[Plan, dict]:
    """Plan and apply a Pulumi program's resources as a run of kind ``program``; they persist
    (no teardown). Returns the plan and the run's record."""
    project, decls = program_declarations(session, target, stack)
    state = session.open_state()
    try:
        with session.lock(project.name, f"up {target}", state):
            session.recover(state, project.name)
            with recorded_run(state, project.name, f"program {project.program}", kind="program",
                              status="provisioning") as run_id:
                plan = session._plan(state, project.name, decls, run_id)
                session._refuse_foreign(state, project.name, [s.old for s in plan.steps])
                session.reporter.plan(plan, "up")
                session._applier(state, project.name, run_id).apply(plan)
            return plan, state.run(run_id)
    finally:
        state.close()
