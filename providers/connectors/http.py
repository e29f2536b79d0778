"""HTTP job connector: the seed's model-training connector, generalised to any REST job API.

POST ``url`` with the task's inputs as JSON launches a job (its id is ``id_field`` of the
answer); GET ``url/<id>`` reports it (``status_field`` mapped through ``success`` and
``failure``; the outputs are fields of that answer); DELETE ``url/<id>`` cancels it.

    train = HTTPJobTask(name="train", url="http://127.0.0.1:8080",
                        inputs={"dataset_uri": str, "epochs": int}, outputs={"results": File},
                        token=engine.Secret(key="TRAIN_TOKEN"))

A 5xx or 429 answer to a GET raises (the engine retries it within the deadline); a 404 means
the job is gone (failed). DELETE of a finished or unknown job succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from flyteidl2.core.execution_pb2 import TaskExecution, TaskLog
from google.protobuf import json_format

from engine.connectors import AsyncConnector, AsyncConnectorExecutorMixin, ConnectorRegistry, Resource, ResourceMeta
from engine.extend import TaskTemplate
from engine.models import NativeInterface

SUCCESS = ("finished", "succeeded", "success", "done", "completed")
FAILURE = ("failed", "error", "cancelled", "canceled", "aborted")


@dataclass
class HTTPJobMeta(ResourceMeta):
    job_id: str
    job_url: str
    status_field: str = "status"
    message_field: str = "error"
    success: list = field(default_factory=lambda: list(SUCCESS))
    failure: list = field(default_factory=lambda: list(FAILURE))
    outputs: dict = field(default_factory=dict)  # output name -> field of the GET answer
    headers: dict = field(default_factory=dict)


def _headers(headers: dict, token: Optional[str]) -> dict:
    return {**headers, **({"Authorization": f"Bearer {token}"} if token else {})}


class HTTPJobConnector(AsyncConnector):
    name = "HTTP Job Connector"
    task_type_name = "http_job"
    metadata_type = HTTPJobMeta

    async def create(self, task_template, inputs: Optional[dict] = None, token: Optional[str] = None,
                     **kwargs) -> HTTPJobMeta:
        import httpx

        c = json_format.MessageToDict(task_template.custom)
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(c["url"], json=dict(inputs or {}), headers=_headers(c.get("headers", {}), token))
        r.raise_for_status()
        job_id = str(r.json()[c.get("id_field", "job_id")])
        return HTTPJobMeta(job_id=job_id, job_url=f"{c['url'].rstrip('/')}/{job_id}",
                           status_field=c.get("status_field", "status"), message_field=c.get("message_field", "error"),
                           success=c.get("success", list(SUCCESS)), failure=c.get("failure", list(FAILURE)),
                           outputs=c.get("outputs", {}), headers=c.get("headers", {}))

    async def get(self, resource_meta: HTTPJobMeta, token: Optional[str] = None, **kwargs) -> Resource:
        import httpx

        m = resource_meta
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.get(m.job_url, headers=_headers(m.headers, token))
        if r.status_code == 404:
            return Resource(phase=TaskExecution.FAILED, message=f"job {m.job_id} not found at {m.job_url}")
        if r.status_code >= 500 or r.status_code == 429:
            r.raise_for_status()  # transient: the engine polls again
        if r.status_code >= 400:
            return Resource(phase=TaskExecution.FAILED, message=f"GET {m.job_url}: HTTP {r.status_code}")
        data = r.json()
        status = str(data.get(m.status_field, "")).lower()
        links = [TaskLog(name="job", uri=m.job_url)]
        if status in m.success:
            return Resource(phase=TaskExecution.SUCCEEDED, log_links=links,
                            outputs={name: data.get(fld) for name, fld in m.outputs.items()})
        if status in m.failure:
            return Resource(phase=TaskExecution.FAILED, message=str(data.get(m.message_field) or status), log_links=links)
        return Resource(phase=TaskExecution.RUNNING, log_links=links)

    async def delete(self, resource_meta: HTTPJobMeta, token: Optional[str] = None, **kwargs) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.delete(resource_meta.job_url, headers=_headers(resource_meta.headers, token))
        if r.status_code not in (404, 409, 410):  # gone or already finished: nothing to cancel
            r.raise_for_status()


class HTTPJobTask(AsyncConnectorExecutorMixin, TaskTemplate):
    """A task that is one job of a REST job API (see the module docstring)."""

    def __init__(self, name: str, url: str, inputs: dict[str, Any] | None = None,
                 outputs: dict[str, Any] | None = None, output_fields: dict[str, str] | None = None,
                 id_field: str = "job_id", status_field: str = "status", message_field: str = "error",
                 success=SUCCESS, failure=FAILURE, headers: dict[str, str] | None = None, token=None, **kwargs):
        super().__init__(name=name, task_type=HTTPJobConnector.task_type_name,
                         interface=NativeInterface(inputs=dict(inputs or {}), outputs=dict(outputs or {})),
                         secrets={"token": token} if token is not None else None, **kwargs)
        self.url = url
        self.config = {"id_field": id_field, "status_field": status_field, "message_field": message_field,
                       "success": [s.lower() for s in success], "failure": [s.lower() for s in failure],
                       "headers": dict(headers or {}),
                       "outputs": {k: (output_fields or {}).get(k, k) for k in (outputs or {})}}

    def custom_config(self, sctx) -> dict:
        return {"url": self.url, **self.config}


ConnectorRegistry.register(HTTPJobConnector())
