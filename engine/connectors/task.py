"""Class-defined tasks (Flyte's ``TaskTemplate``) and the mixin that runs one on a connector.

A connector task's execution is a run of its own with one resource, the job
(``connector:<task_type>:Job``): called as the target of ``engine up`` (or outside any run)
it runs in a stack named after the task; called inside a run it runs in the caller's stack,
under the lock the caller holds, so a crashed caller's next run finds and resumes its jobs.
The body of the run is the polling loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import hashlib
import inspect
import json
from datetime import timedelta
from typing import Any

from flyteidl2.core.execution_pb2 import TaskExecution

from .. import context
from ..errors import ConfigError
from ..io import File
from ..models import NativeInterface, SerializationContext
from ..plugin import Attachment, DeclareContext, TaskPlugin
from ..registry import TaskPluginRegistry
from ..resource import Options
from ..sdk import Secret, Task, TaskEnvironment
from . import literals
from .base import ConnectorJobFailed, ConnectorNotFound, ConnectorRegistry, phase_name
from .job import CALL_TIMEOUT, DEFAULT_TIMEOUT, connector_ref, endpoints

# Flyte's TaskTemplate options that mean nothing to a local run; accepted so its tasks construct.
_FLYTE_OPTIONS = {"image", "resources", "cache", "interruptible", "docs", "pod_template", "report", "queue",
                  "debuggable", "reusable", "short_name", "parent_env", "plugin_config", "links"}


def run_coroutine(coro) -> Any:
    """A coroutine to completion from synchronous code: here if no loop runs in this thread
    (Ctrl-C then cancels it and raises KeyboardInterrupt here), else in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="task-body") as ex:
        return ex.submit(asyncio.run, coro).result()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=lambda v: v.path if isinstance(v, File) else str(v)))


class TaskTemplate(Task):
    """A task defined by a class: its interface is declared, its body is ``execute``.

    ``secrets`` maps keyword names to ``engine.Secret`` references (a list of Secrets uses
    each key as the name); a connector gets the values as keyword arguments of its calls.
    ``timeout`` is the deadline of the whole execution (for a connector job: from its create).
    """

    runs_in_caller_stack = False

    def __init__(self, name: str, interface: NativeInterface | None = None, task_type: str = "python",
                 task_type_version: int = 0, *, env_vars: dict[str, str] | None = None, secrets: Any = None,
                 timeout: float | timedelta | None = None, retries: int = 0, poll_interval: float = 2.0, **options):
        unknown = sorted(set(options) - _FLYTE_OPTIONS)
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword argument(s) {', '.join(unknown)}")
        self.env = TaskEnvironment(name=name, env_vars=env_vars)
        self.short_name = self.name = name
        self.interface = interface or NativeInterface()
        self.task_type, self.task_type_version = task_type, int(task_type_version)
        self.secrets = secrets
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.retries = retries
        self.poll_interval = float(poll_interval)
        self.options = options
        self.fn = self.execute
        self.is_async = False  # a call returns the value; ``await task.aio(...)`` from async code
        self.own_configs = self._own_configs()

    def _own_configs(self) -> list[Any]:
        return []

    # ------------------------------------------------------------------ what Flyte's subclasses override
    def custom_config(self, sctx: SerializationContext) -> dict[str, Any] | None:
        """The task template's ``custom``: what the connector reads to know what to launch."""
        return None

    def execute(self, **inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no execute()")

    # ------------------------------------------------------------------ calling
    def bind(self, *args: Any, partial: bool = False, **kwargs: Any) -> dict[str, Any]:
        """As ``Task.bind``; ``partial``: inputs may be missing (a preview), never unknown."""
        where = f"inputs of {self.name}"
        try:
            sig = self.interface.signature()
            bound = sig.bind_partial(*args, **kwargs) if partial else sig.bind(*args, **kwargs)
        except TypeError as e:
            raise ConfigError(str(e), where) from None
        bound.apply_defaults()
        values = dict(bound.arguments)
        for k, tp in self.interface.input_types().items():
            v = values.get(k)
            if v is None:
                continue
            if isinstance(tp, type) and issubclass(tp, File):
                values[k] = File.coerce(v)
            elif tp is float and isinstance(v, int) and not isinstance(v, bool):
                values[k] = float(v)
            elif tp in (int, float, str, bool) and (not isinstance(v, tp) or (tp is int and isinstance(v, bool))):
                raise ConfigError(f"expected {tp.__name__}, got {type(v).__name__}", f"{where}.{k}")
        return values

    def call_body(self, inputs: dict[str, Any]) -> Any:
        result = self.execute(**inputs)
        return run_coroutine(result) if inspect.iscoroutine(result) else result

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        from ..lifecycle import call_task_async

        return await call_task_async(self, self.bind(*args, **kwargs))

    # ------------------------------------------------------------------ serializing
    def template(self, sctx: SerializationContext | None = None):
        """This task as flyteidl2's TaskTemplate (what a connector's create receives)."""
        from flyteidl2.core import identifier_pb2, tasks_pb2

        tt = tasks_pb2.TaskTemplate(
            id=identifier_pb2.Identifier(resource_type=identifier_pb2.TASK, name=self.name),
            type=self.task_type, task_type_version=self.task_type_version,
            interface=literals.typed_interface(self.interface.input_types(), self.interface.outputs))
        custom = self.custom_config(sctx or SerializationContext())
        if custom:
            tt.custom.update(_jsonable(custom))
        if self.timeout:
            tt.metadata.timeout.FromSeconds(int(self.timeout))
        if self.retries:
            tt.metadata.retries.retries = self.retries
        return tt

    def secret_refs(self) -> dict[str, dict]:
        s = self.secrets
        if s is None:
            return {}
        if isinstance(s, (str, Secret)):
            s = [s]
        pairs = s.items() if isinstance(s, dict) else [((x if isinstance(x, str) else x.key), x) for x in s]
        out = {}
        for kw, ref in pairs:
            ref = Secret(key=ref) if isinstance(ref, str) else ref
            if not isinstance(ref, Secret) or not str(kw).isidentifier():
                raise ConfigError("expected {keyword: Secret} or a list of Secret", f"{self.name}.secrets")
            out[kw] = {"key": ref.key, "group": ref.group}
        return out


class ConnectorJobSpec:
    """The plugin config that a connector task carries: the task itself."""

    def __init__(self, task: "TaskTemplate"):
        self.task = task

    def __repr__(self) -> str:
        return f"ConnectorJobSpec({self.task.name})"


class AsyncConnectorExecutorMixin:
    """Runs a TaskTemplate through the connector registered for its task type (or through a
    connector service, when ENGINE_CONNECTOR_ENDPOINTS / ``--connector-endpoint`` names one)."""

    runs_in_caller_stack = True

    def _own_configs(self) -> list[Any]:
        return [ConnectorJobSpec(self)]

    async def execute(self, **inputs: Any) -> Any:
        tc = context.ctx()
        job = tc.data.get("connector_job") if tc is not None else None
        if job is None:
            raise RuntimeError(f"{self.name} runs as an engine run: call it, or `engine up FILE:{self.name}`")
        provider = tc.session.provider(job["type"])
        res = await provider.wait(job["id"], job["inputs"], job["outputs"], report=tc.session.reporter.message,
                                  label=self.name)
        if res.phase != TaskExecution.SUCCEEDED:
            raise ConnectorJobFailed(f"{self.name}: the job ended {phase_name(res.phase)}" +
                               (f": {res.message}" if res.message else ""))
        return native_outputs(self.interface, res.outputs)


def native_outputs(interface: NativeInterface, outputs: dict | None) -> Any:
    """Resource.outputs as the task's return value: one output as itself, several as a tuple
    in the interface's order, a declared File as a File."""
    outputs = outputs or {}
    names = list(interface.outputs) or list(outputs)
    values = []
    for n in names:
        v, tp = outputs.get(n), interface.outputs.get(n)
        if v is not None and isinstance(tp, type) and issubclass(tp, File):
            v = File.coerce(v)
        values.append(v)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def job_inputs(task: TaskTemplate, values: dict) -> dict:
    """The job's declared inputs: everything that identifies it (two runs asking for equal
    inputs ask for the same job, which is how a crashed run's job is resumed)."""
    tt, version = task.task_type, task.task_type_version
    endpoint, ref = endpoints().get(tt), None
    if not endpoint:
        try:
            ref = connector_ref(ConnectorRegistry.get_connector(tt, version))
        except ConnectorNotFound as e:
            raise ConfigError(f"{e}: define an AsyncConnector for it, or send it to a connector service with "
                              f"--connector-endpoint {tt}=HOST:PORT", f"{task.name}.task_type") from None
    return {"task_type": tt, "task_type_version": version, "connector": ref, "endpoint": endpoint,
            "template": _template_dict(task.template()), "inputs": _jsonable(values),
            "secrets": task.secret_refs(), "timeout": float(task.timeout or DEFAULT_TIMEOUT),
            "poll": {"first": 0.05, "cap": task.poll_interval, "max_errors": 30, "call_timeout": CALL_TIMEOUT}}


_TEMPLATES: dict[bytes, dict] = {}


def _template_dict(template) -> dict:
    """The template as JSON, one shared dict per distinct template: thousands of calls of one
    task in a run hold one copy (nothing mutates declared inputs)."""
    from google.protobuf import json_format

    key = template.SerializeToString(deterministic=True)
    d = _TEMPLATES.get(key)
    if d is None:
        if len(_TEMPLATES) > 1024:
            _TEMPLATES.clear()
        d = _TEMPLATES[key] = json_format.MessageToDict(template)
    return d


class ConnectorPlugin(TaskPlugin):
    def __init__(self):
        self._declared: dict[str, dict] = {}

    def declare(self, spec: ConnectorJobSpec, ctx: DeclareContext):
        task = spec.task
        inputs = job_inputs(task, task.bind(**ctx.inputs))
        # Named by what it asks for, so the next run of a crashed caller finds it again; the
        # n-th identical call within one run gets -n (calls are numbered in the caller's context).
        base = f"{task.short_name}-{hashlib.sha1(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:8]}"
        tc = context.ctx()
        calls = tc.data.setdefault("connector_calls", {}) if tc is not None else {}
        n = calls[base] = calls.get(base, -1) + 1
        token = f"connector:{task.task_type}:Job"
        d = ctx.declaration(token, base + (f"-{n}" if n else ""), inputs, options=Options(resume_on_recover=True),
                            ephemeral=True)
        # Only so that the run's errors mask the values; the provider resolves them per call.
        d.secret_inputs = {f"secret:{kw}": Secret(**ref) for kw, ref in inputs["secrets"].items()}
        self._declared[ctx.run_id] = {"type": token, "id": d.physical_name, "inputs": inputs, "name": d.name}
        return [d]

    def attach(self, spec: ConnectorJobSpec, outputs: dict[str, dict], ctx: DeclareContext) -> Attachment:
        job = self._declared.pop(ctx.run_id)
        return Attachment(data={"connector_job": {**job, "outputs": outputs[job["name"]]}})

    def running(self, config, ctx: DeclareContext):
        import contextlib

        @contextlib.contextmanager
        def forget():
            try:
                yield
            finally:
                self._declared.pop(ctx.run_id, None)
        return forget()


TaskPluginRegistry.register(ConnectorJobSpec, ConnectorPlugin())
