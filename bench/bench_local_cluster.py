"""The project's own node (scripts/local-cluster.sh): build time (from its BUILDINFO), cold
start and stop, memory idle and with pods, and the pod-start latency it gives (create ->
Running, create -> the container's first log line), median of N.

The reference figures are the ones recorded when such a node was first proven on this kind of
machine (2 cores, Debian 12): cold start 24.7 s, pod start 1.0 s median, ~640 MiB idle. The
node must not be running already (a cold start is what is measured).

    python bench/bench_local_cluster.py [--pods 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, emit, ratio, table  # noqa: E402

SCRIPT = ROOT / "scripts" / "local-cluster.sh"
REFERENCE = {"start_s": 24.7, "pod_running_s": 1.0, "idle_rss_mib": 640}


def lc(*args, timeout=1800) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def rss() -> float:
    doc = json.loads(lc("status", "--json").stdout)
    return round(sum(p["rss_mib"] for p in doc["processes"].values() if p), 1)


def pods(kubeconfig: str, image: str, n: int) -> tuple[list[float], list[float]]:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(kubeconfig, client_configuration=cfg)
    core = client.CoreV1Api(client.ApiClient(cfg))
    ns = f"bench-{os.getpid()}"
    core.create_namespace({"metadata": {"name": ns}})
    deadline = time.monotonic() + 30  # the token controller gives the namespace's account its token
    while not (core.list_namespaced_service_account(ns).items or [None])[0] or \
            not core.read_namespaced_service_account("default", ns).secrets:
        if time.monotonic() > deadline:
            sys.exit(f"no service-account token in {ns} within 30 s")
        time.sleep(0.1)
    running, logged = [], []
    try:
        for i in range(n):
            name = f"p{i}"
            t0 = time.monotonic()
            core.create_namespaced_pod(ns, {"metadata": {"name": name}, "spec": {
                "restartPolicy": "Never", "containers": [{"name": "m", "image": image, "imagePullPolicy": "Never",
                                                          "command": ["python3", "-c", "print('up', flush=True)"]}]}})
            t_run = None
            deadline = t0 + 120
            while time.monotonic() < deadline:
                p = core.read_namespaced_pod(name, ns)
                if t_run is None and p.status.phase in ("Running", "Succeeded"):
                    t_run = time.monotonic() - t0
                if p.status.phase in ("Running", "Succeeded", "Failed"):
                    try:
                        if "up" in core.read_namespaced_pod_log(name, ns):
                            logged.append(time.monotonic() - t0)
                            break
                    except client.ApiException:
                        pass
                time.sleep(0.05)
            running.append(t_run)
    finally:
        core.delete_namespace(ns)
    return running, logged


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=5)
    args = ap.parse_args()
    if lc("status").returncode != 3:
        sys.exit("the local cluster is running: stop it first (scripts/local-cluster.sh stop) to measure a cold start")
    buildinfo = (Path(os.environ.get("TASKRIG_K8S_CACHE") or Path.home() / ".cache/taskrig-k8s") / "node-1.20.2/bin/BUILDINFO")
    make = next((line for line in buildinfo.read_text().splitlines() if line.startswith("make:")), "make: ?")
    load = os.getloadavg()
    t0 = time.monotonic()
    r = lc("start", "--crds", "dask,pytorch")
    start_s = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(r.stderr)
    kc = r.stdout.strip().splitlines()[-1].split("=", 1)[1]
    env = dict(line.split("=", 1) for line in (Path(kc).parent / "env").read_text().splitlines())
    try:
        idle = rss()
        running, logged = pods(kc, env["TASKRIG_TASK_IMAGE"], args.pods)
    finally:
        t1 = time.monotonic()
        lc("stop")
        stop_s = time.monotonic() - t1
    figures = {"start_s": round(start_s, 1), "stop_s": round(stop_s, 1), "idle_rss_mib": idle,
               "pod_running_s": round(statistics.median(running), 2),
               "pod_first_log_s": round(statistics.median(logged), 2) if logged else None}
    rows = [[k, figures[k], REFERENCE.get(k), ratio(figures[k], REFERENCE.get(k))] for k in figures]
    print(f"build (cached, from BUILDINFO): {make}; load average {load[0]:.2f}")
    print(table(["figure", "taskrig node", "reference", "ratio"], rows))
    emit({"bench": "local_cluster", **figures, "reference": REFERENCE, "build": make, "load1": load[0]})


if __name__ == "__main__":
    main()
