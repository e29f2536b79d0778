"""Start, stop and inspect the node: the processes in the order they need each other.

Start: bridge, egress guard, containerd (+ images), etcd, kube-apiserver, controller-manager,
scheduler, cluster DNS, kube-proxy, kubelet, CRDs, then operators. Every process runs in a
session of its own, recorded by pid and start time in NODE; ``stop`` ends them by pid, kills
what still runs in the pods' cgroups and undoes each host change the ledger recorded.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from . import build, configs, guard, hostchanges, images, paths, pki
from .host import ClusterError, ensure_packages, launch, log, recorded, run, stop as stop_process, wait_for

RUNTIME_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "conntrack", "iproute2",
                    "openssl", "util-linux")
# stop order: the reverse of start
PROCESSES = ("containerd", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "cluster-dns",
             "kube-proxy", "kubelet")
OPERATORS = ("dask",)
TASK_IMAGE_ALIAS = "localhost/taskrig-task:current"
# the engine with the Dask example's and the connector service's packages (not torch, Ray or
# Spark: hundreds of MB each, for the images of their own issue)
TASK_IMAGE_DISTRIBUTIONS = ("taskrig", "dask", "distributed", "cloudpickle", "grpcio", "grpcio-health-checking",
                            "flyteidl2", "protobuf", "httpx", "psycopg", "psycopg-binary", "msgpack",
                            "prometheus-client", "fsspec", "s3fs")
API = f"https://{paths.NODE_IP}:{paths.API_PORT}"


@contextmanager
def locked(node: Path):
    """One start or stop at a time."""
    node.mkdir(parents=True, exist_ok=True)
    with open(node / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _api(node: Path, path: str, timeout: float = 5):
    ctx = ssl.create_default_context(cafile=str(node / "pki" / "ca.crt"))
    req = urllib.request.Request(API + path, headers={"Authorization": f"Bearer {(node / 'pki' / 'token').read_text().strip()}"})
    with urllib.request.urlopen(req, context=ctx, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def _node_ready(node: Path) -> bool:
    conds = _api(node, f"/api/v1/nodes/{paths.NODE_NAME}").get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bridge() -> None:
    if not Path(f"/sys/class/net/{paths.BRIDGE}").exists():
        run(["ip", "link", "add", paths.BRIDGE, "type", "bridge"])
    addrs = run(["ip", "-j", "addr", "show", "dev", paths.BRIDGE]).stdout
    if paths.NODE_IP not in addrs:
        run(["ip", "addr", "add", f"{paths.NODE_IP}/24", "dev", paths.BRIDGE])
    run(["ip", "link", "set", paths.BRIDGE, "up"])


def running(node: Path = paths.NODE) -> dict[str, int | None]:
    names = [*PROCESSES, *(f"operator-{o}" for o in OPERATORS)]
    return {n: recorded(node, n) for n in names}


def ready(node: Path = paths.NODE) -> bool:
    try:
        return all(recorded(node, n) for n in PROCESSES) and _api(node, "/readyz") == "ok" and _node_ready(node)
    except Exception:  # noqa: BLE001
        return False


def prepare() -> None:
    """What ``start`` needs besides the binaries: the runtime packages and the images."""
    ensure_packages(*RUNTIME_PACKAGES)
    _images()


def start(operators: list[str], crd_families: list[str] | None, watch: int | None, node: Path = paths.NODE) -> Path:
    for o in operators:
        if o not in OPERATORS:
            raise ClusterError(f"--operators: unknown operator {o!r} (known: {', '.join(OPERATORS)})")
    if os.geteuid() != 0:
        raise ClusterError("the local cluster needs root (bridge, iptables, mounts, cgroups)")
    build.build()
    ensure_packages(*RUNTIME_PACKAGES)
    families = sorted(set(crd_families if crd_families is not None else list(_all_families())) | set(operators))
    with locked(node):
        if ready(node):
            log(f"already running ({node})")
            _operators(node, operators)
            _watchdog(node, watch)
            return node / "kubeconfig"
        if any(running(node).values()) or hostchanges.ledger(node):
            log("a previous node was left behind: stopping it first")
            _stop(node)
        t0 = time.monotonic()
        try:
            _start(node, families, operators)
        except BaseException:
            log("start failed: stopping what was started")
            _stop(node)
            raise
        _watchdog(node, watch)
        log(f"ready in {time.monotonic() - t0:.1f} s; {API}; state in {node}")
        return node / "kubeconfig"


def _all_families() -> list[str]:
    from . import crds

    return list(crds.FAMILIES)


def _start(node: Path, families: list[str], operators: list[str]) -> None:
    from . import crds, images

    for old in node.glob("*.log"):
        old.unlink()
    hostchanges.record(node)
    _bridge()
    guard.install(guard.outside_interfaces())  # before anything can create a Service
    pkidir = pki.make(node)
    kc = str(pki.kubeconfig(node, API))
    configs.cni(node)

    launch(node, "containerd", ["containerd", "--config", configs.containerd(node)])
    sock = node / "containerd" / "containerd.sock"
    wait_for("containerd", lambda: sock.exists() and run(["ctr", "--address", sock, "version"], check=False).returncode == 0,
             30, node, "containerd")
    task_tag = load_images(sock)

    ep, pp = _free_port(), _free_port()
    launch(node, "etcd", [paths.BIN / "etcd", "--name", "taskrig", "--data-dir", node / "etcd",
                          "--listen-client-urls", f"http://127.0.0.1:{ep}", "--advertise-client-urls", f"http://127.0.0.1:{ep}",
                          "--listen-peer-urls", f"http://127.0.0.1:{pp}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{pp}",
                          "--initial-cluster", f"taskrig=http://127.0.0.1:{pp}", "--logger", "zap",
                          "--max-request-bytes", "10485760"])
    wait_for("etcd", lambda: b'"health":"true"' in urllib.request.urlopen(f"http://127.0.0.1:{ep}/health", timeout=2).read(),
             30, node, "etcd")

    launch(node, "kube-apiserver", [
        paths.BIN / "kube-apiserver", f"--etcd-servers=http://127.0.0.1:{ep}",
        f"--bind-address={paths.NODE_IP}", f"--advertise-address={paths.NODE_IP}", f"--secure-port={paths.API_PORT}",
        "--insecure-port=0", f"--tls-cert-file={pkidir}/apiserver.crt", f"--tls-private-key-file={pkidir}/apiserver.key",
        f"--client-ca-file={pkidir}/ca.crt", f"--token-auth-file={pkidir}/tokens.csv", "--authorization-mode=RBAC",
        f"--service-account-issuer=https://kubernetes.default.svc.{paths.CLUSTER_DOMAIN}",
        f"--service-account-key-file={pkidir}/sa.pub", f"--service-account-signing-key-file={pkidir}/sa.key",
        f"--service-cluster-ip-range={paths.SERVICE_CIDR}", "--allow-privileged=true", "--profiling=false",
        "--kubelet-preferred-address-types=Hostname,InternalIP"],
        env={"GOMEMLIMIT": os.environ.get("GOMEMLIMIT", "800MiB")})
    wait_for("kube-apiserver /readyz", lambda: _api(node, "/readyz") == "ok", 90, node, "kube-apiserver")

    launch(node, "kube-controller-manager", [
        paths.BIN / "kube-controller-manager", f"--kubeconfig={kc}", "--leader-elect=false", "--secure-port=0",
        "--port=10252", "--address=127.0.0.1", f"--service-account-private-key-file={pkidir}/sa.key",
        f"--root-ca-file={pkidir}/ca.crt", f"--service-cluster-ip-range={paths.SERVICE_CIDR}",
        f"--cluster-cidr={paths.POD_CIDR}", "--profiling=false"])
    launch(node, "kube-scheduler", [paths.BIN / "kube-scheduler", f"--kubeconfig={kc}", "--leader-elect=false",
                                    "--secure-port=0", "--port=10251", "--address=127.0.0.1", "--profiling=false"])
    launch(node, "cluster-dns", [sys.executable, "-m", "localcluster.dns", "--kubeconfig", kc,
                                 "--address", paths.NODE_IP, "--port", "53"],
           env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    launch(node, "kube-proxy", [
        paths.BIN / "kube-proxy", f"--kubeconfig={kc}", f"--hostname-override={paths.NODE_NAME}",
        "--bind-address=127.0.0.1", f"--cluster-cidr={paths.POD_CIDR}", "--proxy-mode=iptables",
        "--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249",
        "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0", f"--nodeport-addresses={paths.NODE_IP}/32"])
    launch(node, "kubelet", [
        paths.BIN / "kubelet", f"--config={configs.kubelet(node)}", f"--kubeconfig={kc}",
        "--container-runtime=remote", f"--container-runtime-endpoint=unix://{sock}",
        f"--root-dir={node / 'kubelet'}", f"--cert-dir={node / 'kubelet' / 'pki'}",
        f"--volume-plugin-dir={node / 'kubelet' / 'volume-plugins'}", f"--hostname-override={paths.NODE_NAME}",
        f"--node-ip={paths.NODE_IP}", f"--pod-infra-container-image={paths.PAUSE_IMAGE}"])
    wait_for("the node to be Ready", lambda: _node_ready(node), 90, node, "kubelet")
    crds.load(kc, families)
    # pods get a service-account token once the token controller has made the default one
    wait_for("the default service account's token",
             lambda: _api(node, "/api/v1/namespaces/default/serviceaccounts/default").get("secrets"), 60,
             node, "kube-controller-manager")
    wait_for("the cluster DNS", lambda: "ready" in (node / "cluster-dns.log").read_text(), 30, node, "cluster-dns")
    _operators(node, operators)
    write_env(node, kc, task_tag)


def load_images(sock: Path) -> str:
    """The pause and task images into the node's containerd; returns the task image's tag."""
    task_tag, archives = _images()
    for archive in archives:
        images.import_image(archive, sock)
    # the same image under a second, fixed name: "a different image" without a registry
    run(["ctr", "--address", sock, "-n", "k8s.io", "images", "tag", "--force", task_tag, TASK_IMAGE_ALIAS])
    return task_tag


def write_env(node: Path, kubeconfig: str, task_tag: str) -> None:
    (node / "env").write_text(f"KUBECONFIG={kubeconfig}\nK8S_API_URL={API}\nTASKRIG_TASK_IMAGE={task_tag}\n"
                              f"TASKRIG_TASK_IMAGE_ALIAS={TASK_IMAGE_ALIAS}\n"
                              # bodies in pods: a folder of this node that their pods mount (hostPath)
                              f"ENGINE_DATA_URL=file://{node / 'data'}\n")


def reload_images(node: Path = paths.NODE) -> str:
    """A running node gets the task image of the code as it is now (the engine's own code is
    in the image; a task's code travels in its bundle): for working on the engine itself."""
    sock = node / "containerd" / "containerd.sock"
    if not (node / "kubeconfig").exists() or not sock.exists():
        raise ClusterError(f"no node runs from {node}: scripts/local-cluster.sh start")
    tag = load_images(sock)
    write_env(node, str(node / "kubeconfig"), tag)
    return tag


def _images() -> tuple[str, list[Path]]:
    """The sandbox image and the default task image: the host's own Python with what the
    engine and the Dask example need, so pods unpickle exactly what the host pickled."""
    from importlib import metadata

    dists = [d for d in TASK_IMAGE_DISTRIBUTIONS if _has(metadata, d)]
    tag, task = images.task_image(dists, bytecode=True)
    return tag, [images.pause_image(), task]


def _has(metadata, dist: str) -> bool:
    try:
        metadata.distribution(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def _operators(node: Path, operators: list[str]) -> None:
    for o in operators:
        name = f"operator-{o}"
        if recorded(node, name):
            continue
        if o == "dask":
            # dask-kubernetes' own kopf controller, unmodified; --standalone: no KopfPeering CRD
            # It talks to schedulers by their Service names (idleTimeout, scale-down), so it runs
            # where cluster names resolve: in a mount namespace of its own whose resolv.conf is
            # the cluster DNS (which answers nothing else), as if it ran in a pod.
            port = _free_port()
            resolv = node / "etc" / "operator-resolv.conf"
            resolv.write_text(f"nameserver {paths.NODE_IP}\nsearch svc.{paths.CLUSTER_DOMAIN} {paths.CLUSTER_DOMAIN}\n"
                              "options ndots:5 timeout:1 attempts:2\n")
            kopf = [Path(sys.executable).parent / "kopf", "run", "--standalone", "--all-namespaces",
                    f"--liveness=http://127.0.0.1:{port}/healthz", "-m", "dask_kubernetes.operator.controller"]
            launch(node, name, ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv, *kopf],
                   env={"KUBECONFIG": str(node / "kubeconfig")})
            wait_for("the Dask operator's liveness endpoint",
                     lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200,
                     60, node, name)
        log(f"operator {o} running (pid {recorded(node, name)})")


def _watchdog(node: Path, pid: int | None) -> None:
    """Stop the node once process ``pid`` (a test session) is gone, however it ended."""
    if pid is None:
        return
    stop_process(node, "watchdog")
    launch(node, "watchdog", [sys.executable, "-m", "localcluster", "watchdog", str(pid)],
           env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def stop(node: Path = paths.NODE) -> None:
    with locked(node):
        _stop(node)


def _shims(node: Path) -> list[int]:
    sock = str(node / "containerd" / "containerd.sock")
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in cmd:
                pids.append(int(p.name))
    return pids


def _stop(node: Path) -> None:
    t0 = time.monotonic()
    if recorded(node, "watchdog") not in (None, os.getpid()):
        stop_process(node, "watchdog")
    for o in OPERATORS:
        stop_process(node, f"operator-{o}")
    stop_process(node, "kubelet")
    led = hostchanges.ledger(node)
    if led:
        hostchanges.kill_cgroup_processes([c for c in hostchanges.cgroup_roots() if c not in led["cgroups"]])
    for name in reversed(PROCESSES):
        if name != "containerd":
            stop_process(node, name)
    stop_process(node, "containerd")
    for pid in _shims(node):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    if led:
        hostchanges.restore(node, led)
    guard.remove()
    for child in node.iterdir() if node.exists() else []:
        if child.suffix == ".log" or child.name == ".lock":
            continue
        if child.is_dir() and not child.is_symlink():
            subprocess.run(["chmod", "-R", "u+w", str(child)], capture_output=True)
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    log(f"stopped in {time.monotonic() - t0:.1f} s")


def status(node: Path = paths.NODE) -> tuple[int, dict]:
    procs = {}
    for name, pid in running(node).items():
        if pid:
            rss = next((line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if line.startswith("VmRSS")), "0")
            procs[name] = {"pid": pid, "rss_mib": round(int(rss) / 1024, 1)}
        else:
            procs[name] = None
    up = [n for n in PROCESSES if procs.get(n)]
    doc = {"node": str(node), "processes": procs, "api": API, "guard_rules": len(guard.installed_rules())
           if shutil.which("iptables-save") else 0, "ready": False}
    if not up:
        return 3, doc
    doc["ready"] = ready(node)
    if doc["ready"]:
        doc["kubeconfig"] = str(node / "kubeconfig")
        return 0, doc
    return 1, doc
