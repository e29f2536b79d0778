"""How a plugin's ``declare`` asks for an operator object: one helper for every plugin.

The plugin passes a pure manifest builder (its ``manifests.py``); this names the object from
the engine's physical name (DNS-safe, within the kind's limit), labels it with the stack, run
and task, fills in the environment's image, resources and variables, and redacts secrets from
what the state records.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Callable

from engine.extend import ConfigError, Declaration, DeclareContext, Options

from .objects import (RUN_LABEL, TASK_LABEL, Target, dns_name, image_name, labels, namespace_from_env, prune,
                      redact_map, ttl_from_env)
from .provider import provider_for


def target(ctx: DeclareContext, physical_name: str, name_max: int = 63) -> Target:
    env = ctx.env
    ttl = ttl_from_env()
    if ctx.reusable and ctx.idle_ttl:
        ttl = max(ttl, math.ceil(ctx.idle_ttl) + 60)  # outlives the engine's own idle reaping
    return Target(
        name=dns_name(physical_name, name_max),
        namespace=namespace_from_env(),
        labels=labels(ctx.stack, ctx.run_id, ctx.task_name),
        # image=None: the engine's default task image (ENGINE_K8S_IMAGE; the local cluster's
        # is in its env file as TASKRIG_TASK_IMAGE), else each plugin's upstream default
        image=image_name(getattr(env, "image", None)) or os.environ.get("ENGINE_K8S_IMAGE") or None,
        resources=getattr(env, "resources", None),
        env=dict(getattr(env, "env_vars", None) or {}),
        ttl_seconds=ttl,
    )


def declare(ctx: DeclareContext, kind: str, resource_name: str, build: Callable[[Target], dict],
            name_max: int = 63, secret_maps: tuple[str, ...] = ()) -> Declaration:
    """A Declaration of the ``kind`` object that ``build(target)`` makes.

    ``secret_maps``: dotted paths of string maps (``spec.sparkConf``) whose sensitive entries
    are recorded as placeholders; the provider gets the real values (``secret_inputs``).
    A reusable object keeps the run and task labels of the run that created it: they are not
    a change to roll out on every run."""
    token = provider_for(kind).token()
    physical = ctx.declaration(token, resource_name, {}).physical_name
    try:
        manifest = prune(build(target(ctx, physical, name_max)))
    except ValueError as e:  # a quantity or value the object cannot carry
        raise ConfigError(f"cannot make the {kind}: {e}", "plugin_config") from None
    public, secret = manifest, {}
    for path in secret_maps:
        parts = path.split(".")
        node = manifest
        for p in parts:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict) or redact_map(node) == node:
            continue
        if public is manifest:
            public = copy.deepcopy(manifest)
        holder = public
        for p in parts[:-1]:
            holder = holder[p]
        holder[parts[-1]] = redact_map(node)
        secret[parts[0]] = manifest[parts[0]]
    options = Options() if not ctx.reusable else \
        Options(ignore_changes=(f'metadata.labels["{RUN_LABEL}"]', f'metadata.labels["{TASK_LABEL}"]'))
    return ctx.declaration(token, resource_name, public, options=options, secret_inputs=secret)
