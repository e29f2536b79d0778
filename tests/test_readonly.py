"""Reads that change nothing (issue 9): ``preview`` takes no lock and writes nothing, and a
provider's ``read`` only looks; cleanup of what it sees belongs to recovery, under the lock.

Before: preview opened the state for writing (migrating an old file), and the local Ray
provider's ``read`` killed "stray" nodes and removed a dead cluster's folder, so a preview
during an ``up`` could kill the nodes that ``up`` was adding.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.extend import ProviderContext
from engine.lock import StackLock
from engine.resource import Record
from providers.local import ProcessRecord, find_tagged, spawn
from providers.ray.local import LAUNCHER, LocalRayCluster
from faults.store import Store
from test_state_bugs import _dump_rows, _v1_file


def _files(folder: Path) -> dict[str, str]:
    """Every data file's digest under the state's folder. Not compared: the locks folder (lock
    holders, the reaper's guard: not state) and SQLite's ``-shm`` index, which any reader of a
    WAL database maps; a ``-wal`` a reader leaves is empty, so it is recorded as absent."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if not p.is_file() or ".locks" in rel or rel.endswith("-shm") or (rel.endswith("-wal") and not p.stat().st_size):
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def store(engine, tmp_path):
    return Store(engine, tmp_path)


def test_preview_writes_nothing(store, engine):
    spec = [{"name": "a", "inputs": {"size": 1}}, {"name": "b", "inputs": {"size": 2}, "deps": ["a"]}]
    assert store.up(spec).returncode == 0
    folder = engine.state.parent
    before = _files(folder)
    changed = [{"name": "a", "inputs": {"size": 5}}]
    assert store.ops(changed) == {"a": "update", "b": "delete"}
    assert store.ops(spec) == {"a": "same", "b": "same"}
    assert _files(folder) == before
    assert store("state", "list").returncode == 0 and store("runs").returncode == 0
    assert _files(folder) == before


def test_preview_of_a_schema_1_file_leaves_it_byte_identical(tmp_path, store):
    path = _v1_file(tmp_path / "legacy.db")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = [{"name": "a", "inputs": {"size": 2, "labels": {"app.kubernetes.io/name": "a"}},
             "options": {"protect": True}}]
    doc = store.json("preview", "state_store:legacy_task", spec=spec, ENGINE_STATE=str(path))
    assert [s["op"] for s in doc["steps"]] == ["same"]
    for args in (("state", "list"), ("runs",)):
        assert store(*args, ENGINE_STATE=str(path)).returncode == 0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert _dump_rows(path)["version"] == "1"


def test_preview_takes_no_lock(store, engine):
    """An ``up`` holds the stack's lock: a preview neither waits for it nor fails on it."""
    spec = [{"name": "a", "inputs": {"size": 1}}]
    assert store.up(spec).returncode == 0
    held = StackLock(engine.state, "store", "up (the test)").acquire()
    try:
        t0 = time.monotonic()
        assert store.ops([{"name": "a", "inputs": {"size": 3}}]) == {"a": "update"}
        assert time.monotonic() - t0 < 30
        r = store.up(spec)
        assert r.returncode == 3, r.stderr  # the same lock, taken by a writer: refused
    finally:
        held.release()


# ---------------------------------------------------------------------- the Ray provider's read
def _listening() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def _node(name: str, folder: Path, key: str) -> ProcessRecord:
    """A process tagged as a node of cluster ``name``, with the node launcher on its command line."""
    return spawn([sys.executable, "-c", "import time; time.sleep(120)", LAUNCHER, key], name,
                 folder / f"{key}.log")


@pytest.fixture
def ray_provider(tmp_path):
    provider = LocalRayCluster(ProviderContext(str(tmp_path / "state.db"), str(tmp_path / "runtime")))
    started: list[str] = []
    yield provider, started
    for name in started:
        for p in find_tagged(name):
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass


def _record(name: str, outputs: dict) -> Record:
    inputs = {"head": {}, "worker_groups": {"w": {"replicas": 1}}}
    return Record(urn=f"urn:engine:s::local:ray:Cluster::{name}", type="local:ray:Cluster", stack="s", id=name,
                  inputs=inputs, outputs=outputs)


def test_ray_read_leaves_a_dead_clusters_leftovers_and_tidy_removes_them(ray_provider):
    provider, started = ray_provider
    name = "s-rdead-cluster"
    started.append(name)
    folder = provider._dir(name)
    leftover = _node(name, folder, "w-0")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    outputs = {"head": {"pid": dead.pid, "create_time": 1.0}, "address": "127.0.0.1:1",
               "workers": {"w-0": {**leftover.to_dict(), "group": "w"}}}
    assert provider.read(name, _record(name, outputs).inputs, outputs) is None
    assert leftover.alive() and folder.exists()  # a read only looks
    messages = list(provider.tidy("s", [_record(name, outputs)]))
    assert messages and "dead Ray cluster" in messages[0]
    deadline = time.monotonic() + 15
    while leftover.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leftover.alive() and not folder.exists()


def test_ray_read_ignores_nodes_the_record_does_not_list_and_tidy_stops_them(ray_provider):
    provider, started = ray_provider
    name = "s-rlive-cluster"
    started.append(name)
    folder = provider._dir(name)
    gcs = _listening()
    try:
        head, worker, stray = (_node(name, folder, k) for k in ("head", "w-0", "w-1"))
        outputs = {"head": head.to_dict(), "address": f"127.0.0.1:{gcs.getsockname()[1]}",
                   "workers": {"w-0": {**worker.to_dict(), "group": "w"}}}
        rec = _record(name, outputs)
        assert provider.read(name, rec.inputs, outputs) == outputs
        time.sleep(0.3)
        assert stray.alive()  # the node an `up` may be adding right now
        assert list(provider.tidy("s", [rec]))
        deadline = time.monotonic() + 15
        while stray.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not stray.alive() and head.alive() and worker.alive()
        assert list(provider.tidy("s", [rec])) == []  # nothing left to do: says nothing
    finally:
        gcs.close()
