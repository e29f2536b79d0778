"""The generic custom-resource provider: one operator object per resource, applied with
server-side apply, ready when its operator's status says so.

- ``check`` validates the manifest against the operator's CRD schema (``schema.py``): no call
  to any cluster, so a bad config fails before the state is opened.
- ``create`` applies (field manager ``taskrig``), then waits, bounded, until the status fields
  the operator writes say ready; a failure or timeout deletes what it applied (transactional).
- ``read`` returns None when the object is gone, and ``Read`` with the live values of the fields
  the manifest sets when any of them changed out of band (server defaults are not drift).
- ``update`` re-applies in place; what the operator would not roll out in place (the Dask
  scheduler, a Ray group's pod template, a submitted job's spec) is a replacement instead,
  deleted before it is re-created under the same name.
- ``delete`` treats NotFound as success and waits, bounded, until the object is gone.
- ``owned`` lists by the stack's label, for the orphan sweep of recovery.

The id is ``namespace/name``; recovery passes the physical name instead, which maps to the
same object through the manifest's ``metadata``.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

from engine import paths
from engine.extend import ConfigError, Diff, NotFound, Owned, Provider, ProviderRegistry, Read

from . import schema
from .objects import RUN_LABEL, dns_name, namespace_from_env, stack_selector, unredact_equal

POLL_MAX = 1.0


def svc(name: str, namespace: str) -> str:
    """A Service's in-cluster DNS name."""
    return f"{name}.{namespace}.svc.cluster.local"


def ready_timeout() -> float:
    return float(os.environ.get("ENGINE_K8S_READY_TIMEOUT") or 600)


def delete_timeout() -> float:
    return float(os.environ.get("ENGINE_K8S_DELETE_TIMEOUT") or 120)


def _conditions(obj: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or [] if isinstance(c, dict)}


def project(live: Any, desired: Any) -> Any:
    """The live object cut down to the shape of the manifest: the fields we set, with their
    live values. Fields the server or the operator added are not ours and not drift."""
    if isinstance(desired, dict) and isinstance(live, dict):
        return {k: project(live[k], v) for k, v in desired.items() if k in live}
    if isinstance(desired, list) and isinstance(live, list):
        return [project(lv, dv) for lv, dv in zip(live, desired)] + live[len(desired):]
    if isinstance(desired, str) and isinstance(live, str) and unredact_equal(desired, live):
        return desired  # a redacted secret whose live value hashes to the placeholder
    return live


# Waiting reasons after which a container will not start by itself (a pull the kubelet keeps
# failing, an image that may not be pulled, a crash loop, a bad config): fail now, not at the
# ready timeout.
NEVER_STARTS = ("ErrImageNeverPull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                "CreateContainerError", "CrashLoopBackOff", "RunContainerError")


def pod_never_starts(pod: dict) -> str | None:
    """One line naming the pod, its container's image and the reason, if a container is
    waiting for something that will not come by itself (an image that cannot be had)."""
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    images = {c.get("name"): c.get("image") for c in (pod.get("spec") or {}).get("containers") or []}
    for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in NEVER_STARTS:
            image = images.get(cs.get("name")) or cs.get("image")
            msg = (waiting.get("message") or "").splitlines()[0][:300] if waiting.get("message") else ""
            return f"pod {meta.get('name')}: image {image}: {waiting['reason']}" + (f" ({msg})" if msg else "")
    return None


def pod_failure(pod: dict) -> str | None:
    """One line naming the pod and the reason, if it will never run (or ran out of memory)."""
    never = pod_never_starts(pod)
    if never:
        return never
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    for cs in st.get("containerStatuses") or []:
        state, last = cs.get("state") or {}, cs.get("lastState") or {}
        ended = state.get("terminated") or last.get("terminated") or {}
        if ended.get("reason") == "OOMKilled":
            return f"pod {meta.get('name')}: container {cs.get('name')} was OOMKilled (its memory limit is too low)"
    if st.get("phase") == "Failed":
        return f"pod {meta.get('name')} failed: {st.get('reason') or ''} {st.get('message') or ''}".strip()
    return None


def _pod_ready(pod: dict) -> bool:
    return _conditions(pod).get("Ready", {}).get("status") == "True"


class CustomResource(Provider):
    """Base of one kind; subclasses name the kind and say how its operator reports readiness."""

    group = version = kind = plural = ""
    status_subresource = True
    refresh_on_up = True  # a reusable object may have been deleted by its operator's TTL
    delete_before_replace = True  # same name: the object's name is derived, never suffixed

    # ------------------------------------------------------------------ per kind
    def ready(self, obj: dict) -> bool:
        raise NotImplementedError

    def failed(self, obj: dict) -> str | None:
        """A message when the status says it will never become ready."""
        return None

    def in_place(self, spec: dict) -> dict:
        """The spec without what an in-place apply rolls out; a change elsewhere replaces."""
        return spec

    def pod_selector(self, name: str) -> str | None:
        """The label selector of the pods the operator makes for object ``name``, where a kind
        needs its pods' own state for readiness (None: the operator's status is enough)."""
        return None

    def pods_ready(self, obj: dict, pods: list[dict]) -> bool:
        return True

    def addresses(self, name: str, namespace: str, obj: dict) -> dict:
        return {}

    # ------------------------------------------------------------------ helpers
    @classmethod
    def token(cls) -> str:
        return f"kubernetes:{cls.group}/{cls.version}:{cls.kind}"

    def _cluster(self):
        from .client import cluster

        return cluster()

    def _locate(self, id: str, inputs: dict | None) -> tuple[str, str]:
        """(namespace, name) from an id (``ns/name``) or, in recovery, the physical name."""
        if "/" in id:
            ns, name = id.split("/", 1)
            return ns, name
        meta = (inputs or {}).get("metadata") or {}
        return meta.get("namespace") or namespace_from_env(), meta.get("name") or dns_name(id)

    def _same_cluster(self, c, outputs: dict | None) -> None:
        recorded = (outputs or {}).get("api_url")
        if recorded and recorded != c.url:
            from .client import KubernetesError

            raise KubernetesError(f"this {self.kind} was made in the cluster at {recorded}, but the Kubernetes "
                                  f"configuration ({c.source}) points at {c.url}; point it back (KUBECONFIG, "
                                  f"ENGINE_K8S_CONTEXT) before changing or deleting it")

    def _args(self, ns: str, name: str) -> tuple:
        return self.group, self.version, self.plural, ns, name

    def _outputs(self, c, ns: str, name: str, obj: dict) -> dict:
        meta = obj.get("metadata") or {}
        return {"namespace": ns, "name": name, "uid": meta.get("uid"), "api_url": c.url, "kind": self.kind,
                **self.addresses(name, ns, obj)}

    def _wait(self, c, ns: str, name: str, what: str, done, deadline: float) -> dict | None:
        """Poll until ``done(obj)`` (obj None once it is gone), with backoff, up to ``deadline``."""
        interval, obj = 0.1, None
        end = time.monotonic() + deadline
        while True:
            try:
                obj = c.get(*self._args(ns, name))
            except NotFound:
                obj = None
            if done(obj):
                return obj
            if time.monotonic() >= end:
                status = (obj or {}).get("status")
                raise TimeoutError(f"{self.kind} {ns}/{name} at {c.url}: {what} after {deadline:.0f} s "
                                   f"(status: {status!r}; ENGINE_K8S_READY_TIMEOUT / ENGINE_K8S_DELETE_TIMEOUT)")
            time.sleep(interval)
            interval = min(interval * 1.5, POLL_MAX)

    def _wait_ready(self, c, ns: str, name: str) -> dict:
        selector = self.pod_selector(name)

        def done(obj):
            if obj is None:
                raise RuntimeError(f"{self.kind} {ns}/{name} disappeared while waiting for it to become ready")
            why = self.failed(obj)
            if why:
                raise RuntimeError(f"{self.kind} {ns}/{name} failed: {why}")
            if selector is None:
                return self.ready(obj)
            pods = c.pods(ns, selector)
            for pod in pods:
                why = pod_failure(pod)
                if why:
                    raise RuntimeError(f"{self.kind} {ns}/{name} will not become ready: {why}")
            return self.ready(obj) and self.pods_ready(obj, pods)

        return self._wait(c, ns, name, "not ready", done, ready_timeout())

    # ------------------------------------------------------------------ contract
    def check(self, inputs: dict) -> dict:
        if inputs.get("apiVersion") != f"{self.group}/{self.version}" or inputs.get("kind") != self.kind:
            raise ConfigError(f"expected a {self.group}/{self.version} {self.kind}, got "
                              f"{inputs.get('apiVersion')} {inputs.get('kind')}", "kind")
        return schema.validate(inputs, self.group, self.version, self.kind, self.plural)

    def diff(self, old_inputs: dict, new_inputs: dict) -> Diff:
        changed = tuple(paths.diff(old_inputs, new_inputs))
        if not changed:
            return Diff(delete_before_replace=True)
        identity = {k: (old_inputs.get(k), new_inputs.get(k)) for k in ("apiVersion", "kind")}
        replace = [(k,) for k, (a, b) in identity.items() if a != b]
        om, nm = old_inputs.get("metadata") or {}, new_inputs.get("metadata") or {}
        replace += [("metadata", k) for k in ("name", "namespace") if om.get(k) != nm.get(k)]
        replace += [("spec",) + p for p in paths.diff(self.in_place(copy.deepcopy(old_inputs.get("spec") or {})),
                                                      self.in_place(copy.deepcopy(new_inputs.get("spec") or {})))]
        # The plan checks replace keys against the changed paths: map each onto one.
        keys = tuple(p for p in changed if any(paths.overlaps(p, r) for r in replace))
        return Diff(changed=changed, replace_keys=keys, delete_before_replace=True)

    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        ns, name = self._locate(idempotency_key, inputs)
        c = self._cluster()
        c.apply(*self._args(ns, name), inputs)
        try:
            obj = self._wait_ready(c, ns, name)
        except BaseException:
            # Transactional: what was applied does not outlive a failed create.
            try:
                self.delete(f"{ns}/{name}", inputs, None)
            except Exception:  # noqa: BLE001 - the create's error is the one to report
                pass
            raise
        return f"{ns}/{name}", self._outputs(c, ns, name, obj)

    def read(self, id: str, inputs: dict, outputs: dict | None):
        ns, name = self._locate(id, inputs)
        c = self._cluster()
        self._same_cluster(c, outputs)
        try:
            obj = c.get(*self._args(ns, name))
        except NotFound:
            return None
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            return None if outputs is not None else self._outputs(c, ns, name, obj)
        out = self._outputs(c, ns, name, obj)
        if outputs is None or not inputs:
            return out
        live = project(obj, inputs)
        return out if live == inputs else Read(inputs=live, outputs=out)

    def update(self, id: str, old_inputs: dict, new_inputs: dict, outputs: dict | None = None) -> dict:
        ns, name = self._locate(id, new_inputs)
        c = self._cluster()
        self._same_cluster(c, outputs)
        c.apply(*self._args(ns, name), new_inputs)
        return self._outputs(c, ns, name, self._wait_ready(c, ns, name))

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        ns, name = self._locate(id, inputs)
        c = self._cluster()
        self._same_cluster(c, outputs)
        try:
            uid = (c.get(*self._args(ns, name)).get("metadata") or {}).get("uid")
            known = {uid} | set(c.dependents(ns, {uid}, self.group))
            c.delete(*self._args(ns, name))
        except NotFound:
            return
        # Gone, not just marked, and so is what its operator made for it: a replacement re-uses
        # the name, and an operator's finalizer that never clears (operator down) must be an
        # error, not a silent leak.
        end = time.monotonic() + delete_timeout()
        self._wait(c, ns, name, "still exists (a finalizer its operator has not cleared?)",
                   lambda obj: obj is None, delete_timeout())
        interval = 0.2
        while left := c.dependents(ns, known, self.group):
            known |= set(left)
            if time.monotonic() >= end:
                raise TimeoutError(f"{self.kind} {ns}/{name} at {c.url} is gone, but what it owned is still "
                                   f"there after {delete_timeout():.0f} s: {', '.join(sorted(left.values())[:5])} "
                                   f"(ENGINE_K8S_DELETE_TIMEOUT)")
            time.sleep(interval)
            interval = min(interval * 1.5, 2.0)

    def owned(self, stack: str) -> list[Owned]:
        from .client import Forbidden

        c = self._cluster()
        try:
            items = c.list(self.group, self.version, self.plural, stack_selector(stack))
        except Forbidden:  # no cluster-wide list permission: the namespace new objects go to
            items = c.list(self.group, self.version, self.plural, stack_selector(stack), namespace_from_env())
        out = []
        for obj in items:
            meta = obj.get("metadata") or {}
            out.append(Owned(f"{meta.get('namespace')}/{meta.get('name')}", (meta.get("labels") or {}).get(RUN_LABEL)))
        return out


# ------------------------------------------------------------------------------ the kinds
class DaskCluster(CustomResource):
    """Dask Operator. No status subresource: the operator writes ``status.phase`` through the
    object itself (``Error`` when it rejects one). Ready once its pods are: the scheduler pod
    Ready and the default group's workers Running."""

    group, version, kind, plural = "kubernetes.dask.org", "v1", "DaskCluster", "daskclusters"
    status_subresource = False

    def ready(self, obj):
        # Not status.phase alone: the operator (2026.3.0) sometimes leaves a complete, usable
        # cluster Pending (dask/dask-kubernetes#968). Its pods say whether it is up.
        return True

    def pod_selector(self, name):
        return f"dask.org/cluster-name={name}"

    def pods_ready(self, obj, pods):
        """The scheduler pod Ready and every worker of the default group Running."""
        def of(component):
            return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get("dask.org/component") == component
                    and not (p.get("metadata") or {}).get("deletionTimestamp")]
        want = ((obj.get("spec") or {}).get("worker") or {}).get("replicas", 0)
        running = [p for p in of("worker") if (p.get("status") or {}).get("phase") == "Running"]
        return any(_pod_ready(p) for p in of("scheduler")) and len(running) >= want

    def failed(self, obj):
        # "Error": the operator rejected it (an invalid name); the rest are Created, Pending, Running.
        phase = (obj.get("status") or {}).get("phase")
        return "status.phase is Error: the Dask Operator rejected it (see its log)" if phase == "Error" else None

    def in_place(self, spec):
        # The operator scales the default worker group and honours idleTimeout live; it does
        # not restart a scheduler or roll workers for a changed pod spec.
        spec.pop("idleTimeout", None)
        (spec.get("worker") or {}).pop("replicas", None)
        return spec

    def addresses(self, name, namespace, obj):
        # The operator's Service "<name>-scheduler": comm 8786, dashboard 8787.
        host = svc(f"{name}-scheduler", namespace)
        return {"scheduler_address": f"tcp://{host}:8786", "dashboard_url": f"http://{host}:8787"}


class RayCluster(CustomResource):
    """KubeRay. Ready when ``status.state`` is ``ready`` or the ``RayClusterProvisioned``
    condition is true (KubeRay >= 1.2 reports both)."""

    group, version, kind, plural = "ray.io", "v1", "RayCluster", "rayclusters"

    def ready(self, obj):
        st = obj.get("status") or {}
        cond = _conditions(obj).get("RayClusterProvisioned") or {}
        return st.get("state") == "ready" or cond.get("status") == "True"

    def failed(self, obj):
        st = obj.get("status") or {}
        return f"status.state is failed: {st.get('reason') or ''}".rstrip(": ") if st.get("state") == "failed" else None

    def in_place(self, spec):
        # KubeRay scales worker groups in place; it does not recreate pods for a new template.
        for g in spec.get("workerGroupSpecs") or []:
            for k in ("replicas", "minReplicas", "maxReplicas", "scaleStrategy", "idleTimeoutSeconds"):
                g.pop(k, None)
        return spec

    def addresses(self, name, namespace, obj):
        # KubeRay's head Service "<name>-head-svc": Ray client 10001, dashboard 8265, GCS 6379.
        host = svc(f"{name}-head-svc", namespace)
        return {"address": f"ray://{host}:10001", "dashboard_url": f"http://{host}:8265", "gcs_address": f"{host}:6379"}


class SparkApplication(CustomResource):
    """Spark Operator. Ready once the driver runs (``status.applicationState.state``)."""

    group, version, kind, plural = "sparkoperator.k8s.io", "v1beta2", "SparkApplication", "sparkapplications"

    def ready(self, obj):
        state = ((obj.get("status") or {}).get("applicationState") or {}).get("state")
        return state in ("RUNNING", "SUCCEEDING", "COMPLETED")

    def failed(self, obj):
        app = (obj.get("status") or {}).get("applicationState") or {}
        if app.get("state") in ("FAILED", "SUBMISSION_FAILED", "FAILING"):
            return f"{app['state']}: {app.get('errorMessage') or 'no message'}"
        return None

    # A submitted application's spec is not re-read: any spec change is a resubmission.

    def addresses(self, name, namespace, obj):
        # The operator's UI Service "<name>-ui-svc" on 4040; the driver pod from the status.
        driver = (obj.get("status") or {}).get("driverInfo") or {}
        return {"ui_url": f"http://{svc(name + '-ui-svc', namespace)}:4040", "driver_pod": driver.get("podName"),
                "application_id": (obj.get("status") or {}).get("sparkApplicationId")}


class PyTorchJob(CustomResource):
    """Kubeflow training operator. Ready once the ``Running`` (or ``Succeeded``) condition is
    true; ``Failed`` is final."""

    group, version, kind, plural = "kubeflow.org", "v1", "PyTorchJob", "pytorchjobs"

    def ready(self, obj):
        conds = _conditions(obj)
        return any((conds.get(t) or {}).get("status") == "True" for t in ("Running", "Succeeded"))

    def failed(self, obj):
        cond = _conditions(obj).get("Failed") or {}
        return f"{cond.get('reason') or 'Failed'}: {cond.get('message') or ''}".rstrip(": ") \
            if cond.get("status") == "True" else None

    def in_place(self, spec):
        # Elastic jobs scale their workers within the elastic policy's bounds.
        ((spec.get("pytorchReplicaSpecs") or {}).get("Worker") or {}).pop("replicas", None)
        return spec

    def addresses(self, name, namespace, obj):
        # The operator's headless Service per replica; elastic jobs rendezvous on worker 0.
        return {"rdzv_endpoint": f"{svc(name + '-worker-0', namespace)}:29400",
                "master_addr": svc(name + "-worker-0", namespace)}


KINDS = (DaskCluster, RayCluster, SparkApplication, PyTorchJob)
for _cls in KINDS:
    _cls.type_token = _cls.token()
    ProviderRegistry.register(_cls)


def provider_for(kind: str) -> type[CustomResource]:
    for cls in KINDS:
        if cls.kind == kind:
            return cls
    raise KeyError(kind)
