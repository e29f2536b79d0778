"""Helpers of the connector tests: the training service, our connector service and Flyte's
``c0`` as real processes on 127.0.0.1 (each in its own process group, stopped by pid), and
reads of the state file."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "tests" / "tasks"
SERVICE = ROOT / "examples" / "mltrain_service.py"
LOOPBACK = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def wait_for(check, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


class TrainService:
    """examples/mltrain_service.py in a process group of its own."""

    def __init__(self, folder: Path, epoch_seconds: float = 0.2, token_env: str | None = None, env: dict | None = None):
        args = [sys.executable, str(SERVICE), "--dir", str(folder), "--epoch-seconds", str(epoch_seconds),
                "--max-lifetime", "600"]
        if token_env:
            args += ["--token-env", token_env]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, start_new_session=True,
                                     env={**os.environ, **(env or {})})
        info = json.loads(self.proc.stdout.readline())
        self.url, self.env = info["url"], {**info["env"], **LOOPBACK}

    def stats(self) -> dict:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.url}/_stats", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        stop(self.proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_connectors(*modules: str, env: dict | None = None, metrics: bool = False) -> tuple[subprocess.Popen, str, str | None]:
    """``engine connectors serve --port 0``; returns (process, HOST:PORT, metrics URL)."""
    args = [sys.executable, "-m", "engine.cli", "connectors", "serve", "--port", "0"]
    for m in modules:
        args += ["--modules", m]
    if metrics:
        args += ["--metrics-port", "0"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **LOOPBACK, **(env or {})})
    line = proc.stdout.readline()
    if "serving connectors" not in line:
        stop(proc)
        raise AssertionError(f"connector service did not start: {line}{proc.stderr.read()}")
    address = line.split(" on ")[1].split(",")[0].strip()
    murl = line.split("metrics on ")[1].strip() if "metrics on" in line else None
    return proc, address, murl


def start_c0(python: str, module: str, pythonpath: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Flyte's ``c0`` (through connector_c0.py: the same server, bound to 127.0.0.1), ready."""
    port, mport = free_port(), free_port()
    proc = subprocess.Popen([python, str(TASKS / "connector_c0.py"), "--port", str(port), "--prometheus_port",
                             str(mport), "--modules", module], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=pythonpath, start_new_session=True,
                            env={**os.environ, **LOOPBACK, "PYTHONPATH": pythonpath, **(env or {})})
    address = f"127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or health_ok(address), 90, "Flyte's c0 to serve", 0.2)
    except AssertionError:
        stop(proc)
        raise
    if proc.poll() is not None:
        raise AssertionError(f"c0 exited: {proc.stderr.read()[-2000:]}")
    return proc, address


def health_ok(address: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as ch:
        try:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            return r.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False


def flyte_connector_python() -> str | None:
    """The Python of a venv with flyte[connector] (scripts/flyte-connector-venv.sh makes it)."""
    r = subprocess.run(["bash", str(ROOT / "scripts" / "flyte-connector-venv.sh")], capture_output=True, text=True,
                       timeout=900)
    if r.returncode != 0:
        print(f"cannot create the flyte[connector] venv: {r.stderr[-2000:]}")
        return None
    return r.stdout.strip().splitlines()[-1]


def resources(state: Path, type_prefix: str = "connector:") -> list[dict]:
    if not state.exists():
        return []
    conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("select * from resources where type like ?", [type_prefix + "%"])]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def job_recorded(state: Path, type_prefix: str = "connector:") -> dict | None:
    """The first connector job whose ResourceMeta is recorded (the create's journal closed)."""
    rows = [r for r in resources(state, type_prefix) if "resource_meta" in (r["outputs"] or "")]
    return rows[0] if rows else None
