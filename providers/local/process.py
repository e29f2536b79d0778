"""Starting, finding and stopping the local backend's processes.

Every process is started in its own session (so its process group can be signalled whole)
with ``TASKRIG_RESOURCE=<physical name>`` in its environment. Children inherit that variable,
so ``find_tagged`` finds a resource's every process, including ones a crashed engine started
but never got to record: recovery needs nothing but the deterministic name.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import psutil

TAG_VAR = "TASKRIG_RESOURCE"


@dataclass(frozen=True)
class ProcessRecord:
    """A pid plus its start time, so a recycled pid is never mistaken for ours."""

    pid: int
    create_time: float

    def alive(self) -> bool:
        try:
            p = psutil.Process(self.pid)
            return abs(p.create_time() - self.create_time) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ProcessRecord":
        return cls(int(d["pid"]), float(d["create_time"]))


def spawn(cmd: list[str], tag: str, log_path: Path, env: dict[str, str] | None = None,
          cwd: str | os.PathLike | None = None) -> ProcessRecord:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHONPATH": engine_path(), **(env or {}), TAG_VAR: tag}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=full_env, cwd=cwd, start_new_session=True, close_fds=True)
    try:
        ct = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        ct = 0.0
    return ProcessRecord(proc.pid, ct)


def spawn_forked(cmd: list[str], tag: str, log_path: Path, timeout: float,
                 cwd: str | os.PathLike | None = None) -> list[ProcessRecord]:
    """Start ``cmd``, a launcher that forks the real processes and prints their pids as one
    JSON line on stdout (see ``providers.dask.launcher``); returns their records. The launcher
    is tagged like ``spawn``'s processes, so its children are too."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": engine_path(), TAG_VAR: tag}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                env=env, cwd=cwd, start_new_session=True, close_fds=True)
    with proc.stdout, selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        line = proc.stdout.readline() if sel.select(timeout) else b""
    try:
        pids = json.loads(line)
    except ValueError:
        pids = None
    if not isinstance(pids, list):
        state = "exited" if proc.poll() is not None else f"printed no pids in {timeout:.0f} s"
        raise RuntimeError(f"{cmd[:3]} {state}:\n{log_tail(log_path)}")
    records = []
    for pid in pids:
        try:
            records.append(ProcessRecord(pid, psutil.Process(pid).create_time()))
        except psutil.Error:
            records.append(ProcessRecord(pid, 0.0))  # already gone: never alive() again
    return records


def engine_path() -> str:
    """This process's import path as PYTHONPATH: a local cluster's workers import the user's
    modules by name (how dask and ray ship functions), exactly as the engine found them."""
    seen: list[str] = []
    for p in sys.path:
        p = os.path.abspath(p or os.getcwd())
        if p not in seen and os.path.isdir(p):
            seen.append(p)
    return os.pathsep.join(seen)


def find_tagged(tag: str, prefix: bool = False) -> list[psutil.Process]:
    """Live processes whose environment carries ``TASKRIG_RESOURCE=tag`` (or a tag starting
    with ``tag`` when ``prefix``)."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item == needle or (prefix and item.startswith(needle)):
                try:
                    p = psutil.Process(int(entry.name))
                    if p.status() != psutil.STATUS_ZOMBIE:
                        found.append(p)
                except psutil.Error:
                    pass
                break
    return found


def _signal_group(p: psutil.Process, sig: int) -> None:
    try:
        pgid = os.getpgid(p.pid)
        if pgid == p.pid:  # its own group (we started it so): signal the group
            os.killpg(pgid, sig)
        else:
            p.send_signal(sig)
    except (ProcessLookupError, psutil.Error, PermissionError):
        pass


def terminate(tag: str | None = None, records: Iterable[ProcessRecord] = (), timeout: float = 10.0) -> int:
    """SIGTERM every process of ``tag`` (and the given records), SIGKILL what is left after
    ``timeout``. Returns how many there were. Idempotent: nothing found is success."""
    procs: dict[int, psutil.Process] = {}
    for r in records:
        if r.alive():
            try:
                procs[r.pid] = psutil.Process(r.pid)
            except psutil.Error:
                pass
    if tag:
        for p in find_tagged(tag):
            procs[p.pid] = p
    if not procs:
        return 0
    for p in procs.values():
        _signal_group(p, signal.SIGTERM)
    _, alive = psutil.wait_procs(list(procs.values()), timeout=timeout)
    for p in alive:
        _signal_group(p, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    if tag:  # children that outlived their parent's group, if any
        for p in find_tagged(tag):
            _signal_group(p, signal.SIGKILL)
    return len(procs)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05,
               failed: Callable[[], str | None] | None = None) -> None:
    """Poll ``check`` until true; raise TimeoutError naming ``what`` (with ``failed()``'s reason
    as soon as it reports one, such as a process that exited)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if failed is not None:
            reason = failed()
            if reason:
                raise RuntimeError(f"{what}: {reason}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)  # readiness is on the critical path of every run


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])
