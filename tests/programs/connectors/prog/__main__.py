"""The connector service as a team deploys it, for the tests against a real API server: its
namespace from ENGINE_K8S_NAMESPACE (the test's own), its secret from CONNECTOR_TOKEN. The
exec probe, because the test API server is Kubernetes 1.20 (native gRPC probes need 1.24)."""

import os

import pulumi

from providers.connectors import ConnectorServiceComponent

svc = ConnectorServiceComponent(
    "connectors", "registry.example.com/taskrig-connectors:1", ["providers.connectors"], 2,
    namespace=os.environ.get("ENGINE_K8S_NAMESPACE", "default"),
    secrets={"TRAIN_TOKEN": pulumi.Output.secret(os.environ["CONNECTOR_TOKEN"])},
    probe="exec",
)
pulumi.export("endpoint", svc.endpoint)
