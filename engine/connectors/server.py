"""``engine connectors serve``: the registered connectors over flyteidl2's gRPC services.

AsyncConnectorService (CreateTask, GetTask, DeleteTask, GetTaskMetrics, GetTaskLogs),
ConnectorMetadataService (GetConnector, ListConnectors) and gRPC health, on 127.0.0.1 by
default, so Flyte's own clients (and our engine, for a remote connector) can call them. An
unknown task type answers NOT_FOUND; a connector's exception answers INTERNAL with its message.
Prometheus metrics count every call by task type, operation and status code, and time it.

Each request does the connector's work and the literal conversion, nothing else (no per-call
logging, no type-engine round trip), which is where the throughput over Flyte's ``c0`` comes from.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import signal
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Iterable

import grpc
from flyteidl2.connector import connector_pb2, service_pb2, service_pb2_grpc

from . import literals
from .backends import resource_to_proto
from .base import ConnectorNotFound, ConnectorRegistry

ENTRY_POINT_GROUP = "taskrig.connectors"


def load_connectors(modules: Iterable[str] = ()) -> list[str]:
    """Import the connector modules of the entry-point group, then ``modules`` (dotted names or
    paths of .py files, comma-separated allowed); returns what was loaded, for the banner."""
    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()
        loaded.append(f"{ep.name} ({ep.value})")
    for spec in (m.strip() for item in modules for m in item.split(",")):
        if not spec:
            continue
        if spec.endswith(".py") or Path(spec).is_file():
            from ..target import load_module

            load_module(spec)
        else:
            from ..errors import TargetError

            try:
                importlib.import_module(spec)
            except ImportError as e:
                raise TargetError(f"cannot import connector module {spec!r}: {e}", "--modules") from None
        loaded.append(spec)
    return loaded


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("taskrig_connector_requests", "Connector service calls",
                                ["task_type", "operation", "code"], registry=self.registry)
        self.latency = Histogram("taskrig_connector_request_seconds", "Connector service call latency",
                                 ["task_type", "operation"], registry=self.registry,
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))

    def record(self, task_type: str, op: str, code: str, started: float) -> None:
        self.requests.labels(task_type, op, code).inc()
        self.latency.labels(task_type, op).observe(time.perf_counter() - started)


class AsyncConnectorService(service_pb2_grpc.AsyncConnectorServiceServicer):
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    async def _call(self, context, category, op: str, work):
        """Look the connector up and run ``work(connector)``, mapping failures to status codes.
        ``context.abort`` raises, so it is called only once the outcome is known."""
        started = time.perf_counter()
        task_type, version = category
        try:
            connector = ConnectorRegistry.get_connector(task_type, version)
        except ConnectorNotFound as e:
            code, message = grpc.StatusCode.NOT_FOUND, str(e)
        else:
            try:
                result = await work(connector)
            except NotImplementedError as e:
                code, message = grpc.StatusCode.UNIMPLEMENTED, str(e) or f"{op} is not implemented"
            except Exception as e:  # noqa: BLE001 - the connector's failure is the caller's answer
                code, message = grpc.StatusCode.INTERNAL, f"{type(connector).__name__}.{op} failed: {type(e).__name__}: {e}"
            else:
                self.metrics.record(task_type, op, "OK", started)
                return result
        self.metrics.record(task_type, op, code.name, started)
        await context.abort(code, message)

    @staticmethod
    def _kwargs(connection) -> dict:
        return {**connection.configs, **connection.secrets}

    async def CreateTask(self, request, context):
        t = request.template

        async def work(c):
            meta = await c.create(task_template=t, inputs=literals.from_inputs(request.inputs),
                                  output_prefix=request.output_prefix,
                                  task_execution_metadata=request.task_execution_metadata,
                                  **self._kwargs(request.connection))
            return connector_pb2.CreateTaskResponse(resource_meta=meta.encode())
        return await self._call(context, (t.type, t.task_type_version), "create", work)

    async def GetTask(self, request, context):
        async def work(c):
            res = await c.get(resource_meta=c.metadata_type.decode(request.resource_meta),
                              **self._kwargs(request.connection))
            return connector_pb2.GetTaskResponse(resource=resource_to_proto(res))
        cat = request.task_category
        return await self._call(context, (cat.name, cat.version), "get", work)

    async def DeleteTask(self, request, context):
        async def work(c):
            await c.delete(resource_meta=c.metadata_type.decode(request.resource_meta),
                           **self._kwargs(request.connection))
            return connector_pb2.DeleteTaskResponse()
        cat = request.task_category
        return await self._call(context, (cat.name, cat.version), "delete", work)

    async def GetTaskMetrics(self, request, context):
        async def work(c):
            return await c.get_metrics(resource_meta=c.metadata_type.decode(request.resource_meta),
                                       queries=list(request.queries), start_time=request.start_time,
                                       end_time=request.end_time, step=request.step)
        cat = request.task_category
        return await self._call(context, (cat.name, cat.version), "get_metrics", work)

    async def GetTaskLogs(self, request, context):
        """A connector's get_logs may return one response or be an async generator of them."""
        cat = request.task_category

        async def work(c):
            result = c.get_logs(resource_meta=c.metadata_type.decode(request.resource_meta), token=request.token,
                                lines=request.lines)
            if inspect.isasyncgen(result):
                return [msg async for msg in result]
            return [await result]
        for msg in await self._call(context, (cat.name, cat.version), "get_logs", work):
            yield msg


class ConnectorMetadataService(service_pb2_grpc.ConnectorMetadataServiceServicer):
    @staticmethod
    def _protos() -> dict[str, connector_pb2.Connector]:
        out: dict[str, connector_pb2.Connector] = {}
        for c in ConnectorRegistry.list_connectors():
            proto = out.setdefault(c.name, connector_pb2.Connector(name=c.name))
            proto.supported_task_categories.append(
                connector_pb2.TaskCategory(name=c.task_type_name, version=int(c.task_type_version)))
        return out

    async def GetConnector(self, request, context):
        proto = self._protos().get(request.name)
        if proto is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no connector named {request.name!r}")
        return connector_pb2.GetConnectorResponse(connector=proto)

    async def ListConnectors(self, request, context):
        return connector_pb2.ListConnectorsResponse(connectors=list(self._protos().values()))


async def serve(port: int = 8000, host: str = "127.0.0.1", metrics_port: int | None = None,
                announce=print, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM); connectors must be loaded already."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1._async import HealthServicer

    metrics = Metrics()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    service_pb2_grpc.add_AsyncConnectorServiceServicer_to_server(AsyncConnectorService(metrics), server)
    service_pb2_grpc.add_ConnectorMetadataServiceServicer_to_server(ConnectorMetadataService(), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    for name in [*(s.full_name for s in service_pb2.DESCRIPTOR.services_by_name.values()), ""]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    metrics_bound = None
    if metrics_port is not None:
        from prometheus_client import start_http_server

        httpd, _ = start_http_server(metrics_port, addr=host, registry=metrics.registry)
        metrics_bound = httpd.server_address[1]
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (ValueError, RuntimeError):  # not the main thread (a test's server)
            pass
    names = ", ".join(f"{c.task_type_name}:{c.task_type_version}" for c in ConnectorRegistry.list_connectors())
    announce(f"serving connectors [{names}] on {host}:{bound}"
             + (f", metrics on http://{host}:{metrics_bound}/metrics" if metrics_bound else ""))
    try:
        await stop.wait()
    finally:
        await health.enter_graceful_shutdown()
        await server.stop(grace=2)
        if metrics_port is not None:
            httpd.shutdown()
