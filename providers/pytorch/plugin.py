"""The PyTorch plugin: declares the elastic job's resource and runs the body under it.

``declare`` asks for a ``local:pytorch:ElasticJob`` (a rendezvous port, a run directory, the
tag its processes carry); ``execute`` replaces the in-process call with torch elastic
agents whose workers each run the task's function. What ``execute`` needs of the resource
it reads from ``engine.ctx().outputs`` (the engine already puts every resource's outputs
there for the body's thread), so nothing is stashed between ``attach`` and ``execute``.
"""

from __future__ import annotations

from typing import Any, Callable

from engine import context
from engine.extend import ConfigError, DeclareContext, TaskPlugin, TaskPluginRegistry

from .config import Elastic, parse_nnodes
from .local import run_job

RESOURCE = "elastic"


def job_spec(config: Elastic) -> dict:
    """The resource's inputs: the config in the words torchrun takes."""
    lo, hi = parse_nnodes(config.nnodes)
    rp = config.run_policy
    return {
        "nnodes": str(lo) if lo == hi else f"{lo}:{hi}", "min_nodes": lo, "max_nodes": hi,
        "nproc_per_node": config.nproc_per_node, "rdzv_backend": config.rdzv_backend,
        "max_restarts": config.max_restarts, "monitor_interval": config.monitor_interval,
        "rdzv_configs": dict(config.rdzv_configs),
        "run_policy": None if rp is None else {
            "clean_pod_policy": rp.clean_pod_policy, "ttl_seconds_after_finished": rp.ttl_seconds_after_finished,
            "active_deadline_seconds": rp.active_deadline_seconds, "backoff_limit": rp.backoff_limit},
    }


class ElasticPlugin(TaskPlugin):
    def declare(self, config: Elastic, ctx: DeclareContext):
        if ctx.backend == "kubernetes":  # a Kubeflow PyTorchJob (providers/kubernetes)
            from providers.kubernetes.plugins import declare_pytorch

            return declare_pytorch(config, ctx, RESOURCE)
        if config.rdzv_backend != "c10d":
            raise ConfigError(f"the local backend rendezvous over c10d only ({config.rdzv_backend!r} needs "
                              f"a server it does not run)", "plugin_config.rdzv_backend")
        return [ctx.declaration("local:pytorch:ElasticJob", RESOURCE, job_spec(config))]

    def attach(self, config: Elastic, outputs: dict[str, dict], ctx: DeclareContext):
        if ctx.backend == "kubernetes":
            from providers.kubernetes.plugins import attach_pytorch

            return attach_pytorch(config, outputs, ctx, RESOURCE)
        return super().attach(config, outputs, ctx)

    def execute(self, config: Elastic, call: Callable[[], Any], ctx: DeclareContext) -> Any:
        """Every rank runs the function in a worker process; ``call`` (the in-process body) is
        not used. Rank 0's return value is the task's."""
        if ctx.backend == "kubernetes":  # the PyTorchJob's pods run the image's training code
            return call()
        tc = context.ctx()
        return run_job(job_spec(config), tc.outputs[RESOURCE], ctx.run_id, tc.fn, tc.inputs)


TaskPluginRegistry.register(Elastic, ElasticPlugin())
