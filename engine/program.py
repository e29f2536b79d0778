"""Running a Pulumi program in-process, the engine acting as its resource monitor.

No Pulumi CLI, no service, no language host: the program runs in this process against a
monitor that records every registration (type, name, inputs, parent, dependencies and
options). Each custom resource becomes a Declaration and goes through the same plan and
journaled apply as a task run's resources; components are kept as bookkeeping rows so the
plan shows the tree. Outputs seen by the program during the recording are its own inputs
echoed back (a program that needs provider-computed outputs to shape other resources is
outside what this runner models); ids are the resources' names.
"""

from __future__ import annotations

import asyncio
import os
import re
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, TargetError
from .lock import check_stack_name
from .registry import ProviderRegistry
from .resource import Declaration, Options, Provider, Timeouts, make_urn

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")


@dataclass
class Project:
    name: str
    directory: Path  # where Pulumi.yaml is
    program: Path  # the folder holding __main__.py
    stack: str
    config: dict[str, Any] = field(default_factory=dict)


def find_project(target: str, stack: str | None = None) -> Project:
    """``DIR`` with a Pulumi.yaml (its ``main`` names the program folder), or the program
    folder itself (``stacks/``), whose parent holds the Pulumi.yaml."""
    path = Path(target).resolve()
    if path.is_file() and path.name in ("Pulumi.yaml", "Pulumi.yml"):
        path = path.parent
    candidates = [path, path.parent]
    for d in candidates:
        spec = d / "Pulumi.yaml"
        if spec.is_file():
            meta = yaml.safe_load(spec.read_text()) or {}
            runtime = meta.get("runtime")
            runtime = runtime.get("name") if isinstance(runtime, dict) else runtime
            if runtime != "python":
                raise TargetError(f"{spec}: runtime is {runtime!r}; only python programs run in-process", "runtime")
            program = (d / meta.get("main", ".")).resolve()
            if d == path.parent and program != path:
                continue
            if not (program / "__main__.py").is_file():
                raise TargetError(f"{program} has no __main__.py (the program Pulumi.yaml names)", "main")
            name = str(meta.get("name") or d.name)
            stack = stack or os.environ.get("PULUMI_STACK") or "dev"
            config = {}
            cfg_file = d / f"Pulumi.{stack}.yaml"
            if cfg_file.is_file():
                config = (yaml.safe_load(cfg_file.read_text()) or {}).get("config") or {}
            return Project(check_stack_name(f"{name}-{stack}"), d, program, stack, config)
    raise TargetError(f"{target} is not a Pulumi project (no Pulumi.yaml here or above)", "TARGET")


def _seconds(text: str) -> float | None:
    if not text:
        return None
    m = _DURATION.match(text)
    if not m or not any(m.groups()):
        raise ConfigError(f"{text!r} is not a duration like 5m or 1h30m", "customTimeouts")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s


class ComponentProvider(Provider):
    """Components own nothing: their rows record the tree (parents) for the plan and state."""

    def create(self, urn, inputs, idempotency_key):
        return idempotency_key, {}

    def update(self, id, old_inputs, new_inputs, outputs=None):
        return outputs or {}

    def delete(self, id, inputs, outputs):
        return None


def _component_provider(token: str) -> None:
    if ProviderRegistry._providers.get(token) is None:
        ProviderRegistry.register(type("Component", (ComponentProvider,), {"type_token": token}))


def _record(project: Project) -> list[Any]:
    """Run the program once against a recording monitor; returns the registration requests."""
    import pulumi
    from pulumi.runtime import mocks, rpc, settings, stack as pstack

    class Echo(mocks.Mocks):
        def new_resource(self, args):
            return args.name, dict(args.inputs)

        def call(self, args):
            return {}, None

    class Recorder(mocks.MockMonitor):
        def __init__(self):
            super().__init__(Echo())
            self.requests: list[Any] = []

        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack" and not request.type.startswith("pulumi:providers:"):
                inputs = rpc.deserialize_properties(request.object)
                self.requests.append((response.urn, request, inputs))
            return response

    monitor = Recorder()
    # Fresh settings and root for every program: two programs in one process share nothing.
    settings.reset_options(project=project.name.rsplit("-", 1)[0], stack=project.stack, preview=True)
    settings.configure(mocks.MockSettings(
        monitor=monitor, monitor_features=set(monitor.GetDeploymentInfo(None).supportedFeatures),
        engine=mocks.MockEngine(None), project=project.name.rsplit("-", 1)[0], stack=project.stack,
        dry_run=True, organization="organization", callbacks=None,
    ))
    pulumi.runtime.set_all_config({f"{k}" if ":" in k else f"{project.name.rsplit('-', 1)[0]}:{k}": str(v)
                                   for k, v in project.config.items()})
    main = project.program / "__main__.py"
    saved_path, saved_cwd = list(sys.path), os.getcwd()
    loop = asyncio.new_event_loop()
    try:
        sys.path.insert(0, str(project.program))
        os.chdir(project.program)
        asyncio.set_event_loop(loop)
        loop.run_until_complete(pstack.run_in_stack(lambda: runpy.run_path(str(main), run_name="__main__")))
    except pulumi.RunError as e:
        raise TargetError(f"the Pulumi program {main} failed: {e}", "TARGET") from None
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.close()
        asyncio.set_event_loop(None)
        sys.path[:] = saved_path
        os.chdir(saved_cwd)
        settings.reset_options()
        pulumi.runtime.set_all_config({})
    return monitor.requests


def declarations(project: Project) -> list[Declaration]:
    """The program's resources as declarations of the project's stack."""
    recorded = _record(project)
    engine_urn: dict[str, str] = {}
    types: dict[str, str] = {}
    decls = []
    for purn, req, inputs in recorded:
        parent_type = types.get(req.parent) if req.parent in types else None
        urn = make_urn(project.name, req.type, req.name, parent_type)
        engine_urn[purn] = urn
        types[purn] = req.type
        ct = req.customTimeouts
        options = Options(
            protect=bool(req.protect), delete_before_replace=bool(req.deleteBeforeReplace),
            replace_on_changes=tuple(req.replaceOnChanges), ignore_changes=tuple(req.ignoreChanges),
            retain_on_delete=bool(req.retainOnDelete),
            timeouts=Timeouts(_seconds(ct.create), _seconds(ct.update), _seconds(ct.delete)) if ct else Timeouts(),
        )
        if not req.custom:
            _component_provider(req.type)
            inputs = {}
        elif ProviderRegistry.find(req.type) is None:
            raise ConfigError(f"no provider is registered for the resource type {req.type!r} "
                              f"(resource {req.name!r}); kubernetes:* types need the kubernetes extra", "type")
        decls.append(Declaration(
            urn=urn, type=req.type, inputs=_plain(inputs),
            deps=[engine_urn[d] for d in req.dependencies if d in engine_urn],
            options=options, ephemeral=False, parent=engine_urn.get(req.parent), physical_name=req.name,
        ))
    return decls


def _plain(value: Any) -> Any:
    """Inputs as JSON-like data (pulumi's unknown sentinels become None)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return None
