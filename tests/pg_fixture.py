"""One real PostgreSQL server per test session (Debian's postgresql, started by
scripts/postgres.sh on 127.0.0.1 in a temporary folder, stopped and removed at the end), shared
by the connector tests and the PostgreSQL state tests; a fresh schema per state test.

``state_url`` parametrizes a test over the state backends: ``sqlite`` (the engine fixture's own
file) or ``postgresql`` (``ENGINE_STATE`` set to a URL with a schema of the test's own)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "postgres.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_ctl(postgres: dict, *args: str) -> subprocess.CompletedProcess:
    """The server's own pg_ctl, as the postgres user (the script's way), on its data folder."""
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1]
    cmd = [str(bindir / "pg_ctl"), "-D", f"{postgres['dir']}/data", *args]
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=postgres["dir"])


@pytest.fixture(scope="session")
def postgres():
    folder = tempfile.mkdtemp(prefix="taskrig-pg-")
    port, password = _free_port(), "pw-" + secrets.token_hex(8)
    env = {**os.environ, "TASKRIG_PG_PASSWORD": password}
    r = subprocess.run(["bash", str(SCRIPT), "start", folder, str(port)], env=env,
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"scripts/postgres.sh could not start PostgreSQL:\n{r.stderr[-3000:]}")
    try:
        yield {"port": port, "password": password, "dir": folder, "host": "127.0.0.1", "db": "taskrig_test",
               "user": "taskrig"}
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", folder], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def pg_connect(postgres: dict, **kw):
    import psycopg

    return psycopg.connect(host=postgres["host"], port=postgres["port"], dbname=postgres["db"],
                           user=postgres["user"], password=postgres["password"], autocommit=True, **kw)


def state_url_for(postgres: dict, schema: str, password: bool = True) -> str:
    auth = f"taskrig:{postgres['password']}" if password else "taskrig"
    return f"postgresql://{auth}@127.0.0.1:{postgres['port']}/taskrig_test?schema={schema}"


@pytest.fixture
def pg_state(postgres):
    """A URL with a schema of this test's own (dropped at its end)."""
    schema = "t_" + uuid.uuid4().hex[:12]
    yield state_url_for(postgres, schema)
    try:
        with pg_connect(postgres) as conn:
            conn.execute(f'drop schema if exists "{schema}" cascade')
    except Exception:  # noqa: BLE001 - a test that stopped the server: the session's end removes it all
        pass


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, engine, monkeypatch):
    """The engine fixture's state in SQLite (None: its own file) or in PostgreSQL (the URL)."""
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("pg_state")
    engine.use_state(url, request.getfixturevalue("postgres"))
    monkeypatch.setenv("ENGINE_STATE", url)
    return url
