"""The node's configuration files, written fresh at every start (nothing kept between runs)."""

from __future__ import annotations

import json
from pathlib import Path

from . import paths


def containerd(node: Path) -> Path:
    c = node / "containerd"
    (c / "root").mkdir(parents=True, exist_ok=True)
    text = f"""version = 2
root = "{c}/root"
state = "{c}/state"
[grpc]
  address = "{c}/containerd.sock"
[ttrpc]
  address = "{c}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{paths.PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  # this machine may not lower oom_score_adj (no CAP_SYS_RESOURCE): without it no sandbox starts
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  # every registry is 127.0.0.1:1: an image that is not imported fails to pull at once, and
  # no pull (nor its DNS lookup) ever leaves this machine
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{c}/certs.d"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{node}/cni/net.d"
"""
    hosts = c / "certs.d" / "_default"
    hosts.mkdir(parents=True, exist_ok=True)
    (hosts / "hosts.toml").write_text('server = "http://127.0.0.1:1"\n\n[host."http://127.0.0.1:1"]\n'
                                      '  capabilities = ["pull", "resolve"]\n')
    f = c / "config.toml"
    f.write_text(text)
    return f


def cni(node: Path) -> Path:
    d = node / "cni" / "net.d"
    d.mkdir(parents=True, exist_ok=True)
    conf = {"cniVersion": "0.4.0", "name": "taskrig-local", "plugins": [{
        "type": "bridge", "bridge": paths.BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": paths.POD_CIDR, "gateway": paths.NODE_IP}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(node / "cni" / "ipam")}}]}
    f = d / "10-taskrig.conflist"
    f.write_text(json.dumps(conf, indent=1))
    return f


def kubelet(node: Path) -> Path:
    (node / "etc").mkdir(parents=True, exist_ok=True)
    # pods' resolv.conf: the cluster DNS only; the host's search domains stay out of pods
    (node / "etc" / "resolv.conf").write_text("")
    text = f"""kind: KubeletConfiguration
apiVersion: kubelet.config.k8s.io/v1beta1
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
failSwapOn: false
authentication:
  anonymous: {{enabled: true}}
  webhook: {{enabled: false}}
authorization: {{mode: AlwaysAllow}}
clusterDNS: ["{paths.NODE_IP}"]
clusterDomain: {paths.CLUSTER_DOMAIN}
resolvConf: {node}/etc/resolv.conf
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 4s
serializeImagePulls: false
maxPods: 110
"""
    f = node / "etc" / "kubelet-config.yaml"
    f.write_text(text)
    return f
