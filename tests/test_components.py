"""The plugins' Pulumi components under Pulumi's own mocks (``pulumi.runtime.set_mocks``,
``@pulumi.runtime.test``): each component's child is its operator's object, equal to what the
plugin's ``manifests.py`` builds for the same config (the kubernetes backend's object), valid
against the CRD; the connector service is a Deployment, Service and Secret with gRPC health
probes. The exec probe is run for real against ``engine connectors serve``."""

from __future__ import annotations

import subprocess
import sys

import pulumi
import pytest
from pulumi.runtime import settings

from engine import Resources
from engine.errors import ConfigError
from providers.kubernetes import provider_for, schema
from providers.kubernetes.objects import Target, labels, placeholder

PROJECT, STACK = "teamproj", "dev"
STACK_LABELS = labels(f"{PROJECT}-{STACK}", None, None)
SECRET_SIG = ("4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270")


class Recording(pulumi.runtime.Mocks):
    """Records every resource's inputs by (type, name); outputs echo the inputs."""

    def __init__(self):
        self.inputs: dict[tuple[str, str], dict] = {}

    def new_resource(self, args):
        self.inputs[(args.typ, args.name)] = args.inputs
        return f"{args.name}-id", args.inputs

    def call(self, args):
        return {}


@pytest.fixture
def mocks():
    m = Recording()
    pulumi.runtime.set_mocks(m, project=PROJECT, stack=STACK, preview=False)
    yield m
    settings.reset_options()  # the next test (or an in-process program) starts clean


def revealed(value):
    """Inputs with Pulumi's secret markers unwrapped, and whether there were any."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG[0]) == SECRET_SIG[1]:
            return revealed(value["value"])
        return {k: revealed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [revealed(v) for v in value]
    return value


def has_secret(value) -> bool:
    if isinstance(value, dict):
        return value.get(SECRET_SIG[0]) == SECRET_SIG[1] or any(has_secret(v) for v in value.values())
    return isinstance(value, list) and any(has_secret(v) for v in value)


def child_manifest(m: Recording, kind: str, name: str) -> dict:
    cls = provider_for(kind)
    return revealed(m.inputs[(f"kubernetes:{cls.group}/{cls.version}:{kind}", name)])


def crd_errors(manifest: dict) -> list:
    cls = provider_for(manifest["kind"])
    return schema.errors(manifest, cls.group, cls.version, cls.kind, cls.plural)


def _cases():
    from providers.dask import Dask, Scheduler, WorkerGroup
    from providers.dask.manifests import NAME_MAX as DASK_MAX, dask_cluster
    from providers.pytorch import Elastic, RunPolicy
    from providers.pytorch.manifests import NAME_MAX as PT_MAX, pytorch_job
    from providers.ray import HeadNodeConfig, RayJobConfig, WorkerNodeConfig
    from providers.ray.manifests import NAME_MAX as RAY_MAX, ray_cluster
    from providers.spark import Spark
    from providers.spark.manifests import NAME_MAX as SPARK_MAX, spark_application

    return {
        "dask": ("DaskClusterComponent", "DaskCluster", dask_cluster, DASK_MAX,
                 Dask(scheduler=Scheduler(image="ghcr.io/dask/dask:2025.4.1"),
                      workers=WorkerGroup(number_of_workers=3, resources=Resources(cpu=2, memory="4Gi")))),
        "ray": ("RayClusterComponent", "RayCluster", ray_cluster, RAY_MAX,
                RayJobConfig(head_node_config=HeadNodeConfig(ray_start_params={"num-cpus": "0"}),
                             worker_node_config=[WorkerNodeConfig(group_name="cpu", replicas=2)])),
        "spark": ("SparkApplicationComponent", "SparkApplication", spark_application, SPARK_MAX,
                  Spark(spark_conf={"spark.executor.instances": "2"}, applications_path="local:///app/etl.py")),
        "pytorch": ("PyTorchJobComponent", "PyTorchJob", pytorch_job, PT_MAX,
                    Elastic(nnodes="1:2", nproc_per_node=2, run_policy=RunPolicy(clean_pod_policy="all"))),
    }


@pytest.mark.parametrize("plugin", ["dask", "ray", "spark", "pytorch"])
@pulumi.runtime.test
def test_child_is_the_backend_manifest(mocks, plugin):
    """Same config, same target: the component's custom resource is byte for byte what the
    kubernetes backend would apply, a child of the component, and valid against the CRD."""
    import importlib

    from providers.kubernetes.objects import dns_name

    cls_name, kind, build, name_max, config = _cases()[plugin]
    component_cls = getattr(importlib.import_module(f"providers.{plugin}"), cls_name)
    comp = component_cls("Team_A analytics", config, namespace="team-a", image="registry.example.com/img:1",
                         resources=Resources(cpu=1, memory="2Gi"), env={"MODE": "prod"}, labels={"team": "a"})
    target = Target(name=dns_name("Team_A analytics", name_max), namespace="team-a",
                    labels={**STACK_LABELS, "team": "a"}, image="registry.example.com/img:1",
                    resources=Resources(cpu=1, memory="2Gi"), env={"MODE": "prod"}, ttl_seconds=None)
    expected = build(config, target)

    def check(urn):
        got = child_manifest(mocks, kind, "Team_A analytics")
        assert got == expected
        assert crd_errors(got) == []
        assert "ttl" not in str(got).lower() and "idleTimeout" not in got["spec"]  # no TTL by default
        assert f"::{component_cls.type_token}$kubernetes:" in urn  # parented by the component
        return urn

    return comp.object.urn.apply(check)


@pulumi.runtime.test
def test_namespace_from_a_namespace_resource_and_outputs(mocks):
    """A namespace given as another resource's output builds the same object once known; the
    outputs are the addresses the backend's provider reports for that object."""
    import pulumi_kubernetes as k8s

    from providers.dask import Dask, DaskClusterComponent
    from providers.dask.manifests import dask_cluster
    from providers.kubernetes.provider import DaskCluster

    ns = k8s.core.v1.Namespace("ns", metadata={"name": "analytics"})
    comp = DaskClusterComponent("c", Dask(), namespace=ns.metadata.name, ttl_seconds=600)

    def check(args):
        address, dashboard = args
        expected = dask_cluster(Dask(), Target(name="c", namespace="analytics", labels=STACK_LABELS, ttl_seconds=600))
        assert child_manifest(mocks, "DaskCluster", "c") == expected and expected["spec"]["idleTimeout"] == 600
        addresses = DaskCluster().addresses("c", "analytics", {})
        assert address == addresses["scheduler_address"] == "tcp://c-scheduler.analytics.svc.cluster.local:8786"
        assert dashboard == addresses["dashboard_url"]

    return pulumi.Output.all(comp.scheduler_address, comp.dashboard_url).apply(check)


@pulumi.runtime.test
def test_spark_secrets_are_pulumi_secrets(mocks):
    """A sensitive spark_conf entry is a Pulumi secret in the child's inputs; revealed, the
    object is still the backend's (which records the same entry as a placeholder)."""
    from providers.spark import Spark, SparkApplicationComponent
    from providers.spark.manifests import spark_application

    conf = {"spark.hadoop.fs.s3a.secret.key": "s3cr3t-value", "spark.executor.instances": "2"}
    comp = SparkApplicationComponent("etl", Spark(spark_conf=conf), namespace="data")

    def check(_):
        raw = mocks.inputs[("kubernetes:sparkoperator.k8s.io/v1beta2:SparkApplication", "etl")]
        assert has_secret(raw["spec"]) and "s3cr3t-value" in str(revealed(raw))
        expected = spark_application(Spark(spark_conf=conf), Target(name="etl", namespace="data",
                                                                    labels=STACK_LABELS, ttl_seconds=None))
        assert revealed(raw) == expected
        assert placeholder("s3cr3t-value") != "s3cr3t-value"

    return comp.object.urn.apply(check)


def test_bad_config_fails_at_construction_naming_the_field(mocks):
    from providers.dask import Dask, DaskClusterComponent, WorkerGroup

    with pytest.raises(ConfigError) as e:
        DaskClusterComponent("bad", Dask(workers=WorkerGroup(number_of_workers=0)), namespace="x")
    assert e.value.field == "config.workers.number_of_workers"


# ------------------------------------------------------------------------------ connectors
@pulumi.runtime.test
def test_connector_service_deployment_service_and_secret(mocks):
    from providers.connectors.component import SECRETS_DIR, ConnectorServiceComponent

    svc = ConnectorServiceComponent("connectors", "registry.example.com/connectors:1",
                                    ["providers.connectors", "team.jobs"], 3, namespace="platform",
                                    secrets={"PG_PASSWORD": "pw-123"}, resources=Resources(cpu=1, memory="512Mi"))

    def check(args):
        endpoint = args[0]
        assert endpoint == "connectors.platform.svc.cluster.local:8000"
        dep = mocks.inputs[("kubernetes:apps/v1:Deployment", "connectors")]
        service = mocks.inputs[("kubernetes:core/v1:Service", "connectors")]
        secret = mocks.inputs[("kubernetes:core/v1:Secret", "connectors-secrets")]
        assert has_secret(secret["stringData"]) and revealed(secret["stringData"]) == {"PG_PASSWORD": "pw-123"}
        assert secret["metadata"] == {"name": "connectors-secrets", "namespace": "platform",
                                      "labels": {**STACK_LABELS, "app.kubernetes.io/name": "taskrig-connectors",
                                                 "app.kubernetes.io/instance": "connectors"}}
        spec = dep["spec"]
        assert spec["replicas"] == 3
        pod = spec["template"]
        assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
        (c,) = pod["spec"]["containers"]
        assert c["command"] == ["engine", "connectors", "serve", "--host", "0.0.0.0", "--port", "8000",
                                "--modules", "providers.connectors,team.jobs", "--metrics-port", "9090"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": 8000}, probe
        assert {"name": "ENGINE_SECRETS_DIR", "value": SECRETS_DIR} in c["env"]
        assert c["volumeMounts"] == [{"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True}]
        assert pod["spec"]["volumes"] == [{"name": "secrets", "secret": {"secretName": "connectors-secrets"}}]
        assert c["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
        assert pod["spec"]["automountServiceAccountToken"] is False  # it calls no Kubernetes API
        assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == \
            [("grpc", 8000, "grpc"), ("metrics", 9090, "metrics")]

    return pulumi.Output.all(svc.endpoint, svc.deployment.urn, svc.secret.urn).apply(check)


@pulumi.runtime.test
def test_connector_service_exec_probe_and_no_secrets(mocks):
    from providers.connectors.component import ConnectorServiceComponent, probe_command

    svc = ConnectorServiceComponent("c", "img", "providers.connectors", probe="exec", metrics_port=None)

    def check(_):
        assert not any(t == "kubernetes:core/v1:Secret" for t, _ in mocks.inputs)
        (c,) = mocks.inputs[("kubernetes:apps/v1:Deployment", "c")]["spec"]["template"]["spec"]["containers"]
        assert c["readinessProbe"]["exec"]["command"] == probe_command(8000)
        assert "env" not in c and "--metrics-port" not in c["command"]

    return pulumi.Output.all(svc.endpoint, svc.deployment.urn).apply(check)


def test_connector_service_rejects_an_unknown_probe(mocks):
    from providers.connectors.component import ConnectorServiceComponent

    with pytest.raises(ValueError, match="probe must be"):
        ConnectorServiceComponent("c", "img", ["m"], probe="http")


def test_exec_probe_speaks_grpc_health_to_the_real_service():
    """The exec probe's command against ``engine connectors serve`` itself: 0 while it
    serves, not 0 once it is gone (no kubelet here, so the probe is run directly)."""
    from providers.connectors.component import probe_command
    from tasks.connector_support import serve_connectors, stop

    proc, address, _ = serve_connectors()
    port = int(address.rsplit(":", 1)[1])
    cmd = [sys.executable, *probe_command(port)[1:]]
    try:
        assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    finally:
        stop(proc)
    assert subprocess.run(cmd, capture_output=True, timeout=60).returncode != 0
