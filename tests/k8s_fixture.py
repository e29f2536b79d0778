"""A real Kubernetes API server for the kubernetes backend's tests (``shared/k8s/apiserver``).

The tool is found at ``TASKRIG_K8S_APISERVER`` or else ``../shared/k8s/apiserver`` next to the
repo; where neither exists these tests skip with that reason (``TASKRIG_K8S_REQUIRED=1`` makes it a failure,
for CI). One server per test session: started with ``--watch`` on this process (its watchdog
stops it if pytest is killed), the CRDs the tests use loaded from the tool's ``k8s-1.20``
copies, stopped and removed at the end. Nothing runs in it (no kubelet, no operators): tests
play the operator by patching status (``FakeOperator``).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Loaded into the server: DaskCluster (no status subresource) and PyTorchJob (status subresource).
# RayCluster is left out on purpose: the "CRD not installed" case.
CRD_FILES = ("kubernetes.dask.org_daskclusters.yaml", "kubeflow.org_pytorchjobs.yaml")


def apiserver_tool() -> Path | None:
    env = os.environ.get("TASKRIG_K8S_APISERVER")
    candidates = ([Path(env)] if env else []) + [ROOT.parent / "shared" / "k8s" / "apiserver"]
    return next((p for p in candidates if p.is_file()), None)


@dataclass
class K8s:
    tool: Path
    dir: Path
    kubeconfig: str
    url: str
    namespace: str = "default"

    @property
    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": self.kubeconfig, "ENGINE_K8S_READY_TIMEOUT": "60", "ENGINE_K8S_DELETE_TIMEOUT": "30"}

    def cluster(self):
        from providers.kubernetes.client import cluster

        return cluster()


def _run(cmd: list, timeout: float, env: dict | None = None) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout


@pytest.fixture(scope="session")
def k8s_api(tmp_path_factory):
    tool = apiserver_tool()
    if tool is None:
        msg = ("no apiserver tool (set TASKRIG_K8S_APISERVER or provide ../shared/k8s/apiserver): "
               "skipping the tests against a real Kubernetes API server")
        if os.environ.get("TASKRIG_K8S_REQUIRED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    d = tmp_path_factory.mktemp("k8s-apiserver")
    # Less memory for the server (the machine is shared), as the tool's header suggests.
    env = {"GOMEMLIMIT": os.environ.get("GOMEMLIMIT", "600MiB")}
    try:
        out = _run([tool, "start", d, "--watch", os.getpid()], timeout=600, env=env)
        crds = tool.resolve().parent.parent / "crds" / "k8s-1.20"
        _run([tool, "crds", d, *[crds / f for f in CRD_FILES]], timeout=180)
        kubeconfig = out.strip().splitlines()[-1].split("=", 1)[1]
        url = next(line.split("=", 1)[1] for line in (d / "env").read_text().splitlines()
                   if line.startswith("K8S_API_URL="))
        yield K8s(tool, d, kubeconfig, url)
    finally:
        subprocess.run([str(tool), "stop", str(d), "--clean"], capture_output=True, timeout=120)


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
    client.CoreV1Api(client.ApiClient(cfg)).create_namespace({"metadata": {"name": ns}})
    return replace(k8s_api, namespace=ns)


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


def objects(k8s: K8s, kind: str, stack: str) -> list[dict]:
    k = _kind(kind)
    return k8s.cluster().list(k.group, k.version, k.plural, f"taskrig/stack={stack}")


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
