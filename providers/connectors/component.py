"""``ConnectorServiceComponent``: ``engine connectors serve`` as its own Kubernetes Deployment,
with a Service in front and the Secret it mounts, as a Pulumi component.

    import pulumi
    from providers.connectors import ConnectorServiceComponent

    svc = ConnectorServiceComponent("connectors", "registry.example.com/taskrig-connectors:1.2",
                                    ["providers.connectors", "team.connectors"], replicas=2,
                                    namespace="team-a", secrets={"PG_PASSWORD": cfg.require_secret("pg")})
    pulumi.export("endpoint", svc.endpoint)  # engine up ... --connector-endpoint TYPE=<endpoint>

The image needs taskrig with its ``connectors`` extra (``engine`` on the PATH). Secrets are one
Kubernetes Secret mounted read-only at ``/etc/taskrig/secrets``, one file per key, with
``ENGINE_SECRETS_DIR`` pointing there: ``engine.Secret(key="PG_PASSWORD")`` resolves from it.
The kubelet updates mounted files in place and the engine reads a secret when it is used, so
a rotated secret needs no restart.

Health: ``engine connectors serve`` answers gRPC health (``grpc.health.v1``) on its port. The
probes use Kubernetes' native gRPC probe (``probe="grpc"``, Kubernetes 1.24 and later); older
API servers reject that field (1.20: "readinessProbe.grpc: field not declared in schema"),
where ``probe="exec"`` runs the same health check with the image's Python instead.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from providers.kubernetes.component import stack_name
from providers.kubernetes.objects import (MANAGED_BY, container_resources, dns_name, env_list, labels as stack_labels,
                                          prune)

SECRETS_DIR = "/etc/taskrig/secrets"
PORT = 8000
METRICS_PORT = 9090
# The health check the exec probe runs, with nothing but grpcio and grpcio-health-checking
# (the connectors extra): exit 0 only when the server says SERVING.
PROBE_SCRIPT = (
    "import sys, grpc\n"
    "from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g\n"
    "with grpc.insecure_channel('127.0.0.1:' + sys.argv[1]) as ch:\n"
    "    r = g.HealthStub(ch).Check(h.HealthCheckRequest(service=''), timeout=float(sys.argv[2]))\n"
    "sys.exit(0 if r.status == h.HealthCheckResponse.SERVING else 1)\n"
)


def probe_command(port: int, timeout: float = 2) -> list[str]:
    return ["python", "-c", PROBE_SCRIPT, str(port), str(timeout)]


def probes(kind: str, port: int) -> dict:
    """startup, readiness and liveness probes on the gRPC health service: startup gives the
    connector modules a minute to import, readiness takes a replica out of the Service within
    ~15 s of failing, liveness restarts one that stays unhealthy for ~30 s."""
    if kind == "grpc":
        check: dict = {"grpc": {"port": port}}
    elif kind == "exec":
        check = {"exec": {"command": probe_command(port)}, "timeoutSeconds": 5}
    else:
        raise ValueError(f"probe must be 'grpc' (Kubernetes >= 1.24) or 'exec', not {kind!r}")
    return {
        "startupProbe": {**check, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {**check, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**check, "periodSeconds": 10, "failureThreshold": 3},
    }


def serve_args(modules: Sequence[str], port: int, metrics_port: Optional[int]) -> list[str]:
    args = ["engine", "connectors", "serve", "--host", "0.0.0.0", "--port", str(port)]
    if modules:
        args += ["--modules", ",".join(modules)]
    if metrics_port is not None:
        args += ["--metrics-port", str(metrics_port)]
    return args


class ConnectorServiceComponent(pulumi.ComponentResource):
    """(name, image, modules, replicas=1, opts=None, *, namespace, port, metrics_port,
    secrets, env, resources, probe, labels, service_account_name).

    Children: a Secret ``<name>-secrets`` (when ``secrets`` is given; its values are Pulumi
    secrets), a Deployment and a ClusterIP Service, both ``<name>``. Outputs: ``endpoint``
    (HOST:PORT of the Service, for ``--connector-endpoint``), ``service_name``."""

    def __init__(self, name: str, image: str, modules: Sequence[str], replicas: int = 1,
                 opts: Optional[pulumi.ResourceOptions] = None, *, namespace: pulumi.Input[str] = "default",
                 port: int = PORT, metrics_port: Optional[int] = METRICS_PORT,
                 secrets: Optional[Mapping[str, pulumi.Input[str]]] = None, env: Optional[Mapping[str, str]] = None,
                 resources: Any = None, probe: str = "grpc", labels: Optional[Mapping[str, str]] = None,
                 service_account_name: Optional[str] = None):
        super().__init__("taskrig:connectors:ConnectorService", name, None, opts)
        if isinstance(modules, str):
            modules = [modules]
        if replicas < 0:
            raise ValueError(f"replicas of {name!r} must be >= 0, not {replicas}")
        app = dns_name(name)
        selector = {"app.kubernetes.io/name": "taskrig-connectors", "app.kubernetes.io/instance": app}
        all_labels = {**stack_labels(stack_name(), None, None), **selector, **dict(labels or {})}
        child = pulumi.ResourceOptions(parent=self)
        self.namespace = pulumi.Output.from_input(namespace)

        volumes, mounts, environment = [], [], dict(env or {})
        self.secret = None
        if secrets:
            self.secret = k8s.core.v1.Secret(
                f"{name}-secrets", opts=child, type="Opaque",
                metadata={"name": f"{app}-secrets", "namespace": namespace, "labels": all_labels},
                string_data={k: pulumi.Output.secret(v) for k, v in secrets.items()})
            volumes = [{"name": "secrets", "secret": {"secretName": self.secret.metadata.name}}]
            mounts = [{"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True}]
            environment["ENGINE_SECRETS_DIR"] = SECRETS_DIR

        ports = [{"name": "grpc", "containerPort": port, "protocol": "TCP"}]
        if metrics_port is not None:
            ports.append({"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"})
        container = prune({
            "name": "connectors",
            "image": image,
            "command": serve_args(modules, port, metrics_port),
            "ports": ports,
            "env": env_list(environment),
            "resources": container_resources(resources),
            "volumeMounts": mounts,
            **probes(probe, port),
        })
        self.deployment = k8s.apps.v1.Deployment(
            name, opts=child,
            metadata={"name": app, "namespace": namespace, "labels": all_labels},
            spec={
                "replicas": replicas,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": {**selector, **MANAGED_BY}},
                    # The service calls no Kubernetes API: no token in its pods unless an account is named.
                    "spec": prune({"serviceAccountName": service_account_name,
                                   "automountServiceAccountToken": bool(service_account_name),
                                   "containers": [container], "volumes": volumes}),
                },
            })
        service_ports = [{"name": "grpc", "port": port, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"}]
        if metrics_port is not None:
            service_ports.append({"name": "metrics", "port": metrics_port, "targetPort": "metrics", "protocol": "TCP"})
        self.service = k8s.core.v1.Service(
            name, opts=child,
            metadata={"name": app, "namespace": namespace, "labels": all_labels},
            spec={"type": "ClusterIP", "selector": selector, "ports": service_ports})
        self.service_name = app
        # Through the Service's URN: whatever takes the endpoint depends on the Service.
        self.endpoint = pulumi.Output.all(self.service.urn, self.namespace).apply(
            lambda a: f"{app}.{a[1]}.svc.cluster.local:{port}")
        self.register_outputs({"endpoint": self.endpoint, "service_name": app, "namespace": self.namespace})
