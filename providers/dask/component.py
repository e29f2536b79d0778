"""``DaskClusterComponent``: a Dask Operator DaskCluster as a Pulumi component, built by
``manifests.dask_cluster`` (the object the kubernetes backend applies for the same config).

    import pulumi
    from providers.dask import Dask, DaskClusterComponent, WorkerGroup

    dask = DaskClusterComponent("analytics", Dask(workers=WorkerGroup(number_of_workers=4)),
                                namespace="team-a", image="ghcr.io/dask/dask:2025.4.1")
    pulumi.export("scheduler", dask.scheduler_address)
"""

from __future__ import annotations

from providers.kubernetes.component import OperatorComponent

from .manifests import KIND, NAME_MAX, dask_cluster


class DaskClusterComponent(OperatorComponent):
    """(name, config: Dask, opts=None, *, namespace, image, resources, env, labels, ttl_seconds).

    Outputs: ``scheduler_address`` (tcp://<name>-scheduler.<namespace>.svc.cluster.local:8786)
    and ``dashboard_url``, the operator's scheduler Service. ``ttl_seconds`` becomes the
    operator's ``idleTimeout`` (none by default: the stack decides when the cluster goes)."""

    type_token = "taskrig:dask:DaskCluster"
    kind = KIND
    build = staticmethod(dask_cluster)
    name_max = NAME_MAX

    def __init__(self, name, config, opts=None, **kubernetes):
        super().__init__(name, config, opts, **kubernetes)
        self.scheduler_address = self._address("scheduler_address")
        self.dashboard_url = self._address("dashboard_url")
        self._finish(scheduler_address=self.scheduler_address, dashboard_url=self.dashboard_url)
