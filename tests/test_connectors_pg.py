"""The PostgreSQL query connector against a real server (Debian's postgresql, started by
scripts/postgres.sh on 127.0.0.1 for this session and stopped at its end: tests/pg_fixture.py): a quick query, a
row count, a failing query, and a pg_sleep cancelled by Ctrl-C of the run and by destroy."""

import asyncio
import os
import signal

import pytest

from conftest import TASKS
from tasks.connector_support import job_recorded, wait_for

PG = f"{TASKS}/connector_pg.py"


@pytest.fixture
def pg(postgres):
    return {"TASKRIG_PG_PORT": str(postgres["port"]), "TASKRIG_PG_PASSWORD": postgres["password"]}


def _sql(postgres, query, params=None):
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=postgres["port"], dbname="taskrig_test", user="taskrig",
                         password=postgres["password"], autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def _job_rows(postgres, query_like):
    return _sql(postgres, "select job_id, status, pid, error from taskrig_connector_jobs where query like %s "
                          "order by submitted", [query_like])


def _backend_alive(postgres, job_id) -> bool:
    return bool(_sql(postgres, "select 1 from pg_stat_activity where application_name = %s", [f"taskrig-job-{job_id}"]))


def test_quick_query_returns_rows_and_keeps_the_password_out(engine, pg, postgres):
    r = engine("up", f"{PG}:quick", "-i", "n=3", "--json", env=pg)
    assert r.returncode == 0, r.stderr
    import json

    doc = json.loads(r.stdout)
    assert doc["outputs"] == [{"i": 1, "sq": 1}, {"i": 2, "sq": 4}, {"i": 3, "sq": 9}]
    r2 = engine("up", f"{PG}:count_only", env=pg)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.strip().endswith("5000")  # more rows than max_rows: the count
    state = b"".join(p.read_bytes() for p in engine.state.parent.rglob("*") if p.is_file())
    assert postgres["password"].encode() not in state
    assert postgres["password"] not in r.stdout + r.stderr + r2.stdout + r2.stderr
    assert engine.resources() == []


def test_failing_query_fails_the_run_with_postgres_message(engine, pg, postgres):
    r = engine("up", f"{PG}:failing", env=pg)
    assert r.returncode == 1
    assert "the job ended FAILED: division by zero" in r.stderr
    [run] = engine.runs()
    assert run["status"] == "failed" and engine.resources() == []


@pytest.mark.slow
def test_ctrl_c_of_the_run_cancels_the_query(engine, pg, postgres):
    p = engine.spawn("up", f"{PG}:sleep", "-i", "seconds=61", env=pg)
    wait_for(lambda: job_recorded(engine.state), 30, "the query's job in the state")
    [(job_id, status, pid, _)] = _job_rows(postgres, "%pg_sleep%")[-1:]
    assert _backend_alive(postgres, job_id)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=60) == 130
    wait_for(lambda: not _backend_alive(postgres, job_id), 10, "the backend to be cancelled")
    [(_, status, _, error)] = [r for r in _job_rows(postgres, "%pg_sleep%") if r[0] == job_id]
    assert status == "cancelled" and "canceling statement due to user request" in error
    [run] = engine.runs()
    assert run["status"] == "interrupted" and engine.resources() == []


@pytest.mark.slow
def test_kill9_then_destroy_cancels_the_query(engine, pg, postgres):
    p = engine.spawn("up", f"{PG}:sleep", "-i", "seconds=62", env=pg)
    wait_for(lambda: job_recorded(engine.state), 30, "the query's job in the state")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    [(job_id, status, _, _)] = _job_rows(postgres, "%pg_sleep%")[-1:]
    assert status == "running" and _backend_alive(postgres, job_id)  # the query outlived the engine
    r = engine("destroy", "pg_sleep", env=pg)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not _backend_alive(postgres, job_id), 10, "the backend to be cancelled")
    assert [r[1] for r in _job_rows(postgres, "%pg_sleep%") if r[0] == job_id] == ["cancelled"]
    assert engine.resources() == [] and engine.runs()[0]["status"] == "crashed"


@pytest.mark.slow
def test_kill9_then_up_resumes_the_same_query(engine, pg, postgres):
    before = len(_job_rows(postgres, "%pg_sleep%"))
    p = engine.spawn("up", f"{PG}:sleep", "-i", "seconds=2.5", env=pg)
    wait_for(lambda: job_recorded(engine.state), 30, "the query's job in the state")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    r = engine("up", f"{PG}:sleep", "-i", "seconds=2.5", env=pg)
    assert r.returncode == 0, r.stderr
    assert "resumes the job of run" in r.stderr
    rows = _job_rows(postgres, "%pg_sleep%")
    assert len(rows) == before + 1 and rows[-1][1] == "succeeded"  # one query, created once
    assert engine.resources() == []


def test_delete_of_a_finished_or_unknown_job_succeeds(postgres):
    from providers.connectors.postgres import PostgresJobMeta, PostgresQueryConnector, PostgresQueryTask

    c, pw = PostgresQueryConnector(), postgres["password"]
    task = PostgresQueryTask(name="pg_one", query="select 1 as one", port=postgres["port"], dbname="taskrig_test",
                             user="taskrig")
    finished = asyncio.run(c.create(task_template=task.template(), inputs={}, password=pw))
    wait_for(lambda: asyncio.run(c.get(finished, password=pw)).phase == 3, 20, "the query to succeed")  # SUCCEEDED
    unknown = PostgresJobMeta(job_id="nope", pid=1, host="127.0.0.1", port=postgres["port"], dbname="taskrig_test",
                              user="taskrig")
    for meta in (finished, unknown):
        asyncio.run(c.delete(meta, password=pw))
    res = asyncio.run(c.get(finished, password=pw))
    assert res.phase == 3 and res.outputs == {"rows": [{"one": 1}]}
    assert asyncio.run(c.get(unknown, password=pw)).phase == 5  # FAILED: no such job
