"""Ray on the local backend: a real head (``ray start --head``) and one real worker node
(``ray start --address``) per replica, each a process group of its own, all on 127.0.0.1.

Every process carries ``TASKRIG_RESOURCE=<physical name>``; deleting kills the process group
of every tagged process. Groups matter: Ray's agents rewrite their process title over their
environment, so they cannot be found by tag, but they stay in their node's group. SIGKILL,
not SIGTERM: on SIGTERM a Ray node drains for up to 30 s, and a torn-down cluster has nothing
to save. Scaling down is the exception: a worker node stopped with SIGTERM unregisters from
the GCS at once, where a killed one stays listed as alive for half a minute.

Each node gets its own short temp dir (``/tmp/trg-<hash of name>-<random>``): Ray's unix
socket paths live under it and are limited to 107 bytes, and the runtime dir can be deep.
The GCS, the raylets and the agents listen on 127.0.0.1 only (see ``launch.py``). A random
token in the cluster's runtime dir (mode 0600) is its Ray auth token; the state records the
file's path, never the token.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import psutil

from engine.extend import NotFound, Provider, ProviderRegistry, Read
from providers.local import ProcessRecord, find_tagged, log_tail, spawn, wait_until
from providers.local.provider import LocalProcesses

READY_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0
LAUNCHER = str(Path(__file__).with_name("launch.py"))
# Options the provider sets itself; ray_start_params may not override them.
RESERVED = ("address", "head", "block", "node-ip-address", "temp-dir")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def temp_root(name: str) -> str:
    return f"/tmp/trg-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _reachable(address: str, timeout: float = 5.0) -> bool:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _wait_dead(procs: list[psutil.Process], timeout: float) -> None:
    """Until every process has exited (a zombie counts: it has). psutil.wait_procs is slow
    here: it waits for zombies whose parent died too to be reaped by init."""
    deadline = time.monotonic() + timeout
    for p in procs:
        while time.monotonic() < deadline:
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    try:
                        os.waitpid(p.pid, os.WNOHANG)  # ours (a launcher): reap it
                    except ChildProcessError:
                        pass
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)


def kill_tagged(tag: str) -> int:
    """SIGKILL the process group of every process tagged ``tag`` until none is left."""
    mine = os.getpgrp()
    seen: set[int] = set()
    for _ in range(10):
        procs = find_tagged(tag)
        if not procs:
            break
        groups = set()
        for p in procs:
            try:
                groups.add(os.getpgid(p.pid))
            except ProcessLookupError:
                pass
        groups.discard(mine)
        # The groups' untagged members too (the agents), so that waiting covers them.
        tagged = {p.pid for p in procs}
        procs += [p for p in psutil.process_iter() if p.pid not in tagged and _pgid(p) in groups]
        for g in groups:
            try:
                os.killpg(g, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in procs:
            seen.add(p.pid)
            try:
                p.kill()
            except psutil.Error:
                pass
        _wait_dead(procs, 5.0)
    return len(seen)


def _pgid(p: psutil.Process) -> int | None:
    try:
        return os.getpgid(p.pid)
    except (ProcessLookupError, psutil.Error):
        return None


def node_command(spec: dict, *, head_temp_dir: str | None, gcs_address: str, temp_dir: str, node_name: str,
                 ready_file: Path, ports: dict[str, int]) -> list[str]:
    """The launcher's command line for one node from its declared spec (the head's temp dir
    is None for the head itself)."""
    head = head_temp_dir is None
    opts: dict[str, str | bool] = {
        "node-ip-address": "127.0.0.1", "temp-dir": temp_dir, "node-name": node_name,
        "num-cpus": str(spec["num_cpus"]), "object-store-memory": str(spec["object_store_memory"]),
        "dashboard-agent-listen-port": str(ports["agent"]), "disable-usage-stats": True,
    }
    if spec.get("num_gpus") is not None:
        opts["num-gpus"] = str(spec["num_gpus"])
    if spec.get("memory") is not None:
        opts["memory"] = str(spec["memory"])
    if head:
        # No autoscaler (locally the replicas are fixed) and no Ray Client server (the task joins
        # through the GCS): two Python processes fewer on a machine that has few cores to spare.
        # ray_start_params can turn either back on.
        opts.update({"head": True, "port": gcs_address.rpartition(":")[2], "include-dashboard": "false",
                     "no-monitor": True, "ray-client-server-port": "0", "dashboard-port": str(ports["dashboard"])})
    else:
        opts["address"] = gcs_address
    opts.update(spec.get("ray_start_params") or {})  # normalized by the plugin: flags are booleans
    cmd = [sys.executable, LAUNCHER, str(ready_file), gcs_address, head_temp_dir or "-"]
    for k, v in opts.items():
        if v is True:
            cmd.append(f"--{k}")
        elif v is not False:
            cmd.append(f"--{k}={v}")
    return cmd


class LocalRayCluster(LocalProcesses):
    type_token = "local:ray:Cluster"
    replace_keys = ("head",)
    refresh_on_up = True
    delete_before_replace = True

    # ------------------------------------------------------------------ nodes
    def _start_node(self, name: str, key: str, spec: dict, *, head_temp_dir: str | None, address: str,
                    ports: dict | None = None) -> dict:
        rundir = self._dir(name)
        temp_dir = f"{temp_root(name)}-{secrets.token_hex(3)}"
        ready = rundir / f"{key}.ready"
        ready.unlink(missing_ok=True)
        ports = {"agent": _free_port(), **(ports or {})}
        cmd = node_command(spec, head_temp_dir=head_temp_dir, gcs_address=address, temp_dir=temp_dir,
                           node_name=key, ready_file=ready, ports=ports)
        rec = spawn(cmd, name, rundir / f"{key}.log", env=self._env(name, head=head_temp_dir is None), cwd=rundir)
        return {**rec.to_dict(), "temp_dir": temp_dir, "key": key}

    def _wait_ready(self, name: str, nodes: dict[str, dict]) -> None:
        rundir = self._dir(name)

        def ready() -> bool:
            return all((rundir / f"{k}.ready").exists() for k in nodes)

        def failed() -> str | None:
            for k, n in nodes.items():
                if not ProcessRecord.from_dict(n).alive() and not (rundir / f"{k}.ready").exists():
                    return f"ray node {k} exited:\n{log_tail(rundir / f'{k}.log')}"
            return None

        wait_until(ready, READY_TIMEOUT, f"{len(nodes)} ray node(s) of {name}", failed=failed)
        for k, n in nodes.items():
            n["node_id"] = json.loads((rundir / f"{k}.ready").read_text())["node_id"]

    def _stop_nodes(self, name: str, nodes: list[dict]) -> None:
        """Stop worker nodes gracefully (SIGTERM: the raylet unregisters), then kill their groups."""
        procs = []
        for r in (ProcessRecord.from_dict(n) for n in nodes):
            if r.alive():  # a dead record's pid may be somebody else's by now
                try:
                    p = psutil.Process(r.pid)
                    p.send_signal(signal.SIGTERM)
                    procs.append(p)
                except psutil.Error:
                    pass
        psutil.wait_procs(procs, timeout=STOP_TIMEOUT)
        for p in procs:  # the launcher led its group; whatever is left of the node goes with it
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for n in nodes:
            shutil.rmtree(n["temp_dir"], ignore_errors=True)
            (self._dir(name) / f"{n['key']}.ready").unlink(missing_ok=True)

    def _env(self, name: str, head: bool) -> dict[str, str]:
        env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
               "RAY_AUTH_TOKEN_PATH": str(self._dir(name) / "auth_token"), "RAY_USAGE_STATS_ENABLED": "0"}
        if head:  # fixed default ports of the head's metrics servers would clash between clusters
            env.update({"AUTOSCALER_METRIC_PORT": str(_free_port()), "DASHBOARD_METRIC_PORT": str(_free_port())})
        return env

    @staticmethod
    def _worker_keys(inputs: dict) -> list[tuple[str, str]]:
        return [(f"{g}-{i}", g) for g, spec in inputs["worker_groups"].items() for i in range(spec["replicas"])]

    # ------------------------------------------------------------------ contract
    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        name = idempotency_key
        rundir = self._dir(name)
        rundir.mkdir(parents=True, exist_ok=True)
        token = rundir / "auth_token"
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            head_spec = inputs["head"]
            port = head_spec.get("port") or _free_port()
            address = f"127.0.0.1:{port}"
            head = self._start_node(name, "head", head_spec, head_temp_dir=None, address=address,
                                    ports={"dashboard": _free_port()})
            # Workers start at once and join as soon as the GCS serves (launch.py): the head's
            # and the workers' start-ups overlap.
            workers = {key: {**self._start_node(name, key, inputs["worker_groups"][g], head_temp_dir=head["temp_dir"],
                                                address=address), "group": g}
                       for key, g in self._worker_keys(inputs)}
            self._wait_ready(name, {"head": head, **workers})
        except BaseException:
            self._cleanup(name)  # create is transactional: nothing of it survives a failure
            raise
        return name, {"address": address, "auth_token_path": str(token), "head": head, "workers": workers,
                      "log_dir": str(rundir)}

    def read(self, id: str, inputs: dict, outputs: dict | None):
        """What runs, changing nothing (a preview calls this while an ``up`` may be adding
        nodes): no GCS, no cluster; nodes the record does not list are ignored here, and
        ``tidy`` stops them under the lock."""
        if outputs is None:  # recovery: only the name is known
            procs = find_tagged(id)
            return {"pids": [p.pid for p in procs]} if procs else None
        if not self._alive(outputs):
            return None
        alive = {k: n for k, n in outputs["workers"].items() if ProcessRecord.from_dict(n).alive()}
        if len(alive) == len(outputs["workers"]):
            return outputs
        actual = copy.deepcopy(inputs)
        for g, spec in actual["worker_groups"].items():
            spec["replicas"] = sum(1 for n in alive.values() if n["group"] == g)
        return Read(inputs=actual, outputs={**outputs, "workers": alive})

    @staticmethod
    def _alive(outputs: dict) -> bool:
        return ProcessRecord.from_dict(outputs["head"]).alive() and _reachable(outputs["address"])

    def tidy(self, stack: str, records):
        """Under the lock: what is left of a recorded cluster whose GCS is gone goes (so that
        dropping its record, by refresh or by the plan that recreates it, leaves no process
        nobody tracks), and nodes a live cluster's record does not list (an update cut short
        by a crash started them) are stopped, so the cluster is what the state says."""
        for r in records:
            if not r.outputs or "head" not in r.outputs:
                continue
            if not self._alive(r.outputs):
                if find_tagged(r.id) or self._dir(r.id).exists():
                    self._cleanup(r.id)
                    yield f"removed what was left of the dead Ray cluster {r.id}"
            elif self._stop_strays(r.id, r.outputs):
                yield f"stopped the Ray nodes of {r.id} that the state does not list"

    def _stop_strays(self, id: str, outputs: dict) -> int:
        """Stops the nodes of this cluster that ``outputs`` does not list; how many."""
        known = {outputs["head"]["pid"], *(n["pid"] for n in outputs["workers"].values())}
        stopped = 0
        for p in find_tagged(id):
            try:
                if p.pid not in known and LAUNCHER in p.cmdline():
                    p.terminate()  # SIGTERM: the node unregisters from the GCS, then stops
                    stopped += 1
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass
        return stopped

    def update(self, id: str, old_inputs: dict, new_inputs: dict, outputs: dict | None = None) -> dict:
        """Add or remove worker nodes in place; a group whose node settings changed is rolled."""
        current = {k: n for k, n in outputs["workers"].items() if ProcessRecord.from_dict(n).alive()}
        old_groups, new_groups = old_inputs["worker_groups"], new_inputs["worker_groups"]

        def settings(spec: dict | None) -> dict | None:
            return None if spec is None else {k: v for k, v in spec.items() if k != "replicas"}

        retire = [k for k, n in current.items()
                  if n["group"] not in new_groups or settings(new_groups[n["group"]]) != settings(old_groups.get(n["group"]))]
        for g, spec in new_groups.items():
            keep = sorted((k for k, n in current.items() if n["group"] == g and k not in retire),
                          key=lambda k: int(k.rpartition("-")[2]))
            retire += keep[spec["replicas"]:]
        if retire:
            self._stop_nodes(id, [current.pop(k) for k in retire])
        started = {}
        for g, spec in new_groups.items():
            i = 0
            while sum(1 for n in {**current, **started}.values() if n["group"] == g) < spec["replicas"]:
                key = f"{g}-{i}"
                if key not in current:
                    started[key] = {**self._start_node(id, key, spec, head_temp_dir=outputs["head"]["temp_dir"],
                                                       address=outputs["address"]), "group": g}
                i += 1
        if started:
            try:
                self._wait_ready(id, started)
            except BaseException:
                self._stop_nodes(id, list(started.values()))
                raise
        return {**outputs, "workers": dict(sorted({**current, **started}.items()))}

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        self._cleanup(id)

    def _cleanup(self, name: str) -> None:
        kill_tagged(name)
        shutil.rmtree(self._dir(name), ignore_errors=True)
        for d in glob.glob(temp_root(name) + "-*"):
            shutil.rmtree(d, ignore_errors=True)


class ExistingRayCluster(Provider):
    """A cluster somebody else runs (``address=``): only ever read, never created or deleted."""

    type_token = "ray:index:ExistingCluster"

    def read(self, id: str, inputs: dict, outputs: dict | None):
        address = inputs["address"]
        return {"address": address} if _reachable(address) else None

    def create(self, urn: str, inputs: dict, idempotency_key: str):
        raise NotFound(f"{inputs.get('address')}: an existing Ray cluster is read, never created")

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        return None  # not ours to stop


ProviderRegistry.register(LocalRayCluster)
ProviderRegistry.register(ExistingRayCluster)
