"""Pulumi programs run in-process with the engine as their resource monitor: same plan, same
journaled apply, state in SQLite, no Pulumi CLI."""

import json
import os
import shutil
import threading

import pytest

from engine import Session
from engine.errors import ConfigError
from engine.registry import ProviderRegistry
from engine.resource import Provider

PROGRAM = os.path.join(os.path.dirname(__file__), "programs", "things")


class Thing(Provider):
    """Things live in a JSON file beside the state, so a fresh Session sees the same world."""

    type_token = "testprog:index:Thing"
    calls: list = []
    lock = threading.Lock()  # apply calls providers from several threads

    def _load(self):
        path = self.context.runtime_dir + "/things.json"
        return path, (json.load(open(path)) if os.path.exists(path) else {})

    def _save(self, path, things):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        json.dump(things, open(path, "w"))

    def _change(self, op, key, value):
        with Thing.lock:
            Thing.calls.append((op, key))
            path, things = self._load()
            if value is None:
                things.pop(key, None)
            else:
                things[key] = value
            self._save(path, things)

    def create(self, urn, inputs, key):
        self._change("create", key, inputs)
        return key, {"id": key}

    def update(self, id, old, new, outputs=None):
        self._change("update", id, new)
        return {"id": id}

    def delete(self, id, inputs, outputs):
        self._change("delete", id, None)


ProviderRegistry.register(Thing, override=True)


@pytest.fixture
def session(tmp_path, monkeypatch):
    for k in ("THINGS_SIZE", "THINGS_DROP", "THINGS_ZONE", "THINGS_NOTE", "THINGS_PROTECT"):
        monkeypatch.delenv(k, raising=False)
    Thing.calls.clear()
    return Session(state=tmp_path / "state.db")


def ops(plan):
    return {s.urn.rsplit("::", 1)[1]: s.op for s in plan.steps}


def test_preview_and_up_then_no_change(session):
    plan = session.preview_program(PROGRAM)
    assert plan.stack == "things-dev"
    assert ops(plan) == {"base": "create", "pair": "create", "pair-left": "create", "pair-right": "create",
                         "keeper": "create"}
    by = {s.urn.rsplit("::", 1)[1]: s for s in plan.steps}
    assert by["pair-left"].urn == "urn:engine:things-dev::testprog:index:Pair$testprog:index:Thing::pair-left"
    assert by["pair-left"].new.parent == by["pair"].urn
    assert by["pair-right"].new.deps == [by["pair-left"].urn]
    assert by["pair"].new.deps == [by["base"].urn]
    session.up_program(PROGRAM)
    created = [c for c in Thing.calls if c[0] == "create"]
    order = [k for _, k in created]
    assert order.index("base") < order.index("pair-left") < order.index("pair-right")
    again = session.preview_program(PROGRAM)
    assert set(ops(again).values()) == {"same"}


def test_options_are_honoured(session, monkeypatch):
    session.up_program(PROGRAM)
    monkeypatch.setenv("THINGS_NOTE", "changed")  # ignore_changes
    assert ops(session.preview_program(PROGRAM))["base"] == "same"
    monkeypatch.setenv("THINGS_SIZE", "2")
    assert ops(session.preview_program(PROGRAM))["base"] == "update"
    monkeypatch.setenv("THINGS_ZONE", "b")  # replace_on_changes + delete_before_replace
    plan = session.preview_program(PROGRAM)
    step = next(s for s in plan.steps if s.urn.endswith("::base"))
    assert step.op == "replace" and step.delete_before_replace
    Thing.calls.clear()
    session.up_program(PROGRAM)
    # A delete-first replacement in Pulumi's order: what depends on it (the pair component's
    # children, through the component's depends_on) goes first and comes back after it.
    assert Thing.calls == [("delete", "pair-right"), ("delete", "pair-left"), ("delete", "base"),
                           ("create", "base"), ("create", "pair-left"), ("create", "pair-right")]
    monkeypatch.setenv("THINGS_DROP", "1")  # retain_on_delete: leaves the state, not the world
    Thing.calls.clear()
    plan, _ = session.up_program(PROGRAM)
    assert ops(plan)["keeper"] == "delete" and ("delete", "keeper") not in Thing.calls
    monkeypatch.delenv("THINGS_DROP")
    monkeypatch.setenv("THINGS_PROTECT", "1")
    session.up_program(PROGRAM)
    monkeypatch.delenv("THINGS_PROTECT")
    with pytest.raises(ConfigError, match="protected"):
        session.preview_program(PROGRAM)


def test_two_programs_in_one_process_share_nothing(session, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(PROGRAM, other)
    (other / "Pulumi.yaml").write_text("name: other\nruntime: python\nmain: prog/\n")
    first = session.preview_program(PROGRAM)
    second = session.preview_program(str(other))
    third = session.preview_program(PROGRAM)
    assert second.stack == "other-dev" and all(s.urn.startswith("urn:engine:other-dev::") for s in second.steps)
    assert sorted(s.urn for s in first.steps) == sorted(s.urn for s in third.steps)
    assert len(first.steps) == len(second.steps) == 5


def test_unknown_type_is_a_clear_error(session, tmp_path):
    prog = tmp_path / "p"
    (prog / "src").mkdir(parents=True)
    (prog / "Pulumi.yaml").write_text("name: unk\nruntime: python\nmain: src/\n")
    (prog / "src" / "__main__.py").write_text(
        "import pulumi\npulumi.CustomResource('nosuch:cloud:Bucket', 'b', {'x': 1})\n")
    with pytest.raises(ConfigError, match="nosuch:cloud:Bucket"):
        session.preview_program(str(prog))
    assert not (tmp_path / "state.db").exists()


def test_cli_preview_without_pulumi_binary(engine, tmp_path):
    """The CLI runs the program in-process: no `pulumi` on PATH is needed."""
    assert shutil.which("pulumi") is None
    r = engine("preview", PROGRAM, "--json")
    # The CLI process has no test provider registered: it must name the type, exit 2.
    assert r.returncode == 2 and "testprog:index:Thing" in r.stderr
