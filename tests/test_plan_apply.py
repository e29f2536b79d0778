"""The plan as data and the journaled, dependency-ordered apply, with an in-process provider
that records every call it gets (a real provider, not a mock: it keeps its own store)."""

import threading
import time

import pytest

from engine.apply import Applier
from engine.errors import ConfigError, ProviderError
from engine.plan import deletion_plan, plan
from engine.registry import ProviderRegistry, TaskPluginRegistry
from engine.resource import Declaration, Diff, Options, Provider, make_urn
from engine.state import State


class Store(Provider):
    """Keeps 'things' in a dict; logs calls in order; can be told to fail one name."""

    type_token = "test:store:Thing"
    replace_keys = ("zone",)

    def __init__(self, context=None):
        super().__init__(context)
        self.things: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: set[str] = set()
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def _enter(self, op, name):
        with self.lock:
            self.calls.append((op, name))
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.02)
        with self.lock:
            self.active -= 1
        if name in self.fail:
            raise RuntimeError(f"{name} refused")

    def create(self, urn, inputs, key):
        self._enter("create", key)
        self.things[key] = dict(inputs)
        return key, {"made": key}

    def update(self, id, old, new, outputs=None):
        self._enter("update", id)
        self.things[id] = dict(new)
        return {"made": id, "v": 2}

    def delete(self, id, inputs, outputs):
        self._enter("delete", id)
        self.things.pop(id, None)


def decl(name, inputs, deps=(), **opts):
    return Declaration(urn=make_urn("s", Store.type_token, name), type=Store.type_token, inputs=inputs,
                       deps=[make_urn("s", Store.type_token, d) for d in deps], options=Options(**opts),
                       ephemeral=False, physical_name=name)


@pytest.fixture
def state(tmp_path):
    st = State(tmp_path / "state.db")
    yield st
    st.close()


def apply(state, provider, p, run="r1", parallelism=8):
    return Applier(state, lambda t: provider, "s", run, parallelism).apply(p)


def diffs_for(provider, desired, recorded):
    by = {r.urn: r for r in recorded}
    return {d.urn: provider.diff(by[d.urn].inputs, d.inputs) for d in desired if d.urn in by}


def test_create_update_replace_delete_same_with_property_diffs(state):
    prov = Store()
    first = [decl("a", {"size": 1, "zone": "x"}), decl("b", {"size": 1}), decl("c", {"n": 1})]
    p = plan("s", first, [], {})
    assert [s.op for s in p.steps] == ["create"] * 3
    apply(state, prov, p)
    rec = state.resources("s")
    second = [decl("a", {"size": 1, "zone": "y"}), decl("b", {"size": 2}), decl("d", {"n": 1})]
    p = plan("s", second, rec, diffs_for(prov, second, rec))
    ops = {s.urn.rsplit("::", 1)[1]: s for s in p.steps}
    assert ops["a"].op == "replace" and ops["a"].replace_keys == (("zone",),)
    assert ops["b"].op == "update" and [(c.path, c.old, c.new) for c in ops["b"].changes] == [(("size",), 1, 2)]
    assert ops["c"].op == "delete" and ops["d"].op == "create"
    assert p.summary() == {"create": 1, "update": 1, "replace": 1, "delete": 1, "options": 0, "same": 0}
    apply(state, prov, p)
    names = {r.urn.rsplit("::", 1)[1] for r in state.resources("s")}
    assert names == {"a", "b", "d"}
    again = plan("s", second, state.resources("s"), diffs_for(prov, second, state.resources("s")))
    assert {s.op for s in again.steps} == {"same"} and not again.has_changes


def test_ignore_changes_and_replace_on_changes_and_protect(state):
    prov = Store()
    apply(state, prov, plan("s", [decl("a", {"size": 1, "tag": "t"})], [], {}))
    rec = state.resources("s")
    d = [decl("a", {"size": 5, "tag": "t"}, ignore_changes=("size",))]
    p = plan("s", d, rec, diffs_for(prov, d, rec))
    assert p.steps[0].op == "same" and p.steps[0].new.inputs["size"] == 1
    d = [decl("a", {"size": 1, "tag": "u"}, replace_on_changes=("tag",))]
    assert plan("s", d, rec, diffs_for(prov, d, rec)).steps[0].op == "replace"
    rec[0].options = Options(protect=True)
    with pytest.raises(ConfigError, match="protected"):
        plan("s", [], rec, {})


def test_dependencies_create_in_order_and_delete_children_first(state):
    prov = Store()
    d = [decl("leaf", {}, deps=["mid"]), decl("mid", {}, deps=["root"]), decl("root", {})]
    apply(state, prov, plan("s", d, [], {}))
    assert [c for c in prov.calls] == [("create", "root"), ("create", "mid"), ("create", "leaf")]
    prov.calls.clear()
    apply(state, prov, deletion_plan("s", state.resources("s")))
    assert prov.calls == [("delete", "leaf"), ("delete", "mid"), ("delete", "root")]


def test_independent_steps_run_concurrently_within_the_bound(state):
    prov = Store()
    d = [decl(f"n{i}", {}) for i in range(12)]
    apply(state, prov, plan("s", d, [], {}), parallelism=4)
    assert 2 <= prov.peak <= 4
    assert len(state.resources("s")) == 12


def test_failure_journals_and_stops_new_steps(state):
    prov = Store()
    prov.fail.add("root")
    d = [decl("child", {}, deps=["root"]), decl("root", {})]
    with pytest.raises(ProviderError, match="create of urn:engine:s::test:store:Thing::root failed"):
        apply(state, prov, plan("s", d, [], {}))
    assert ("create", "child") not in prov.calls
    rows = state.journal("s")
    assert [(r["op"], r["status"]) for r in rows] == [("create", "failed")]
    assert state.resources("s") == []


def test_journal_intent_is_committed_before_the_provider_call(state, tmp_path):
    seen = []

    class Peek(Store):
        def create(self, urn, inputs, key):
            other = State(tmp_path / "state.db")  # a second connection sees the committed intent
            seen.extend((r["op"], r["status"]) for r in other.open_intents("s"))
            other.close()
            return super().create(urn, inputs, key)

    apply(state, Peek(), plan("s", [decl("a", {})], [], {}))
    assert seen == [("create", "open")]
    assert [r["status"] for r in state.journal("s")] == ["done"]


def test_registries_refuse_duplicates():
    class Cfg:
        pass

    TaskPluginRegistry.register(Cfg, object())
    with pytest.raises(ValueError, match="already registered"):
        TaskPluginRegistry.register(Cfg, object())
    TaskPluginRegistry.register(Cfg, "x", override=True)
    assert TaskPluginRegistry.find(Cfg) == "x"

    # A token of this test's own: the suite's other providers (state_store's test:store:Thing,
    # imported in-process by the fault tests) are registered in this process too.
    class Mine(Provider):
        type_token = "test:registry:Duplicate"

    class Other(Provider):
        type_token = Mine.type_token

    ProviderRegistry.register(Mine, override=True)
    ProviderRegistry.register(Mine)  # the same class again is no conflict
    with pytest.raises(ValueError, match="already registered"):
        ProviderRegistry.register(Other)


def test_apply_registers_the_thread_pools_fork_hooks_before_any_run():
    """concurrent.futures.thread's at-fork hooks take a lock before a fork and release it after.
    Registered while a provider thread forks (pyspark's gateway launch), the "after" hook
    releases a lock it never took: the one the apply pool's submit holds. So a fresh engine has
    them registered by the time it can run anything."""
    import subprocess
    import sys

    code = "import sys, engine.apply; print('concurrent.futures.thread' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


# ---------------------------------------------------------------------- delete-first replacements
class FailOne(Store):
    """Refuses one (op, name) only, so that a replacement's delete can succeed and its create fail."""

    def __init__(self):
        super().__init__()
        self.refuse: set[tuple[str, str]] = set()

    def _enter(self, op, name):
        super()._enter(op, name)
        if (op, name) in self.refuse:
            raise RuntimeError(f"{op} of {name} refused")


def _chain(zone, root_deps=()):
    """root (replaced delete-first) <- mid <- leaf, and other beside them."""
    return [decl("root", {"zone": zone}, deps=root_deps, delete_before_replace=True),
            decl("mid", {"n": 1}, deps=["root"]), decl("leaf", {"n": 1}, deps=["mid"]), decl("other", {"n": 1})]


def _replan(state, prov, desired):
    rec = state.resources("s")
    return plan("s", desired, rec, diffs_for(prov, desired, rec))


def _assert_no_dangling_dependency(state):
    urns = {r.urn for r in state.resources("s")}
    for r in state.resources("s"):
        assert set(r.deps) <= urns, (r.urn, r.deps, urns)


def test_a_delete_first_replacement_replaces_its_dependents_around_it(state):
    """Pulumi's order: the dependents' deletes (dependents first), the old copy's, the create,
    then the dependents' creates (dependency order); the plan shows each as a replacement that
    names what it follows."""
    prov = Store()
    apply(state, prov, plan("s", _chain("x"), [], {}))
    p = _replan(state, prov, _chain("y"))
    steps = {s.urn.rsplit("::", 1)[1]: s for s in p.steps}
    assert {n: s.op for n, s in steps.items()} == {"root": "replace", "mid": "replace", "leaf": "replace",
                                                   "other": "same"}
    assert steps["root"].reason is None and steps["root"].replace_keys == (("zone",),)
    assert steps["mid"].reason == "depends on root, which is replaced delete-first"
    assert steps["leaf"].reason == "depends on mid, which is replaced delete-first"
    assert all(steps[n].delete_before_replace for n in ("root", "mid", "leaf"))
    prov.calls.clear()
    apply(state, prov, p)
    assert prov.calls == [("delete", "leaf"), ("delete", "mid"), ("delete", "root"),
                          ("create", "root"), ("create", "mid"), ("create", "leaf")]
    assert prov.things["root"] == {"zone": "y"}
    _assert_no_dangling_dependency(state)
    assert not _replan(state, prov, _chain("y")).has_changes


def test_a_failed_delete_first_create_skips_its_dependents_creates(state):
    """The create that replaces the deleted copy fails: the dependents, deleted before it, are
    not created again, so no row names a resource that does not exist; the next apply makes all."""
    prov = FailOne()
    apply(state, prov, plan("s", _chain("x"), [], {}))
    prov.refuse.add(("create", "root"))
    prov.calls.clear()
    with pytest.raises(ProviderError, match="replace of urn:engine:s::test:store:Thing::root failed.*create of root"):
        apply(state, prov, _replan(state, prov, _chain("y")))
    assert [c for c in prov.calls if c[1] != "other"] == [("delete", "leaf"), ("delete", "mid"), ("delete", "root"),
                                                          ("create", "root")]
    assert sorted(prov.things) == ["other"]
    assert [r.urn.rsplit("::", 1)[1] for r in state.resources("s")] == ["other"]
    _assert_no_dangling_dependency(state)
    prov.refuse.clear()
    p = _replan(state, prov, _chain("y"))
    assert {s.urn.rsplit("::", 1)[1]: s.op for s in p.steps} == {"root": "create", "mid": "create",
                                                                 "leaf": "create", "other": "same"}
    apply(state, prov, p)
    assert sorted(prov.things) == ["leaf", "mid", "other", "root"]
    _assert_no_dangling_dependency(state)


def test_the_old_copy_goes_only_once_what_its_replacement_depends_on_is_done(state):
    """As Pulumi deletes it when the resource registers: a dependency that fails leaves it."""
    prov = FailOne()
    apply(state, prov, plan("s", _chain("x"), [], {}))
    prov.refuse.add(("create", "new"))
    desired = [decl("new", {}), *_chain("y", root_deps=["new"])]
    prov.calls.clear()
    with pytest.raises(ProviderError, match="create of urn:engine:s::test:store:Thing::new failed"):
        apply(state, prov, _replan(state, prov, desired))
    assert ("delete", "root") not in prov.calls and prov.things["root"] == {"zone": "x"}
    _assert_no_dangling_dependency(state)
    prov.refuse.clear()
    prov.calls.clear()
    apply(state, prov, _replan(state, prov, desired))
    assert prov.calls.index(("create", "new")) < prov.calls.index(("delete", "root"))
    assert prov.calls.index(("delete", "mid")) < prov.calls.index(("delete", "root"))
    _assert_no_dangling_dependency(state)


def test_chained_delete_first_replacements_and_a_dependent_no_longer_declared(state):
    """Two delete-first replacements, one on the other, and a dependent that goes: no cycle,
    everything that names the first goes before it."""
    prov = Store()
    first = [decl("base", {"zone": "x"}, delete_before_replace=True),
             decl("top", {"zone": "x"}, deps=["base"], delete_before_replace=True),
             decl("gone", {}, deps=["top"]), decl("kept", {"n": 1}, deps=["top"])]
    apply(state, prov, plan("s", first, [], {}))
    second = [decl("base", {"zone": "y"}, delete_before_replace=True),
              decl("top", {"zone": "y"}, deps=["base"], delete_before_replace=True),
              decl("kept", {"n": 2}, deps=["top"])]
    p = _replan(state, prov, second)
    steps = {s.urn.rsplit("::", 1)[1]: s for s in p.steps}
    assert {n: s.op for n, s in steps.items()} == {"base": "replace", "top": "replace", "kept": "replace",
                                                   "gone": "delete"}
    assert steps["kept"].reason == "depends on top, which is replaced delete-first"
    assert [(c.path, c.old, c.new) for c in steps["kept"].changes] == [(("n",), 1, 2)]
    prov.calls.clear()
    apply(state, prov, p)
    calls = prov.calls
    deletes = [n for op, n in calls if op == "delete"]
    assert deletes.index("base") == 3 and deletes.index("top") == 2  # after gone and kept, in either order
    assert [n for op, n in calls if op == "create"] == ["base", "top", "kept"]
    assert calls.index(("delete", "base")) < calls.index(("create", "base"))
    _assert_no_dangling_dependency(state)
    assert not _replan(state, prov, second).has_changes


def test_a_protected_dependent_refuses_the_plan_naming_both(state):
    prov = Store()
    desired = [decl("root", {"zone": "x"}, delete_before_replace=True), decl("dep", {}, deps=["root"], protect=True)]
    apply(state, prov, plan("s", desired, [], {}))
    desired[0] = decl("root", {"zone": "y"}, delete_before_replace=True)
    with pytest.raises(ConfigError, match=r"Thing::dep is protected and the plan would replace it \(it depends on "
                                          r"urn:engine:s::test:store:Thing::root, which is replaced delete-first\)"):
        _replan(state, prov, desired)


def test_a_dependent_replaced_delete_first_keeps_its_copys_name_when_an_older_copy_holds_the_plain_one(state):
    """The dependent was last replaced create-before-delete and its older copy's delete was refused
    (still pending deletion, holding the plain name): recreated under its current copy's name, never
    as a second object under the plain one."""
    prov = FailOne()
    desired = [decl("root", {"zone": "x"}, delete_before_replace=True), decl("dep", {"zone": "x"}, deps=["root"])]
    apply(state, prov, plan("s", desired, [], {}))
    prov.refuse.add(("delete", "dep"))
    desired[1] = decl("dep", {"zone": "y"}, deps=["root"])
    with pytest.raises(ProviderError, match="delete of urn:engine:s::test:store:Thing::dep failed"):
        apply(state, prov, _replan(state, prov, desired))
    [copy] = [r.id for r in state.resources("s") if r.urn.endswith("::dep")]
    assert copy != "dep" and [r.id for r in state.pending_deletes("s")] == ["dep"]
    desired[0] = decl("root", {"zone": "y"}, delete_before_replace=True)
    prov.calls.clear()
    apply(state, prov, _replan(state, prov, desired))
    assert prov.calls == [("delete", copy), ("delete", "root"), ("create", "root"), ("create", copy)]
    assert sorted(prov.things) == sorted(["dep", copy, "root"])
    assert [r.id for r in state.pending_deletes("s")] == ["dep"]
    _assert_no_dangling_dependency(state)
