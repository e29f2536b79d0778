"""Stack-wide operations recorded as runs (engine.runs, engine.teardown): a destroy that fails
is a failed run naming the error, masked, and leaves what it could not delete recorded; the next
destroy deletes it and is a succeeded run."""

import pytest

from engine.errors import ProviderError
from engine.extend import Declaration, Options, Provider, ProviderRegistry, make_urn
from engine.lifecycle import Session, new_run_id
from engine.secrets import register

STACK = "ops"
TOKEN = "test:ops:Box"
SECRET = "hunter2-ops-secret"


class Box(Provider):
    """Keeps boxes in a dict; a box named in ``refuse`` cannot be deleted."""

    type_token = TOKEN

    def __init__(self, context=None):
        super().__init__(context)
        self.boxes: dict[str, dict] = {}
        self.refuse: set[str] = set()

    def create(self, urn, inputs, key):
        self.boxes[key] = dict(inputs)
        return key, {}

    def read(self, id, inputs, outputs):
        return {} if id in self.boxes else None

    def delete(self, id, inputs, outputs):
        if id in self.refuse:
            raise RuntimeError(f"{id} is busy (token {SECRET})")
        self.boxes.pop(id, None)


ProviderRegistry.register(Box, override=True)


def _provision(session: Session, names) -> None:
    decls = [Declaration(urn=make_urn(STACK, TOKEN, n), type=TOKEN, inputs={"n": n}, options=Options(),
                         ephemeral=False, physical_name=f"{STACK}-{n}") for n in names]
    state = session.open_state()
    try:
        with session.lock(STACK, "test provision", state):
            run_id = new_run_id()
            state.start_run(run_id, STACK, "provision", kind="program")
            session._applier(state, STACK, run_id).apply(session._plan(state, STACK, decls, run_id))
            state.update_run(run_id, status="succeeded")
    finally:
        state.close()


def _destroy_runs(session: Session) -> list[dict]:
    state = session.open_state()
    try:
        return [r for r in state.runs(STACK) if r["kind"] == "destroy"]
    finally:
        state.close()


def _recorded(session: Session) -> list[str]:
    state = session.open_state()
    try:
        return sorted(r.id for r in state.resources(STACK))
    finally:
        state.close()


def test_a_failed_destroy_is_a_failed_run_and_the_next_one_finishes(tmp_path):
    register([SECRET])
    session = Session(state=tmp_path / "state.db")
    box = session.provider(TOKEN)
    _provision(session, ["a", "b"])
    assert sorted(box.boxes) == ["ops-a", "ops-b"] == _recorded(session)

    box.refuse.add("ops-b")
    with pytest.raises(ProviderError, match="busy"):
        session.destroy(STACK)
    (failed,) = _destroy_runs(session)
    assert failed["status"] == "failed" and failed["finished"] is not None
    # The error's one recorded line (engine.secrets.error_text): its type, the step, the cause, masked.
    assert failed["error"] == (f"ProviderError: delete of {make_urn(STACK, TOKEN, 'b')} failed: "
                               f"RuntimeError: ops-b is busy (token [secret])")
    assert _recorded(session) == ["ops-b"] == sorted(box.boxes)  # the state says what still exists

    box.refuse.clear()
    plan = session.destroy(STACK)
    assert [s.op for s in plan.steps] == ["delete"]
    runs = _destroy_runs(session)
    assert sorted(r["status"] for r in runs) == ["failed", "succeeded"]
    assert all(r["error"] is None for r in runs if r["status"] == "succeeded")
    assert _recorded(session) == [] and box.boxes == {}

    assert session.destroy(STACK).steps == [] and len(_destroy_runs(session)) == 2  # nothing to do: no run
