"""A ``Dask`` config as the Dask Operator's DaskCluster (``kubernetes.dask.org/v1``).

A pure function of the config and a ``Target`` (name, namespace, labels, the environment's
image and resources): the kubernetes backend applies its result, a ``pulumi_kubernetes``
component can declare the same dict. The object follows the operator's documented example
(scheduler Service on 8786, dashboard on 8787, ``$(DASK_WORKER_NAME)``), sized from the config.
"""

from __future__ import annotations

from providers.kubernetes.objects import Target, container_resources, env_list, prune, shm_volume, stable_labels

from .config import Dask

API_VERSION = "kubernetes.dask.org/v1"
KIND = "DaskCluster"
DEFAULT_IMAGE = "ghcr.io/dask/dask:latest"  # pin it with image= on the environment or the group
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
# The operator names the scheduler's Service "<name>-scheduler", a DNS-1035 label (<= 63).
NAME_MAX = 63 - len("-scheduler")


# A scheduler or worker that has not exited this long after SIGTERM is killed: the cluster's
# results are the body's, already returned, and Kubernetes' default 30 s made every delete wait.
GRACE_SECONDS = 5


def _pod(container: dict, res) -> dict:
    volumes, mounts = shm_volume(res)
    if mounts:
        container["volumeMounts"] = mounts
    return {"containers": [container], "volumes": volumes, "terminationGracePeriodSeconds": GRACE_SECONDS}


def dask_cluster(config: Dask, t: Target) -> dict:
    """The DaskCluster for ``config``: ``number_of_workers`` workers, each with the worker
    group's (else the environment's) image and resources; ``idleTimeout`` is the operator's
    safety net, deleting a cluster nobody has used for ``t.ttl_seconds``."""
    s, w = config.scheduler, config.workers
    s_res = s.resources if s.resources is not None else t.resources
    w_res = w.resources if w.resources is not None else t.resources
    env = env_list(t.env)
    scheduler = {
        "name": "scheduler",
        "image": s.image or t.image or DEFAULT_IMAGE,
        "args": ["dask", "scheduler", "--port", str(SCHEDULER_PORT), "--dashboard-address", f":{DASHBOARD_PORT}"],
        "env": env,
        "ports": [
            {"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
            {"name": "http-dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"port": "http-dashboard", "path": "/health"},
                           "initialDelaySeconds": 1, "periodSeconds": 2},
        "resources": container_resources(s_res),
    }
    threads = w_res.threads() if w_res is not None else 1
    memory = w_res.memory_bytes() if w_res is not None else None
    worker = {
        "name": "worker",
        "image": w.image or t.image or DEFAULT_IMAGE,
        "args": ["dask", "worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", str(threads),
                 "--memory-limit", str(memory) if memory else "auto", "--dashboard-address", ":8788"],
        "env": env,
        "resources": container_resources(w_res),
    }
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": t.metadata(),
        "spec": {
            "idleTimeout": t.ttl_seconds,
            "scheduler": {
                "metadata": {"labels": stable_labels(t.labels)},
                "spec": _pod(scheduler, s_res),
                "service": {
                    "type": "ClusterIP",
                    "selector": {"dask.org/cluster-name": t.name, "dask.org/component": "scheduler"},
                    "ports": [
                        # The Dask CRD types targetPort as a string (format int-or-string): a name.
                        {"name": "tcp-comm", "protocol": "TCP", "port": SCHEDULER_PORT, "targetPort": "tcp-comm"},
                        {"name": "http-dashboard", "protocol": "TCP", "port": DASHBOARD_PORT,
                         "targetPort": "http-dashboard"},
                    ],
                },
            },
            "worker": {
                "replicas": w.number_of_workers,
                "metadata": {"labels": stable_labels(t.labels)},
                "spec": _pod(worker, w_res),
            },
        },
    }
    return prune(manifest)
