"""Shared fixtures: a private state file per test, the real `engine` CLI in a subprocess, and
a guard that no process a test started outlives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from providers.local.process import TAG_VAR

ROOT = Path(__file__).resolve().parent.parent
TASKS = Path(__file__).resolve().parent / "tasks"
EXAMPLES = ROOT / "examples"


def wait_for(check, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def processes_under(folder: Path) -> list[psutil.Process]:
    """Live local-backend processes (tagged) whose working directory lies under ``folder``."""
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            env = p.environ()
            if TAG_VAR in env and p.cwd().startswith(str(folder)):
                out.append(p)
        except psutil.Error:
            continue
    return out


class Engine:
    """Runs the `engine` CLI against this test's own state file."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.state = cwd / ".engine" / "state.db"
        self.env = {**os.environ, "ENGINE_STATE": str(self.state), "PYTHONUNBUFFERED": "1"}
        self.env.pop("TASKRIG_FAULT_PAUSE", None)
        self.spawned: list[subprocess.Popen] = []
        self.pg: dict | None = None  # the server, when the state is a PostgreSQL URL (pg_fixture.state_url)

    def use_state(self, url: str, server: dict) -> None:
        self.env["ENGINE_STATE"] = url
        self.pg = {**server, "schema": url.rsplit("schema=", 1)[1]}

    def _pg_rows(self, sql: str) -> list[tuple]:
        from pg_fixture import pg_connect

        with pg_connect(self.pg) as conn:
            conn.execute(f'set search_path to "{self.pg["schema"]}"')
            present = conn.execute("select 1 from pg_tables where schemaname = %s and tablename = 'meta'",
                                   [self.pg["schema"]]).fetchone()
            return conn.execute(sql).fetchall() if present else []

    def __call__(self, *args: str, timeout: float = 240, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=self.cwd, capture_output=True,
                              text=True, timeout=timeout, env={**self.env, **(env or {})})

    def json(self, *args: str, **kw):
        r = self(*args, "--json", **kw)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def spawn(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        """An engine in its own process group, killed (whole group) at the test's end."""
        p = subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=self.cwd, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**self.env, **(env or {})},
                             start_new_session=True)
        self.spawned.append(p)
        return p

    def runs(self) -> list[dict]:
        return self.json("runs")

    def resources(self) -> list[dict]:
        return self.json("state", "list")

    def journal_open(self, op: str | None = None) -> list[dict]:
        import sqlite3

        if self.pg is not None:
            rows = self._pg_rows("select op, urn, name from journal where status='open'")
            return [r for r in rows if op is None or r[0] == op]
        if not self.state.exists():
            return []
        conn = sqlite3.connect(f"file:{self.state}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute("select op, urn, name from journal where status='open'").fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()
        return [r for r in rows if op is None or r[0] == op]

    def run_status(self) -> list[str]:
        import sqlite3

        if self.pg is not None:
            return [r[0] for r in self._pg_rows("select status from runs order by started")]
        if not self.state.exists():
            return []
        conn = sqlite3.connect(f"file:{self.state}?mode=ro", uri=True, timeout=5)
        try:
            return [r[0] for r in conn.execute("select status from runs order by started")]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()


@pytest.fixture(scope="session", autouse=True)
def config_dir(tmp_path_factory):
    """The engine's config folder (its HMAC key) for the whole session, in a temporary folder:
    no test writes the user's home, and every engine the tests start digests with one key."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("taskrig-config")
    mp.setenv("TASKRIG_CONFIG_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture
def engine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENGINE_STATE", str(tmp_path / ".engine" / "state.db"))
    eng = Engine(tmp_path)
    yield eng
    for p in eng.spawned:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
    leftovers = processes_under(tmp_path)
    for p in leftovers:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            p.kill()
    _kill_reapers(tmp_path)
    assert not leftovers, f"processes outlived the test: {[_describe(p) for p in leftovers]}"


def _describe(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()[:4])
    except psutil.Error:  # gone or a zombie by now
        return f"pid {p.pid}"


def _kill_reapers(folder: Path) -> None:
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
            if "engine.reaper" in cmd and any(str(folder) in c for c in cmd):
                p.kill()
        except psutil.Error:
            pass


sys.path.insert(0, str(Path(__file__).resolve().parent))

# The real kube-apiserver fixtures live in k8s_fixture.py; imported here once, so every test
# module shares one server per session.
from k8s_fixture import k8s, k8s_api, kengine  # noqa: E402,F401
from pg_fixture import pg_state, postgres, state_url  # noqa: E402,F401
