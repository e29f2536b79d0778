"""PostgreSQL query connector: a query as an external job.

``create`` records the query in a job table (``taskrig_connector_jobs``, in the target
database) and starts a detached runner that takes a backend, records its pid and runs the
query; it returns the job id and that backend pid. ``get`` reads the job row: running,
succeeded (outputs ``rows``: a list of dicts, or ``row_count`` when there are more than
``max_rows`` rows or none are returned) or failed with PostgreSQL's message. ``delete`` cancels
with ``pg_cancel_backend``, only if that pid still runs this job (a pid can be reused).

    count = PostgresQueryTask(name="count", query="select count(*) as n from t where x > %(x)s",
                              inputs={"x": int}, host="127.0.0.1", port=5432, dbname="app",
                              user="app", password=engine.Secret(key="PG_PASSWORD"))

The password is a keyword argument of every call, from the Secret; the runner gets it in its
environment (PGPASSWORD), never on its command line.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from flyteidl2.core.execution_pb2 import TaskExecution
from google.protobuf import json_format

from engine.connectors import AsyncConnector, AsyncConnectorExecutorMixin, ConnectorRegistry, Resource, ResourceMeta
from engine.extend import TaskTemplate
from engine.models import NativeInterface

TABLE = "taskrig_connector_jobs"
RUNNER = Path(__file__).with_name("postgres_runner.py")
START_TIMEOUT = 20.0


@dataclass
class PostgresJobMeta(ResourceMeta):
    job_id: str
    pid: int
    host: str
    port: int
    dbname: str
    user: str


def _conninfo(c: dict, password: Optional[str]) -> dict:
    info = {"host": c.get("host", "127.0.0.1"), "port": int(c.get("port", 5432)), "dbname": c.get("dbname", "postgres"),
            "user": c.get("user", "postgres"), "connect_timeout": 10}
    return {**info, "password": password} if password else info


async def _connect(info: dict):
    import psycopg

    return await psycopg.AsyncConnection.connect(**info, autocommit=True)


async def _ensure_table(conn) -> None:
    import psycopg

    try:
        await conn.execute(f"create table if not exists {TABLE} (job_id text primary key, query text not null, "
                           f"params jsonb, max_rows int not null, status text not null, pid int, rows jsonb, "
                           f"row_count bigint, error text, submitted timestamptz default now(), finished timestamptz)")
    except psycopg.errors.UniqueViolation:
        pass  # two first jobs raced to create it


class PostgresQueryConnector(AsyncConnector):
    name = "PostgreSQL Query Connector"
    task_type_name = "postgres_query"
    metadata_type = PostgresJobMeta

    async def create(self, task_template, inputs: Optional[dict] = None, password: Optional[str] = None,
                     **kwargs) -> PostgresJobMeta:
        from psycopg.types.json import Jsonb

        c = json_format.MessageToDict(task_template.custom)
        info = _conninfo(c, password)
        job_id = uuid.uuid4().hex
        async with await _connect(info) as conn:
            await _ensure_table(conn)
            await conn.execute(f"insert into {TABLE} (job_id, query, params, max_rows, status) values "
                               f"(%s, %s, %s, %s, 'submitted')",
                               [job_id, c["query"], Jsonb(dict(inputs or {})), int(c.get("max_rows", 1000))])
        env = {**os.environ, "PGHOST": info["host"], "PGPORT": str(info["port"]), "PGDATABASE": info["dbname"],
               "PGUSER": info["user"]}
        if password:
            env["PGPASSWORD"] = password
        runner = subprocess.Popen([sys.executable, str(RUNNER), job_id], env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                  close_fds=True)
        # Reap it whenever it ends (it may outlive this call by hours), keeping its last words.
        threading.Thread(target=runner.communicate, daemon=True, name=f"pg-runner-{job_id[:8]}").start()
        pid = await self._started(info, job_id, runner)
        return PostgresJobMeta(job_id=job_id, pid=pid, host=info["host"], port=info["port"], dbname=info["dbname"],
                               user=info["user"])

    @staticmethod
    async def _started(info: dict, job_id: str, runner: subprocess.Popen) -> int:
        """The runner's backend pid, once it recorded it (it can finish the query first)."""
        deadline = time.monotonic() + START_TIMEOUT
        async with await _connect(info) as conn:
            while time.monotonic() < deadline:
                row = await (await conn.execute(f"select pid, status from {TABLE} where job_id = %s", [job_id])).fetchone()
                if row and row[0] is not None:
                    return int(row[0])
                if runner.poll() not in (None, 0):
                    raise RuntimeError(f"the query runner exited with {runner.returncode} before starting the query")
                await asyncio.sleep(0.02)
            await conn.execute(f"update {TABLE} set status = 'cancelled' where job_id = %s", [job_id])
        runner.kill()
        raise TimeoutError(f"the query runner did not start the query within {START_TIMEOUT:g} s")

    async def get(self, resource_meta: PostgresJobMeta, password: Optional[str] = None, **kwargs) -> Resource:
        m = resource_meta
        info = _conninfo(vars(m), password)
        async with await _connect(info) as conn:
            row = await (await conn.execute(f"select status, rows, row_count, error from {TABLE} where job_id = %s",
                                            [m.job_id])).fetchone()
            if row is None:
                return Resource(phase=TaskExecution.FAILED, message=f"no job {m.job_id} in {m.dbname}.{TABLE}")
            status, rows, count, error = row
            if status in ("submitted", "running", "cancelling"):
                alive = await (await conn.execute(
                    "select 1 from pg_stat_activity where pid = %s and application_name = %s",
                    [m.pid, f"taskrig-job-{m.job_id}"])).fetchone()
                if alive:
                    return Resource(phase=TaskExecution.RUNNING, message=f"backend pid {m.pid}")
                row = await (await conn.execute(f"select status, rows, row_count, error from {TABLE} where job_id = %s",
                                                [m.job_id])).fetchone()
                status, rows, count, error = row
        if status == "succeeded":
            return Resource(phase=TaskExecution.SUCCEEDED, outputs={"rows": rows} if rows is not None else {"row_count": count},
                            custom_info={"row_count": count, "pid": m.pid})
        if status in ("cancelled", "cancelling"):
            return Resource(phase=TaskExecution.ABORTED, message=error or "cancelled")
        if status == "failed":
            return Resource(phase=TaskExecution.FAILED, message=error)
        return Resource(phase=TaskExecution.FAILED, message=f"backend {m.pid} of job {m.job_id} is gone ({status})")

    async def delete(self, resource_meta: PostgresJobMeta, password: Optional[str] = None, **kwargs) -> None:
        m = resource_meta
        async with await _connect(_conninfo(vars(m), password)) as conn:
            await conn.execute(f"update {TABLE} set status = 'cancelling' where job_id = %s "
                               f"and status in ('submitted', 'running')", [m.job_id])
            await conn.execute("select pg_cancel_backend(pid) from pg_stat_activity where pid = %s "
                               "and application_name = %s", [m.pid, f"taskrig-job-{m.job_id}"])


class PostgresQueryTask(AsyncConnectorExecutorMixin, TaskTemplate):
    """A task that is one query (``%(name)s`` placeholders take the inputs)."""

    def __init__(self, name: str, query: str, inputs: dict[str, Any] | None = None, host: str = "127.0.0.1",
                 port: int = 5432, dbname: str = "postgres", user: str = "postgres", password=None,
                 max_rows: int = 1000, outputs: dict[str, Any] | None = None, **kwargs):
        super().__init__(name=name, task_type=PostgresQueryConnector.task_type_name,
                         interface=NativeInterface(inputs=dict(inputs or {}), outputs=dict(outputs or {})),
                         secrets={"password": password} if password is not None else None, **kwargs)
        self.config = {"query": query, "host": host, "port": int(port), "dbname": dbname, "user": user,
                       "max_rows": int(max_rows)}

    def custom_config(self, sctx) -> dict:
        return dict(self.config)


ConnectorRegistry.register(PostgresQueryConnector())
