"""An ``Elastic`` config as the Kubeflow training operator's PyTorchJob (``kubeflow.org/v1``).

A pure function of the config and a ``Target`` (name, namespace, labels, the environment's
image, resources and variables); the kubernetes backend applies it, a ``pulumi_kubernetes``
component can declare the same dict. Elastic training: ``Worker`` replicas (up to the max of
``nnodes``) under an ``elasticPolicy`` (min/max nodes, rendezvous backend and config, restarts)
and ``nprocPerNode`` (the v1.7+ field; ``elasticPolicy.nProcPerNode`` is deprecated).
``runPolicy.ttlSecondsAfterFinished`` is the operator's safety net: it deletes a finished job.

The container is the operator's ``pytorch`` container with the image's own command, as in
Kubeflow's examples: the image knows what to train.
"""

from __future__ import annotations

from providers.kubernetes.objects import Target, container_resources, env_list, prune, shm_volume, stable_labels

from .config import Elastic, parse_nnodes

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
DEFAULT_IMAGE = "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
# The operator's headless Services are "<name>-worker-<i>", DNS-1035 labels (<= 63).
NAME_MAX = 63 - len("-worker-00")
# Flyte's RunPolicy spelling -> the operator's CleanPodPolicy values.
_CLEAN_POD = {"None": "None", "all": "All", "All": "All", "Running": "Running"}


def pytorch_job(config: Elastic, t: Target) -> dict:
    lo, hi = parse_nnodes(config.nnodes)
    rp = config.run_policy
    volumes, mounts = shm_volume(t.resources)
    container = {"name": "pytorch", "image": t.image or DEFAULT_IMAGE, "env": env_list(t.env),
                 "resources": container_resources(t.resources), "volumeMounts": mounts}
    run_policy = {
        "cleanPodPolicy": _CLEAN_POD.get(rp.clean_pod_policy) if rp and rp.clean_pod_policy else None,
        "ttlSecondsAfterFinished": rp.ttl_seconds_after_finished if rp and rp.ttl_seconds_after_finished is not None
        else t.ttl_seconds,
        "activeDeadlineSeconds": rp.active_deadline_seconds if rp else None,
        "backoffLimit": rp.backoff_limit if rp else None,
    }
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": t.metadata(),
        "spec": {
            "nprocPerNode": str(config.nproc_per_node),
            "elasticPolicy": {
                "minReplicas": lo,
                "maxReplicas": hi,
                "rdzvBackend": config.rdzv_backend,
                "maxRestarts": config.max_restarts,
                "rdzvConf": [{"key": str(k), "value": str(v)} for k, v in sorted(config.rdzv_configs.items())],
            },
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": {
                "Worker": {
                    "replicas": hi,
                    "restartPolicy": "OnFailure",
                    "template": {
                        "metadata": {"labels": stable_labels(t.labels)},
                        "spec": {"containers": [container], "volumes": volumes},
                    },
                },
            },
        },
    }
    return prune(manifest)
