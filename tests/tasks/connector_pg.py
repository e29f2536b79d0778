"""PostgreSQL query tasks for the connector tests; the server comes from scripts/postgres.sh
(TASKRIG_PG_PORT), the password from the Secret TASKRIG_PG_PASSWORD."""

import os

import engine
from providers.connectors import PostgresQueryTask

PG = dict(host="127.0.0.1", port=int(os.environ.get("TASKRIG_PG_PORT", "5432")), dbname="taskrig_test",
          user="taskrig", password=engine.Secret(key="TASKRIG_PG_PASSWORD"), poll_interval=0.3)

quick = PostgresQueryTask(name="pg_quick", query="select i, i * i as sq from generate_series(1, %(n)s) as i",
                          inputs={"n": int}, **PG)
count_only = PostgresQueryTask(name="pg_count", query="select generate_series(1, 5000) as i", max_rows=100, **PG)
failing = PostgresQueryTask(name="pg_fail", query="select 1 / 0", **PG)
sleep = PostgresQueryTask(name="pg_sleep", query="select pg_sleep(%(seconds)s)", inputs={"seconds": float},
                          timeout=float(os.environ.get("PG_SLEEP_TIMEOUT", "120")), **PG)
