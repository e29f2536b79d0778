"""The connector service as a team deploys it, for the tests against a real cluster: its
namespace from ENGINE_K8S_NAMESPACE (the test's own), its secret from CONNECTOR_TOKEN, its
image from CONNECTOR_IMAGE (the local cluster's task image holds the engine and grpcio). The
exec probe, because the test cluster is Kubernetes 1.20 (native gRPC probes need 1.24)."""

import os

import pulumi

from providers.connectors import ConnectorServiceComponent

svc = ConnectorServiceComponent(
    "connectors", os.environ.get("CONNECTOR_IMAGE", "registry.example.com/taskrig-connectors:1"),
    ["providers.connectors"], 2,
    namespace=os.environ.get("ENGINE_K8S_NAMESPACE", "default"),
    secrets={"TRAIN_TOKEN": pulumi.Output.secret(os.environ["CONNECTOR_TOKEN"])},
    probe="exec",
)
pulumi.export("endpoint", svc.endpoint)
