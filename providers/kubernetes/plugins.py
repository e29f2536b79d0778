"""The kubernetes branch of each plugin's ``declare`` and ``attach``, kept here so that the
plugins' own modules only dispatch to it (``if ctx.backend == "kubernetes": return ...``).

A Dask task's body runs in a pod of its own beside its DaskCluster (``body.py``). The Ray,
Spark and PyTorch bodies still run in the engine's process with the in-cluster addresses of
what was provisioned (``RAY_ADDRESS``, the Spark UI, the PyTorch rendezvous endpoint), which
resolve only from inside the cluster; moving them into the cluster is the next step.
"""

from __future__ import annotations

from engine.extend import Attachment, DeclareContext

from .declare import declare


def declare_dask(config, ctx: DeclareContext):
    """A DaskCluster, then the body's pod with its ``DASK_SCHEDULER_ADDRESS`` (``body``): not a
    DaskJob, so that a reusable environment keeps its cluster while each run gets its own pod,
    and the body starts once scheduler and workers are up (README, "The body in a pod")."""
    from providers.dask.manifests import NAME_MAX, dask_cluster

    from .body import declare_body
    from .provider import DaskCluster

    cluster = declare(ctx, "DaskCluster", "cluster", lambda t: dask_cluster(config, t), NAME_MAX)
    meta = cluster.inputs["metadata"]
    address = DaskCluster().addresses(meta["name"], meta["namespace"], {})["scheduler_address"]
    env = {"DASK_SCHEDULER_ADDRESS": address,
           "TASKRIG_DASK_WORKERS": str(cluster.inputs["spec"]["worker"]["replicas"])}  # share_code waits for them
    return [cluster, *declare_body(ctx, [cluster], env, {"dask_scheduler_address": address},
                                   setup=("providers.dask.remote:share_code",))]


def attach_dask(config, outputs: dict[str, dict], ctx: DeclareContext) -> Attachment:
    """The engine's side of a body that runs in its pod: what it was given, and the wait."""
    from .body import remote

    address = outputs["cluster"]["scheduler_address"]
    return Attachment(data={"dask_scheduler_address": address}, remote=remote(outputs))


def declare_ray(config, ctx: DeclareContext):
    """A RayCluster under the resource name the local backend uses, so ``attach`` (which reads
    ``outputs["cluster"]["address"]``, here ``ray://<name>-head-svc...:10001``) is the same."""
    from providers.ray.manifests import NAME_MAX, ray_cluster

    return [declare(ctx, "RayCluster", "cluster", lambda t: ray_cluster(config, t), NAME_MAX)]


def declare_spark(config, ctx: DeclareContext):
    """A SparkApplication; secrets in spark_conf / hadoop_conf reach the cluster, not the state."""
    from providers.spark.manifests import NAME_MAX, spark_application

    return [declare(ctx, "SparkApplication", "cluster", lambda t: spark_application(config, t), NAME_MAX,
                    secret_maps=("spec.sparkConf", "spec.hadoopConf"))]


def attach_spark(config, outputs: dict[str, dict], ctx: DeclareContext) -> Attachment:
    out = outputs["cluster"]
    app = f"{out['namespace']}/{out['name']}"
    return Attachment(env_vars={"SPARK_APPLICATION": app},
                      data={"spark_application": app, "spark_ui_url": out.get("ui_url"),
                            "spark_driver_pod": out.get("driver_pod")})


def declare_pytorch(config, ctx: DeclareContext, resource: str = "elastic"):
    from providers.pytorch.manifests import NAME_MAX, pytorch_job

    return [declare(ctx, "PyTorchJob", resource, lambda t: pytorch_job(config, t), NAME_MAX)]


def attach_pytorch(config, outputs: dict[str, dict], ctx: DeclareContext, resource: str = "elastic") -> Attachment:
    out = outputs[resource]
    job = f"{out['namespace']}/{out['name']}"
    return Attachment(env_vars={"PYTORCHJOB": job, "PET_RDZV_ENDPOINT": out["rdzv_endpoint"]},
                      data={"pytorchjob": job, "rdzv_endpoint": out["rdzv_endpoint"]})
