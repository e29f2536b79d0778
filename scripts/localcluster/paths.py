"""Where the local cluster keeps its builds, its node and its fixed addresses.

One node per machine: the kubelet's and kube-proxy's ports are fixed, and so are the bridge
and the ranges below, as in Kubernetes' own ``hack/local-up-cluster.sh``.
"""

from __future__ import annotations

import os
from pathlib import Path

K8S_VERSION = "1.20.2"  # what Debian 12's `kubernetes` source package builds
CACHE = Path(os.environ.get("TASKRIG_K8S_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "taskrig-k8s")
BUILD_DIR = CACHE / f"node-{K8S_VERSION}"
BIN = BUILD_DIR / "bin"
SRC = BUILD_DIR / "src"  # sources kept from the build (pause.c)
IMAGES = CACHE / "images"  # image archives made by this tool, content-addressed
# The running node: pid files, logs, PKI, configs, etcd data. Kept out of /tmp (tmp cleaners).
NODE = Path(os.environ.get("TASKRIG_K8S_NODE") or CACHE / "node")

BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl")

BRIDGE = "k8sbr0"
NODE_IP = "10.244.0.1"  # the bridge's address: pods' gateway, the API server, the cluster DNS
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
API_PORT = 6443
CLUSTER_DOMAIN = "cluster.local"
NODE_NAME = "localhost"  # the API server dials the kubelet by hostname: localhost:10250
PAUSE_IMAGE = "localhost/pause:3.4.1"
GUARD_COMMENT = "taskrig-guard"
