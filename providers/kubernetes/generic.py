"""Kubernetes' own kinds (Namespace, ServiceAccount, Secret, ConfigMap, Service, Deployment,
...) for Pulumi programs the engine runs in-process: the provider registered as
``kubernetes:*``, which the registry falls back to for every kubernetes type that no operator
provider (``provider.py``) registered exactly.

- ``check`` knows the kinds in ``KINDS`` and nothing else: any other kubernetes type is an
  error naming it (no cluster call, so a preview needs no cluster).
- ``create`` applies with server-side apply as ``taskrig`` and waits, bounded, for readiness
  where Kubernetes reports one: a Deployment or StatefulSet is ready when its controller has
  observed the generation and counts enough updated and available (ready) replicas, as
  ``kubectl rollout status`` reads it; a Pod once its containers run (or have finished), and it
  fails at once if one waits for an image it cannot have. Other kinds are ready once stored. Pulumi's annotation
  ``pulumi.com/skipAwait: "true"`` skips the wait. An object that exists and that taskrig
  does not manage is not taken over (``pulumi.com/patchForce: "true"`` takes it over).
- ``delete`` treats NotFound as success and waits, bounded, until the object is gone; a
  Namespace counts as deleted once it is Terminating: emptying it is the namespace
  controller's work, which can take minutes (or, without a controller-manager, as on the test
  API server, never), and a Terminating namespace already accepts no new objects.
- A Secret's ``data`` and ``stringData`` are secret whether or not the program said so
  (``secret_fields``): the state and the plan hold hashes of them.
- ``read`` reports drift in the fields the program sets (a Secret's ``stringData`` is compared
  with its ``data``, which is what the server keeps). Not refreshed on every ``up`` (as Pulumi
  does not): ``engine refresh STACK`` reads them back.

Unnamed objects get the Pulumi resource's name (DNS-safe; Pulumi would add a random suffix),
filled in while the program is recorded (``autoname``) so the program sees it; a namespaced
object without a namespace goes to ``ENGINE_K8S_NAMESPACE`` (default "default").

Also here, ``taskrig:*``: the rows of taskrig's own components (``TaskrigComponent``).
"""

from __future__ import annotations

import base64
import copy
import json
import time
from dataclasses import dataclass
from typing import Any

from engine import paths
from engine.extend import ConfigError, Diff, NotFound, Provider, ProviderRegistry, Read
from engine.program import ComponentProvider

from .objects import dns_name, namespace_from_env
from .provider import (KINDS as OPERATOR_KINDS, POLL_MAX, delete_timeout, pod_never_starts, project, ready_timeout,
                       svc)

SKIP_AWAIT = "pulumi.com/skipAwait"
PATCH_FORCE = "pulumi.com/patchForce"


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True
    immutable: tuple[str, ...] = ()  # fields the API server will not change in place: replace

    @property
    def token(self) -> str:
        group_version = self.api_version if "/" in self.api_version else f"core/{self.api_version}"
        return f"kubernetes:{group_version}:{self.kind}"

    def path(self, namespace: str | None, name: str | None = None) -> str:
        root = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        ns = f"/namespaces/{namespace}" if self.namespaced else ""
        return f"{root}{ns}/{self.plural}" + (f"/{name}" if name else "")


KINDS = {(k.api_version, k.kind): k for k in (
    Kind("v1", "Namespace", "namespaces", namespaced=False),
    Kind("v1", "ServiceAccount", "serviceaccounts"),
    Kind("v1", "Secret", "secrets", immutable=("type",)),
    Kind("v1", "ConfigMap", "configmaps"),
    Kind("v1", "Pod", "pods", immutable=("spec",)),
    Kind("v1", "Service", "services", immutable=("spec.clusterIP",)),
    Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims",
         immutable=("spec.accessModes", "spec.selector", "spec.storageClassName", "spec.volumeName")),
    Kind("apps/v1", "Deployment", "deployments", immutable=("spec.selector",)),
    Kind("apps/v1", "StatefulSet", "statefulsets",
         immutable=("spec.selector", "spec.serviceName", "spec.volumeClaimTemplates", "spec.podManagementPolicy")),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles"),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", immutable=("roleRef",)),
)}


def kind_of(inputs: dict) -> Kind:
    api_version, kind = inputs.get("apiVersion"), inputs.get("kind")
    found = KINDS.get((api_version, kind))
    if found is None:
        group_version = api_version if api_version and "/" in api_version else f"core/{api_version}"
        served = ", ".join(k.token.split(":", 1)[1] for k in KINDS.values())
        operators = ", ".join(k.token().split(":", 1)[1] for k in OPERATOR_KINDS)
        raise ConfigError(f"kubernetes:{group_version}:{kind} is not a kind taskrig's kubernetes provider serves "
                          f"(it serves {served}, and the operators' {operators})", "type")
    return found


# ------------------------------------------------------------------------------ REST calls
def _request(c, what: str, method: str, path: str, body: Any = None, content_type: str = "application/json",
             query: tuple = ()) -> Any:
    """One call through the official client's ApiClient (its auth, TLS and retries), with the
    same connect timeout and errors as the custom-object calls (``client.py``)."""
    import urllib3

    from .client import Forbidden, KubernetesError, Unreachable, _timeouts

    api = c.api.api_client
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    try:
        req = api.param_serialize(method, path, query_params=list(query), header_params=headers, body=body,
                                  auth_settings=["BearerToken"])
        resp = api.call_api(*req, _request_timeout=_timeouts())
        resp.read()
    except (urllib3.exceptions.HTTPError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise Unreachable(f"cannot reach the Kubernetes API at {c.url} ({c.source}): "
                          f"{type(reason).__name__}: {reason}") from None
    try:
        data = json.loads(resp.data) if resp.data else None
    except ValueError:
        data = {"message": resp.data.decode(errors="replace").strip()}
    if 200 <= resp.status < 300:
        return data
    message = (data or {}).get("message", "") if isinstance(data, dict) else str(data)
    if resp.status == 404:
        raise NotFound(f"{what}: not found at {c.url}")
    if resp.status in (401, 403):
        raise Forbidden(f"{what}: the API at {c.url} refused ({resp.status}): {message[:500]} ({c.source})")
    raise KubernetesError(f"{what}: {resp.status} {resp.reason} from {c.url}: {message[:1000]}")


# ------------------------------------------------------------------------------ readiness
def _rollout_done(obj: dict, available_field: str) -> bool:
    """``kubectl rollout status``: the controller saw this generation, and enough replicas are
    updated and available (ready, for a StatefulSet)."""
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    want = spec.get("replicas", 1)
    return (st.get("observedGeneration", 0) >= (obj.get("metadata") or {}).get("generation", 0)
            and st.get("updatedReplicas", 0) >= want and st.get(available_field, 0) >= want)


def _pod_started(pod: dict) -> bool:
    """Every container running or finished: a pod that runs to completion (a task's body) is
    waited for until it runs; how it ends is for whoever reads its result."""
    st = pod.get("status") or {}
    if st.get("phase") in ("Succeeded", "Failed"):
        return True
    statuses = st.get("containerStatuses") or []
    want = len((pod.get("spec") or {}).get("containers") or [])
    return len(statuses) >= want > 0 and all(
        "running" in (cs.get("state") or {}) or "terminated" in (cs.get("state") or {}) for cs in statuses)


def ready(kind: Kind, obj: dict) -> bool:
    if kind.kind == "Pod":
        return _pod_started(obj)
    if kind.kind == "Deployment":
        return _rollout_done(obj, "availableReplicas")
    if kind.kind == "StatefulSet":
        return _rollout_done(obj, "readyReplicas")
    return True


def failed(kind: Kind, obj: dict) -> str | None:
    if kind.kind == "Pod":
        return pod_never_starts(obj)
    if kind.kind == "Deployment":
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
                return f"ProgressDeadlineExceeded: {c.get('message') or ''}".rstrip(": ")
    return None


class KubernetesObject(Provider):
    """One object of a kind in ``KINDS``; the kind comes from the inputs' apiVersion and kind."""

    type_token = "kubernetes:*"
    refresh_on_up = False
    delete_before_replace = True  # the name is the identity: a replacement re-uses it

    # ------------------------------------------------------------------ naming
    @classmethod
    def autoname(cls, name: str, inputs: dict) -> dict:
        """The inputs with ``metadata.name`` filled in from the resource name when the program
        gave none (called while the program is recorded, so it reads the name back)."""
        meta = inputs.get("metadata")
        if isinstance(meta, dict) and meta.get("name"):
            return inputs
        out = dict(inputs)
        out["metadata"] = {**(meta if isinstance(meta, dict) else {}), "name": dns_name(name)}
        return out

    @classmethod
    def secret_fields(cls, inputs: dict) -> tuple[str, ...]:
        """Top-level inputs kept out of the state even when the program did not mark them
        secret: a Secret's ``data`` and ``stringData``, as Pulumi's kubernetes provider does."""
        return ("data", "stringData") if inputs.get("kind") == "Secret" and inputs.get("apiVersion") == "v1" else ()

    def _locate(self, id: str, inputs: dict | None) -> tuple[Kind, str | None, str]:
        """(kind, namespace, name) from an id (``ns/name``, or ``name`` when cluster-scoped)
        or, in recovery, the physical name."""
        inputs = inputs or {}
        kind = kind_of(inputs)
        meta = inputs.get("metadata") or {}
        if kind.namespaced and "/" in id:
            ns, name = id.split("/", 1)
            return kind, ns, name
        name = meta.get("name") or dns_name(id)
        return kind, (meta.get("namespace") or namespace_from_env()) if kind.namespaced else None, name

    @staticmethod
    def _id(kind: Kind, ns: str | None, name: str) -> str:
        return f"{ns}/{name}" if kind.namespaced else name

    def _cluster(self):
        from .client import cluster

        return cluster()

    def _manifest(self, kind: Kind, ns: str | None, name: str, inputs: dict) -> dict:
        manifest = copy.deepcopy(inputs)
        meta = manifest.setdefault("metadata", {})
        meta["name"] = name
        if kind.namespaced:
            meta["namespace"] = ns
        return manifest

    def _what(self, kind: Kind, ns: str | None, name: str) -> str:
        return f"{kind.kind} {ns}/{name}" if ns else f"{kind.kind} {name}"

    def _get(self, c, kind: Kind, ns: str | None, name: str) -> dict | None:
        try:
            return _request(c, f"get {self._what(kind, ns, name)}", "GET", kind.path(ns, name))
        except NotFound:
            return None

    def _outputs(self, c, kind: Kind, ns: str | None, name: str, obj: dict) -> dict:
        meta = obj.get("metadata") or {}
        out = {"kind": kind.kind, "api_version": kind.api_version, "name": name, "uid": meta.get("uid"),
               "api_url": c.url}
        if ns:
            out["namespace"] = ns
        if kind.kind == "Service":
            out["host"] = svc(name, ns)
            out["cluster_ip"] = (obj.get("spec") or {}).get("clusterIP")
        return out

    def _wait(self, c, kind: Kind, ns, name, what: str, done, deadline: float) -> dict | None:
        interval, obj, end = 0.1, None, time.monotonic() + deadline
        while True:
            obj = self._get(c, kind, ns, name)
            if done(obj):
                return obj
            if time.monotonic() >= end:
                status = (obj or {}).get("status")
                raise TimeoutError(f"{self._what(kind, ns, name)} at {c.url}: {what} after {deadline:.0f} s "
                                   f"(status: {status!r}; ENGINE_K8S_READY_TIMEOUT / ENGINE_K8S_DELETE_TIMEOUT, "
                                   f"or the annotation {SKIP_AWAIT}: \"true\")")
            time.sleep(interval)
            interval = min(interval * 1.5, POLL_MAX)

    def _apply(self, c, kind: Kind, ns, name, inputs: dict) -> dict:
        manifest = self._manifest(kind, ns, name, inputs)
        obj = _request(c, f"apply {self._what(kind, ns, name)}", "PATCH", kind.path(ns, name), manifest,
                       "application/apply-patch+yaml", (("fieldManager", _manager()), ("force", "true")))
        annotations = (manifest.get("metadata") or {}).get("annotations") or {}
        if str(annotations.get(SKIP_AWAIT, "")).lower() == "true" or ready(kind, obj):
            return obj

        def done(o):
            if o is None:
                raise RuntimeError(f"{self._what(kind, ns, name)} disappeared while waiting for it to become ready")
            why = failed(kind, o)
            if why:
                raise RuntimeError(f"{self._what(kind, ns, name)} failed: {why}")
            return ready(kind, o)

        return self._wait(c, kind, ns, name, "not ready", done, ready_timeout())

    # ------------------------------------------------------------------ contract
    def check(self, inputs: dict) -> dict:
        kind_of(inputs)
        meta = inputs.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise ConfigError(f"metadata of a {inputs.get('kind')} must be a map", "metadata")
        return inputs

    def diff(self, old_inputs: dict, new_inputs: dict) -> Diff:
        changed = tuple(paths.diff(old_inputs, new_inputs))
        replace = ["apiVersion", "kind", "metadata.name", "metadata.namespace"]
        try:
            replace += kind_of(new_inputs).immutable
        except ConfigError:
            pass
        replace = [paths.parse(r) for r in replace]
        keys = tuple(p for p in changed if any(paths.overlaps(p, r) for r in replace))
        return Diff(changed=changed, replace_keys=keys, delete_before_replace=True)

    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        kind, ns, name = self._locate(idempotency_key, inputs)
        c = self._cluster()
        existing = self._get(c, kind, ns, name)
        annotations = (inputs.get("metadata") or {}).get("annotations") or {}
        if existing is not None and not _managed(existing) and str(annotations.get(PATCH_FORCE, "")).lower() != "true":
            raise ConfigError(f"{self._what(kind, ns, name)} already exists at {c.url} and taskrig does not manage "
                              f"it: give the resource another name, delete the object, or annotate it "
                              f"{PATCH_FORCE}: \"true\" to take it over", "metadata.name")
        try:
            obj = self._apply(c, kind, ns, name, inputs)
        except BaseException:
            # Transactional: an object this create made does not outlive its failure.
            if existing is None:
                try:
                    self.delete(self._id(kind, ns, name), inputs, None)
                except Exception:  # noqa: BLE001 - the create's error is the one to report
                    pass
            raise
        return self._id(kind, ns, name), self._outputs(c, kind, ns, name, obj)

    def read(self, id: str, inputs: dict, outputs: dict | None):
        kind, ns, name = self._locate(id, inputs)
        c = self._cluster()
        obj = self._get(c, kind, ns, name)
        if obj is None or ((obj.get("metadata") or {}).get("deletionTimestamp") and outputs is not None):
            return None
        out = self._outputs(c, kind, ns, name, obj)
        if outputs is None or not inputs:
            return out
        live = project(_secret_view(obj, inputs), inputs)
        return out if live == inputs else Read(inputs=live, outputs=out)

    def update(self, id: str, old_inputs: dict, new_inputs: dict, outputs: dict | None = None) -> dict:
        kind, ns, name = self._locate(id, new_inputs)
        c = self._cluster()
        return self._outputs(c, kind, ns, name, self._apply(c, kind, ns, name, new_inputs))

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        kind, ns, name = self._locate(id, inputs)
        c = self._cluster()
        try:
            # Background: the object goes now, its dependents (a Deployment's ReplicaSets) after.
            _request(c, f"delete {self._what(kind, ns, name)}", "DELETE", kind.path(ns, name),
                     {"propagationPolicy": "Background"})
        except NotFound:
            return
        if kind.kind == "Namespace":
            gone = lambda o: o is None or bool((o.get("metadata") or {}).get("deletionTimestamp"))  # noqa: E731
        else:
            gone = lambda o: o is None  # noqa: E731
        self._wait(c, kind, ns, name, "still exists (a finalizer nobody clears?)", gone, delete_timeout())


def _manager() -> str:
    from .client import FIELD_MANAGER

    return FIELD_MANAGER


def _managed(obj: dict) -> bool:
    return any(f.get("manager") == _manager() for f in (obj.get("metadata") or {}).get("managedFields") or [])


def _secret_view(obj: dict, inputs: dict) -> dict:
    """A live Secret as the program wrote it: the server turns ``stringData`` into base64
    ``data`` and keeps no ``stringData``."""
    if obj.get("kind") != "Secret" or not isinstance(inputs.get("stringData"), dict):
        return obj
    data = obj.get("data") or {}
    view = dict(obj)
    view["stringData"] = {k: base64.b64decode(data[k]).decode(errors="replace")
                          for k in inputs["stringData"] if k in data}
    return view


class TaskrigComponent(ComponentProvider):
    """The rows of taskrig's own Pulumi components (``taskrig:dask:DaskCluster``, ...): they own
    nothing. Registered here, so a ``destroy`` in a fresh process (that never ran the program)
    finds a provider for them too."""

    type_token = "taskrig:*"


ProviderRegistry.register(KubernetesObject)
ProviderRegistry.register(TaskrigComponent)
