"""A ``Spark`` config as the Spark Operator's SparkApplication (``sparkoperator.k8s.io/v1beta2``).

A pure function of the config and a ``Target`` (name, namespace, labels, the environment's
image and variables); the kubernetes backend applies it, a ``pulumi_kubernetes`` component can
declare the same dict. ``spark_conf`` becomes ``sparkConf`` as is, ``hadoop_conf`` ``hadoopConf``;
the driver and executors are sized the way the local backend sizes them (``executor_sizing``:
spark_conf first, then the pod templates' primary containers), and ``driver_pod`` /
``executor_pod`` become the operator's pod ``template`` (Spark >= 3.0 pod templates).
``timeToLiveSeconds`` is the operator's safety net: it deletes a finished application.
"""

from __future__ import annotations

import math

from providers.kubernetes.objects import Target, as_json, env_list, prune, stable_labels

from .config import PodTemplate, Spark, executor_sizing

API_VERSION = "sparkoperator.k8s.io/v1beta2"
KIND = "SparkApplication"
SPARK_VERSION = "3.5.5"
DEFAULT_IMAGE = f"spark:{SPARK_VERSION}"
# What the driver runs when the config names no applications_path: the conventional place of
# the task image's driver entrypoint (as Flyte's Spark images have it).
DEFAULT_APPLICATION = "local:///usr/local/bin/entrypoint.py"
# The service account the operator's Helm chart creates for drivers (they create executors).
SERVICE_ACCOUNT = "spark-operator-spark"
# The operator names the UI Service "<name>-ui-svc" and the driver pod "<name>-driver".
NAME_MAX = 63 - len("-ui-svc")


def _template(pod: PodTemplate | None, t: Target) -> dict:
    """The operator's pod template (Spark's own spark.kubernetes.*.podTemplateFile)."""
    if pod is None:
        return {}
    return {"metadata": {"labels": dict(pod.labels or {}), "annotations": dict(pod.annotations or {})},
            "spec": as_json(pod.pod_spec) or {}}


def _driver_cores(config: Spark, t: Target) -> int:
    """spark.driver.cores, else the driver pod's primary container, else the environment's cpu."""
    conf = config.spark_conf or {}
    if "spark.driver.cores" in conf and str(conf["spark.driver.cores"]).isdigit():
        return max(1, int(conf["spark.driver.cores"]))
    cpu = config.driver_pod.resources()[0] if config.driver_pod else None
    if cpu is None and t.resources is not None:
        cpu = t.resources.cpu_count()
    return max(1, math.ceil(cpu)) if cpu else 1


def spark_application(config: Spark, t: Target) -> dict:
    sizing = executor_sizing(config)
    conf = dict(config.spark_conf or {})
    if config.executor_path:
        conf.setdefault("spark.pyspark.python", config.executor_path)
    env = env_list(t.env)
    pod_labels = stable_labels(t.labels)
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": t.metadata(),
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "image": t.image or DEFAULT_IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "mainApplicationFile": config.applications_path or DEFAULT_APPLICATION,
            "sparkVersion": SPARK_VERSION,
            "sparkConf": {k: str(v) for k, v in conf.items()},
            "hadoopConf": {k: str(v) for k, v in (config.hadoop_conf or {}).items()},
            "restartPolicy": {"type": "Never"},
            "timeToLiveSeconds": t.ttl_seconds,
            "driver": {
                "cores": _driver_cores(config, t),
                "memory": f"{sizing.driver_memory_mb}m",
                "labels": pod_labels,
                "serviceAccount": SERVICE_ACCOUNT,
                "env": env,
                "template": _template(config.driver_pod, t),
            },
            "executor": {
                "instances": sizing.instances,
                "cores": sizing.cores,
                "memory": f"{sizing.memory_mb}m",
                "labels": pod_labels,
                "env": env,
                "template": _template(config.executor_pod, t),
            },
        },
    }
    return prune(manifest)
