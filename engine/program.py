"""Running a Pulumi program in-process, the engine acting as its resource monitor.

No Pulumi CLI, no service, no language host: the program runs in this process against a
monitor that records every registration (type, name, inputs, parent, dependencies and
options). Each custom resource becomes a Declaration and goes through the same plan and
journaled apply as a task run's resources; components are kept as bookkeeping rows so the
plan shows the tree. Outputs seen by the program during the recording are its own inputs
echoed back (a program that needs provider-computed outputs to shape other resources is
outside what this runner models); ids are the resources' names. A provider may fill in what
its real counterpart computes at check time and a program reads back, such as Kubernetes'
``metadata.name`` (``autoname(name, inputs)``), and name inputs that are secret whatever the
program says (``secret_fields(inputs)``, a Secret's data); see providers/kubernetes/generic.py.

Values the program marks secret (``pulumi.Output.secret``) are recorded as placeholders
(``(secret hmac:...)``, a keyed digest, so a changed secret is still a change) and reach the
provider only through ``Declaration.secret_inputs``: never the state, the plan or the journal.
Numbers arrive as protobuf doubles; integral ones become ints again, as Pulumi's Go providers
read them (``replicas: 2``, not ``2.0``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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
from .secrets import secret_placeholder

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")


@dataclass
class Project:
    name: str  # the engine's stack: "<Pulumi project>-<Pulumi stack>"
    directory: Path  # where Pulumi.yaml is
    program: Path  # the folder holding __main__.py
    stack: str
    config: dict[str, Any] = field(default_factory=dict)
    project: str = ""  # the Pulumi project's own name (pulumi.get_project())


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
            return Project(check_stack_name(f"{name}-{stack}"), d, program, stack, config, name)
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
    """Run the program once against a recording monitor; returns, in the order the program
    constructed them, (pulumi urn, request, public inputs, secret inputs) of every resource."""
    import pulumi
    from pulumi.runtime import mocks, resource as presource, settings, stack as pstack
    from pulumi.runtime.proto import source_pb2

    class Echo(mocks.Mocks):
        def new_resource(self, args):
            provider = ProviderRegistry.find(args.typ) if args.custom else None
            hook = getattr(provider, "autoname", None)
            return args.name, hook(args.name, dict(args.inputs)) if hook else dict(args.inputs)

        def call(self, args):
            return {}, None

    class Recorder(mocks.MockMonitor):
        def __init__(self):
            super().__init__(Echo())
            self.requests: list[Any] = []
            self.explicit_providers: list[tuple[str, str]] = []

        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            if request.type.startswith("pulumi:providers:"):
                self.explicit_providers.append((request.type, request.name))
            elif request.type != "pulumi:pulumi:Stack":
                public, secret = split_secrets(request.object)
                provider = ProviderRegistry.find(request.type) if request.custom else None
                if getattr(provider, "autoname", None):
                    public = provider.autoname(request.name, public)
                for k in getattr(provider, "secret_fields", lambda _: ())(public):
                    if k in public and k not in secret:
                        secret[k], public[k] = public[k], _redact(public[k])
                self.requests.append((response.urn, request, public, secret))
            return response

    monitor = Recorder()
    name = project.project or project.name.rsplit("-", 1)[0]
    for key, value in project.config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            raise ConfigError(f"config {key!r} of stack {project.stack} is encrypted (secure:), and the in-process "
                              f"runner has no Pulumi secrets provider to decrypt it: read the value from the "
                              f"environment in the program (pulumi.Output.secret(os.environ[...])), or run the "
                              f"program with the Pulumi CLI", f"config.{key}")
    # Registrations arrive when their inputs resolve, so their order varies from run to run;
    # the order the program constructs resources in does not (a stack transformation runs
    # synchronously in every constructor). Plans follow it.
    constructed: dict[tuple[str, str], int] = {}

    def note(args):
        constructed.setdefault((args.type_, args.name), len(constructed))
        return None

    def program() -> None:
        pulumi.runtime.register_stack_transformation(note)
        runpy.run_path(str(main), run_name="__main__")

    def in_own_thread() -> None:
        """Fresh settings, root, config and event loop for every program, in a thread of its
        own (pulumi's root and config are context variables, the loop is per thread): two
        programs in one process share nothing, and the caller's loop is left alone."""
        settings.reset_options(project=name, stack=project.stack, preview=True)
        settings.configure(mocks.MockSettings(
            monitor=monitor, monitor_features=set(monitor.GetDeploymentInfo(None).supportedFeatures),
            engine=mocks.MockEngine(None), project=name, stack=project.stack,
            dry_run=True, organization="organization", callbacks=None,
        ))
        pulumi.runtime.set_all_config({k if ":" in k else f"{name}:{k}": _config_value(v)
                                       for k, v in project.config.items()})
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(pstack.run_in_stack(program))
        finally:
            # What the SDK left running (RPCs of outputs nobody awaits) is cancelled and let
            # finish, as asyncio.run does: a task closed with its loop would be reported
            # "destroyed but pending" when collected.
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.close()
            asyncio.set_event_loop(None)
            settings.reset_options()
            pulumi.runtime.set_all_config({})

    main = project.program / "__main__.py"
    saved_path, saved_cwd, saved_modules = list(sys.path), os.getcwd(), set(sys.modules)
    # The SDK walks the Python stack of every registration for the Pulumi engine's error
    # messages (a quarter of the time of an 800-resource program); this monitor never reads it.
    saved_trace = getattr(presource, "_get_stack_trace", None)
    try:
        sys.path.insert(0, str(project.program))
        os.chdir(project.program)
        if saved_trace is not None:
            presource._get_stack_trace = source_pb2.StackTrace
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pulumi-program") as pool:
            pool.submit(in_own_thread).result()
    except pulumi.RunError as e:
        raise TargetError(f"the Pulumi program {main} failed: {e}", "TARGET") from None
    except (ConfigError, TargetError):
        raise
    except Exception as e:  # the program's own bug: name it and where, not pulumi's internals
        raise TargetError(f"the Pulumi program {main} raised {type(e).__name__}: {e}{_where(e, project.program)}",
                          "TARGET") from e
    finally:
        if saved_trace is not None:
            presource._get_stack_trace = saved_trace
        sys.path[:] = saved_path
        os.chdir(saved_cwd)
        _forget_program_modules(saved_modules, project.program)
    if monitor.explicit_providers:
        type_, pname = monitor.explicit_providers[0]
        raise ConfigError(f"the Pulumi program {main} creates the provider {pname!r} ({type_}); in-process, "
                          f"resources go to the engine's own providers (kubernetes: KUBECONFIG or ENGINE_KUBECONFIG, "
                          f"ENGINE_K8S_CONTEXT, ENGINE_K8S_NAMESPACE): drop the provider= option, or run the program "
                          f"with the Pulumi CLI", "provider")
    last = len(constructed)
    return sorted(monitor.requests, key=lambda r: constructed.get((r[1].type, r[1].name), last))


def _config_value(v: Any) -> str:
    """Structured config (a list or map in Pulumi.<stack>.yaml) as pulumi.Config reads it: JSON."""
    import json

    if isinstance(v, str):
        return v
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v).lower() if isinstance(v, bool) else str(v)


def _where(e: BaseException, folder: Path) -> str:
    """' (at FILE:LINE)' of the innermost frame in the program's folder, if any."""
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith(str(folder))]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _forget_program_modules(before: set[str], folder: Path) -> None:
    """Drop the modules the program imported from its own folder (a ``components.py`` beside
    ``__main__.py``): the next program in this process may have its own module of that name.
    Modules from elsewhere (pulumi, providers) stay imported; they register types once."""
    prefix = str(folder) + os.sep
    for mod in set(sys.modules) - before:
        path = getattr(sys.modules.get(mod), "__file__", None) or ""
        if path.startswith(prefix):
            del sys.modules[mod]


def declarations(project: Project) -> list[Declaration]:
    """The program's resources as declarations of the project's stack, each after its parent
    and its dependencies (otherwise in registration order), so the plan reads as a tree."""
    recorded = _record(project)
    engine_urn: dict[str, str] = {}
    types: dict[str, str] = {}
    decls = []
    for purn, req, inputs, secret in recorded:
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
            inputs, secret = {}, {}
        elif ProviderRegistry.find(req.type) is None:
            raise ConfigError(f"no provider is registered for the resource type {req.type!r} "
                              f"(resource {req.name!r}); kubernetes:* types need the kubernetes extra", "type")
        decls.append(Declaration(
            urn=urn, type=req.type, inputs=inputs,
            deps=list(dict.fromkeys(engine_urn[d] for d in req.dependencies if d in engine_urn)),
            options=options, ephemeral=False, parent=engine_urn.get(req.parent), physical_name=req.name,
            secret_inputs=secret,
        ))
    return _tree_order(decls)


def _tree_order(decls: list[Declaration]) -> list[Declaration]:
    """The plan's order: each component followed by its children, and never a resource before
    its parent or a dependency; otherwise the program's order."""
    by_urn = {d.urn: d for d in decls}
    children: dict[str | None, list[Declaration]] = {}
    for d in decls:
        children.setdefault(d.parent if d.parent in by_urn else None, []).append(d)
    preorder: list[Declaration] = []
    walk = list(reversed(children.get(None, [])))
    while walk:
        d = walk.pop()
        preorder.append(d)
        walk.extend(reversed(children.get(d.urn, [])))
    done: set[str] = set()
    seen: set[str] = set()  # expanded once: registration order admits no cycle, this makes sure
    out: list[Declaration] = []
    for d in preorder:
        stack = [(d, False)]
        while stack:  # iterative DFS: 800-deep chains must not hit the recursion limit
            cur, expanded = stack.pop()
            if cur.urn in done:
                continue
            if expanded:
                done.add(cur.urn)
                out.append(cur)
                continue
            if cur.urn in seen:
                continue
            seen.add(cur.urn)
            stack.append((cur, True))
            for u in reversed([cur.parent, *cur.deps] if cur.parent else cur.deps):
                if u in by_urn and u not in done:
                    stack.append((by_urn[u], False))
    return out


# ------------------------------------------------------------------------------ input values
_SIG = "4dabf18193072939515e22adb298388d"  # pulumi.runtime.rpc's special signature key
_SECRET = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE = "5cf8f73096256a8f31e491e813e4eb8e"
_OUTPUT = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def split_secrets(struct: Any) -> tuple[dict, dict]:
    """A registration's inputs (a protobuf Struct) as (public inputs, secret inputs): every
    top-level input that holds a secret somewhere is in the second with its values, and in
    the first with each secret string replaced by its placeholder."""
    from google.protobuf import json_format

    raw = json_format.MessageToDict(struct)
    public, secret = {}, {}
    for k, v in sorted(raw.items()):
        found: list[bool] = []
        public[k] = _plain(v, found)
        if found:
            secret[k] = _plain(v, None)
    return public, secret


def _plain(value: Any, found: list | None) -> Any:
    """JSON-like data; ``found`` given: secrets redacted (and noted in it), else revealed.
    Unknowns become None, a resource reference its id (else its URN)."""
    if isinstance(value, dict):
        sig = value.get(_SIG)
        if sig is None:  # keys sorted: the struct's order is the wire's, not the program's
            return {k: _plain(value[k], found) for k in sorted(value)}
        if sig == _SECRET or (sig == _OUTPUT and value.get("secret")):
            inner = _plain(value.get("value"), None)
            if found is None:
                return inner
            found.append(True)
            return _redact(inner)
        if sig == _OUTPUT:
            return _plain(value.get("value"), found)
        if sig == _RESOURCE:
            return value.get("id") or value.get("urn")
        return {k: _plain(v, found) for k, v in value.items() if k != _SIG}
    if isinstance(value, list):
        return [_plain(v, found) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    if value == _UNKNOWN:
        return None
    return value


def _redact(value: Any) -> Any:
    """Secret strings as placeholders, the shape kept (a schema still sees a map of strings);
    numbers and booleans stay as they are."""
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return secret_placeholder(value) if isinstance(value, str) else value
