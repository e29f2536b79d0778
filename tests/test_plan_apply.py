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

    class Other(Provider):
        type_token = Store.type_token

    ProviderRegistry.register(Store)
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
