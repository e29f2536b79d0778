"""The kubernetes backend against a real cluster (the project's own node, ``k8s_fixture``):
apply, the readiness wait, update in place versus replace, delete and NotFound, drift, the
orphan sweep after a ``kill -9``, and clear errors for an unreachable cluster or a missing CRD.

The real Dask operator makes the Dask pods; the PyTorchJob's operator is not there (a Go
program neither Debian nor PyPI ships), so those tests patch the status it would write.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import time

import pytest

from conftest import TASKS, wait_for
from k8s_fixture import FakeOperator, objects, patch_status, wait_objects  # noqa: F401

pytestmark = pytest.mark.slow

TARGET = f"{TASKS}/k8s_tasks.py"


def _plan(engine, *args, env=None):
    r = engine("preview", *args, "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _name(step: dict) -> str:
    return step["urn"].rsplit("::", 1)[1]


def _cluster_steps(plan: dict) -> list[dict]:
    return [s for s in plan["steps"] if _name(s) == "cluster"]


def test_up_applies_waits_for_the_operators_pods_and_deletes(kengine, k8s):
    """engine up creates the DaskCluster, the real Dask operator makes its scheduler and
    workers, the engine waits until those pods are up (not only for the operator's phase),
    runs the task, and deletes the object at teardown; the pods go with it."""
    p = kengine.spawn("up", f"{TARGET}:addr", "--json")
    (obj,) = wait_objects(k8s, "DaskCluster", "k8s_dask")
    meta = obj["metadata"]
    assert meta["namespace"] == k8s.namespace
    assert meta["labels"]["taskrig/stack"] == "k8s_dask" and meta["labels"]["taskrig/task"] == "k8s_dask.addr"
    assert meta["labels"]["taskrig/run-id"].startswith("r")
    assert any(f["manager"] == "taskrig" and f["operation"] == "Apply" for f in meta["managedFields"])
    assert obj["spec"]["worker"]["replicas"] == 2 and obj["spec"]["idleTimeout"] == 3600
    res = obj["spec"]["worker"]["spec"]["containers"][0]["resources"]
    assert res["limits"] == res["requests"] == {"cpu": "500m", "memory": "512Mi"}
    selector = f"dask.org/cluster-name={meta['name']}"
    up_before_exit, restarts = False, 0
    deadline = time.monotonic() + 180
    while p.poll() is None and time.monotonic() < deadline:
        pods = k8s.cluster().pods(k8s.namespace, selector)
        running = [q for q in pods if q["status"].get("phase") == "Running"]
        up_before_exit = up_before_exit or len(running) == 3
        restarts = max([restarts] + [c.get("restartCount", 0) for q in pods
                                     for c in q["status"].get("containerStatuses") or []])
        time.sleep(0.2)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert up_before_exit, "engine up went on before the scheduler and both workers were Running"
    assert restarts == 0, "a scheduler or worker container restarted (it failed to start in the image)"
    doc = json.loads(out)
    assert doc["outputs"] == f"tcp://{meta['name']}-scheduler.{k8s.namespace}.svc.cluster.local:8786"
    assert {t["op"] for t in doc["teardown"]} == {"delete"}
    assert objects(k8s, "DaskCluster", "k8s_dask") == []
    assert kengine.resources() == [] and kengine.journal_open() == []
    # Recorded deleted means what the operator made for it is gone too (not merely terminating).
    assert k8s.cluster().pods(k8s.namespace, selector) == []


def test_pytorch_job_up(kengine, k8s):
    """A PyTorchJob (status subresource): ready from its Running condition, the body gets
    the rendezvous endpoint, the job goes at teardown."""
    with FakeOperator(k8s, "PyTorchJob", "k8s_pt") as op:
        r = kengine("up", f"{TARGET}:rdzv", "--json")
    assert r.returncode == 0, r.stderr
    (name,) = op.patched
    assert json.loads(r.stdout)["outputs"] == f"{name}-worker-0.{k8s.namespace}.svc.cluster.local:29400"
    assert objects(k8s, "PyTorchJob", "k8s_pt") == []


def test_second_run_no_changes_then_update_in_place_then_replace(kengine, k8s):
    """A reusable cluster: the second run plans no change; more workers is an in-place update
    (same object, new replicas); a new scheduler image is a replacement (a new object)."""
    r = kengine("up", f"{TARGET}:reuse_addr")
    assert r.returncode == 0, r.stderr
    (first,) = objects(k8s, "DaskCluster", "k8s_reuse")

    plan = _plan(kengine, f"{TARGET}:reuse_addr")
    # the cluster is kept; the body's pod, bundle and inputs are each run's own
    assert {_name(s): s["op"] for s in plan["steps"]} == {"cluster": "same", "bundle": "create", "inputs": "create",
                                                          "runner": "create"}, plan
    r = kengine("up", f"{TARGET}:reuse_addr", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"]["same"] == 1

    more = {"K8S_T_WORKERS": "3"}
    plan = _plan(kengine, f"{TARGET}:reuse_addr", env=more)
    (step,) = _cluster_steps(plan)
    assert step["op"] == "update" and step["diff"] == {"spec.worker.replicas": {"old": 2, "new": 3}}
    r = kengine("up", f"{TARGET}:reuse_addr", env=more)
    assert r.returncode == 0, r.stderr
    (now,) = objects(k8s, "DaskCluster", "k8s_reuse")
    assert now["metadata"]["uid"] == first["metadata"]["uid"] and now["spec"]["worker"]["replicas"] == 3

    # the same image by another name (the local node tags it so): a new scheduler image
    new_image = {**more, "K8S_T_SCHED_IMAGE": k8s.task_image_alias}
    plan = _plan(kengine, f"{TARGET}:reuse_addr", env=new_image)
    (step,) = _cluster_steps(plan)
    assert step["op"] == "replace" and step["replace_keys"] == ["spec.scheduler.spec.containers[0].image"], step
    r = kengine("up", f"{TARGET}:reuse_addr", env=new_image)
    assert r.returncode == 0, r.stderr
    (replaced,) = objects(k8s, "DaskCluster", "k8s_reuse")
    assert replaced["metadata"]["uid"] != first["metadata"]["uid"]
    assert replaced["metadata"]["name"] == first["metadata"]["name"]

    r = kengine("destroy", "k8s_reuse")
    assert r.returncode == 0, r.stderr
    assert objects(k8s, "DaskCluster", "k8s_reuse") == [] and kengine.resources() == []


def test_drift_changed_and_deleted_out_of_band(kengine, k8s):
    """refresh notices a field we declare changed by someone else (and the next plan puts it
    back), and an object deleted out of band (dropped from the state; the next plan creates)."""
    assert kengine("up", f"{TARGET}:reuse_addr").returncode == 0
    (obj,) = objects(k8s, "DaskCluster", "k8s_reuse")
    c, meta = k8s.cluster(), obj["metadata"]
    c._call("scale", c.api.patch_namespaced_custom_object, "kubernetes.dask.org", "v1", meta["namespace"],
            "daskclusters", meta["name"], {"spec": {"worker": {"replicas": 7}}},
            _content_type="application/merge-patch+json")
    r = kengine("refresh", "k8s_reuse")
    assert r.returncode == 0 and "changed out of band" in r.stderr, r.stderr
    (step,) = _cluster_steps(_plan(kengine, f"{TARGET}:reuse_addr"))
    assert step["op"] == "update" and step["diff"] == {"spec.worker.replicas": {"old": 7, "new": 2}}
    assert kengine("up", f"{TARGET}:reuse_addr").returncode == 0
    assert objects(k8s, "DaskCluster", "k8s_reuse")[0]["spec"]["worker"]["replicas"] == 2

    c.delete("kubernetes.dask.org", "v1", "daskclusters", meta["namespace"], meta["name"])
    r = kengine("refresh", "k8s_reuse")
    assert r.returncode == 0 and "no longer exists (drift)" in r.stderr, r.stderr
    assert kengine.resources() == []
    assert [s["op"] for s in _cluster_steps(_plan(kengine, f"{TARGET}:reuse_addr"))] == ["create"]


def _kill_while_provisioning(kengine, k8s, tmp_path):
    """engine up, killed -9 while it waits for the cluster to become ready (the scheduler's
    readiness probe waits 5 s: the kill comes first)."""
    p = kengine.spawn("up", f"{TARGET}:addr")
    (obj,) = wait_objects(k8s, "DaskCluster", "k8s_dask")
    wait_for(lambda: kengine.journal_open("create"), 30, what="the create intent")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    assert kengine.run_status() == ["provisioning"]
    return obj


def test_kill9_during_provisioning_is_recovered(kengine, k8s, tmp_path):
    """The journal's open create intent: the next command reads the object back by its name
    and deletes it; the dead run is marked crashed."""
    _kill_while_provisioning(kengine, k8s, tmp_path)
    r = kengine("destroy", "k8s_dask")
    assert r.returncode == 0, r.stderr
    assert "half-created by the dead run" in r.stderr, r.stderr
    assert objects(k8s, "DaskCluster", "k8s_dask") == []
    assert kengine.runs()[0]["status"] == "crashed" and kengine.journal_open() == []


def test_orphan_sweep_by_label(kengine, k8s, tmp_path):
    """With the intent lost too (closed by hand, as if the journal row never made it), only
    the labels remember: the sweep deletes the dead run's object, and leaves alone an object
    of the same stack made by a run this state does not know (another engine's)."""
    obj = _kill_while_provisioning(kengine, k8s, tmp_path)
    conn = sqlite3.connect(kengine.state)
    conn.execute("update journal set status='failed' where status='open'")
    conn.commit()
    conn.close()
    foreign = json.loads(json.dumps(obj))
    foreign["metadata"] = {"name": "someone-elses", "namespace": k8s.namespace,
                           "labels": {**obj["metadata"]["labels"], "taskrig/run-id": "r1999"}}
    c = k8s.cluster()
    c.apply("kubernetes.dask.org", "v1", "daskclusters", k8s.namespace, "someone-elses", foreign)

    r = kengine("refresh", "k8s_dask")
    assert r.returncode == 0, r.stderr
    assert "deleted the orphan" in r.stderr and obj["metadata"]["name"] in r.stderr, r.stderr
    assert [o["metadata"]["name"] for o in objects(k8s, "DaskCluster", "k8s_dask")] == ["someone-elses"]
    assert kengine.runs()[0]["status"] == "crashed"
    c.delete("kubernetes.dask.org", "v1", "daskclusters", k8s.namespace, "someone-elses")


def test_unreachable_cluster_is_a_clear_error(kengine, k8s, tmp_path):
    """A cluster nobody answers for: exit 1 within seconds, naming the API URL; the state
    records the failed run and no resource."""
    cfg = tmp_path / "dead.kubeconfig"
    text = open(k8s.kubeconfig).read()
    cfg.write_text(text.replace(k8s.url, "https://127.0.0.1:1"))
    t0 = time.monotonic()
    r = kengine("up", f"{TARGET}:addr", env={"KUBECONFIG": str(cfg)})
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - t0 < 60
    assert "cannot reach the Kubernetes API at https://127.0.0.1:1" in r.stderr, r.stderr
    assert kengine.resources() == []

    # A server that takes the connection and never answers (the TLS handshake hangs): the
    # connect timeout bounds it. On 127.0.0.1: no test packet may leave the machine.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        cfg.write_text(text.replace(k8s.url, url))
        t0 = time.monotonic()
        r = kengine("up", f"{TARGET}:addr", env={"KUBECONFIG": str(cfg), "ENGINE_K8S_CONNECT_TIMEOUT": "1"})
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - t0 < 45
    assert url in r.stderr, r.stderr


# ---------------------------------------------------------------- the provider, called directly
def _provider(kind):
    from providers.kubernetes import provider_for

    return provider_for(kind)()


def _pytorch_manifest(k8s, name):
    from providers.kubernetes.objects import Target, labels
    from providers.pytorch.config import Elastic
    from providers.pytorch.manifests import pytorch_job

    return pytorch_job(Elastic(nnodes="1:2", nproc_per_node=2),
                       Target(name=name, namespace=k8s.namespace, labels=labels("k8s_direct", "r1", "t")))


def test_status_subresource_readiness_failure_and_notfound(k8s):
    """PyTorchJob has a status subresource: readiness from its conditions; a Failed condition
    ends the wait with the operator's message and the create undoes itself; delete of a gone
    object is success."""
    p = _provider("PyTorchJob")
    m = p.check(_pytorch_manifest(k8s, "pt-ok"))
    with FakeOperator(k8s, "PyTorchJob", "k8s_direct"):
        id, outputs = p.create("urn", m, "pt-ok")
    assert id == f"{k8s.namespace}/pt-ok"
    assert outputs["rdzv_endpoint"] == f"pt-ok-worker-0.{k8s.namespace}.svc.cluster.local:29400"
    assert p.read(id, m, outputs) == outputs
    p.delete(id, m, outputs)
    assert p.read(id, m, outputs) is None
    p.delete(id, m, outputs)  # NotFound: success
    p.delete(f"{k8s.namespace}/never-was", m, None)

    import threading

    m2 = p.check(_pytorch_manifest(k8s, "pt-bad"))

    def fail_it():
        wait_objects(k8s, "PyTorchJob", "k8s_direct")
        patch_status(k8s, "PyTorchJob", k8s.namespace, "pt-bad", {"conditions": [
            {"type": "Failed", "status": "True", "reason": "ImagePullBackOff", "message": "no such image"}]})

    t = threading.Thread(target=fail_it)
    t.start()
    with pytest.raises(RuntimeError, match="ImagePullBackOff: no such image"):
        p.create("urn", m2, "pt-bad")
    t.join()
    assert objects(k8s, "PyTorchJob", "k8s_direct") == []


def test_readiness_deadline(k8s, monkeypatch):
    """Nobody marks it ready: the create gives up at the deadline, naming the status it saw,
    and deletes what it applied."""
    monkeypatch.setenv("ENGINE_K8S_READY_TIMEOUT", "1.5")
    p = _provider("PyTorchJob")
    with pytest.raises(TimeoutError, match="not ready after 2 s"):
        p.create("urn", p.check(_pytorch_manifest(k8s, "pt-slow")), "pt-slow")
    assert objects(k8s, "PyTorchJob", "k8s_direct") == []


def test_crd_not_installed(k8s):
    """The server has no RayCluster CRD: the manifest validates offline, the apply fails
    naming the resource and the server."""
    from providers.kubernetes.objects import Target
    from providers.ray.config import RayJobConfig, WorkerNodeConfig
    from providers.ray.manifests import ray_cluster

    p = _provider("RayCluster")
    m = p.check(ray_cluster(RayJobConfig(worker_node_config=[WorkerNodeConfig(group_name="g")]),
                            Target(name="rc", namespace=k8s.namespace)))
    with pytest.raises(Exception, match=r"does not serve rayclusters\.ray\.io/v1: is the CustomResourceDefinition "
                                        r"installed") as e:
        p.create("urn", m, "rc")
    assert k8s.url in str(e.value)
