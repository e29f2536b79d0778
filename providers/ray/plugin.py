"""The Ray plugin: declares a cluster from a ``RayJobConfig`` (or reads the one at ``address``)
and points the task's plain ``ray.init()`` at it."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys

from engine.extend import Attachment, ConfigError, DeclareContext, TaskPlugin, TaskPluginRegistry, native_env

from .config import HeadNodeConfig, RayJobConfig
from .local import RESERVED

OBJECT_STORE_BYTES = 100 * 1024 * 1024  # small on purpose: /dev/shm is shared with every other task
_TRUE, _FALSE = ("", "true", "1", "yes"), ("false", "0", "no")


def _start_options() -> dict[str, bool]:
    """`ray start`'s options (name -> takes no value), read from Ray's own CLI."""
    from ray.scripts.scripts import start

    return {o[2:]: p.is_flag for p in start.params for o in p.opts if o.startswith("--")}


def _params(params: dict[str, str] | None, field: str, head: bool) -> tuple[dict, int | None]:
    """KubeRay-style ``rayStartParams`` as `ray start` options; flags become booleans."""
    if not params:
        return {}, None
    known = _start_options()
    out, port = {}, None
    for raw, value in params.items():
        key = raw.lstrip("-").replace("_", "-")
        where = f"{field}.ray_start_params.{raw}"
        if key in RESERVED or (key == "port" and not head):
            raise ConfigError("is set by the engine for the local backend and cannot be overridden", where)
        if key not in known:
            raise ConfigError("is not an option of `ray start`", where)
        value = str(value)
        if key == "port":
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise ConfigError("must be a port number", where)
            port = int(value)
        elif known[key]:
            if value.lower() not in _TRUE + _FALSE:
                raise ConfigError("is a flag: use 'true' or 'false'", where)
            out[key] = value.lower() in _TRUE
        else:
            out[key] = value
    return out, port


def _node_spec(node, field: str, head: bool) -> dict:
    """What one node asks for; KubeRay's rule: num-cpus from the limits, else the requests."""
    res = [r for r in (getattr(node, "limits", None), getattr(node, "requests", None)) if r is not None]
    cpu = next((r.cpu_count() for r in res if r.cpu is not None), None)
    memory = next((r.memory_bytes() for r in res if r.memory is not None), None)
    gpu = next((r.gpu for r in res if r.gpu is not None), None)
    params, port = _params(getattr(node, "ray_start_params", None), field, head)  # port: head only
    spec = {"num_cpus": max(1, math.ceil(cpu)) if cpu else 1, "num_gpus": int(gpu) if gpu is not None else None,
            "memory": memory, "object_store_memory": OBJECT_STORE_BYTES, "ray_start_params": params, "port": port}
    return {k: v for k, v in spec.items() if v not in (None, {})}  # a short plan: only what is set


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


class RayPlugin(TaskPlugin):
    def declare(self, config: RayJobConfig, ctx: DeclareContext):
        if config.address:  # somebody else's cluster: read it, provision nothing
            return [ctx.declaration("ray:index:ExistingCluster", "cluster", {"address": config.address},
                                    read_only=True)]
        if ctx.backend == "kubernetes":  # a KubeRay RayCluster; attach reads its "address" output
            from providers.kubernetes.plugins import declare_ray

            return declare_ray(config, ctx)
        head = config.head_node_config or HeadNodeConfig()
        inputs = {
            "head": _node_spec(head, "plugin_config.head_node_config", head=True),
            "worker_groups": {
                g.group_name: {"replicas": g.replicas,
                               **_node_spec(g, f"plugin_config.worker_node_config.{i}", head=False)}
                for i, g in enumerate(config.worker_node_config)
            },
        }
        return [ctx.declaration("local:ray:Cluster", "cluster", inputs)]

    def attach(self, config: RayJobConfig, outputs: dict[str, dict], ctx: DeclareContext) -> Attachment:
        out = outputs["cluster"]
        address = out["address"]
        loopback = _is_loopback(address)
        env = {"RAY_ADDRESS": address}
        if out.get("auth_token_path"):
            env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": out["auth_token_path"]})
        if loopback:
            # Without it Ray rewrites 127.0.0.1 into the external address, where nothing listens.
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        if config.runtime_env:
            # How Ray Jobs hand a runtime_env to the entrypoint's plain ray.init(): merged into it.
            env["RAY_JOB_CONFIG_JSON_ENV_VAR"] = json.dumps({"runtime_env": config.runtime_env})
        before = {k: os.environ.get(k) for k in (*_AUTH_VARS, _CLUSTER_VAR)}  # attach runs before env_vars apply
        return Attachment(env_vars=env, data={"ray_address": address, "ray_runtime_env": config.runtime_env},
                          contexts=[lambda: _driver(loopback, bool(out.get("auth_token_path")), before)])


_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")
_CLUSTER_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _reload_auth() -> None:
    """Make an imported Ray re-read RAY_AUTH_MODE and RAY_AUTH_TOKEN_PATH (it caches both)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token authentication: nothing cached
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def _driver(loopback: bool, token: bool, before: dict):
    """Ray reads these switches once (at import, or at its first connection), and its core
    reads the token settings with getenv(3), outside the run's own view of ``os.environ``:
    they go into the process environment for the run (``native_env``: one Ray driver per
    process at a time) and are undone after, for the next run in this process. A driver the
    task left connected is shut down before the cluster is torn down, so it does not retry a
    dead GCS."""
    with native_env(_AUTH_VARS if token else ()):
        if loopback and "ray._private.ray_constants" in sys.modules:
            sys.modules["ray._private.ray_constants"].ENABLE_RAY_CLUSTER = False
        if token and "ray._raylet" in sys.modules:
            _reload_auth()
        try:
            yield
        finally:
            ray = sys.modules.get("ray")
            if ray is not None and ray.is_initialized():
                ray.shutdown()
            constants = sys.modules.get("ray._private.ray_constants")
            if loopback and constants is not None:  # Ray's own default, from the environment before the run
                value = before.get(_CLUSTER_VAR)
                constants.ENABLE_RAY_CLUSTER = (value.lower() in ("1", "true") if value is not None
                                                else not constants.IS_WINDOWS_OR_OSX)
    if token and "ray._raylet" in sys.modules:
        _reload_auth()  # the process environment is restored: Ray forgets the run's token


TaskPluginRegistry.register(RayJobConfig, RayPlugin())
