"""The Ray plugin on the local backend, through the real CLI: a real head and worker nodes on
127.0.0.1, remote tasks on every node, nothing left after a run or after `kill -9` of the
engine, reusable clusters scaled in place, existing clusters only read, bad configs refused."""

import glob
import hashlib
import os
import signal
import socket
import sqlite3
from pathlib import Path

import psutil
import pytest

from conftest import TASKS, processes_under, wait_for
from providers.local.process import ProcessRecord, find_tagged
from providers.ray.local import temp_root

TARGET = f"{TASKS}/ray_tasks.py"
REUSE_URN = "urn:engine:ray_reuse::local:ray:Cluster::cluster"


def _nothing_left(tmp_path, stack: str, names=()):
    assert not processes_under(tmp_path)
    assert not find_tagged(f"{stack}-", prefix=True)
    for name in names:  # Ray's temp dirs (sockets, logs) go with the cluster
        assert not glob.glob(temp_root(name) + "-*"), name


def _listening(procs) -> set[str]:
    """Addresses the cluster listens on; Ray's short-lived helpers may exit while we look."""
    found = set()
    for p in procs:
        try:
            found |= {c.laddr.ip for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.slow
def test_remote_tasks_run_on_every_node_and_nothing_is_left(engine, tmp_path):
    doc = engine.json("up", f"{TARGET}:survey")
    assert doc["status"] == "succeeded"
    out = doc["outputs"]
    assert out["alive"] == 2, out  # the head and one worker replica
    assert out["ran_on"] is True  # a remote call pinned to each alive node came back
    assert out["env"] == ["yes"]  # runtime_env's env_vars reached the remote tasks
    assert out["address"].startswith("127.0.0.1:")
    # requests and ray_start_params reached `ray start`: one CPU per node, the head's memory,
    # the workers' custom resource.
    assert out["resources"]["CPU"] == 2 and out["resources"]["taskrig_w"] == 1
    assert out["resources"]["memory"] >= 512 * 2**20
    created = [s for s in doc["applied"] if s["op"] == "create"]
    assert len(created) == 1 and created[0]["type"] == "local:ray:Cluster"
    assert list(created[0]["outputs"]["workers"]) == ["w-0"]
    assert [s["op"] for s in doc["teardown"]] == ["delete"]
    _nothing_left(tmp_path, "ray_t", [Path(created[0]["outputs"]["log_dir"]).name])
    assert engine.resources() == []
    assert [r["status"] for r in engine.runs()] == ["succeeded"]


@pytest.mark.slow
def test_kill_9_during_the_task_then_destroy_leaves_nothing(engine, tmp_path):
    marker = tmp_path / "task-started"
    p = engine.spawn("up", f"{TARGET}:slow", "-i", f"marker={marker}")
    wait_for(marker.exists, 120, what="the task body to start")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    assert find_tagged("ray_t-", prefix=True), "the cluster should have outlived the engine"
    r = engine("destroy", "ray_t")
    assert r.returncode == 0, r.stderr
    _nothing_left(tmp_path, "ray_t")
    assert engine.resources() == []
    assert engine.journal_open() == []
    runs = engine.runs()
    assert runs[0]["status"] == "crashed" and "died during running" in runs[0]["error"]


@pytest.mark.slow
def test_reusable_cluster_is_kept_scaled_in_place_and_read_back(engine, tmp_path):
    up = lambda n: engine.json("up", f"{TARGET}:reuse_survey", env={"RAY_REPLICAS": str(n)})  # noqa: E731
    first = up(1)
    assert first["outputs"]["alive"] == 2 and first["outputs"]["ran_on"]
    address = first["outputs"]["address"]
    kept = find_tagged("ray_reuse-", prefix=True)
    assert kept, "a reusable cluster outlives its run"
    listening = _listening(kept)
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening

    # More replicas: worker nodes are added to the running cluster, the head stays.
    second = up(2)
    assert [s["op"] for s in second["steps"]] == ["update"]
    assert second["outputs"]["alive"] == 3 and second["outputs"]["ran_on"]
    assert second["outputs"]["address"] == address

    # A worker node dies: refresh records the replicas that actually run, the next run restores them.
    rec = engine.json("state", "show", REUSE_URN)
    victim = rec["outputs"]["workers"]["w-1"]
    os.kill(victim["pid"], signal.SIGTERM)
    wait_for(lambda: not ProcessRecord.from_dict(victim).alive(), 30, what="the worker node to stop")
    engine.json("refresh", "ray_reuse")
    assert engine.json("state", "show", REUSE_URN)["inputs"]["worker_groups"]["w"]["replicas"] == 1
    third = up(2)
    assert [s["op"] for s in third["steps"]] == ["update"]
    assert third["outputs"]["alive"] == 3 and third["outputs"]["address"] == address

    # Fewer replicas: worker nodes are removed in place.
    fourth = up(1)
    assert [s["op"] for s in fourth["steps"]] == ["update"]
    assert fourth["outputs"]["alive"] == 2 and fourth["outputs"]["address"] == address

    # The head dies: read notices (the record is dropped) and nothing of the cluster is left.
    head = engine.json("state", "show", REUSE_URN)["outputs"]["head"]
    os.killpg(head["pid"], signal.SIGKILL)
    assert engine.json("refresh", "ray_reuse") == {"ray_reuse": []}
    assert engine.resources() == []
    _nothing_left(tmp_path, "ray_reuse", [rec["id"]])


@pytest.mark.slow
def test_address_reads_an_existing_cluster_and_provisions_nothing(engine, tmp_path):
    first = engine.json("up", f"{TARGET}:reuse_survey")  # a cluster to point at
    rec = engine.json("state", "show", REUSE_URN)
    address = rec["outputs"]["address"]
    # Auth for somebody else's cluster is the user's: here, its token file in the environment.
    env = {"RAY_TEST_ADDRESS": address, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": rec["outputs"]["auth_token_path"]}
    plan = engine.json("preview", f"{TARGET}:existing_survey", env=env)
    assert [s["op"] for s in plan["steps"]] == ["read"]
    doc = engine.json("up", f"{TARGET}:existing_survey", env=env)
    assert [s["op"] for s in doc["steps"]] == ["read"] and doc["teardown"] == []
    assert doc["outputs"]["address"] == address
    assert doc["outputs"]["nodes"] == first["outputs"]["nodes"] and doc["outputs"]["ran_on"]
    assert [r["urn"] for r in engine.resources()] == [REUSE_URN]  # nothing recorded for ray_addr
    assert ProcessRecord.from_dict(rec["outputs"]["head"]).alive(), "reading must not stop it"

    with socket.socket() as s:  # an address where nothing listens: the read fails, nothing starts
        s.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{s.getsockname()[1]}"
    r = engine("up", f"{TARGET}:existing_survey", env={"RAY_TEST_ADDRESS": nowhere})
    assert r.returncode == 1 and "was not found" in r.stderr, r.stderr

    assert engine("destroy", "ray_reuse").returncode == 0
    _nothing_left(tmp_path, "ray_reuse", [rec["id"]])
    assert engine.resources() == []


@pytest.mark.parametrize("bad,needles", [
    ("replicas", ["WorkerNodeConfig.replicas", "greater than or equal to 0"]),
    ("unknown", ["WorkerNodeConfig.replicaz", "Unexpected keyword argument"]),
    ("max", ["WorkerNodeConfig.max_replicas", "at least replicas (3)"]),
    ("param", ["plugin_config.head_node_config.ray_start_params.num-cpuz", "not an option of `ray start`"]),
])
def test_bad_config_exits_2_naming_the_field_and_leaves_the_state_alone(engine, bad, needles):
    assert engine("up", f"{TASKS}/plain.py:add", "-i", "a=1").returncode == 0  # a state to keep intact
    conn = sqlite3.connect(engine.state)
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    before = hashlib.sha256(engine.state.read_bytes()).hexdigest()
    for cmd in ("up", "preview"):
        r = engine(cmd, f"{TASKS}/ray_bad.py:t", env={"RAY_BAD": bad})
        assert r.returncode == 2, (r.stdout, r.stderr)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and all(n in lines[0] for n in needles), r.stderr
    assert hashlib.sha256(engine.state.read_bytes()).hexdigest() == before
    assert not find_tagged("ray_bad-", prefix=True)


@pytest.mark.slow
def test_two_runs_in_one_process_each_reach_their_own_cluster(engine, tmp_path):
    """The Python API: Ray caches its auth token and loopback switch per process; each run
    sets them for its own cluster (a fresh token each time) and puts them back after."""
    import ray
    import ray._private.ray_constants as ray_constants

    import engine as flyte
    from tasks import ray_tasks

    session = flyte.with_runcontext(state=engine.state)
    first, run1 = session.run(ray_tasks.survey)
    second, run2 = session.run(ray_tasks.survey)
    assert run1["status"] == run2["status"] == "succeeded"
    assert first["alive"] == second["alive"] == 2 and first["ran_on"] and second["ran_on"]
    assert first["nodes"] != second["nodes"]  # two clusters, one after the other
    assert not ray.is_initialized()
    assert ray_constants.ENABLE_RAY_CLUSTER is True
    assert "RAY_ADDRESS" not in os.environ and "RAY_AUTH_TOKEN_PATH" not in os.environ
    _nothing_left(tmp_path, "ray_t")
