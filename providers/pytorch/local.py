"""PyTorch elastic on the local backend: ``torch.distributed.run`` agents as real processes.

The resource (``local:pytorch:ElasticJob``) is what a crash must not leak: its create
reserves a rendezvous port on 127.0.0.1 and a run directory, its physical name is the tag
that every process of the job carries (``TASKRIG_RESOURCE``), and its delete stops whatever
carries that tag. The processes themselves are started by ``run_job`` when the task runs
(the plugin's ``execute``), because only then is there a function to run; recovery after a
``kill -9`` of the engine needs nothing but the name.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from engine.extend import ProviderRegistry
from providers.local import TAG_VAR, find_tagged, log_tail, terminate
from providers.local.process import engine_path
from providers.local.provider import LocalProcesses

WORKER = Path(__file__).resolve().parent / "worker.py"
POLL = 0.05


class ElasticJobError(RuntimeError):
    """The job failed: the failing rank, its attempt, and its error; the rank's traceback is
    the ``__cause__`` (a RemoteTraceback), so it prints with the engine's."""


class RemoteTraceback(Exception):
    """A traceback from another process, printed as-is (multiprocessing's pattern)."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]).rstrip("\n")


class LocalElasticJob(LocalProcesses):
    type_token = "local:pytorch:ElasticJob"
    replace_keys = ("*",)  # nothing runs between tasks: replacing is as cheap as anything

    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        name = idempotency_key
        rundir = self._dir(name)
        rundir.mkdir(parents=True, exist_ok=True)
        return name, {"rdzv_endpoint": f"127.0.0.1:{free_port()}", "run_dir": str(rundir), "tag": name}

    def read(self, id: str, inputs: dict, outputs: dict | None):
        if outputs is None:  # recovery of a half-done create: only the name is known
            procs = find_tagged(id)
            return {"pids": [p.pid for p in procs]} if procs or self._dir(id).exists() else None
        return outputs if self._dir(id).exists() else None

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        terminate(tag=id)
        shutil.rmtree(self._dir(id), ignore_errors=True)


ProviderRegistry.register(LocalElasticJob)


def free_port(port: int = 0) -> int:
    """``port`` if nobody holds it now, else one that is free; the rendezvous store of agent 0
    binds it moments later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_interface() -> str | None:
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == "127.0.0.1" for a in addrs):
            return name
    return None


def agent_commands(spec: dict, endpoint: str, rdzv_id: str, job_dir: Path) -> list[list[str]]:
    """One ``torch.distributed.run`` command per node; agent 0 hosts the c10d store."""
    conf = ",".join(f"{k}={v}" for k, v in spec["rdzv_configs"].items())
    cmds = []
    for node in range(spec["max_nodes"]):
        nconf = ",".join(x for x in (conf, f"is_host={1 if node == 0 else 0}") if x)
        cmds.append([
            sys.executable, "-m", "torch.distributed.run",
            "--nnodes", spec["nnodes"], "--nproc-per-node", str(spec["nproc_per_node"]),
            "--rdzv-backend", spec["rdzv_backend"], "--rdzv-endpoint", endpoint, "--rdzv-id", rdzv_id,
            "--rdzv-conf", nconf, "--max-restarts", str(spec["max_restarts"]),
            "--monitor-interval", str(spec["monitor_interval"]), "--local-addr", "127.0.0.1",
            str(WORKER), str(job_dir),
        ])
    return cmds


def _start(cmd: list[str], tag: str, log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """``providers.local.spawn``'s conventions (the tag in the environment, a session of its
    own) but keeping the Popen: the agent's exit status is the job's, and only its parent can
    read it reliably."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env, TAG_VAR: tag}, cwd=cwd, start_new_session=True,
                                close_fds=True)


class _Echo:
    """Copies what the agents and their workers write (to their log files) onto the engine's
    stderr as it comes, as a body's output shows in-process. Files rather than pipes: a dead
    engine must not leave the job blocked writing to a pipe nobody reads."""

    def __init__(self, paths: list[Path]):
        self.files = [open(p, "rb") for p in paths]
        self.partial = [b""] * len(paths)

    def pump(self, final: bool = False) -> None:
        for i, f in enumerate(self.files):
            data = self.partial[i] + f.read()
            cut = len(data) if final else data.rfind(b"\n") + 1  # whole lines: agents do not interleave mid-line
            self.partial[i] = data[cut:]
            if cut:
                sys.stderr.write(data[:cut].decode(errors="replace"))
                sys.stderr.flush()

    def close(self) -> None:
        self.pump(final=True)
        for f in self.files:
            f.close()


def run_job(spec: dict, outputs: dict, run_id: str, fn, inputs: dict) -> Any:
    """Run ``fn(**inputs)`` on every rank under torch elastic; rank 0's return value.

    Blocks until every agent exits (or ``active_deadline_seconds`` passes); whatever still
    runs when this returns or raises, Ctrl-C included, is stopped by tag.
    """
    import cloudpickle

    tag = outputs["tag"]
    job = Path(outputs["run_dir"]) / run_id
    shutil.rmtree(job, ignore_errors=True)
    (job / "errors").mkdir(parents=True)
    try:
        source = getattr(sys.modules.get(getattr(fn, "__module__", None) or ""), "__file__", None)
        from engine import ctx

        # Plugins that set something up on every rank (W&B's per-rank runs) leave zero-argument
        # callables returning context managers in ctx().data["per_rank"]; each worker enters them.
        tc = ctx()
        per_rank = list(tc.data.get("per_rank", ())) if tc is not None else []
        payload = cloudpickle.dumps({"fn": fn, "inputs": inputs, "cwd": os.getcwd(), "file": source,
                                     "per_rank": per_rank})
    except Exception as e:
        raise TypeError(f"the task's function or inputs cannot be sent to the torch workers: "
                        f"{type(e).__name__}: {e}") from e
    (job / "payload.pkl").write_bytes(payload)

    # The engine's import path: workers unpickle references to the user's modules by name.
    env = {"PYTHONPATH": engine_path(), "PYTHONUNBUFFERED": "1"}
    if "OMP_NUM_THREADS" not in os.environ:  # the task's env_vars may set it; torchrun's default
        env["OMP_NUM_THREADS"] = "1"
    # Each rendezvous round gets a fresh store on rank 0 instead of the agent's long-lived one:
    # over a shared store a restarted group can read the previous attempt's peer addresses
    # and hang or fail connecting (pytorch/pytorch#135712).
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = os.environ.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    lo = _loopback_interface()
    if lo and "GLOO_SOCKET_IFNAME" not in os.environ:
        env["GLOO_SOCKET_IFNAME"] = lo  # every rank is on this machine: talk over loopback
    # The reserved port, unless something took it since (a reusable job keeps it across runs).
    host, _, port = outputs["rdzv_endpoint"].rpartition(":")
    cmds = agent_commands(spec, f"{host}:{free_port(int(port))}", f"{tag}-{run_id}", job)
    logs = [job / f"agent{i}.log" for i in range(len(cmds))]
    deadline = (spec.get("run_policy") or {}).get("active_deadline_seconds")
    t_end = time.monotonic() + deadline if deadline else None
    agents: list[subprocess.Popen] = []
    echo = None
    try:
        for cmd, log in zip(cmds, logs):
            agents.append(_start(cmd, tag, log, job, env))
        echo = _Echo(logs)
        while True:
            echo.pump()
            codes = [a.poll() for a in agents]
            if any(c not in (None, 0) for c in codes) or all(c == 0 for c in codes):
                break
            if t_end is not None and time.monotonic() >= t_end:
                raise TimeoutError(f"the torch elastic job ran past run_policy.active_deadline_seconds={deadline}")
            time.sleep(POLL)
    finally:
        if echo is not None:  # before any stop: what agents say when signalled is only noise
            echo.close()
        if any(a.poll() is None for a in agents):
            terminate(tag=tag)
            for a in agents:
                try:
                    a.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass
    if all(c == 0 for c in codes):
        try:
            result = cloudpickle.loads((job / "result.pkl").read_bytes())
        except FileNotFoundError:
            raise ElasticJobError(f"every worker exited 0 but rank 0 left no result in {job}") from None
        shutil.rmtree(job, ignore_errors=True)
        return result
    _raise_failure(spec, job, codes, logs)


def _raise_failure(spec: dict, job: Path, codes: list[int | None], logs: list[Path]) -> None:
    """The root cause: among the errors of the last attempt, the one that happened first (a
    peer's 'connection closed' comes after the rank that really failed)."""
    errors = []
    for p in (job / "errors").glob("*.json"):
        try:
            errors.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    attempts = spec["max_restarts"] + 1
    if errors:
        last = max(e["restart"] for e in errors)
        first = min((e for e in errors if e["restart"] == last), key=lambda e: e["time"])
        raise ElasticJobError(
            f"rank {first['rank']} failed on attempt {first['restart'] + 1} of {attempts}: "
            f"{first['type']}: {first['message']}") from RemoteTraceback(first["traceback"])
    i, code = next((i, c) for i, c in enumerate(codes) if c not in (None, 0))
    raise ElasticJobError(f"torch elastic agent {i} exited with code {code} and no rank reported an "
                          f"error; its log ends:\n{log_tail(logs[i], 25)}")
