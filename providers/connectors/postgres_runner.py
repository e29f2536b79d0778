"""Runs one query of the PostgreSQL connector, detached from whoever submitted it.

``python postgres_runner.py JOB_ID`` (run by path, so it imports nothing but psycopg), with the
connection in PGHOST/PGPORT/PGDATABASE/PGUSER/PGPASSWORD. It records its backend pid in the job
row before the query starts, runs the query, and records the outcome (rows, or a row count, or
the error) in the same row. It outlives the engine that started it, which is what lets a run
killed while polling resume the same query; ``pg_cancel_backend`` on that pid cancels it.
"""

import json
import sys

import psycopg
from psycopg.types.json import Jsonb

TABLE = "taskrig_connector_jobs"


def _json(value):
    return Jsonb(value, dumps=lambda o: json.dumps(o, default=str))


def main(job_id: str) -> int:
    with psycopg.connect(application_name=f"taskrig-job-{job_id}", autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(f"select query, params, max_rows from {TABLE} where job_id = %s", [job_id]).fetchone()
        if row is None:
            return 1
        query, params, max_rows = row
        started = conn.execute(f"update {TABLE} set pid = pg_backend_pid(), status = 'running' "
                               f"where job_id = %s and status = 'submitted' returning pid", [job_id]).fetchone()
        if started is None:
            return 0  # deleted before it started
        try:
            cur = conn.execute(query, params or None)
            rows, count = None, cur.rowcount
            if cur.description is not None:
                names = [d.name for d in cur.description]
                fetched = cur.fetchmany(max_rows + 1)
                if len(fetched) <= max_rows:
                    rows, count = [dict(zip(names, r)) for r in fetched], len(fetched)
                else:
                    count = len(fetched) + len(cur.fetchall())
            conn.execute(f"update {TABLE} set status = 'succeeded', rows = %s, row_count = %s, finished = now() "
                         f"where job_id = %s", [_json(rows) if rows is not None else None, count, job_id])
        except psycopg.errors.QueryCanceled as e:
            conn.execute(f"update {TABLE} set status = 'cancelled', error = %s, finished = now() where job_id = %s",
                         [str(e).strip(), job_id])
        except psycopg.Error as e:
            conn.execute(f"update {TABLE} set status = 'failed', error = %s, finished = now() where job_id = %s",
                         [str(e).strip(), job_id])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
