"""Connector tasks the tests run, and a connector that both our engine and Flyte's ``c0`` can
serve: the module imports whichever SDK it finds (engine's here; flyte's in the separate venv
that runs ``c0``), so the remote tests compare the two servers on the same connector code.

The connector drives examples/mltrain_service.py over plain HTTP; its URL comes from the task
template's custom config (``TRAIN_URL`` when the task is built).
"""

import os
import typing
from dataclasses import dataclass

import httpx
from flyteidl2.core.execution_pb2 import TaskExecution, TaskLog
from google.protobuf import json_format

try:
    from engine.connectors import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta
    ENGINE = True
except ImportError:  # served by Flyte's c0
    from flyte.connectors import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta
    ENGINE = False


@dataclass
class TrainMeta(ResourceMeta):
    job_id: str
    url: str


class TrainingConnector(AsyncConnector):
    name = "Test Training Connector"
    task_type_name = "test_training"
    metadata_type = TrainMeta

    async def create(self, task_template, inputs: typing.Optional[dict] = None, **kwargs) -> TrainMeta:
        url = json_format.MessageToDict(task_template.custom)["url"]
        if kwargs.get("token") != os.environ.get("TRAIN_TOKEN", kwargs.get("token")):
            raise PermissionError("wrong token")
        async with httpx.AsyncClient() as client:
            r = await client.post(url, json=dict(inputs or {}))
        r.raise_for_status()
        return TrainMeta(job_id=r.json()["job_id"], url=url)

    async def get(self, resource_meta: TrainMeta, **kwargs) -> Resource:
        async with httpx.AsyncClient() as client:
            r = await client.get(f"{resource_meta.url}/{resource_meta.job_id}")
        r.raise_for_status()  # a 503 is a transient error: the engine retries it
        data = r.json()
        links = [TaskLog(name="job", uri=f"{resource_meta.url}/{resource_meta.job_id}")]
        if data["status"] == "finished":
            return Resource(phase=TaskExecution.SUCCEEDED, log_links=links,
                            outputs={"results": data["results"], "epochs": data["epochs"]})
        if data["status"] in ("failed", "cancelled"):
            return Resource(phase=TaskExecution.FAILED, message=data.get("error") or data["status"], log_links=links)
        return Resource(phase=TaskExecution.RUNNING, log_links=links)

    async def delete(self, resource_meta: TrainMeta, **kwargs) -> None:
        async with httpx.AsyncClient() as client:
            await client.delete(f"{resource_meta.url}/{resource_meta.job_id}")


class BrokenConnector(AsyncConnector):
    """Every call raises: the service answers INTERNAL with the message."""

    name = "Broken Connector"
    task_type_name = "test_broken"
    metadata_type = TrainMeta

    async def create(self, task_template, inputs=None, **kwargs):
        raise ValueError("the broken connector always fails")

    async def get(self, resource_meta, **kwargs):
        raise ValueError("the broken connector always fails")

    async def delete(self, resource_meta, **kwargs):
        raise ValueError("the broken connector always fails")


ConnectorRegistry.register(TrainingConnector())
ConnectorRegistry.register(BrokenConnector())

if ENGINE:
    import engine
    from engine.connectors import AsyncConnectorExecutorMixin
    from engine.extend import TaskTemplate
    from engine.io import File
    from engine.models import NativeInterface

    class TrainTask(AsyncConnectorExecutorMixin, TaskTemplate):
        def __init__(self, name: str, **kwargs):
            super().__init__(name=name, task_type="test_training",
                             interface=NativeInterface(inputs={"epochs": int, "dataset_uri": (str, "mem://data"),
                                                               "seconds": (float, 0.0), "fail": (bool, False),
                                                               "flaky_gets": (int, 0)},
                                                       outputs={"results": File, "epochs": int}),
                             **kwargs)

        def custom_config(self, sctx):
            return {"url": os.environ["TRAIN_URL"]}

    train = TrainTask(name="train", timeout=float(os.environ.get("TRAIN_TIMEOUT", "120")), poll_interval=0.3)

    env = engine.TaskEnvironment(name="conn_parent")

    @env.task
    def two_jobs(seconds: float = 0.2) -> list:
        """Two connector calls inside one run: both jobs live in this run's stack."""
        a = train(epochs=1, seconds=seconds)
        b = train(epochs=2, seconds=seconds)
        return [a[1], b[1]]

    @env.task
    async def fan_out(n: int = 20, seconds: float = 0.5) -> int:
        """n jobs polled concurrently on this task's event loop."""
        import asyncio

        results = await asyncio.gather(*(train.aio(epochs=i, seconds=seconds) for i in range(n)))
        return sum(r[1] for r in results)
