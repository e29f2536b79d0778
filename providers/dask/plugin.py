"""The Dask plugin: declares a cluster from a ``Dask`` config and points the task at it."""

from __future__ import annotations

import contextlib

import providers.kubernetes  # noqa: F401  registers the kubernetes providers (imports no client)
from engine.extend import Attachment, DeclareContext, TaskPlugin, TaskPluginRegistry

from .config import Dask


def _resources(r) -> dict:
    return r.to_dict() if r is not None else {}


class DaskPlugin(TaskPlugin):
    def declare(self, config: Dask, ctx: DeclareContext):
        if ctx.backend == "kubernetes":
            # A Dask Operator DaskCluster and the body's pod beside it.
            from providers.kubernetes.plugins import declare_dask

            return declare_dask(config, ctx)
        w = config.workers
        inputs = {
            "scheduler": {"image": config.scheduler.image, "resources": _resources(config.scheduler.resources)},
            "workers": {
                "number_of_workers": w.number_of_workers,
                "image": w.image,
                "resources": _resources(w.resources),
                "nthreads": w.resources.threads() if w.resources else 1,
                "memory_limit": w.resources.memory_bytes() if w.resources else None,
            },
        }
        return [ctx.declaration("local:dask:Cluster", "cluster", inputs)]

    def attach(self, config: Dask, outputs: dict[str, dict], ctx: DeclareContext) -> Attachment:
        if ctx.backend == "kubernetes":  # the body runs in its pod, with the address in its env
            from providers.kubernetes.plugins import attach_dask

            return attach_dask(config, outputs, ctx)
        address = outputs["cluster"]["scheduler_address"]

        return Attachment(env_vars={"DASK_SCHEDULER_ADDRESS": address},
                          data={"dask_scheduler_address": address}, contexts=[lambda: _connected_to(address)])


@contextlib.contextmanager
def _connected_to(address: str):
    """dask reads DASK_* variables once, at import: a process that imported dask before the
    run needs the address in its live config too. Clients the task left open on this
    cluster are closed before it is torn down, so they do not retry a dead scheduler."""
    import dask
    from distributed import Client

    with dask.config.set({"scheduler-address": address}):
        try:
            yield
        finally:
            for _ in range(32):
                try:
                    client = Client.current(allow_global=True)
                except ValueError:
                    break
                if client.scheduler is None or client.scheduler.address != address:
                    break
                client.close()


TaskPluginRegistry.register(Dask, DaskPlugin())
