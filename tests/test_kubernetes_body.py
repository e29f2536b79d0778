"""The task body in a pod on the kubernetes backend, against real pods: the seed's example on 4
worker pods through the real Dask operator, the same result on both backends, the pod's log
streamed, a traceback from the pod, OOMKilled, an image that does not exist, data on a real
S3-compatible server (moto), and kill -9 of the engine while the body runs or it tears down.
After each, nothing of the run is left: no DaskCluster, pod, Service, Secret, bundle or data."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import EXAMPLES, TASKS, wait_for
from k8s_fixture import objects

pytestmark = pytest.mark.slow

BODY = f"{TASKS}/k8s_body.py"
SEED = f"{EXAMPLES}/dask_example.py:process_data"


def _core(k8s):
    from kubernetes import client

    return client.CoreV1Api(k8s.cluster().api.api_client)


def _pods(k8s, stack: str, role: str | None = None) -> list:
    selector = f"taskrig/stack={stack}" + (f",taskrig/role={role}" if role else "")
    return _core(k8s).list_namespaced_pod(k8s.namespace, label_selector=selector).items


def _data_left(k8s, stack: str) -> list[str]:
    folder = Path(urlparse(k8s.data_url).path) / stack if k8s.data_url and k8s.data_url.startswith("file://") else None
    return sorted(str(p) for p in folder.rglob("*")) if folder and folder.exists() else []


def assert_nothing_left(kengine, k8s, stack: str) -> None:
    core = _core(k8s)
    sel = f"taskrig/stack={stack}"
    assert objects(k8s, "DaskCluster", stack) == []
    assert [p.metadata.name for p in core.list_namespaced_pod(k8s.namespace, label_selector=sel).items] == []
    assert [s.metadata.name for s in core.list_namespaced_service(k8s.namespace, label_selector=sel).items] == []
    assert [s.metadata.name for s in core.list_namespaced_secret(k8s.namespace, label_selector=sel).items] == []
    assert _data_left(k8s, stack) == []
    assert kengine.resources() == [] and kengine.journal_open() == []


def test_the_seed_example_runs_its_body_in_a_pod_on_4_worker_pods(kengine, k8s):
    """The body ran in the runner pod (its hostname, KUBERNETES_SERVICE_HOST), the map ran on
    the 4 worker pods the operator made (all Running while it ran), its print came through the
    engine's own output as the pod wrote it, and nothing of the run is left."""
    p = kengine.spawn("up", BODY + ":where", "-i", "data=[1,2,3,4,5,6,7,8]", "--json")
    seen_workers, runner = set(), None
    deadline = time.monotonic() + 240
    while p.poll() is None and time.monotonic() < deadline:
        pods = _pods(k8s, "k8s_body")
        running = [q for q in pods if q.status.phase == "Running"]
        workers = {q.metadata.name for q in running if (q.metadata.labels or {}).get("dask.org/component") == "worker"}
        if len(workers) == 4:
            seen_workers = workers
        runner = runner or next((q.metadata.name for q in running
                                 if (q.metadata.labels or {}).get("taskrig/role") == "body"), None)
        time.sleep(0.2)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    doc = json.loads(out)["outputs"]
    assert doc["result"] == [1, 4, 9, 16, 25, 36, 49, 64]
    assert doc["in_cluster"] and doc["hostname"] == runner, (doc, runner)
    assert len(seen_workers) == 4 and doc["worker_hosts"] == sorted(seen_workers)
    assert set(doc["computed_on"]) <= seen_workers
    assert "squares computed by 4 workers" in err, err  # the pod's log, streamed (--json: on stderr)
    assert_nothing_left(kengine, k8s, "k8s_body")


def test_same_task_same_code_same_result_on_both_backends(kengine, k8s):
    """The seed's example, unchanged: in-process on local workers, in a pod on worker pods."""
    results = {}
    for backend in ("local", "kubernetes"):
        r = kengine("up", SEED, "-i", "data=[3,1,4,1,5,9,2,6]", "--backend", backend, "--json")
        assert r.returncode == 0, r.stderr
        results[backend] = json.loads(r.stdout)["outputs"]
    assert results["local"] == results["kubernetes"] == [9, 1, 16, 1, 25, 81, 4, 36]
    assert_nothing_left(kengine, k8s, "dask_env")


@pytest.fixture
def s3(k8s, monkeypatch):
    """A real S3-compatible server (moto) where the pods reach it: on the node's own address."""
    if not k8s.local:
        pytest.skip("moto listens on the local node's address; another cluster's pods cannot reach it")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=urlparse(k8s.url).hostname, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "taskrig-test",
           "AWS_SECRET_ACCESS_KEY": "s3cr3t-of-the-data-location", "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    client.create_bucket(Bucket="runs")
    try:
        yield env | {"ENGINE_DATA_URL": "s3://runs/taskrig"}, client
    finally:
        server.stop()


def test_a_body_that_raises_in_its_pod_with_data_on_s3(kengine, k8s, s3):
    """The body's traceback from the pod, printed by the engine, exit 1; the bundle and data
    went through S3 and are gone from it; the data location's secret key reached the pod only
    through a Secret of the run, which is gone too."""
    env, client = s3
    p = kengine.spawn("up", BODY + ":boom", "-i", "n=7", env=env)
    pod_env = wait_for(lambda: next((q.spec.containers[0] for q in _pods(k8s, "k8s_body1", "body")), None), 180,
                       what="the body's pod")
    out, err = p.communicate(timeout=180)
    assert p.returncode == 1, err
    assert "ValueError: boom from the pod k8s-body1-" in err and "at 7" in err, err
    assert "Traceback (most recent call last)" in err and "k8s_body.py" in err and "_nested_failure" in err, err
    assert env["AWS_SECRET_ACCESS_KEY"] not in json.dumps([e.to_dict() for e in pod_env.env or []])
    assert [f.secret_ref.name for f in pod_env.env_from or []], "the secret variables come from a Secret"
    assert env["AWS_SECRET_ACCESS_KEY"] not in Path(kengine.state).read_bytes().decode(errors="replace")
    assert client.list_objects_v2(Bucket="runs").get("KeyCount", 0) == 0
    (run,) = [r for r in kengine.runs() if r["stack"] == "k8s_body1"]
    assert run["status"] == "failed" and "boom from the pod" in run["error"]
    assert_nothing_left(kengine, k8s, "k8s_body1")


def test_a_reused_cluster_streams_logs_and_an_oom_kill_is_named(kengine, k8s):
    """A reusable environment keeps its DaskCluster and gives each run a pod of its own: the
    log lines arrive while the pod runs, not at its end; a body past its memory limit is
    reported OOMKilled with the limit, exit 1, and its pod and data go with the run."""
    p = kengine.spawn("up", BODY + ":chatty", "-i", "lines=6")
    first_line_at = None
    for line in p.stdout:
        if line.startswith("line 0 from k8s-body-kept-"):
            first_line_at = time.monotonic()
            break
    assert first_line_at is not None
    rest, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert time.monotonic() - first_line_at > 1.5, "line 0 came only when the pod ended"
    assert "line 5 from" in rest and rest.strip().endswith("6")
    (cluster,) = objects(k8s, "DaskCluster", "k8s_body_kept")

    r = kengine("up", BODY + ":hog")
    assert r.returncode == 1, r.stderr
    assert "OOMKilled" in r.stderr and "256Mi" in r.stderr, r.stderr
    assert objects(k8s, "DaskCluster", "k8s_body_kept")[0]["metadata"]["uid"] == cluster["metadata"]["uid"]
    assert _pods(k8s, "k8s_body_kept", "body") == [] and _data_left(k8s, "k8s_body_kept") == []
    assert kengine("destroy", "k8s_body_kept").returncode == 0
    assert_nothing_left(kengine, k8s, "k8s_body_kept")


def test_an_image_that_does_not_exist_is_one_line_well_before_the_timeout(kengine, k8s, tmp_path):
    image = "localhost/taskrig-no-such-image:1"
    t0 = time.monotonic()
    r = kengine("up", BODY + ":boom", env={"ENGINE_K8S_IMAGE": image, "ENGINE_K8S_READY_TIMEOUT": "120"})
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert image in line and any(x in line for x in ("ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull")), line
    assert took < 90, f"{took:.0f} s: the error waited for the ready timeout"
    assert_nothing_left(kengine, k8s, "k8s_body1")


@pytest.mark.parametrize("phase", ["body", "teardown"])
def test_kill9_while_the_body_runs_or_during_teardown(kengine, k8s, phase):
    """The next command on the stack leaves nothing in the cluster (the journal, then the
    labels) and marks the dead run crashed."""
    env = {"TASKRIG_FAULT_PAUSE": "delete:60"} if phase == "teardown" else None
    p = kengine.spawn("up", BODY + ":sleepy", "-i", f"seconds={1 if phase == 'teardown' else 120}", env=env)
    if phase == "body":
        wait_for(lambda: any(q.status.phase == "Running" for q in _pods(k8s, "k8s_body1", "body")), 180,
                 what="the body's pod to run")
    else:
        wait_for(lambda: kengine.journal_open("delete"), 180, what="the teardown's first delete intent")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    assert objects(k8s, "DaskCluster", "k8s_body1"), "the cluster should have outlived the engine"
    r = kengine("destroy", "k8s_body1") if phase == "body" else kengine("refresh", "k8s_body1")
    assert r.returncode == 0, r.stderr
    assert kengine.runs()[0]["status"] == "crashed"
    assert_nothing_left(kengine, k8s, "k8s_body1")
