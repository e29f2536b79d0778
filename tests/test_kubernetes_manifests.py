"""The kubernetes backend without a cluster: every plugin's preview lists its operator's
custom resource, valid against the official CRD; a config that would make an invalid object
is a clear error naming the field before anything is touched; and the CRD translation keeps
the API server's semantics (made strict where the server would silently drop a field)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import EXAMPLES, TASKS
from providers.kubernetes import provider_for, schema
from providers.kubernetes.objects import dns_name, label_value

PREVIEWS = [
    # (target, kind, resource name); the seed example for Dask, a task per other plugin
    (f"{EXAMPLES}/dask_example.py:process_data", "DaskCluster", "cluster"),
    (f"{TASKS}/k8s_plugins.py:ray_task", "RayCluster", "cluster"),
    (f"{TASKS}/k8s_plugins.py:spark_task", "SparkApplication", "cluster"),
    (f"{TASKS}/k8s_plugins.py:pytorch_task", "PyTorchJob", "elastic"),
]
# Each plugin's own example, where its owner has written one.
PREVIEWS += [(f"{p}:{t}", k, n) for p, t, k, n in (
    (EXAMPLES / "ray_example.py", "", "RayCluster", "cluster"),
    (EXAMPLES / "spark_example.py", "", "SparkApplication", "cluster"),
    (EXAMPLES / "pytorch_example.py", "", "PyTorchJob", "elastic")) if p.exists() and t]


def _errors(manifest: dict) -> list:
    cls = provider_for(manifest["kind"])
    return schema.errors(manifest, cls.group, cls.version, cls.kind, cls.plural)


# Where a body that runs in a pod gets its code and inputs, and the image it runs from.
BODY_ENV = {"ENGINE_DATA_URL": "s3://taskrig-runs/ci", "ENGINE_K8S_IMAGE": "registry.example/taskrig-task:1"}


@pytest.mark.parametrize("target,kind,name", PREVIEWS, ids=[k for _, k, _ in PREVIEWS])
def test_preview_lists_the_custom_resource(engine, target, kind, name):
    r = engine("preview", target, "--backend", "kubernetes", "--json", env=BODY_ENV)
    assert r.returncode == 0, r.stderr
    steps = json.loads(r.stdout)["steps"]
    (step,) = [s for s in steps if s["type"].endswith(f":{kind}")]
    if kind == "DaskCluster":  # the body runs in a pod of its own beside the cluster
        by_name = {s["urn"].rsplit("::", 1)[1]: s for s in steps}
        assert sorted(by_name) == ["bundle", "cluster", "inputs", "runner"]
        run = by_name["inputs"]["inputs"]["owns"]
        assert run.startswith("s3://taskrig-runs/ci/dask_env/r")
        assert by_name["bundle"]["inputs"]["url"] == f"{run}/bundle.tar.gz"
        assert "content" not in by_name["bundle"]["inputs"], "the code is not in the plan or the state"
        pod = by_name["runner"]["inputs"]
        (c,) = pod["spec"]["containers"]
        assert c["image"] == BODY_ENV["ENGINE_K8S_IMAGE"] and pod["spec"]["restartPolicy"] == "Never"
        assert c["command"][:5] == ["python3", "-m", "engine.runner", "--run", run]
        address = f"tcp://{step['inputs']['metadata']['name']}-scheduler.default.svc.cluster.local:8786"
        assert {"name": "DASK_SCHEDULER_ADDRESS", "value": address} in c["env"]
        assert pod["metadata"]["labels"]["taskrig/run-id"] == step["inputs"]["metadata"]["labels"]["taskrig/run-id"]
    cls = provider_for(kind)
    assert step["op"] == "create" and step["type"] == f"kubernetes:{cls.group}/{cls.version}:{kind}"
    assert step["urn"].endswith(f"::{name}")
    m = step["inputs"]
    assert _errors(m) == []
    labels = m["metadata"]["labels"]
    assert {"taskrig/stack", "taskrig/run-id", "taskrig/task"} <= set(labels)
    assert m["metadata"]["namespace"] == "default"
    assert len(m["metadata"]["name"]) <= 63 and m["metadata"]["name"] == dns_name(m["metadata"]["name"])
    assert not engine.state.exists(), "a preview writes no state"


def test_a_body_in_a_pod_needs_a_data_location_and_an_image(engine):
    """Both named before anything is touched: where the pods get the code, what they run."""
    target = f"{EXAMPLES}/dask_example.py:process_data"
    r = engine("preview", target, "--backend", "kubernetes", env={"ENGINE_K8S_IMAGE": "i:1"})
    assert r.returncode == 2 and "ENGINE_DATA_URL" in r.stderr and "s3://" in r.stderr
    r = engine("preview", target, "--backend", "kubernetes", env={"ENGINE_DATA_URL": "file:///srv/runs"})
    assert r.returncode == 2 and "ENGINE_K8S_IMAGE" in r.stderr and "image" in r.stderr
    r = engine("preview", target, "--backend", "kubernetes", env={**BODY_ENV, "ENGINE_DATA_URL": "runs"})
    assert r.returncode == 2 and "is not a URL" in r.stderr
    assert not engine.state.exists()


def test_manifests_carry_config_images_resources_and_ttl(engine):
    def manifest(target):
        r = engine("preview", f"{TASKS}/k8s_plugins.py:{target}", "--backend", "kubernetes", "--json",
                   env={"ENGINE_K8S_NAMESPACE": "ml", "ENGINE_K8S_TTL_SECONDS": "900"})
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["steps"][0]["inputs"]

    ray = manifest("ray_task")
    assert ray["metadata"]["namespace"] == "ml"
    head = ray["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["template"]["spec"]["containers"][0]["image"] == "rayproject/ray:2.40.0"
    (group,) = ray["spec"]["workerGroupSpecs"]
    assert group["replicas"] == 2 and group["groupName"] == "cpu"
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}

    spark = manifest("spark_task")["spec"]
    assert spark["timeToLiveSeconds"] == 900 and spark["executor"]["instances"] == 2
    assert spark["executor"]["memory"] == "1024m" and spark["executor"]["cores"] == 2
    assert spark["executor"]["template"]["spec"]["containers"][0]["name"] == "primary"
    # A secret in spark_conf never reaches the plan (nor the state): a hash stands in for it.
    assert "s3cr3t-value" not in json.dumps(spark)
    assert spark["sparkConf"]["spark.hadoop.fs.s3a.secret.key"].startswith("(secret hmac:")
    assert spark["sparkConf"]["spark.executor.instances"] == "2"

    pt = manifest("pytorch_task")["spec"]
    assert pt["nprocPerNode"] == "2" and pt["elasticPolicy"]["minReplicas"] == 1
    assert pt["elasticPolicy"]["maxReplicas"] == 2 and pt["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    assert pt["runPolicy"] == {"cleanPodPolicy": "All", "ttlSecondsAfterFinished": 900}


def test_spark_secret_reaches_the_provider_only():
    """The redacted value is in the recorded inputs; the real one in secret_inputs, which the
    engine merges in at provider calls and never records."""
    from tasks import k8s_plugins

    from engine.plugin import DeclareContext
    from providers.kubernetes.plugins import declare_spark

    env = k8s_plugins.spark_env
    (d,) = declare_spark(env.plugin_config, DeclareContext("k8s_spark", "r1", "kubernetes", env, task_name="t"))
    assert "s3cr3t-value" not in json.dumps(d.inputs)
    assert d.secret_inputs["spec"]["sparkConf"]["spark.hadoop.fs.s3a.secret.key"] == "s3cr3t-value"
    assert _errors({**d.inputs, **d.secret_inputs}) == []


def test_invalid_object_is_a_config_error_naming_the_field(engine):
    r = engine("preview", f"{TASKS}/k8s_plugins.py:ray_typo_task", "--backend", "kubernetes")
    assert r.returncode == 2, r.stderr
    assert ("RayCluster.spec.workerGroupSpecs[0].template.spec.containers[0].imagePullPolicyy: unknown field"
            in r.stderr), r.stderr
    r = engine("up", f"{TASKS}/k8s_plugins.py:ray_typo_task", "--backend", "kubernetes")
    assert r.returncode == 2 and "imagePullPolicyy" in r.stderr
    assert not engine.state.exists(), "bad input leaves no state"


# -------------------------------------------------------------- the CRD translation itself
def _dask(**spec_patch):
    from engine import Resources
    from providers.dask.config import Dask
    from providers.dask.manifests import dask_cluster
    from providers.kubernetes.objects import Target

    m = dask_cluster(Dask(), Target(name="d", resources=Resources(cpu=1)))
    return m


def test_server_semantics_made_strict():
    """The points the CRD README observed on the server, each as the validator sees them."""
    m = _dask()
    assert _errors(m) == []
    port = m["spec"]["scheduler"]["service"]["ports"][0]
    port["targetPort"] = 8786  # Dask's format: int-or-string without the extension: a string
    assert _errors(m) == [("spec.scheduler.service.ports[0].targetPort", "8786 is not of type 'string'")]
    port["targetPort"] = "tcp-comm"
    m["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = 1  # a string map in Dask's CRD
    assert _errors(m)[0][0] == "spec.worker.spec.containers[0].resources.limits.cpu"
    m = _dask()
    m["spec"]["worker"]["replicaz"] = 3  # pruned silently by the server: an error here
    ((field, msg),) = _errors(m)
    assert field == "spec.worker.replicaz" and msg.startswith("unknown field")
    m = _dask()
    m["spec"]["idleTimeout"] = None  # not nullable: the server would drop it
    assert _errors(m)[0][0] == "spec.idleTimeout"
    m = _dask()
    m["spec"]["scheduler"]["spec"]["containers"][0]["ports"].append({"containerPort": 8786})  # TCP by default
    assert "duplicate entry" in _errors(m)[0][1]
    m = _dask()
    m["status"] = {"phase": "Running"}  # the operator's, never ours
    assert _errors(m)[0][0] == "status"
    m = _dask()
    m["metadata"]["labels"] = {"bad key!": "v"}
    assert _errors(m)[0][0].startswith("metadata.labels")


def test_int_or_string_preserve_unknown_and_nullable():
    from engine import Resources
    from providers.kubernetes.objects import Target
    from providers.ray.config import RayJobConfig, WorkerNodeConfig
    from providers.ray.manifests import ray_cluster

    m = ray_cluster(RayJobConfig(worker_node_config=[WorkerNodeConfig(group_name="g")]),
                    Target(name="r", resources=Resources(cpu=1)))
    limits = m["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    for cpu in (2, "500m", "2"):  # x-kubernetes-int-or-string: both
        limits["cpu"] = cpu
        assert _errors(m) == []
    limits["cpu"] = "two"
    assert _errors(m)[0][0].endswith("limits.cpu")

    # Translation of the extensions on a small schema.
    s = schema._translate({"type": "object", "properties": {
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "n": {"type": "string", "nullable": True},
        "emb": {"type": "object", "x-kubernetes-embedded-resource": True, "properties": {"spec": {"type": "object"}}},
        "ios": {"x-kubernetes-int-or-string": True}}})
    from jsonschema import Draft7Validator

    v = Draft7Validator(s)
    assert v.is_valid({"free": {"anything": {"at": "all"}}, "n": None, "ios": 3})
    assert v.is_valid({"emb": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}, "ios": "3"})
    assert not v.is_valid({"emb": {"spec": {"x": 1}}})
    assert not v.is_valid({"other": 1})


def test_names_are_dns_labels_deterministically():
    assert dns_name("k8s-ok") == "k8s-ok"
    a, b = dns_name("dask_env-r1-cluster"), dns_name("dask-env-r1-cluster")
    assert a != b and a.startswith("dask-env-r1-cluster-") and b == "dask-env-r1-cluster"
    long = dns_name("x" * 100, 53)
    assert len(long) == 53 and long == dns_name("x" * 100, 53)
    assert dns_name("9lives")[0].isalpha() and dns_name("UPPER") != "UPPER"
    assert label_value("dask_env") == "dask_env"
    assert len(label_value("_" + "y" * 80)) <= 63


def test_crd_files_are_the_upstream_ones():
    """Each shipped CRD names its upstream source on its first line; the Dask one is the very
    file dask-kubernetes ships in its wheel (the operator the local cluster runs)."""
    files = sorted(schema.PACKAGE_CRDS.glob("*.yaml"))
    assert files
    for f in files:
        assert f.read_text().startswith("# source: "), f.name
    wheel = pytest.importorskip("dask_kubernetes.operator")
    from importlib import resources

    crd = resources.files(wheel) / "deployment/helm/dask-kubernetes-operator/crds/daskcluster.yaml"
    ours = (schema.PACKAGE_CRDS / "kubernetes.dask.org_daskclusters.yaml").read_text()
    assert ours.split("\n", 1)[1] == crd.read_text()
