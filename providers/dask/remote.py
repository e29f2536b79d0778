"""The pod side of a Dask body on the kubernetes backend (``engine.runner --setup``).

The scheduler and workers run the image, not the run's bundle, and distributed pickles graphs
with plain pickle first: a function of the task's module goes by reference, so the scheduler
and every worker must be able to import it. ``share_code`` puts the bundle's folder, as a zip,
on their import path through a scheduler plugin and a worker plugin (workers that join later
get it too). One name for both plugins: a reusable cluster's next run replaces the previous
run's code, and drops the modules it had imported from it, so no run sees an older edit.
On the local backend the workers get the same through their ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
import io
import os
import sys
import uuid
import zipfile
from pathlib import Path

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

PREFIX = "taskrig-code-"
PLUGIN = "taskrig-code"
ZIP_TIME = (1980, 1, 3, 0, 0, 0)


def _zip(src: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                z.writestr(zipfile.ZipInfo(str(p.relative_to(src)), ZIP_TIME), p.read_bytes())
    return buf.getvalue()


class _Code:
    def __init__(self, name: str, data: bytes):
        self.name, self.data = name, data

    def install(self, directory: str) -> None:
        path = os.path.join(directory, self.name)
        Path(path).write_bytes(self.data)
        for p in [p for p in sys.path if os.path.basename(p).startswith(PREFIX) and p != path]:
            sys.path.remove(p)
        for name, mod in list(sys.modules.items()):
            f = getattr(mod, "__file__", None) or ""
            if PREFIX in f and not f.startswith(path):
                del sys.modules[name]
        sys.path.insert(0, path)
        importlib.invalidate_caches()


class WorkerCode(_Code, WorkerPlugin):
    def setup(self, worker) -> None:
        self.install(worker.local_directory)


class SchedulerCode(_Code, SchedulerPlugin):
    async def start(self, scheduler) -> None:
        self.install(scheduler.local_directory)


WORKERS_VAR = "TASKRIG_DASK_WORKERS"  # how many workers the cluster declares
WORKERS_TIMEOUT = 120.0


def share_code(src: str) -> None:
    """Also waits until the declared workers have connected: the operator reports a worker pod
    Running before its worker has joined, and a body started then maps onto fewer workers than
    it asked for (on the local backend, readiness counts connected workers)."""
    from distributed import Client

    data, name = _zip(Path(src)), f"{PREFIX}{uuid.uuid4().hex[:12]}.zip"
    want = int(os.environ.get(WORKERS_VAR) or 0)
    with Client(os.environ["DASK_SCHEDULER_ADDRESS"], timeout=60, set_as_default=False) as client:
        if want:
            try:
                client.wait_for_workers(want, timeout=WORKERS_TIMEOUT)
            except TimeoutError:
                have = len(client.scheduler_info()["workers"])
                raise TimeoutError(f"only {have} of the cluster's {want} Dask workers connected to its scheduler "
                                   f"within {WORKERS_TIMEOUT:.0f} s") from None
        client.register_plugin(SchedulerCode(name, data), name=PLUGIN)
        client.register_plugin(WorkerCode(name, data), name=PLUGIN)
