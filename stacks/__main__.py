"""A team's Dask platform: its namespace, a service account allowed to run Dask clusters there
(for the team's workloads and an engine running in the cluster), and a standing Dask cluster.

    pulumi up                  # with the Pulumi CLI (Pulumi.yaml names this folder)
    engine preview stacks/     # in-process: the engine is the resource monitor, state in SQLite
    engine up stacks/
    engine destroy taskrig-dev

Configuration (Pulumi.<stack>.yaml): ``namespace``, ``workers``, ``image``, ``cpu`` (each pod's,
default 1), ``worker_memory``.
"""

import pulumi
import pulumi_kubernetes as k8s

from engine import Resources
from providers.dask import Dask, DaskClusterComponent, Scheduler, WorkerGroup

cfg = pulumi.Config()
namespace = cfg.get("namespace") or "analytics"
workers = cfg.get_int("workers") or 2
image = cfg.get("image") or "ghcr.io/dask/dask:2025.4.1"
cpu = cfg.get("cpu") or 1
worker_memory = cfg.get("worker_memory") or "2Gi"

ns = k8s.core.v1.Namespace("namespace", metadata={"name": namespace, "labels": {"team": namespace}})

account = k8s.core.v1.ServiceAccount("dask", metadata={"name": "dask", "namespace": ns.metadata.name})
role = k8s.rbac.v1.Role("dask", metadata={"name": "dask", "namespace": ns.metadata.name}, rules=[{
    "apiGroups": ["kubernetes.dask.org"],
    "resources": ["daskclusters", "daskworkergroups", "daskjobs", "daskautoscalers"],
    "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"],
}])
k8s.rbac.v1.RoleBinding("dask", metadata={"name": "dask", "namespace": ns.metadata.name},
                        role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
                        subjects=[{"kind": "ServiceAccount", "name": account.metadata.name,
                                   "namespace": ns.metadata.name}])

cluster = DaskClusterComponent(
    "analytics",
    Dask(scheduler=Scheduler(resources=Resources(cpu=cpu, memory="1Gi")),
         workers=WorkerGroup(number_of_workers=workers, resources=Resources(cpu=cpu, memory=worker_memory))),
    namespace=ns.metadata.name,
    image=image,
)

pulumi.export("namespace", ns.metadata.name)
pulumi.export("service_account", account.metadata.name)
pulumi.export("scheduler_address", cluster.scheduler_address)
pulumi.export("dashboard_url", cluster.dashboard_url)
