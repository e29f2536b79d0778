"""Dask on the local backend: a real ``dask scheduler`` and ``dask worker`` processes.

At create they are forked from one interpreter that imported distributed once (``launcher``):
the same CLI mains, at a fraction of the start-up CPU. Workers added later start on their own.

The inputs are the cluster's spec and ``read`` returns what actually runs, so an in-place
update is the difference between the two, as in distributed's ``SpecCluster``: workers are
added or retired, and the scheduler keeps running.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from engine.extend import ProviderRegistry, Read
from providers.local import ProcessRecord, find_tagged, log_tail, spawn, spawn_forked, terminate, wait_until
from providers.local.provider import LocalProcesses

READY_TIMEOUT = 60.0


class LocalDaskCluster(LocalProcesses):
    type_token = "local:dask:Cluster"
    replace_keys = ("scheduler",)
    refresh_on_up = True
    delete_before_replace = True

    # ------------------------------------------------------------------ processes
    @staticmethod
    def _scheduler_args(sfile: Path) -> list[str]:
        return ["--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(sfile)]

    @staticmethod
    def _worker_args(rundir: Path, scheduler: list[str], wname: str, workers: dict) -> list[str]:
        """``scheduler`` is ``[address]`` or ``["--scheduler-file", path]``: at create the
        workers start beside the scheduler and find it through its file, instead of waiting
        for it to be up first."""
        memory = workers.get("memory_limit")
        return [*scheduler, "--name", wname, "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                "--nthreads", str(workers["nthreads"]), "--memory-limit", str(memory if memory else "auto"),
                "--local-directory", str(rundir / wname), "--death-timeout", "60"]

    def _launch(self, name: str, rundir: Path, workers: dict) -> tuple[ProcessRecord, dict[str, ProcessRecord], Path]:
        """The scheduler and every worker, forked from one interpreter (``launcher``)."""
        sfile = rundir / "scheduler.json"
        sfile.unlink(missing_ok=True)
        wnames = [f"w{i}" for i in range(workers["number_of_workers"])]
        specs = [{"kind": "scheduler", "args": self._scheduler_args(sfile), "log": str(rundir / "scheduler.log"),
                  "cwd": str(rundir)}]
        specs += [{"kind": "worker", "args": self._worker_args(rundir, ["--scheduler-file", str(sfile)], w, workers),
                   "log": str(rundir / f"{w}.log"), "cwd": str(rundir)} for w in wnames]
        records = spawn_forked([sys.executable, "-m", "providers.dask.launcher", json.dumps(specs)], name,
                               rundir / "launcher.log", READY_TIMEOUT, cwd=rundir)
        return records[0], dict(zip(wnames, records[1:])), sfile

    def _scheduler_address(self, name: str, rec: ProcessRecord, sfile: Path) -> str:
        log = sfile.parent / "scheduler.log"

        def failed():
            return None if rec.alive() else f"the scheduler exited:\n{log_tail(log)}"

        wait_until(lambda: sfile.exists() and sfile.stat().st_size > 0, READY_TIMEOUT,
                   f"dask scheduler of {name}", failed=failed)
        return json.loads(sfile.read_text())["address"]

    def _start_worker(self, name: str, rundir: Path, address: str, wname: str, workers: dict) -> ProcessRecord:
        cmd = [sys.executable, "-m", "distributed.cli.dask_worker", *self._worker_args(rundir, [address], wname, workers)]
        return spawn(cmd, name, rundir / f"{wname}.log", cwd=rundir)

    def _wait_workers(self, address: str, names: set[str], records: dict[str, ProcessRecord], rundir: Path) -> None:
        from distributed import Client

        def failed():
            dead = [w for w, r in records.items() if not r.alive()]
            return f"worker {dead[0]} exited:\n{log_tail(rundir / f'{dead[0]}.log')}" if dead else None

        with Client(address, timeout=READY_TIMEOUT, set_as_default=False) as client:
            def ready():
                connected = {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
                return names <= connected and not (connected - names)

            wait_until(ready, READY_TIMEOUT, f"{len(names)} dask worker(s) at {address}", failed=failed)

    # ------------------------------------------------------------------ contract
    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        name = idempotency_key
        rundir = self._dir(name)
        rundir.mkdir(parents=True, exist_ok=True)
        try:
            sched, workers, sfile = self._launch(name, rundir, inputs["workers"])
            address = self._scheduler_address(name, sched, sfile)
            self._wait_workers(address, set(workers), workers, rundir)
        except BaseException:
            terminate(tag=name)  # create is transactional: nothing of it survives a failure
            raise
        return name, self._outputs(address, sched, workers, rundir)

    @staticmethod
    def _outputs(address: str, sched: ProcessRecord, workers: dict[str, ProcessRecord], rundir: Path) -> dict:
        return {"scheduler_address": address, "scheduler": sched.to_dict(),
                "workers": {w: r.to_dict() for w, r in sorted(workers.items())}, "log_dir": str(rundir)}

    def read(self, id: str, inputs: dict, outputs: dict | None):
        if outputs is None:  # recovery: only the name is known
            procs = find_tagged(id)
            return {"pids": [p.pid for p in procs]} if procs else None
        sched = ProcessRecord.from_dict(outputs["scheduler"])
        if not sched.alive():
            return None
        alive = {w: r for w, r in outputs["workers"].items() if ProcessRecord.from_dict(r).alive()}
        if len(alive) == len(outputs["workers"]):
            return outputs
        actual = json.loads(json.dumps(inputs))
        actual["workers"]["number_of_workers"] = len(alive)
        return Read(inputs=actual, outputs={**outputs, "workers": alive})

    def update(self, id: str, old_inputs: dict, new_inputs: dict, outputs: dict | None = None) -> dict:
        rundir = self._dir(id)
        address = outputs["scheduler_address"]
        sched = ProcessRecord.from_dict(outputs["scheduler"])
        current = {w: ProcessRecord.from_dict(r) for w, r in outputs["workers"].items()
                   if ProcessRecord.from_dict(r).alive()}
        old_w, new_w = dict(old_inputs["workers"]), dict(new_inputs["workers"])
        if {k: v for k, v in old_w.items() if k != "number_of_workers"} != \
                {k: v for k, v in new_w.items() if k != "number_of_workers"}:
            retire = set(current)  # the workers' own settings changed: roll every worker
        else:
            want = new_w["number_of_workers"]
            ordered = sorted(current, key=lambda w: int(w[1:]))
            retire = set(ordered[want:])
        if retire:
            self._retire(address, retire)
            terminate(records=[current[w] for w in retire])
            for w in retire:
                current.pop(w)
                shutil.rmtree(rundir / w, ignore_errors=True)
        i = 0
        while len(current) < new_w["number_of_workers"]:
            wname = f"w{i}"
            if wname not in current:
                current[wname] = self._start_worker(id, rundir, address, wname, new_w)
            i += 1
        self._wait_workers(address, set(current), current, rundir)
        return self._outputs(address, sched, current, rundir)

    @staticmethod
    def _retire(address: str, names: set[str]) -> None:
        """Move the workers' data elsewhere before they stop (best effort; they stop anyway)."""
        from distributed import Client

        try:
            with Client(address, timeout=10, set_as_default=False) as client:
                client.retire_workers(names=list(names), close_workers=True)
        except Exception:
            pass

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        # Workers first, while their scheduler still answers: a worker whose scheduler vanished
        # first can sit in its reconnect loop past SIGTERM until the SIGKILL deadline.
        if outputs and "workers" in outputs:
            terminate(records=[ProcessRecord.from_dict(r) for r in outputs["workers"].values()], timeout=5)
        terminate(tag=id, timeout=5)
        shutil.rmtree(self._dir(id), ignore_errors=True)


ProviderRegistry.register(LocalDaskCluster)
