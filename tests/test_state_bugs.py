"""Regression tests for issue 9's state bugs, with a user's own provider (``tasks/state_store.py``,
``engine.extend`` only) that keeps its live objects as files, so each test can compare what
really exists with what the state records.

Every crash is a real SIGKILL of the engine process: at the engine's own fault points
(``TASKRIG_FAULT_KILL``) or from inside the provider's call (``STORE_KILL``), which needs no
engine support and so reproduces each bug on the old engine as well. The invariant after every
recovery: each live object is recorded exactly once, nothing recorded is gone, no intent is left
open, no create was issued twice.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from faults.store import Store
from engine.errors import StateError
from engine.state import State

pytestmark = pytest.mark.slow

V1_DUMP = Path(__file__).resolve().parent / "data" / "state-v1.sql"
KILLED = -signal.SIGKILL


@pytest.fixture
def store(engine, tmp_path):
    """Reads (``state list``/``show``, ``preview``, ``runs``) in this process, by the CLI's own
    command; a kill, a recovery, an up are the CLI's processes. One test checks the reads
    against the CLI's process (``Store.assert_cli_agrees``)."""
    store = Store(engine, tmp_path, reads_in_process=True)
    yield store
    store.close()


def _kill_env(mechanism: str, op: str, point: str) -> dict:
    """The same crash, from the engine's fault point or from inside the provider's call."""
    if mechanism == "engine":
        return {"TASKRIG_FAULT_KILL": f"{op}:{point}"}
    return {"STORE_KILL": f"{op}:{point}"}


MECHANISMS = ["engine", "provider"]


# ---------------------------------------------------------------------- replacement
def test_provider_delete_before_replace_is_honoured(store):
    """A provider class that says delete_before_replace (one name, one port) is never run twice:
    its create asserts that no other copy of the URN is live."""
    assert store.up([{"name": "solo", "type": "solo", "inputs": {"zone": "a"}}]).returncode == 0
    spec = [{"name": "solo", "type": "solo", "inputs": {"zone": "b"}}]
    assert store.ops(spec) == {"solo": "replace"}
    r = store.up(spec)
    assert r.returncode == 0, r.stderr
    assert [c for c in store.calls()] == ["create store-solo", "delete store-solo", "create store-solo"]
    assert {k: v["inputs"] for k, v in store.live().items()} == {"store-solo": {"zone": "b"}}
    store.assert_truthful()


def _replace_crash(store, mechanism, op, point):
    """Record ``a``, then replace it create-before-delete, killed at ``op:point``; returns the
    ids of the old and the new copy."""
    assert store.up([{"name": "a", "inputs": {"zone": "a", "size": 1}}]).returncode == 0
    spec = [{"name": "a", "inputs": {"zone": "b", "size": 1}}]
    assert store.ops(spec) == {"a": "replace"}
    r = store.up(spec, **_kill_env(mechanism, op, point))
    assert r.returncode == KILLED, (r.returncode, r.stderr)
    live = store.live()
    assert "store-a" in live and len(live) == 2, live  # both copies exist at the crash
    [new] = [k for k in live if k != "store-a"]
    return "store-a", new, spec


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("op,point", [("create", "after"), ("delete", "before")])
def test_create_before_delete_crash_keeps_the_old_copy_recorded(store, mechanism, op, point):
    old, new, spec = _replace_crash(store, mechanism, op, point)
    rows = {r["id"]: r for r in store.recorded()}
    # Right after the crash, the old copy is still recorded: a live thing is never recorded nowhere.
    assert old in rows, rows
    if op == "delete":
        assert rows[old]["pending_delete"] is True and rows[new]["pending_delete"] is False, rows
    # Recovery (its old copy's delete refused): recorded and marked pending deletion, never dropped.
    r = store("refresh", "store", STORE_FAIL_DELETE=old)
    assert r.returncode == 0, r.stderr
    rows = {r["id"]: r for r in store.recorded()}
    assert set(rows) == {old, new} == set(store.live()), (rows, store.live())
    assert rows[old]["pending_delete"] is True and rows[new]["pending_delete"] is False
    store.assert_truthful()
    # The next up finishes the delete and plans nothing more.
    r = store.up(spec)
    assert r.returncode == 0, r.stderr
    assert set(store.live()) == {new}
    assert [(r["id"], r["pending_delete"]) for r in store.recorded()] == [(new, False)]
    store.assert_truthful()
    assert store.ops(spec) == {"a": "same"}


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_recovering_the_old_copys_delete_keeps_the_new_copys_row(store, mechanism):
    """An open delete intent of the replaced copy is finished by the next command, which removes
    that copy's row only: the new copy, recorded under the same URN, stays recorded."""
    old, new, spec = _replace_crash(store, mechanism, "delete", "before")
    r = store("refresh", "store")
    assert r.returncode == 0, r.stderr
    assert set(store.live()) == {new}
    assert [(r["id"], r["pending_delete"]) for r in store.recorded()] == [(new, False)]
    store.assert_truthful()
    assert store.ops(spec) == {"a": "same"}


# ---------------------------------------------------------------------- orphans
def test_orphan_sweep_deletes_reusable_things_whose_rows_were_lost_and_never_an_unknown_runs(store, engine):
    """Reusable things labelled with runs this state knows (an earlier run's, and the dead run's
    own) whose rows were lost are deleted by the next command's recovery; a thing labelled with a
    run this state never saw (another engine's, same stack name) is left alone."""
    assert store.up([{"name": "x", "inputs": {"size": 1}, "label_run": True}]).returncode == 0
    spec = [{"name": "y", "inputs": {"size": 1}, "label_run": True},
            {"name": "z", "inputs": {"size": 1}, "label_run": True, "deps": ["y"]}]
    r = store.up(spec, STORE_KILL="create:before:store-z")
    assert r.returncode == KILLED, (r.returncode, r.stderr)
    assert set(store.live()) == {"store-x", "store-y"}
    conn = sqlite3.connect(engine.state)
    with conn:
        conn.execute("delete from resources")  # the rows are lost
    conn.close()
    foreign = store.dir / "objects" / "store-foreign.json"
    foreign.write_text(json.dumps({"urn": "urn:engine:store::test:store:Thing::foreign", "stack": "store",
                                   "run": "r-of-another-engine", "inputs": {}}))
    r = store("refresh", "store")
    assert r.returncode == 0, r.stderr
    assert set(store.live()) == {"store-foreign"}, r.stderr
    assert store.recorded() == []
    assert engine.journal_open() == []
    assert [run["status"] for run in store.runs()] == ["succeeded", "crashed"]


# ---------------------------------------------------------------------- updates
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("read_mode", ["read", "plain"])
@pytest.mark.parametrize("point", ["before", "after"])
def test_recovery_of_a_crashed_update_records_what_the_provider_reports(store, mechanism, read_mode, point):
    """``read`` returning Read(inputs, outputs) is recorded as is; plain outputs keep the old
    inputs (the engine cannot know whether the update happened), so the next plan shows the
    update again whenever it may not have happened: it is never silently lost."""
    env = {"STORE_READ": read_mode}
    assert store.up([{"name": "a", "inputs": {"size": 1}}], **env).returncode == 0
    spec = [{"name": "a", "inputs": {"size": 2}}]
    r = store.up(spec, **env, **_kill_env(mechanism, "update", point))
    assert r.returncode == KILLED, (r.returncode, r.stderr)
    actual = store.live()["store-a"]["inputs"]["size"]
    assert actual == (1 if point == "before" else 2)
    r = store("refresh", "store", **env)
    assert r.returncode == 0, r.stderr
    shown = store.show("a")
    assert shown["outputs"] == {"made": "store-a", "size": actual}  # what the provider reported
    happened_and_known = point == "after" and read_mode == "read"
    assert shown["inputs"] == {"size": 2 if happened_and_known else 1}
    store.assert_truthful()
    assert store.ops(spec, **env) == {"a": "same" if happened_and_known else "update"}
    r = store.up(spec, **env)
    assert r.returncode == 0, r.stderr
    assert store.live()["store-a"]["inputs"] == {"size": 2}
    assert store.ops(spec, **env) == {"a": "same"}
    store.assert_truthful()


# ---------------------------------------------------------------------- timeouts
def _timed(spec_timeout: float, reusable: bool = True) -> list:
    return [{"name": "a", "inputs": {"size": 1}, "reusable": reusable,
             "options": {"timeouts": {"create": spec_timeout}}}]


def test_create_returning_late_within_the_grace_is_recorded_and_fails_the_step(store, engine):
    spec = _timed(1)
    r = store.up(spec, STORE_CREATE_SECONDS="1.6")
    assert r.returncode == 1, r.stderr
    assert "timeout" in r.stderr
    assert store.runs()[-1]["status"] == "failed"
    assert set(store.live()) == {"store-a"}
    store.assert_truthful()  # recorded, although the step failed
    store.assert_cli_agrees(spec)  # a failed run, a row recorded past its timeout: the CLI reads the same
    assert store.ops(spec) == {"a": "same"}
    r = store.up(spec)
    assert r.returncode == 0, r.stderr
    assert store.calls().count("create store-a") == 1
    store.assert_truthful()


@pytest.mark.parametrize("reusable", [True, False])
def test_create_outliving_the_grace_stays_open_and_the_next_command_settles_it(store, engine, reusable):
    """A provider that ignores its deadline: the run fails after timeout + grace with the intent
    open; the next command reads the thing back by its name and adopts (reusable) or deletes it."""
    spec = _timed(1, reusable)
    t0 = time.monotonic()
    r = store.up(spec, STORE_CREATE_SECONDS="8")
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - t0 < 7, "the run should give up after its timeout and grace"
    assert store.runs()[-1]["status"] == "failed"
    [(op, _urn, name)] = engine.journal_open()
    assert op == "create" and set(store.live()) == {name}
    r = store("refresh", "store")
    assert r.returncode == 0, r.stderr
    assert set(store.live()) == ({name} if reusable else set())
    store.assert_truthful()
    if reusable:
        assert store.ops(spec) == {"a": "same"}


def test_provider_honouring_call_deadline_stops_in_time(store, engine):
    spec = _timed(1)
    t0 = time.monotonic()
    r = store.up(spec, STORE_CREATE_SECONDS="30", STORE_HONOUR_DEADLINE="1")
    elapsed = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert elapsed < 10, f"the provider should have stopped at its deadline (took {elapsed:.1f} s)"
    assert "deadline" in r.stderr
    assert store.live() == {}
    store.assert_truthful()


# ---------------------------------------------------------------------- options only
OPTION_CHANGES = {
    "protect": ({"options": {"protect": True}}, ("options", "protect"), True),
    "retain_on_delete": ({"options": {"retain_on_delete": True}}, ("options", "retain_on_delete"), True),
    "dependency": ({"deps": ["b"]}, ("deps",), ["urn:engine:store::test:store:Thing::b"]),
    "idle_ttl": ({"idle_ttl": 3600.0}, ("idle_ttl",), 3600.0),
    "ephemeral": ({"reusable": False}, ("ephemeral",), True),
}


@pytest.mark.parametrize("change", sorted(OPTION_CHANGES))
def test_an_options_only_change_is_planned_and_recorded(store, change):
    extra, path, value = OPTION_CHANGES[change]
    before = [{"name": "a", "inputs": {"size": 1}}, {"name": "b", "inputs": {"size": 1}}]
    assert store.up(before).returncode == 0
    after = [{**before[0], **extra}, before[1]]
    assert store.ops(after) == {"a": "options", "b": "same"}
    r = store.up(after)
    assert r.returncode == 0, r.stderr
    if change == "ephemeral":  # now the run's own: recorded as such, and torn down at its end
        assert "store-a" not in store.live()
        store.assert_truthful()
        return
    shown = store.show("a")
    got = shown
    for key in path:
        got = got[key]
    assert got == value, shown
    assert store.ops(after) == {"a": "same", "b": "same"}
    r = store("destroy", "store")
    if change == "protect":
        assert r.returncode == 2 and "protect" in r.stderr, (r.returncode, r.stderr)
        assert set(store.live()) == {"store-a", "store-b"}
    else:
        assert r.returncode == 0, r.stderr
        assert store.recorded() == []
        if change == "retain_on_delete":
            assert set(store.live()) == {"store-a"}  # released, not deleted
        else:
            assert store.live() == {}
        if change == "dependency":  # a goes before what it depends on
            deletes = [c for c in store.calls() if c.startswith("delete")]
            assert deletes == ["delete store-a", "delete store-b"]
    if change != "retain_on_delete":
        store.assert_truthful()


# ---------------------------------------------------------------------- schema
def _v1_file(path: Path, *extra_sql: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(V1_DUMP.read_text())
    for sql in extra_sql:
        conn.executescript(sql)
    conn.close()
    return path


def _dump_rows(path: Path) -> dict:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        out = {}
        for t in ("runs", "resources", "journal"):
            # Schema 3 adds ``host`` to resources and journal (runs always had it): compared apart.
            cols = [r[1] for r in conn.execute(f"pragma table_info({t})") if t == "runs" or r[1] != "host"]
            out[t] = sorted(map(repr, conn.execute(f"select {', '.join(cols)} from {t}")))
        out["version"] = conn.execute("select value from meta where key='schema_version'").fetchone()[0]
        out["tables"] = tables
        return out
    finally:
        conn.close()


def test_schema_1_file_migrates_and_plans_same(tmp_path, store):
    path = _v1_file(tmp_path / "legacy.db")
    before = _dump_rows(path)
    assert before["version"] == "1" and "pending_deletes" not in before["tables"]
    st = State(path)
    st.close()
    after = _dump_rows(path)
    assert after["version"] == "4"
    assert {"pending_deletes", "stack_usage"} <= after["tables"]
    conn = sqlite3.connect(path)
    # The host of a row an older engine wrote is its run's host (a reusable row's run is unknown).
    missing = conn.execute("select count(*) from journal j join runs r on r.run_id = j.run_id "
                           "where j.host is not r.host").fetchone()[0]
    conn.close()
    assert missing == 0
    assert {k: after[k] for k in ("runs", "resources", "journal")} == {k: before[k] for k in ("runs", "resources", "journal")}
    # What the old engine recorded is what the same declaration asks for: nothing to do.
    spec = [{"name": "a", "inputs": {"size": 2, "labels": {"app.kubernetes.io/name": "a"}},
             "options": {"protect": True}}]
    doc = store.json("preview", "state_store:legacy_task", spec=spec, ENGINE_STATE=str(path))
    assert [(s["op"], s["urn"]) for s in doc["steps"]] == [("same", "urn:engine:legacy::test:store:Thing::a")]


def test_newer_schema_is_refused_and_left_byte_identical(tmp_path, store):
    path = _v1_file(tmp_path / "future.db", "update meta set value = '99' where key = 'schema_version';")
    data = path.read_bytes()
    with pytest.raises(StateError, match="99"):
        State(path)
    r = store("state", "list", ENGINE_STATE=str(path))
    assert r.returncode == 2 and "newer" in r.stderr, (r.returncode, r.stderr)
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("future.db")) == ["future.db"]


def test_interrupted_migration_leaves_version_1_intact(tmp_path):
    """The migration's last write fails (a trigger aborts it, after the new table was made): the
    whole migration rolls back, and the file still opens, and migrates, once the cause is gone."""
    path = _v1_file(tmp_path / "legacy.db", "create trigger stop_migration before insert on meta "
                                            "begin select raise(abort, 'simulated failure mid-migration'); end;")
    before = _dump_rows(path)
    with pytest.raises(sqlite3.DatabaseError, match="simulated failure"):
        State(path)
    after = _dump_rows(path)
    assert after == before  # version 1, no pending_deletes, every row as it was
    conn = sqlite3.connect(path)
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    conn.execute("drop trigger stop_migration")
    conn.close()
    State(path).close()
    assert _dump_rows(path)["version"] == "4"
