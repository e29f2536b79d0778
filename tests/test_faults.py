"""The fault-injection table of issue 9: every step kind, killed (a real SIGKILL of the engine)
at every point around its provider call, then recovered, then checked.

Points: the engine's own (``TASKRIG_FAULT_KILL``: the intent is committed and the provider not
yet called, or the call returned and the journal is not closed) and the provider's own
(``STORE_KILL``: inside the call, before it acts or after it acted). The invariant after
recovery (``engine refresh``, under the lock): every live object is recorded exactly once,
nothing recorded is gone, no intent is open, no create was issued twice, and the next plan
shows exactly the remaining difference: ``same`` for a resource exactly when what is live
(and what is recorded about it) is what the declaration asks for. Then one more ``up``
converges and plans nothing.
"""

from __future__ import annotations

import signal

import pytest

from faults.store import Store

pytestmark = pytest.mark.slow

KILLED = -signal.SIGKILL


def thing(name, type_="thing", deps=(), **inputs):
    return {"name": name, "type": type_, "inputs": inputs, "deps": list(deps)}


# A delete-first replacement with a dependent (Pulumi's order): the dependent's delete, the
# solo's, the solo's create, the dependent's create. Each point is (op, point, the how-manieth
# such point of the engine's, a substring of the provider's id).
DEPENDENT_POINTS = [(op, point, n, name) for op, order in (("delete", ("dep", "solo")), ("create", ("solo", "dep")))
                    for n, name in enumerate(order, 1) for point in ("before", "after")]

# kind -> (the prior declaration, the changed one, the kill points of its change: (op, point),
# or (op, point, n, id) where the change makes more than one call of that op)
CASES = {
    "create": ([], [thing("a", size=1)], [("create", "before"), ("create", "after")]),
    "update": ([thing("a", size=1)], [thing("a", size=2)], [("update", "before"), ("update", "after")]),
    "replace-create-before-delete": (
        [thing("a", zone="a")], [thing("a", zone="b")],
        [("create", "before"), ("create", "after"), ("delete", "before"), ("delete", "after")]),
    "replace-delete-before-replace": (
        [thing("s", "solo", zone="a")], [thing("s", "solo", zone="b")],
        [("delete", "before"), ("delete", "after"), ("create", "before"), ("create", "after")]),
    "replace-delete-before-replace-with-a-dependent": (
        [thing("solo", "solo", zone="a"), thing("dep", deps=["solo"], size=1)],
        [thing("solo", "solo", zone="b"), thing("dep", deps=["solo"], size=1)], DEPENDENT_POINTS),
    "replace-delete-before-replace-with-a-changed-dependent": (
        [thing("solo", "solo", zone="a"), thing("dep", deps=["solo"], size=1)],
        [thing("solo", "solo", zone="b"), thing("dep", deps=["solo"], size=2)], DEPENDENT_POINTS),
    "delete": ([thing("a", size=1), thing("b", size=1)], [thing("a", size=1)],
               [("delete", "before"), ("delete", "after")]),
    "options-only": ([thing("a", size=1)], [{**thing("a", size=1), "options": {"retain_on_delete": True}}],
                     [("options", "before"), ("options", "after")]),
}


def _params():
    for kind, (_, _, points) in CASES.items():
        for op, point, *which in points:
            at = f"{op}:{point}" + (f":{which[1]}" if which else "")
            nth = f"{op}:{point}" + (f":{which[0]}" if which else "")
            yield pytest.param(kind, {"TASKRIG_FAULT_KILL": nth}, id=f"{kind}-engine-{at}")
            if op != "options":  # no provider call to die in
                provider = f"{op}:{point}" + (f":store-{which[1]}" if which else "")
                yield pytest.param(kind, {"STORE_KILL": provider}, id=f"{kind}-provider-{at}")


def _urn(item) -> str:
    token = "test:store:Solo" if item.get("type") == "solo" else "test:store:Thing"
    return f"urn:engine:store::{token}::{item['name']}"


def _matches(store: Store, item, rows: dict) -> bool:
    """Is what exists, and what the state records about it, what ``item`` declares?"""
    row = rows.get(_urn(item))
    if row is None:
        return False
    live = store.live().get(row["id"])
    if live is None or live["inputs"] != item["inputs"]:
        return False
    wanted = {"retain_on_delete": False, "protect": False, **(item.get("options") or {})}
    shown = store.read("state", "show", _urn(item))["options"]
    return all(shown[k] == v for k, v in wanted.items())


def _assert_plan_is_the_remaining_difference(store: Store, target: list) -> None:
    ops = store.ops(target)
    rows = {r["urn"]: r for r in store.recorded() if not r["pending_delete"]}
    for item in target:
        same = ops[item["name"]] == "same"
        assert same == _matches(store, item, rows), (item, ops, rows, store.live())
    # What is recorded and not declared is planned for deletion, nothing else.
    declared = {_urn(i) for i in target}
    for urn in rows:
        if urn not in declared:
            assert ops[urn.rsplit("::", 1)[-1]] == "delete", ops


@pytest.fixture
def store(engine, tmp_path):
    """Reads (``state list``/``show``, ``preview``) in this process, by the CLI's own command:
    ``test_the_reads_made_here_are_the_clis`` checks them against the CLI's process."""
    store = Store(engine, tmp_path, reads_in_process=True)
    yield store
    store.close()


@pytest.mark.parametrize("kind,kill", list(_params()))
def test_a_step_killed_at_any_point_recovers_to_the_truth(store, kind, kill):
    prior, target, _ = CASES[kind]
    if prior:
        r = store.up(prior)
        assert r.returncode == 0, r.stderr
    r = store.up(target, **kill)
    assert r.returncode == KILLED, (r.returncode, r.stderr[-2000:])

    r = store("refresh", "store")
    assert r.returncode == 0, r.stderr
    store.assert_truthful()
    _assert_plan_is_the_remaining_difference(store, target)

    r = store.up(target)
    assert r.returncode == 0, r.stderr
    store.assert_truthful()
    assert set(store.ops(target).values()) == {"same"}
    rows = {r["urn"]: r for r in store.recorded()}
    assert sorted(rows) == sorted(_urn(i) for i in target)
    assert all(_matches(store, i, rows) for i in target)
    # No create was issued for something that exists: the provider logs and refuses one, which
    # assert_truthful checks (a create killed before it acted is rightly issued again).


def test_the_reads_made_here_are_the_clis(store):
    """The table reads the state in the test's process; the CLI's process reads the same: right
    after a kill (an open intent, the replaced copy pending deletion), after the recovery, and
    after the next up."""
    prior, target, _ = CASES["replace-create-before-delete"]
    assert store.up(prior).returncode == 0
    r = store.up(target, TASKRIG_FAULT_KILL="delete:before")
    assert r.returncode == KILLED, (r.returncode, r.stderr[-2000:])
    assert [r["pending_delete"] for r in store.json("state", "list")] == [False, True]
    store.assert_cli_agrees(target)
    assert store("refresh", "store").returncode == 0
    store.assert_cli_agrees(target)
    assert store.up(target).returncode == 0
    store.assert_cli_agrees(target)
