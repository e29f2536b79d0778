"""The provider of ``connector:<task_type>:Job``: a connector's external job as a resource.

``create`` is the connector's create, and what it returns, the encoded ResourceMeta, is the
resource's output: apply journals and records it before the task body starts polling, so a
``kill -9`` while polling leaves a record that the next run adopts (the plan's ``same`` step
for a ``resume_on_recover`` resource) and resumes, and that ``destroy`` deletes. ``read`` is
the connector's get; ``delete`` its delete, skipped for a job that already succeeded.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import importlib.util
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from flyteidl2.connector import connector_pb2
from flyteidl2.core import tasks_pb2
from flyteidl2.core.execution_pb2 import TaskExecution
from google.protobuf import json_format

from ..errors import ConfigError
from ..io import File
from ..registry import ProviderRegistry
from ..resource import Provider, urn_parts
from ..sdk import Secret
from .backends import LocalBackend, RemoteBackend, run_sync
from .base import ConnectorJobFailed, ConnectorNotFound, ConnectorRegistry, Resource, is_terminal_phase, phase_name

DEFAULT_TIMEOUT = 24 * 3600.0  # a job with no task timeout still has a deadline
CALL_TIMEOUT = 60.0  # one create, get or delete call
ENDPOINTS_VAR = "ENGINE_CONNECTOR_ENDPOINTS"


def endpoints() -> dict[str, str]:
    """``TASK_TYPE=HOST:PORT,...`` from ENGINE_CONNECTOR_ENDPOINTS (``--connector-endpoint`` sets it)."""
    out = {}
    for item in filter(None, (x.strip() for x in os.environ.get(ENDPOINTS_VAR, "").split(","))):
        task_type, sep, address = item.partition("=")
        if not sep or ":" not in address:
            raise ConfigError(f"{item!r} is not TASK_TYPE=HOST:PORT", ENDPOINTS_VAR)
        out[task_type.strip()] = address.strip()
    return out


def connector_ref(connector) -> dict:
    """How another process finds this connector's code: its module, and the file when the
    module was loaded from a path (``engine up examples/x.py:task``)."""
    cls = type(connector)
    module = importlib.import_module(cls.__module__)
    return {"module": cls.__module__, "class": cls.__qualname__, "file": getattr(module, "__file__", None)}


def load_connector(task_type: str, version: int, ref: dict | None):
    """The connector for a recorded job: registered already, else imported from its ref."""
    try:
        return ConnectorRegistry.get_connector(task_type, version)
    except ConnectorNotFound:
        if not ref:
            raise
    module, path = ref.get("module"), ref.get("file")
    try:
        spec = importlib.util.find_spec(module) if module else None
    except (ImportError, ValueError):
        spec = None
    if path and os.path.isfile(path) and (spec is None or spec.origin != path):
        from ..target import load_module

        load_module(path)
    elif module:
        importlib.import_module(module)
    return ConnectorRegistry.get_connector(task_type, version)


def _typed_inputs(template: tasks_pb2.TaskTemplate, values: dict) -> dict:
    """Inputs as the connector should see them: files back as File (the state keeps paths)."""
    out = dict(values)
    for entry in template.interface.inputs.variables:
        if entry.value.type.HasField("blob") and out.get(entry.key) is not None:
            out[entry.key] = File.coerce(out[entry.key])
    return out


class ConnectorJob(Provider):
    """Serves every ``connector:*`` token; the job's inputs say which connector and where."""

    type_token = "connector:*"

    def __init__(self, context=None):
        super().__init__(context)
        self._backends: dict[str, object] = {}
        self._mutex = threading.Lock()
        # Jobs this process saw succeed: their teardown has nothing to cancel.
        self._succeeded: set[str] = set()

    # ------------------------------------------------------------------ plumbing
    def backend(self, inputs: dict):
        task_type, version = inputs["task_type"], int(inputs.get("task_type_version") or 0)
        endpoint = inputs.get("endpoint")
        key = endpoint or json.dumps([task_type, version, inputs.get("connector")], sort_keys=True)
        with self._mutex:
            b = self._backends.get(key)
            if b is None:
                b = self._backends[key] = (RemoteBackend(endpoint, task_type, version, CALL_TIMEOUT) if endpoint
                                           else LocalBackend(load_connector(task_type, version, inputs.get("connector"))))
        return b

    @staticmethod
    def secrets(inputs: dict) -> dict[str, str]:
        """Keyword arguments for the connector, resolved at each call from the references in
        the inputs: a resumed or destroyed job needs them too, and no value is ever recorded."""
        from ..secrets import resolve_secret

        return {kw: resolve_secret(Secret(**ref)) for kw, ref in (inputs.get("secrets") or {}).items()}

    def _call(self, backend, make: Callable):
        async def call():
            try:
                return await make()
            finally:
                await backend.aclose()

        return run_sync(call, CALL_TIMEOUT)

    # ------------------------------------------------------------------ contract
    def check(self, inputs: dict) -> dict:
        self.secrets(inputs)  # a missing secret is bad input, before anything is created
        return inputs

    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        backend = self.backend(inputs)
        template = json_format.ParseDict(inputs["template"], tasks_pb2.TaskTemplate())
        metadata = connector_pb2.TaskExecutionMetadata(namespace=urn_parts(urn)[0],
                                                       labels={"taskrig-job": idempotency_key})
        base = Path(self.context.runtime_dir) if self.context else Path(tempfile.gettempdir())
        prefix = str(base / "connector-jobs" / idempotency_key)
        meta = self._call(backend, lambda: backend.create(template, _typed_inputs(template, inputs["inputs"]),
                                                          self.secrets(inputs), metadata, prefix))
        return idempotency_key, {"resource_meta": base64.b64encode(meta).decode(), "created_at": time.time(),
                                 "where": backend.where}

    def read(self, id: str, inputs: dict, outputs: dict | None):
        if not outputs or "resource_meta" not in outputs:
            return None  # recovery knows only the name, and a connector cannot look a job up by it
        backend = self.backend(inputs)
        res = self._call(backend, lambda: backend.get(base64.b64decode(outputs["resource_meta"]), self.secrets(inputs)))
        return {**outputs, "phase": phase_name(res.phase), "message": res.message}

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        if not outputs or "resource_meta" not in outputs:
            return
        if id in self._succeeded or outputs.get("phase") == "SUCCEEDED":
            self._succeeded.discard(id)
            return
        backend, meta, secrets = self.backend(inputs), base64.b64decode(outputs["resource_meta"]), self.secrets(inputs)
        try:
            if self._call(backend, lambda: backend.get(meta, secrets)).phase == TaskExecution.SUCCEEDED:
                return  # finished while nobody polled (a resumed or destroyed job): nothing to cancel
        except Exception:
            pass  # cannot tell: cancel; a connector's delete of a finished job succeeds anyway
        self._call(backend, lambda: backend.delete(meta, secrets))

    # ------------------------------------------------------------------ the task body
    async def wait(self, id: str, inputs: dict, outputs: dict, report: Callable[[str], None] = lambda m: None,
                   label: str = "") -> Resource:
        """Poll ``get`` until the job ends: the first poll at once, then backing off to the
        ``poll.cap`` interval, under the deadline of the task timeout counted from the job's
        creation (a resumed job keeps its deadline). A get that raises is retried within the
        deadline, up to ``poll.max_errors`` times in a row. Cancelling the caller stops the
        loop; the run's teardown then deletes the job."""
        backend, meta, secrets = self.backend(inputs), base64.b64decode(outputs["resource_meta"]), self.secrets(inputs)
        poll = inputs.get("poll") or {}
        delay, cap, max_errors = float(poll.get("first", 0.05)), float(poll.get("cap", 2.0)), int(poll.get("max_errors", 30))
        timeout = float(inputs.get("timeout") or DEFAULT_TIMEOUT)
        deadline = time.monotonic() + (float(outputs.get("created_at") or time.time()) + timeout - time.time())
        label = label or inputs.get("task_type", "connector job")
        errors, last, links = 0, None, set()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConnectorJobFailed(f"{label}: the job did not finish within the task timeout of {timeout:g} s "
                                       f"(last phase {phase_name(last) if last is not None else 'unknown'})")
                try:
                    res = await asyncio.wait_for(backend.get(meta, secrets), min(CALL_TIMEOUT, remaining))
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as e:
                    errors += 1
                    if errors >= max_errors:
                        raise ConnectorJobFailed(f"{label}: get failed {errors} times in a row, last: "
                                           f"{type(e).__name__}: {e}") from e
                    report(f"{label}: get failed ({type(e).__name__}: {e}); retrying")
                else:
                    errors = 0
                    if res.phase != last:
                        last = res.phase
                        report(f"{label}: {phase_name(res.phase)}" + (f" ({res.message})" if res.message else ""))
                    for link in res.log_links or ():
                        if (link.name, link.uri) not in links:
                            links.add((link.name, link.uri))
                            report(f"{label}: {link.name}: {link.uri}")
                    if is_terminal_phase(res.phase):
                        if res.phase == TaskExecution.SUCCEEDED:
                            self._succeeded.add(id)
                        return res
                await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))
                delay = min(cap, max(delay * 2, 0.05))
        finally:
            await backend.aclose()


ProviderRegistry.register(ConnectorJob)
