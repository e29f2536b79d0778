"""The kubernetes branch of each plugin's ``declare`` and ``attach``, kept here so that the
plugins' own modules only dispatch to it (``if ctx.backend == "kubernetes": return ...``).

On this backend the task body still runs in the engine's process: it gets the in-cluster
addresses of what was provisioned (``DASK_SCHEDULER_ADDRESS``, ``RAY_ADDRESS``, the Spark UI,
the PyTorch rendezvous endpoint), which resolve from inside the cluster (an engine running in a
pod, or a network that routes to cluster Services). The Spark driver and the PyTorch workers
run the image's code in their pods; the body orchestrates around them.
"""

from __future__ import annotations

from engine.extend import Attachment, DeclareContext

from .declare import declare


def declare_dask(config, ctx: DeclareContext):
    from providers.dask.manifests import NAME_MAX, dask_cluster

    return [declare(ctx, "DaskCluster", "cluster", lambda t: dask_cluster(config, t), NAME_MAX)]


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
