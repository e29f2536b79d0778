"""A ``RayJobConfig`` as KubeRay's RayCluster (``ray.io/v1``).

A pure function of the config and a ``Target`` (name, namespace, labels, the environment's
image and resources); the kubernetes backend applies it, a ``pulumi_kubernetes`` component can
declare the same dict. One head group and one worker group per ``WorkerNodeConfig``; a node's
``pod_template`` (a Flyte ``PodTemplate``, a ``V1PodSpec`` or its dict) is the base of its pod,
with the Ray container merged into its primary container.

KubeRay's RayCluster has no time-to-live of its own (``shutdownAfterJobFinishes`` and
``ttlSecondsAfterFinished`` are RayJob fields), so the config's RayJob lifecycle fields are not
part of it: the safety net of a RayCluster is the engine's recovery and orphan sweep.
"""

from __future__ import annotations

from typing import Any, Optional

from providers.kubernetes.objects import (Target, as_json, container_resources, env_list, merge_container, prune,
                                          stable_labels)

from .config import HeadNodeConfig, RayJobConfig

API_VERSION = "ray.io/v1"
KIND = "RayCluster"
RAY_VERSION = "2.40.0"
DEFAULT_IMAGE = f"rayproject/ray:{RAY_VERSION}"
# KubeRay names the head Service "<name>-head-svc", a DNS-1035 label (<= 63).
NAME_MAX = 63 - len("-head-svc")
HEAD_PORTS = [
    {"name": "gcs-server", "containerPort": 6379, "protocol": "TCP"},
    {"name": "dashboard", "containerPort": 8265, "protocol": "TCP"},
    {"name": "client", "containerPort": 10001, "protocol": "TCP"},
]


def _params(params: Optional[dict]) -> dict:
    """rayStartParams: option names without dashes, string values (the CRD's type)."""
    return {k.lstrip("-"): str(v).lower() if isinstance(v, bool) else str(v) for k, v in (params or {}).items()}


def _resources(node: Any, fallback: Any) -> dict:
    req, lim = getattr(node, "requests", None), getattr(node, "limits", None)
    if req is None and lim is None:
        return container_resources(fallback)
    out = {}
    if req is not None:
        out["requests"] = container_resources(req).get("requests", {})
    if lim is not None:
        out["limits"] = container_resources(lim).get("limits", {})
    return out


def _template(node: Any, container: dict, t: Target) -> dict:
    tmpl = getattr(node, "pod_template", None)
    labels, annotations = stable_labels(t.labels), {}
    primary = None
    if tmpl is not None and hasattr(tmpl, "pod_spec"):  # a Flyte PodTemplate
        spec = as_json(tmpl.pod_spec) or {}
        primary = getattr(tmpl, "primary_container_name", None)
        labels.update(getattr(tmpl, "labels", None) or {})
        annotations.update(getattr(tmpl, "annotations", None) or {})
    else:
        spec = as_json(tmpl) or {}
    return {"metadata": {"labels": labels, "annotations": annotations},
            "spec": merge_container(spec, primary, container, first=True)}


def ray_cluster(config: RayJobConfig, t: Target) -> dict:
    head = config.head_node_config or HeadNodeConfig()
    image = t.image or DEFAULT_IMAGE
    env = env_list(t.env)
    head_container = {"name": "ray-head", "image": image, "ports": HEAD_PORTS, "env": env,
                      "resources": _resources(head, t.resources)}
    groups = []
    for g in config.worker_node_config:
        lo = g.min_replicas if g.min_replicas is not None else (0 if config.enable_autoscaling else g.replicas)
        hi = g.max_replicas if g.max_replicas is not None else g.replicas
        worker = {"name": "ray-worker", "image": image, "env": env, "resources": _resources(g, t.resources)}
        groups.append({
            "groupName": g.group_name,
            "replicas": g.replicas,
            "minReplicas": lo,
            "maxReplicas": max(hi, g.replicas),
            "rayStartParams": _params(g.ray_start_params),
            "template": _template(g, worker, t),
        })
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": t.metadata(),
        "spec": {
            "rayVersion": RAY_VERSION,
            "enableInTreeAutoscaling": bool(config.enable_autoscaling),
            "headGroupSpec": {
                "serviceType": "ClusterIP",
                "rayStartParams": {"dashboard-host": "0.0.0.0", **_params(head.ray_start_params)},
                "template": _template(head, head_container, t),
            },
            "workerGroupSpecs": groups,
        },
    }
    return prune(manifest)
