"""Pulumi programs the engine runs in-process: the repo's own ``stacks/`` (previewed with no
``pulumi`` binary and no cluster; applied, left unchanged and destroyed on a real API server
with the test playing the Dask Operator), the connector service component applied there (the
test playing the Deployment controller: no kubelet, no controller-manager), and the errors a
program can meet. No Pulumi CLI or service anywhere."""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import ROOT
from k8s_fixture import objects

PROGRAMS = Path(__file__).resolve().parent / "programs"
CONNECTORS = PROGRAMS / "connectors"


# ------------------------------------------------------------------------------ no cluster
def test_preview_stacks_without_pulumi_binary_or_cluster(engine):
    """``engine preview stacks/``: the program runs in-process; no pulumi on the PATH, no
    kubeconfig, no state written. The plan follows the program, each child under its component."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if not (Path(p) / "pulumi").exists())
    env = {"PATH": path, "KUBECONFIG": str(engine.cwd / "no-such-kubeconfig"), "PULUMI_STACK": "dev"}
    assert shutil.which("pulumi", path=path) is None
    r = engine("preview", str(ROOT / "stacks"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["stack"] == "taskrig-dev"
    assert [(s["op"], s["type"], s["urn"].rsplit("::", 1)[1]) for s in plan["steps"]] == [
        ("create", "kubernetes:core/v1:Namespace", "namespace"),
        ("create", "kubernetes:core/v1:ServiceAccount", "dask"),
        ("create", "kubernetes:rbac.authorization.k8s.io/v1:Role", "dask"),
        ("create", "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "dask"),
        ("create", "taskrig:dask:DaskCluster", "analytics"),
        ("create", "kubernetes:kubernetes.dask.org/v1:DaskCluster", "analytics"),
    ]
    cluster = plan["steps"][-1]["inputs"]
    assert cluster["metadata"] == {"name": "analytics", "namespace": "analytics",
                                   "labels": {"app.kubernetes.io/managed-by": "taskrig",
                                              "taskrig/stack": "taskrig-dev"}}
    assert cluster["spec"]["worker"]["replicas"] == 2 and isinstance(cluster["spec"]["worker"]["replicas"], int)
    assert not engine.state.exists()


def _program(tmp_path: Path, main: str, name: str = "p", files: dict | None = None) -> Path:
    prog = tmp_path / name
    (prog / "src").mkdir(parents=True)
    (prog / "Pulumi.yaml").write_text(f"name: {name}\nruntime: python\nmain: src/\n")
    (prog / "src" / "__main__.py").write_text(main)
    for fname, text in (files or {}).items():
        (prog / "src" / fname).write_text(text)
    return prog


def test_unknown_kubernetes_kind_is_an_error_naming_it(engine, tmp_path):
    prog = _program(tmp_path, "import pulumi_kubernetes as k8s\n"
                              "k8s.networking.v1.Ingress('web', metadata={'name': 'web'})\n")
    r = engine("preview", str(prog))
    assert r.returncode == 2, r.stderr
    assert "kubernetes:networking.k8s.io/v1:Ingress is not a kind" in r.stderr and "core/v1:Namespace" in r.stderr


def test_program_exception_names_the_line(engine, tmp_path):
    prog = _program(tmp_path, "import pulumi\n\nraise ValueError('no region configured')\n")
    r = engine("preview", str(prog))
    assert r.returncode == 2
    assert "raised ValueError: no region configured" in r.stderr and "__main__.py:3" in r.stderr


def test_what_the_runner_cannot_do_is_an_error_saying_what_to_do(engine, tmp_path):
    """An explicit provider (another cluster) would be silently ignored, and an encrypted
    config value cannot be decrypted without Pulumi's secrets provider: both are errors."""
    prog = _program(tmp_path, "import pulumi, pulumi_kubernetes as k8s\n"
                              "p = k8s.Provider('other', context='prod')\n"
                              "k8s.core.v1.ConfigMap('c', opts=pulumi.ResourceOptions(provider=p))\n")
    r = engine("preview", str(prog))
    assert r.returncode == 2 and "creates the provider 'other'" in r.stderr and "drop the provider=" in r.stderr
    prog = _program(tmp_path, "import pulumi\npulumi.Config().require_secret('token')\n", "q")
    (prog / "Pulumi.dev.yaml").write_text("config:\n  q:token:\n    secure: v1:AAAABBBB\n")
    r = engine("preview", str(prog))
    assert r.returncode == 2 and "config 'q:token' of stack dev is encrypted" in r.stderr, r.stderr


def test_two_programs_with_same_named_modules_do_not_leak(tmp_path):
    """Each program's own ``helpers.py`` is its own, though both run in one process."""
    from engine import Session

    main = "import helpers, pulumi_kubernetes as k8s\nk8s.core.v1.ConfigMap('cm', data={'v': helpers.VALUE})\n"
    one = _program(tmp_path, main, "one", {"helpers.py": "VALUE = 'one'\n"})
    two = _program(tmp_path, main, "two", {"helpers.py": "VALUE = 'two'\n"})
    session = Session(state=tmp_path / "state.db")
    values = [session.preview_program(str(p)).steps[0].inputs["data"]["v"] for p in (one, two, one)]
    assert values == ["one", "two", "one"]


def test_secrets_stay_out_of_the_plan(engine, tmp_path):
    """A Secret's data is secret even unmarked (as Pulumi's kubernetes provider has it); a
    value marked secret anywhere is a placeholder in the plan."""
    prog = _program(tmp_path, "import pulumi, pulumi_kubernetes as k8s\n"
                              "k8s.core.v1.Secret('s', string_data={'k': 'plain-value'})\n"
                              "k8s.core.v1.ConfigMap('c', data={'k': pulumi.Output.secret('marked-value')})\n")
    r = engine("preview", str(prog), "--json")
    assert r.returncode == 0, r.stderr
    assert "plain-value" not in r.stdout and "marked-value" not in r.stdout and "(secret hmac:" in r.stdout
    steps = {s["type"]: s["inputs"] for s in json.loads(r.stdout)["steps"]}
    assert steps["kubernetes:core/v1:Secret"]["metadata"] == {"name": "s"}  # named like its resource


# ------------------------------------------------------------------------------ real API server
def dask_pods_running(k8s, namespace: str, cluster: str) -> int:
    pods = k8s.cluster().pods(namespace, f"dask.org/cluster-name={cluster}")
    return sum(p["status"].get("phase") == "Running" for p in pods)


def _get(k8s, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
    from providers.kubernetes.generic import KINDS, KubernetesObject

    return KubernetesObject()._get(k8s.cluster(), KINDS[(api_version, kind)], namespace, name)


@pytest.mark.slow
def test_stacks_up_no_changes_destroy(kengine, k8s, tmp_path):
    """``engine up stacks/``: the namespace, service account, RBAC and DaskCluster exist (the
    real Dask operator runs its scheduler and 3 workers from the task image); a second up
    changes nothing; ``engine destroy`` removes them (the namespace goes, or is Terminating)."""
    if not k8s.task_image:
        pytest.skip("no task image (TASKRIG_TASK_IMAGE) for the Dask pods")
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", proj)
    shutil.copytree(ROOT / "stacks", proj / "stacks", ignore=shutil.ignore_patterns("__pycache__"))
    team = f"{k8s.namespace}-team"
    (proj / "Pulumi.test.yaml").write_text(f"config:\n  taskrig:namespace: {team}\n  taskrig:workers: 3\n"
                                           f"  taskrig:image: {k8s.task_image}\n  taskrig:cpu: 250m\n"
                                           "  taskrig:worker_memory: 512Mi\n")
    env = {"PULUMI_STACK": "test"}

    r = kengine("up", str(proj / "stacks"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["summary"]["create"] == 6 and doc["status"] == "succeeded"
    assert dask_pods_running(k8s, team, "analytics") == 4

    ns = _get(k8s, "v1", "Namespace", None, team)
    assert ns["metadata"]["labels"]["team"] == team
    assert any(f["manager"] == "taskrig" for f in ns["metadata"]["managedFields"])
    assert _get(k8s, "v1", "ServiceAccount", team, "dask") is not None
    binding = _get(k8s, "rbac.authorization.k8s.io/v1", "RoleBinding", team, "dask")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "dask", "namespace": team}]
    (dask,) = objects(k8s, "DaskCluster", "taskrig-test", team)
    assert dask["metadata"]["namespace"] == team and dask["spec"]["worker"]["replicas"] == 3

    r = kengine("preview", str(proj / "stacks"), "--detailed-exitcode", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    r = kengine("up", str(proj / "stacks"), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"] == {"create": 0, "update": 0, "replace": 0, "delete": 0, "options": 0, "same": 6}

    # Drift: a label the program sets, changed out of band, is found by refresh and put back.
    from providers.kubernetes.generic import KINDS, _request

    _request(k8s.cluster(), "label", "PATCH", KINDS[("v1", "Namespace")].path(None, team),
             {"metadata": {"labels": {"team": "someone-else"}}}, "application/merge-patch+json")
    r = kengine("refresh", "taskrig-test")
    assert r.returncode == 0 and "changed out of band" in r.stderr, r.stderr
    (step,) = [s for s in kengine.json("preview", str(proj / "stacks"), env=env)["steps"] if s["op"] != "same"]
    assert step["op"] == "update" and step["diff"] == {"metadata.labels.team": {"old": "someone-else", "new": team}}
    assert kengine("up", str(proj / "stacks"), env=env).returncode == 0
    assert _get(k8s, "v1", "Namespace", None, team)["metadata"]["labels"]["team"] == team

    r = kengine("destroy", "taskrig-test")
    assert r.returncode == 0, r.stderr
    assert objects(k8s, "DaskCluster", "taskrig-test", team) == []
    assert _get(k8s, "v1", "ServiceAccount", team, "dask") is None
    assert _get(k8s, "rbac.authorization.k8s.io/v1", "Role", team, "dask") is None
    ns = _get(k8s, "v1", "Namespace", None, team)
    assert ns is None or ns["status"]["phase"] == "Terminating"
    assert kengine.resources() == [] and kengine.journal_open() == []


@pytest.mark.slow
def test_connector_service_on_the_api_server(kengine, k8s):
    """ConnectorServiceComponent applied for real: the Deployment waits for its rollout (two
    pods of the task image serving gRPC, ready by their health probes), mounts the Secret,
    whose value reaches the cluster but not the state; a second up changes nothing; a rotated
    secret updates the Secret alone; destroy removes all three."""
    if not k8s.task_image:
        pytest.skip("no task image (TASKRIG_TASK_IMAGE) for the connector service's pods")
    env = {"CONNECTOR_TOKEN": "tok-first-7f3a", "CONNECTOR_IMAGE": k8s.task_image}
    p = kengine.spawn("up", str(CONNECTORS), "--json", env=env)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err
    doc = json.loads(out)
    assert doc["summary"]["create"] == 4

    ns = k8s.namespace
    dep = _get(k8s, "apps/v1", "Deployment", ns, "connectors")
    assert dep["status"]["readyReplicas"] == 2 and dep["status"]["observedGeneration"] == 1, dep["status"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"][:3] == ["engine", "connectors", "serve"] and dep["spec"]["replicas"] == 2
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = c[probe]["exec"]["command"]
        assert command[:2] == ["python", "-c"] and "grpc_health" in command[2], probe
    assert {"name": "ENGINE_SECRETS_DIR", "value": "/etc/taskrig/secrets"} in c["env"]
    assert dep["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] == "connectors-secrets"
    service = _get(k8s, "v1", "Service", ns, "connectors")
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 8000 and service["spec"]["clusterIP"]
    secret = _get(k8s, "v1", "Secret", ns, "connectors-secrets")
    assert base64.b64decode(secret["data"]["TRAIN_TOKEN"]).decode() == "tok-first-7f3a"
    assert b"tok-first-7f3a" not in kengine.state.read_bytes()
    outputs = {r["urn"].rsplit("::", 1)[1] + ":" + r["type"].rsplit(":", 1)[1]: r["outputs"]
               for r in kengine.resources()}
    assert outputs["connectors:Service"]["host"] == f"connectors.{ns}.svc.cluster.local"

    r = kengine("preview", str(CONNECTORS), "--detailed-exitcode", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    # Read back, server defaults and a Secret's base64 data are not drift.
    r = kengine("refresh", "connectors-dev")
    assert r.returncode == 0, r.stderr
    assert "changed out of band" not in r.stderr and "no longer exists" not in r.stderr, r.stderr

    rotated = {"CONNECTOR_TOKEN": "tok-second-91bc", "CONNECTOR_IMAGE": k8s.task_image}
    plan = kengine.json("preview", str(CONNECTORS), env=rotated)
    changed = [(s["op"], s["type"]) for s in plan["steps"] if s["op"] != "same"]
    assert changed == [("update", "kubernetes:core/v1:Secret")], plan
    assert "tok-second" not in json.dumps(plan)
    r = kengine("up", str(CONNECTORS), env=rotated)
    assert r.returncode == 0, r.stderr
    secret = _get(k8s, "v1", "Secret", ns, "connectors-secrets")
    assert base64.b64decode(secret["data"]["TRAIN_TOKEN"]).decode() == "tok-second-91bc"

    r = kengine("destroy", "connectors-dev")
    assert r.returncode == 0, r.stderr
    for api_version, kind, name in (("apps/v1", "Deployment", "connectors"), ("v1", "Service", "connectors"),
                                    ("v1", "Secret", "connectors-secrets")):
        assert _get(k8s, api_version, kind, k8s.namespace, name) is None, kind
    assert kengine.resources() == []


@pytest.mark.slow
def test_deployment_that_never_rolls_out_times_out_and_is_removed(kengine, k8s):
    """An image no registry serves (every pull on the local node goes to 127.0.0.1:1): the
    readiness wait is bounded, names the Deployment and what to do, and the failed create
    leaves nothing behind."""
    env = {"CONNECTOR_TOKEN": "t", "ENGINE_K8S_READY_TIMEOUT": "2"}
    t0 = time.monotonic()
    r = kengine("up", str(CONNECTORS), env=env)
    assert r.returncode != 0
    assert time.monotonic() - t0 < 120
    assert f"Deployment {k8s.namespace}/connectors" in r.stderr and "not ready after 2 s" in r.stderr, r.stderr
    assert _get(k8s, "apps/v1", "Deployment", k8s.namespace, "connectors") is None
