"""Dependents of a delete-first replacement, through the real CLI with a user's own provider
(``tasks/state_store.py``): the plan shows them as replacements naming what they follow, and a
failed create of the replacement leaves no row that names a resource which does not exist.
(The order of the calls and the DAG are ``test_plan_apply.py``'s; kills at every point are
``test_faults.py``'s.)"""

from __future__ import annotations

import pytest

from faults.store import Store

pytestmark = pytest.mark.slow


def _spec(zone: str, solo_options: dict | None = None) -> list[dict]:
    return [{"name": "solo", "type": "solo", "inputs": {"zone": zone}, "options": solo_options or {}},
            {"name": "dep", "inputs": {"n": 1}, "deps": ["solo"]},
            {"name": "leaf", "inputs": {"n": 1}, "deps": ["dep"]},
            {"name": "other", "inputs": {"n": 1}}]


@pytest.fixture
def store(engine, tmp_path):
    return Store(engine, tmp_path)


def _no_dangling_dependency(store: Store) -> None:
    rows = [r for r in store.recorded() if not r["pending_delete"]]
    urns = {r["urn"] for r in rows}
    for r in rows:
        deps = store.json("state", "show", r["urn"])["deps"]
        assert set(deps) <= urns, (r["urn"], deps, urns)


def test_preview_shows_the_dependents_as_replacements_that_name_what_they_follow(store):
    assert store.up(_spec("a")).returncode == 0
    r = store("preview", "state_store:store_task", spec=_spec("b"))
    assert r.returncode == 0, r.stderr
    assert "dep  replace (depends on solo, which is replaced delete-first)" in r.stdout, r.stdout
    assert "leaf  replace (depends on dep, which is replaced delete-first)" in r.stdout, r.stdout
    assert "Resources: 3 to replace, 1 unchanged" in r.stdout, r.stdout
    doc = store.json("preview", "state_store:store_task", spec=_spec("b"))
    steps = {s["urn"].rsplit("::", 1)[-1]: s for s in doc["steps"]}
    assert {n: s["op"] for n, s in steps.items()} == {"solo": "replace", "dep": "replace", "leaf": "replace",
                                                     "other": "same"}
    assert "reason" not in steps["solo"] and steps["solo"]["replace_keys"] == ["zone"]
    assert steps["dep"]["reason"] == "depends on solo, which is replaced delete-first"
    assert doc["summary"]["replace"] == 3
    # The preview called no provider: only the first up's creates are logged.
    assert sorted(store.calls()) == ["create store-dep", "create store-leaf", "create store-other", "create store-solo"]


def test_a_failed_create_of_the_replacement_leaves_no_dependent_naming_it(store):
    assert store.up(_spec("a")).returncode == 0
    # The solo's create waits "for readiness" past its timeout and gives up, making nothing.
    failing = _spec("b", {"timeouts": {"create": 0.3}})
    r = store.up(failing, STORE_CREATE_SECONDS=5, STORE_HONOUR_DEADLINE=1)
    assert r.returncode == 1, r.stderr
    assert "not ready by the engine's deadline" in r.stderr, r.stderr
    creates = [c for c in store.calls() if c.startswith("create")]
    assert creates[4:] == ["create store-solo"], store.calls()  # the dependents' creates never started
    assert sorted(store.live()) == ["store-other"]
    store.assert_truthful()
    _no_dangling_dependency(store)
    assert store.ops(_spec("b")) == {"solo": "create", "dep": "create", "leaf": "create", "other": "same"}
    r = store.up(_spec("b"))
    assert r.returncode == 0, r.stderr
    assert sorted(store.live()) == ["store-dep", "store-leaf", "store-other", "store-solo"]
    store.assert_truthful()
    _no_dangling_dependency(store)
    assert set(store.ops(_spec("b")).values()) == {"same"}
