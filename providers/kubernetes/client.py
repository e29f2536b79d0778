"""The official ``kubernetes`` client, set up once per process, with bounded calls.

Configuration: ``ENGINE_KUBECONFIG`` (else ``KUBECONFIG``, else ``~/.kube/config``) and
``ENGINE_K8S_CONTEXT``, or the in-cluster service account when there is no kubeconfig.
Every request has a connect timeout (``ENGINE_K8S_CONNECT_TIMEOUT``, 5 s) and one retry, so an
unreachable cluster is an error naming its URL within seconds, never a hang.

Calls go through ``_preload_content=False`` and the JSON is parsed here: the generated client
returns ``None`` for some apply-patch responses, and raw JSON is what the engine records anyway.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from engine.extend import ConfigError, NotFound

FIELD_MANAGER = "taskrig"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


class KubernetesError(RuntimeError):
    """A call to the cluster failed; says which cluster and what it answered."""


class Unreachable(KubernetesError):
    pass


class CRDMissing(KubernetesError):
    pass


class Forbidden(KubernetesError):
    pass


def _timeouts() -> tuple[float, float]:
    connect = float(os.environ.get("ENGINE_K8S_CONNECT_TIMEOUT") or 5)
    return connect, float(os.environ.get("ENGINE_K8S_READ_TIMEOUT") or 30)


@dataclass
class Cluster:
    """One configured API server: the CustomObjectsApi and where it points."""

    api: Any
    url: str
    source: str  # "kubeconfig PATH (context C)" or "in-cluster service account"
    _plurals: dict = field(default_factory=dict, repr=False)  # API group -> its kinds (discovery)

    # ---------------------------------------------------------------- raw JSON calls
    def _call(self, what: str, fn, *args, ok404: bool = False, **kw) -> Any:
        from kubernetes.client.exceptions import ApiException
        import urllib3

        try:
            resp = fn(*args, _preload_content=False, _request_timeout=_timeouts(), **kw)
        except ApiException as e:
            raise self._api_error(what, e, args) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise Unreachable(f"cannot reach the Kubernetes API at {self.url} ({self.source}): "
                              f"{type(reason).__name__}: {reason}") from None
        data = resp.data
        return json.loads(data) if data else None

    def _api_error(self, what: str, e, args) -> Exception:
        body = e.body.decode() if isinstance(e.body, bytes) else (e.body or "")
        try:
            status = json.loads(body)
        except ValueError:
            status = {"message": body.strip()}
        group, version, plural = args[0], args[1], args[3] if len(args) > 3 else args[2]
        if e.status == 404 and not (status.get("details") or {}).get("name"):
            return CRDMissing(f"the API at {self.url} does not serve {plural}.{group}/{version}: is the "
                              f"CustomResourceDefinition installed (its operator deployed)?")
        if e.status == 404:
            return NotFound(f"{what}: not found at {self.url}")
        if e.status in (401, 403):
            return Forbidden(f"{what}: the API at {self.url} refused ({e.status} {e.reason}): "
                                   f"{status.get('message', body)[:500]} ({self.source})")
        return KubernetesError(f"{what}: {e.status} {e.reason} from {self.url}: {status.get('message', body)[:1000]}")

    def get(self, group, version, plural, namespace, name) -> dict:
        return self._call(f"get {plural}/{name} in {namespace}", self.api.get_namespaced_custom_object,
                          group, version, namespace, plural, name)

    def apply(self, group, version, plural, namespace, name, manifest: dict) -> dict:
        """Server-side apply as ``taskrig`` (forced: an out-of-band edit of a field we declare
        is drift we undo, not a conflict to stop on)."""
        return self._call(f"apply {plural}/{name} in {namespace}", self.api.patch_namespaced_custom_object,
                          group, version, namespace, plural, name, manifest, field_manager=FIELD_MANAGER,
                          force=True, _content_type=APPLY)

    def delete(self, group, version, plural, namespace, name) -> None:
        """Background propagation: the object goes at once and the garbage collector removes
        what its operator made for it in parallel. (Foreground took 15 to 75 s for a DaskCluster
        here: the collector requeues the owner with a growing backoff while each level of
        dependents drains.) The caller waits for those dependents with ``dependents``."""
        self._call(f"delete {plural}/{name} in {namespace}", self.api.delete_namespaced_custom_object,
                   group, version, namespace, plural, name, propagation_policy="Background")

    def dependents(self, namespace: str, uids: set[str], group: str) -> dict[str, str]:
        """What in ``namespace`` is one of ``uids`` or owned by one of them, directly or through
        other owned objects (uid -> kind/name): pods, Services, the workload controllers, and
        the custom objects of the owner's own API group (a DaskCluster's DaskWorkerGroup, a
        RayJob's RayCluster). A deleting caller passes every uid it has seen so far: once an
        intermediate owner (a ReplicaSet) is gone, its pods can only be known by uid. Until this
        is empty a replacement of the same name would meet the old one's Deployments, which an
        operator that creates only what is missing takes for its own."""
        from kubernetes import client

        core, apps = client.CoreV1Api(self.api.api_client), client.AppsV1Api(self.api.api_client)
        batch = client.BatchV1Api(self.api.api_client)
        lists = [("Pod", core.list_namespaced_pod), ("Service", core.list_namespaced_service),
                 ("Deployment", apps.list_namespaced_deployment), ("ReplicaSet", apps.list_namespaced_replica_set),
                 ("StatefulSet", apps.list_namespaced_stateful_set), ("Job", batch.list_namespaced_job)]
        found = [(kind, self._call(f"list {kind}s in {namespace}", fn, namespace)) for kind, fn in lists]
        for version, plural in self._group_plurals(group):
            found.append((plural, self._call(f"list {plural} in {namespace}", self.api.list_namespaced_custom_object,
                                             group, version, namespace, plural)))
        owners: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        for kind, out in found:
            for obj in (out or {}).get("items", []):
                meta = obj.get("metadata") or {}
                owners[meta.get("uid")] = [o.get("uid") for o in meta.get("ownerReferences") or []]
                names[meta.get("uid")] = f"{obj.get('kind') or kind}/{meta.get('name')}"

        def owned(u: str, seen: frozenset = frozenset()) -> bool:
            return u in uids or any(o in uids or (o in owners and o not in seen and owned(o, seen | {u}))
                                    for o in owners.get(u, ()))

        return {u: names[u] for u in owners if owned(u)}

    def _group_plurals(self, group: str) -> list[tuple[str, str]]:
        """(version, plural) of each namespaced kind the owner's API group serves (discovery)."""
        from kubernetes import client

        if group in self._plurals:
            return self._plurals[group]
        groups = self._call("discover API groups", client.ApisApi(self.api.api_client).get_api_versions)
        mine = [g for g in (groups or {}).get("groups", []) if g.get("name") == group]
        version = (mine[0].get("preferredVersion") or {}).get("version") if mine else None
        if not version:
            return []
        res = self._call(f"discover {group}/{version}", self.api.get_api_resources, group, version)
        self._plurals[group] = [(version, r["name"]) for r in (res or {}).get("resources", [])
                                if r.get("namespaced") and "/" not in r["name"] and "list" in (r.get("verbs") or [])]
        return self._plurals[group]

    def list(self, group, version, plural, selector: str, namespace: str | None = None) -> list[dict]:
        if namespace:
            out = self._call(f"list {plural} in {namespace}", self.api.list_namespaced_custom_object,
                             group, version, namespace, plural, label_selector=selector)
        else:
            out = self._call(f"list {plural}", self.api.list_cluster_custom_object,
                             group, version, plural, label_selector=selector)
        return out.get("items", [])

    def pods(self, namespace: str, selector: str) -> list[dict]:
        """The pods an operator made for an object (by its labels): where readiness and the
        reason a pod will never start (an image that does not exist, OOMKilled) are read."""
        from kubernetes import client

        core = client.CoreV1Api(self.api.api_client)
        out = self._call(f"list pods {selector} in {namespace}", core.list_namespaced_pod, namespace,
                         label_selector=selector)
        return (out or {}).get("items", [])

    def patch_status(self, group, version, plural, namespace, name, status: dict, subresource: bool) -> dict:
        """What an operator does (the tests play it): a merge patch of ``status``, through the
        status subresource when the CRD has one, else through the object itself."""
        fn = self.api.patch_namespaced_custom_object_status if subresource else self.api.patch_namespaced_custom_object
        return self._call(f"patch status of {plural}/{name}", fn, group, version, namespace, plural, name,
                          {"status": status}, _content_type=MERGE)


_lock = threading.Lock()
_cached: dict[tuple, Cluster] = {}


def kubeconfig_path() -> str | None:
    for var in ("ENGINE_KUBECONFIG", "KUBECONFIG"):
        v = os.environ.get(var)
        if v:
            return v.split(os.pathsep)[0]
    default = os.path.expanduser("~/.kube/config")
    return default if os.path.exists(default) else None


def cluster() -> Cluster:
    """The configured cluster (cached per kubeconfig and context). No network call."""
    path, context = kubeconfig_path(), os.environ.get("ENGINE_K8S_CONTEXT") or None
    key = (path, context)
    with _lock:
        if key in _cached:
            return _cached[key]
        from kubernetes import client, config

        cfg = client.Configuration()
        if path:
            if not os.path.exists(path):
                raise ConfigError(f"the kubeconfig {path} does not exist", "KUBECONFIG")
            try:
                config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
            except Exception as e:  # noqa: BLE001 - the client raises several kinds for a bad file
                raise ConfigError(f"cannot load the kubeconfig {path}"
                                  f"{f' (context {context})' if context else ''}: {e}", "KUBECONFIG") from None
            source = f"kubeconfig {path}" + (f", context {context}" if context else "")
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except Exception:  # noqa: BLE001
                raise ConfigError("no Kubernetes configuration: set KUBECONFIG (or ENGINE_KUBECONFIG), "
                                  "or run inside a cluster", "KUBECONFIG") from None
            source = "in-cluster service account"
        cfg.retries = 1
        c = _cached[key] = Cluster(client.CustomObjectsApi(client.ApiClient(cfg)), cfg.host, source)
        return c
