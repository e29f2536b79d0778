"""Where a connector job's calls go: to a connector in this process, or over gRPC to a
connector service (ours or Flyte's ``c0``). Both speak bytes of ResourceMeta, so the state
records the same thing either way, and a job created by one process is polled or deleted by
another.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import weakref
from typing import Any, Awaitable, Callable

from flyteidl2.connector import connector_pb2
from flyteidl2.core import security_pb2
from google.protobuf import json_format, struct_pb2

from . import literals
from .base import AsyncConnector, Resource


def run_sync(make: Callable[[], Awaitable[Any]], timeout: float | None) -> Any:
    """Run an async connector call to completion from synchronous engine code (a provider
    call): ``asyncio.run`` in this thread, or in a worker thread when this one already runs a
    loop. Each call gets a fresh loop, so nothing is shared with the loop of a polling task."""
    async def bounded():
        return await asyncio.wait_for(make(), timeout)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="connector-call") as ex:
        return ex.submit(asyncio.run, bounded()).result()


def resource_to_proto(res: Resource) -> connector_pb2.Resource:
    proto = connector_pb2.Resource(phase=res.phase, message=res.message or "", log_links=res.log_links or [])
    if res.outputs:
        proto.outputs.CopyFrom(literals.to_outputs(res.outputs))
    if res.custom_info:
        proto.custom_info.CopyFrom(json_format.Parse(json.dumps(res.custom_info, default=str), struct_pb2.Struct()))
    return proto


def resource_from_proto(proto: connector_pb2.Resource) -> Resource:
    return Resource(phase=proto.phase, message=proto.message or None, log_links=list(proto.log_links) or None,
                    outputs=literals.from_outputs(proto.outputs) if proto.HasField("outputs") else None,
                    custom_info=json_format.MessageToDict(proto.custom_info) if proto.HasField("custom_info") else None)


class LocalBackend:
    """A connector instance called in this process."""

    def __init__(self, connector: AsyncConnector):
        self.connector = connector
        self.where = f"{type(connector).__module__}.{type(connector).__qualname__}"

    async def create(self, template, inputs: dict, secrets: dict, metadata, output_prefix: str) -> bytes:
        meta = await self.connector.create(task_template=template, inputs=inputs, output_prefix=output_prefix,
                                           task_execution_metadata=metadata, **secrets)
        return meta.encode()

    def _meta(self, data: bytes):
        return self.connector.metadata_type.decode(data)

    async def get(self, meta: bytes, secrets: dict) -> Resource:
        return await self.connector.get(resource_meta=self._meta(meta), **secrets)

    async def delete(self, meta: bytes, secrets: dict) -> None:
        await self.connector.delete(resource_meta=self._meta(meta), **secrets)

    async def aclose(self) -> None:
        pass


class RemoteCallError(RuntimeError):
    """A connector service answered with an error status (``code`` is the gRPC status name)."""

    def __init__(self, endpoint: str, op: str, code: str, details: str):
        self.code = code
        super().__init__(f"{op} at {endpoint}: {code}: {details}")


class RemoteBackend:
    """A connector service at HOST:PORT, through flyteidl2's generated stubs. Secrets travel in
    the request's ``connection`` (Flyte's servers pass them to the connector as keyword
    arguments). One channel per event loop: gRPC's asyncio channels belong to the loop that
    made them."""

    def __init__(self, endpoint: str, task_type: str, version: int, call_timeout: float = 60.0):
        self.endpoint, self.category = endpoint, connector_pb2.TaskCategory(name=task_type, version=version)
        self.where = endpoint
        self.call_timeout = call_timeout
        self._channels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _stub(self):
        import grpc
        from flyteidl2.connector.service_pb2_grpc import AsyncConnectorServiceStub

        loop = asyncio.get_running_loop()
        channel = self._channels.get(loop)
        if channel is None:
            channel = self._channels[loop] = grpc.aio.insecure_channel(self.endpoint)
        return AsyncConnectorServiceStub(channel)

    async def _call(self, op: str, method: str, request):
        import grpc

        try:
            return await getattr(self._stub(), method)(request, timeout=self.call_timeout)
        except grpc.aio.AioRpcError as e:
            raise RemoteCallError(self.endpoint, op, e.code().name, e.details() or "") from None

    async def create(self, template, inputs: dict, secrets: dict, metadata, output_prefix: str) -> bytes:
        req = connector_pb2.CreateTaskRequest(template=template, inputs=literals.to_inputs(inputs),
                                              output_prefix=output_prefix, task_execution_metadata=metadata,
                                              connection=security_pb2.Connection(secrets=secrets))
        return (await self._call("CreateTask", "CreateTask", req)).resource_meta

    async def get(self, meta: bytes, secrets: dict) -> Resource:
        req = connector_pb2.GetTaskRequest(resource_meta=meta, task_category=self.category,
                                           connection=security_pb2.Connection(secrets=secrets))
        return resource_from_proto((await self._call("GetTask", "GetTask", req)).resource)

    async def delete(self, meta: bytes, secrets: dict) -> None:
        req = connector_pb2.DeleteTaskRequest(resource_meta=meta, task_category=self.category,
                                              connection=security_pb2.Connection(secrets=secrets))
        await self._call("DeleteTask", "DeleteTask", req)

    async def aclose(self) -> None:
        try:
            channel = self._channels.pop(asyncio.get_running_loop(), None)
        except RuntimeError:
            return
        if channel is not None:
            await channel.close()
