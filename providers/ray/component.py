"""``RayClusterComponent``: a KubeRay RayCluster as a Pulumi component, built by
``manifests.ray_cluster`` (the object the kubernetes backend applies for the same config).

    from providers.ray import RayClusterComponent, RayJobConfig, WorkerNodeConfig

    ray = RayClusterComponent("training", RayJobConfig(worker_node_config=[
        WorkerNodeConfig(group_name="cpu", replicas=2)]), namespace="team-a")
"""

from __future__ import annotations

from providers.kubernetes.component import OperatorComponent

from .manifests import KIND, NAME_MAX, ray_cluster


class RayClusterComponent(OperatorComponent):
    """(name, config: RayJobConfig, opts=None, *, namespace, image, resources, env, labels).

    Outputs: ``address`` (ray://<name>-head-svc...:10001), ``dashboard_url`` and
    ``gcs_address``, KubeRay's head Service. A RayCluster has no time-to-live of its own."""

    type_token = "taskrig:ray:RayCluster"
    kind = KIND
    build = staticmethod(ray_cluster)
    name_max = NAME_MAX

    def __init__(self, name, config, opts=None, **kubernetes):
        super().__init__(name, config, opts, **kubernetes)
        self.address = self._address("address")
        self.dashboard_url = self._address("dashboard_url")
        self.gcs_address = self._address("gcs_address")
        self._finish(address=self.address, dashboard_url=self.dashboard_url, gcs_address=self.gcs_address)
