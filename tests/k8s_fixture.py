"""A real Kubernetes cluster for the kubernetes backend's tests.

``TASKRIG_K8S_KUBECONFIG`` names any real cluster (kind, a cloud cluster) to use as it is.
(with the Dask operator running and ``TASKRIG_TASK_IMAGE``, an image its nodes have that holds
this Python and the engine). Otherwise the project's own node (``scripts/local-cluster.sh
--operators dask``) is used: reused if it already
runs (then left running), else started for this session with ``--watch`` on this process (its
watchdog stops the node if pytest is killed) and stopped at the end. Where neither can be had
(not root, not Debian) the tests skip with the reason; ``TASKRIG_K8S_REQUIRED=1`` makes that a
failure, for CI. Only the Dask and PyTorchJob CRDs are loaded: RayCluster's absence is the "CRD
not installed" case. The real Dask operator makes the Dask pods; the PyTorchJob's operator is
not there yet, and tests play it by patching status (``FakeOperator``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCAL_CLUSTER = ROOT / "scripts" / "local-cluster.sh"
CRD_FAMILIES = "dask,pytorch"


@dataclass
class K8s:
    kubeconfig: str
    url: str
    namespace: str = "default"
    local: bool = False  # the project's own node (guard, DNS and images of scripts/local-cluster.sh)
    task_image: str | None = None  # an image with the host's Python and the engine (TASKRIG_TASK_IMAGE)
    task_image_alias: str | None = None  # the same image by another name (TASKRIG_TASK_IMAGE_ALIAS)
    data_url: str | None = None  # where bodies in pods get code and inputs (ENGINE_DATA_URL)

    @property
    def env(self) -> dict[str, str]:
        image = {"ENGINE_K8S_IMAGE": self.task_image, "K8S_T_IMAGE": self.task_image} if self.task_image else {}
        data = {"ENGINE_DATA_URL": self.data_url} if self.data_url else {}
        return {"KUBECONFIG": self.kubeconfig, "ENGINE_K8S_READY_TIMEOUT": "60", "ENGINE_K8S_DELETE_TIMEOUT": "120",
                **image, **data}

    def cluster(self):
        from providers.kubernetes.client import cluster

        return cluster()


def _server(kubeconfig: str) -> str:
    import yaml

    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    current = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg["current-context"])
    return next(c["cluster"]["server"] for c in cfg["clusters"] if c["name"] == current["cluster"])


def _unavailable(msg: str):
    if os.environ.get("TASKRIG_K8S_REQUIRED") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def _local_cluster(*args, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LOCAL_CLUSTER), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def k8s_api():
    given = os.environ.get("TASKRIG_K8S_KUBECONFIG")
    if given:
        yield K8s(given, _server(given), task_image=os.environ.get("TASKRIG_TASK_IMAGE"),
                  task_image_alias=os.environ.get("TASKRIG_TASK_IMAGE_ALIAS"),
                  data_url=os.environ.get("ENGINE_DATA_URL"))
        return
    if os.geteuid() != 0 or not Path("/usr/bin/dpkg").exists():
        _unavailable("the local cluster needs root on Debian (or set TASKRIG_K8S_KUBECONFIG): "
                     "skipping the tests against a real Kubernetes cluster")
    st = _local_cluster("status", "--json", timeout=60)
    if st.returncode == 0:  # someone's running node: use it, leave it running
        yield _local(json.loads(st.stdout)["kubeconfig"])
        return
    before = host_snapshot()
    r = _local_cluster("start", "--crds", CRD_FAMILIES, "--operators", "dask", "--watch", os.getpid(), timeout=1800)
    if r.returncode != 0:
        pytest.fail(f"scripts/local-cluster.sh start failed ({r.returncode}):\n{r.stderr[-4000:]}")
    try:
        yield _local(r.stdout.strip().splitlines()[-1].split("=", 1)[1])
    finally:
        r = _local_cluster("stop", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    after = host_snapshot()
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}


def _local(kubeconfig: str) -> K8s:
    env = dict(line.split("=", 1) for line in (Path(kubeconfig).parent / "env").read_text().splitlines() if "=" in line)
    return K8s(kubeconfig, _server(kubeconfig), local=True, task_image=env.get("TASKRIG_TASK_IMAGE"),
               task_image_alias=env.get("TASKRIG_TASK_IMAGE_ALIAS"), data_url=env.get("ENGINE_DATA_URL"))


def host_snapshot() -> dict:
    """What the node may change on the host and must put back: sysctls, iptables, mounts,
    links, the fixed paths, and whether any of its processes still runs."""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from localcluster import hostchanges

    builtin = {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}

    def save(cmd):
        """Rules and non-builtin chains only: an empty table reads the same as iptables not yet
        installed (a fresh machine's first start installs it)."""
        if not shutil.which(cmd):
            return []
        out = []
        for t in hostchanges.TABLES:
            for line in subprocess.run([cmd, "-t", t], capture_output=True, text=True).stdout.splitlines():
                if line.startswith("-A ") or (line.startswith(":") and line[1:].split()[0] not in builtin):
                    out.append(f"{t} {line.split(' [')[0]}")
        return sorted(out)

    return {"sysctls": hostchanges.read_sysctls(), "mounts": sorted(hostchanges.mounts()),
            "links": sorted(os.listdir("/sys/class/net")),
            "paths": [p for p in hostchanges.FIXED_PATHS if os.path.lexists(p)],
            "iptables": save("iptables-save"), "ip6tables": save("ip6tables-save"),
            "cgroups": hostchanges.cgroup_roots(),
            "node processes": sorted(p.name for p in Path("/proc").iterdir() if p.name.isdigit()
                                     and _is_node_process(p))}


def _is_node_process(p: Path) -> bool:
    try:
        exe = os.path.basename(os.readlink(p / "exe"))
    except OSError:
        return False
    return exe in ("kubelet", "kube-apiserver", "kube-proxy", "kube-scheduler", "kube-controller-manager", "etcd",
                   "containerd", "containerd-shim-runc-v2", "pause")


@pytest.fixture
def k8s(k8s_api, monkeypatch):
    """The session's server as this test's cluster, in a namespace of its own."""
    for k, v in k8s_api.env.items():
        monkeypatch.setenv(k, v)
    ns = f"t-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ENGINE_K8S_NAMESPACE", ns)
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(k8s_api.kubeconfig, client_configuration=cfg)
    core = client.CoreV1Api(client.ApiClient(cfg))
    core.create_namespace({"metadata": {"name": ns}})
    wait_service_account(core, ns, k8s_api.local)
    yield replace(k8s_api, namespace=ns)
    try:  # the controller-manager finishes it (and what a failed test left) in the background
        core.delete_namespace(ns)
    except client.ApiException:
        pass


def wait_service_account(core, ns: str, token: bool, timeout: float = 30) -> None:
    """Pods of a new namespace are refused until its default service account exists and, on
    1.20 (the local node), until the token controller has given it its token secret."""
    from kubernetes import client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sa = core.read_namespaced_service_account("default", ns)
            if not token or sa.secrets:
                return
        except client.ApiException as e:
            if e.status != 404:
                raise
        time.sleep(0.1)
    raise AssertionError(f"namespace {ns}: no default service account{' token' if token else ''} within {timeout}s")


@pytest.fixture
def kengine(engine, k8s):
    """The ``engine`` CLI fixture pointed at the test cluster and namespace."""
    engine.env.update({**k8s.env, "ENGINE_K8S_NAMESPACE": k8s.namespace})
    return engine


READY = {"DaskCluster": {"phase": "Running"},
         "PyTorchJob": {"conditions": [{"type": "Running", "status": "True", "reason": "Running",
                                        "message": "played by the test"}]}}


def _kind(kind: str):
    from providers.kubernetes import provider_for

    return provider_for(kind)


def objects(k8s: K8s, kind: str, stack: str, namespace: str | None = None) -> list[dict]:
    """The stack's objects of ``kind`` in the test's namespace (or ``namespace``): another
    test's, still being deleted elsewhere, are not this test's."""
    k = _kind(kind)
    return k8s.cluster().list(k.group, k.version, k.plural, f"taskrig/stack={stack}", namespace or k8s.namespace)


def patch_status(k8s: K8s, kind: str, namespace: str, name: str, status: dict) -> dict:
    """As the operator does: through the status subresource where the CRD has one (not
    DaskCluster: its status is written through the object itself)."""
    k = _kind(kind)
    return k8s.cluster().patch_status(k.group, k.version, k.plural, namespace, name, status, k.status_subresource)


def wait_objects(k8s: K8s, kind: str, stack: str, timeout: float = 60, n: int = 1) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = objects(k8s, kind, stack)
        if len(found) >= n:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {kind} of stack {stack} appeared within {timeout}s")


class FakeOperator:
    """Plays the operator: marks every new object of ``kind`` (labelled ``stack``) ready."""

    def __init__(self, k8s: K8s, kind: str, stack: str):
        self.k8s, self.kind, self.stack = k8s, kind, stack
        self._stop = threading.Event()
        self.patched: list[str] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            try:
                for obj in objects(self.k8s, self.kind, self.stack):
                    meta = obj["metadata"]
                    if not obj.get("status") and not meta.get("deletionTimestamp"):
                        patch_status(self.k8s, self.kind, meta["namespace"], meta["name"], READY[self.kind])
                        self.patched.append(meta["name"])
            except Exception:  # noqa: BLE001 - an object deleted between list and patch
                pass
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
