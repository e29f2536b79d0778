"""The task body in a pod, as Flyte's backend runs it: declared beside the plugin's cluster.

A run on ``--backend kubernetes`` gets, after its cluster (so the body never waits on a
scheduler that is not there):

- ``bundle``: the task's source root as a tar.gz at the data location (``engine.bundle``:
  Flyte's fast registration: an edit needs no image build);
- ``inputs``: the pickled inputs; it owns the run's data folder, where the body also leaves
  its result or its error, so its delete removes them all;
- ``env``: a Secret with the body's secret variables (the environment's secrets, the data
  location's credentials), only when there are some: the pod spec never carries them;
- ``runner``: a Pod running ``python -m engine.runner`` from the environment's image (or
  ``ENGINE_K8S_IMAGE``), with the plugin's variables (``DASK_SCHEDULER_ADDRESS`` of its own
  cluster), the environment's resources and ``activeDeadlineSeconds`` as the safety net.

All four are resources of the run: journaled, recorded, deleted at teardown and by recovery
after a ``kill -9``, and labelled like the cluster for the orphan sweep. ``remote`` is what the
engine calls instead of the body: it follows the pod's log (``kubectl logs -f``) onto the
engine's stdout, waits for the container to end, and returns the result or raises the body's
error, saying OOMKilled or the exit code when there is no error to read.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import sys
import time
from typing import Any

from engine import bundle, data
from engine.extend import BodyFailed, ConfigError, Declaration, DeclareContext, secret_placeholder
from engine.secrets import resolve_secrets

from .declare import target
from .objects import container_resources, dns_name, env_list, prune, shm_volume

RUNNER, CONTAINER = "runner", "task"
ROLE_LABEL = "taskrig/role"
END_WAIT = 60.0  # after the log ends, how long the container may take to be reported terminated


def _pod_name(ctx: DeclareContext) -> str:
    return dns_name(ctx.declaration("kubernetes:core/v1:Pod", RUNNER, {}, ephemeral=True).physical_name)


def declare_body(ctx: DeclareContext, after: list[Declaration], env: dict[str, str],
                 ctx_data: dict[str, Any] | None = None, setup: tuple[str, ...] = ()) -> list[Declaration]:
    """The bundle, inputs, secret variables and runner pod of ``ctx``'s body, created after
    ``after`` (the cluster), with ``env`` (the plugin's attachment variables) set in the pod
    and ``setup`` (``module:function`` called with the code's folder in the pod) run first."""
    import cloudpickle

    task = ctx.task
    if task is None:
        raise ConfigError("the kubernetes backend needs the task to ship its body", "task")
    ref = bundle.locate(task)
    code, code_digest = bundle.make(ref.root)
    run = data.run_url(ctx.stack, ctx.run_id)
    payload = cloudpickle.dumps(ctx.inputs)
    tgt = target(ctx, _pod_name(ctx))
    if not tgt.image:
        raise ConfigError(f"{task.name} runs in a pod: give its environment an image, or set ENGINE_K8S_IMAGE "
                          f"(an image with this Python and the engine)", "image")
    secret_env, secret_files = resolve_secrets(ctx.env)
    if secret_files:
        raise ConfigError("secrets mounted as files are not supported on the kubernetes backend yet: give them "
                          "an env_var", "secrets")
    forwarded = data.forwarded_env()
    secret_env.update({k: v for k, v in forwarded.items() if k in data.SECRET_VARS})
    public_env = {k: v for k, v in forwarded.items() if k not in data.SECRET_VARS}

    decls = [
        ctx.declaration("data:index:Object", "bundle",
                        {"url": data.join(run, data.BUNDLE), "digest": code_digest, "size": len(code)},
                        ephemeral=True, secret_inputs={"content": code}),
        ctx.declaration("data:index:Object", "inputs",
                        {"url": data.join(run, data.INPUTS), "digest": hashlib.sha256(payload).hexdigest(),
                         "owns": run},
                        ephemeral=True, secret_inputs={"content": payload}),
    ]
    env_from = []
    if secret_env:
        secret_name = dns_name(f"{tgt.name}-env")
        decls.append(ctx.declaration(
            "kubernetes:core/v1:Secret", "env",
            {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
             "metadata": {"name": secret_name, "namespace": tgt.namespace, "labels": dict(tgt.labels)},
             "stringData": {k: secret_placeholder(v) for k, v in sorted(secret_env.items())}},
            ephemeral=True, secret_inputs={"stringData": dict(secret_env)}))
        env_from = [{"secretRef": {"name": secret_name}}]
    volumes, mounts = shm_volume(tgt.resources)
    folder = data.local_path(data.base_url())
    if folder:  # file://: a folder every node has (hostPath; a single node, or a shared mount)
        volumes.append({"name": "engine-data", "hostPath": {"path": folder, "type": "DirectoryOrCreate"}})
        mounts.append({"name": "engine-data", "mountPath": folder})
    command = ["python3", "-m", "engine.runner", "--run", run, *ref.argv(), "--run-id", ctx.run_id,
               "--stack", ctx.stack, "--ctx-data", json.dumps(ctx_data or {}, sort_keys=True),
               *(a for ref in setup for a in ("--setup", ref))]
    pod = prune({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": tgt.name, "namespace": tgt.namespace, "labels": {**tgt.labels, ROLE_LABEL: "body"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "activeDeadlineSeconds": tgt.ttl_seconds,
            "enableServiceLinks": False,
            "containers": [{
                "name": CONTAINER, "image": tgt.image, "command": command,
                "env": env_list({**tgt.env, **public_env, **env, "PYTHONUNBUFFERED": "1",
                                 "ENGINE_DATA_URL": data.base_url()}),
                "envFrom": env_from,
                "resources": container_resources(tgt.resources),
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        },
    })
    deps = [d.urn for d in (*after, *decls)]
    decls.append(ctx.declaration("kubernetes:core/v1:Pod", RUNNER, pod, deps=deps, ephemeral=True))
    return decls


def remote(outputs: dict[str, dict]):
    """What the engine calls instead of the body (``Attachment.remote``)."""
    pod, folder = outputs[RUNNER], outputs["inputs"]["owns"]
    return lambda: _wait_for_body(pod["namespace"], pod["name"], folder)


def _core():
    from kubernetes import client as k8s

    from .client import cluster

    return k8s.CoreV1Api(cluster().api.api_client)


def _follow_log(core, ns: str, name: str, read_timeout: float, out=None) -> None:
    """The container's log onto ``out`` as it comes, until the container ends; a dropped
    stream (an API server restart) ends it early, and the status wait that follows covers it."""
    import urllib3

    from .client import _timeouts

    out = out or sys.stdout
    try:
        resp = core.read_namespaced_pod_log(name, ns, container=CONTAINER, follow=True, _preload_content=False,
                                            _request_timeout=(_timeouts()[0], read_timeout))
    except Exception as e:  # noqa: BLE001 - no log is no reason to lose the result
        print(f"[engine] cannot follow the log of pod {ns}/{name}: {type(e).__name__}: {e}", file=sys.stderr)
        return
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        for chunk in resp.stream(4096, decode_content=True):
            text = decoder.decode(chunk)
            if text:
                out.write(text)
                out.flush()
    except (urllib3.exceptions.HTTPError, OSError) as e:
        print(f"[engine] the log of pod {ns}/{name} broke off ({type(e).__name__}); waiting for the pod",
              file=sys.stderr)
    finally:
        resp.release_conn()
    rest = decoder.decode(b"", final=True)
    if rest:
        out.write(rest)
        out.flush()


def _terminated(pod) -> dict | None:
    for cs in (pod.status.container_statuses or []) if pod.status else []:
        if cs.name == CONTAINER and cs.state and cs.state.terminated:
            t = cs.state.terminated
            return {"exit_code": t.exit_code, "reason": t.reason, "message": t.message}
    if pod.status and pod.status.phase == "Failed":  # activeDeadlineSeconds, eviction
        return {"exit_code": None, "reason": pod.status.reason, "message": pod.status.message}
    return None


def _wait_end(core, ns: str, name: str, deadline: float) -> tuple[dict, Any]:
    interval = 0.1
    while True:
        pod = core.read_namespaced_pod(name, ns)
        ended = _terminated(pod)
        if ended is not None:
            return ended, pod
        if time.monotonic() >= deadline:
            raise BodyFailed(f"pod {ns}/{name} still runs after its log ended (phase {pod.status.phase})")
        time.sleep(interval)
        interval = min(interval * 1.5, 2.0)


def _wait_for_body(ns: str, name: str, run_url: str) -> Any:
    import cloudpickle

    core = _core()
    pod = core.read_namespaced_pod(name, ns)
    # The log ends when the container does; its deadline is the pod's own safety net.
    limit = (pod.spec.active_deadline_seconds or 3600) + END_WAIT
    started = time.monotonic()
    _follow_log(core, ns, name, limit)
    ended, pod = _wait_end(core, ns, name, max(time.monotonic() + END_WAIT, started + limit))
    where = f"pod {ns}/{name}"
    if ended["reason"] == "OOMKilled":
        resources = pod.spec.containers[0].resources
        mem = ((resources and resources.limits) or {}).get("memory")
        raise BodyFailed(f"the task's {where} was OOMKilled" + (f" (memory limit {mem})" if mem else
                                                                 " (it has no memory limit: the node ran out)"))
    if ended["exit_code"] == 0:
        raw = data.get(data.join(run_url, data.OUTPUTS))
        if raw is None:
            raise BodyFailed(f"the task's {where} exited 0 but left no result at {data.join(run_url, data.OUTPUTS)}")
        return cloudpickle.loads(raw)
    error = data.get(data.join(run_url, data.ERROR))
    if error is not None:
        doc = json.loads(error)
        raise BodyFailed(f"the task raised in {where}: {doc['type']}: {doc['message']}\n"
                         f"{doc['traceback'].rstrip()}")
    how = f"exit code {ended['exit_code']}" if ended["exit_code"] is not None else "no exit code"
    detail = " ".join(x for x in (ended.get("reason"), ended.get("message")) if x)
    raise BodyFailed(f"the task's {where} ended with {how}" + (f" ({detail})" if detail else "")
                     + ", and left no error: see its log above")
