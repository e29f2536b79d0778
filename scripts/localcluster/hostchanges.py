"""What the node changes on the host, recorded at start so that stop puts it back.

kubelet sets vm.overcommit_memory, kernel.panic and kernel.panic_on_oops; kube-proxy
route_localnet; the bridge plugin ip_forward. kubelet, containerd and the CNI plugins create
fixed paths, mounts, cgroups, network namespaces and KUBE-*/CNI-* iptables chains. The
ledger (NODE/host.json) lists what existed before, so stop removes only what the node added.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from . import paths
from .host import log, run

SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "net.ipv4.conf.all.route_localnet",
           "net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables", "net.netfilter.nf_conntrack_max")
FIXED_PATHS = ("/var/lib/kubelet", "/usr/libexec/kubernetes", "/var/log/pods", "/var/log/containers",
               "/run/containerd", "/var/lib/cni", "/run/netns", "/run/libpod", "/var/lib/containers",
               "/var/lib/dockershim", "/etc/kubernetes", "/run/calico", "/var/run/netns")
CHAIN_PREFIXES = ("KUBE-", "CNI-")
TABLES = ("filter", "nat", "mangle")


def _sysctl_file(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    out = {}
    for k in SYSCTLS:
        try:
            out[k] = _sysctl_file(k).read_text().strip()
        except OSError:
            pass  # module not loaded: nothing to restore
    return out


def mounts() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def chains(cmd: str = "iptables") -> dict[str, list[str]]:
    if not shutil.which(f"{cmd}-save"):
        return {}
    found: dict[str, list[str]] = {}
    for t in TABLES:
        out = subprocess.run([f"{cmd}-save", "-t", t], capture_output=True, text=True).stdout
        found[t] = [line[1:].split()[0] for line in out.splitlines() if line.startswith(":")]
    return found


def cgroup_roots() -> list[str]:
    """kubelet's cgroupfs hierarchy lives under ``kubepods`` in every controller (v1 and v2)."""
    base = Path("/sys/fs/cgroup")
    found = []
    for d in [base, *[p for p in base.iterdir() if p.is_dir()]] if base.is_dir() else []:
        if (d / "kubepods").exists():
            found.append(str(d / "kubepods"))
    return found


def record(node: Path) -> dict:
    ledger = {"sysctls": read_sysctls(), "paths": [p for p in FIXED_PATHS if os.path.lexists(p)],
              "mounts": mounts(), "iptables": chains("iptables"), "ip6tables": chains("ip6tables"),
              "cgroups": cgroup_roots(), "bridge": Path(f"/sys/class/net/{paths.BRIDGE}").exists()}
    f = node / "host.json"
    if not f.exists():  # a start after a crashed start keeps the first, true record
        f.write_text(json.dumps(ledger, indent=1))
    return json.loads(f.read_text())


def ledger(node: Path) -> dict | None:
    try:
        return json.loads((node / "host.json").read_text())
    except (OSError, ValueError):
        return None


def _roots(node: Path) -> list[str]:
    return [str(node), *FIXED_PATHS]


def unmount_new(node: Path, before: list[str]) -> None:
    """Unmount, deepest first, every mount the node made under its own and the fixed paths."""
    roots = _roots(node)
    for _ in range(3):
        new = [m for m in mounts() if m not in before and any(m == r or m.startswith(r + "/") for r in roots)]
        if not new:
            return
        for m in sorted(set(new), key=len, reverse=True):
            subprocess.run(["umount", m], capture_output=True)
            if m in mounts():
                subprocess.run(["umount", "-l", m], capture_output=True)


def remove_netns() -> None:
    d = Path("/run/netns")
    for ns in d.glob("cni-*") if d.is_dir() else []:
        subprocess.run(["ip", "netns", "delete", ns.name], capture_output=True)


def kill_cgroup_processes(roots: list[str]) -> int:
    """SIGKILL everything still in a kubepods cgroup (containers outlive the kubelet)."""
    n = 0
    for root in roots:
        for procs in Path(root).rglob("cgroup.procs"):
            try:
                pids = [int(p) for p in procs.read_text().split()]
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(pid, 9)
                    n += 1
                except ProcessLookupError:
                    pass
    return n


def remove_cgroups(roots: list[str]) -> None:
    for root in roots:
        r = Path(root)
        if not r.exists():
            continue
        for d in sorted((p for p in r.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            r.rmdir()
        except OSError as e:
            log(f"cgroup {r} not removed: {e}")


def remove_chains(before: dict[str, list[str]], cmd: str) -> None:
    """Drop the jumps into and then the KUBE-*/CNI-* chains that were not there at start."""
    if not shutil.which(f"{cmd}-save"):
        return
    for t in TABLES:
        out = subprocess.run([f"{cmd}-save", "-t", t], capture_output=True, text=True).stdout
        existing = [line[1:].split()[0] for line in out.splitlines() if line.startswith(":")]
        new = {c for c in existing if c.startswith(CHAIN_PREFIXES) and c not in before.get(t, [])}
        if not new:
            continue
        for line in out.splitlines():
            parts = shlex.split(line)  # comments are quoted: "kubernetes service portals"
            if line.startswith("-A ") and parts[1] not in new and any(p in new for p in parts):
                subprocess.run([cmd, "-w", "-t", t, "-D", *parts[1:]], capture_output=True)
        for c in new:
            subprocess.run([cmd, "-w", "-t", t, "-F", c], capture_output=True)
        for c in new:
            subprocess.run([cmd, "-w", "-t", t, "-X", c], capture_output=True)


def restore(node: Path, led: dict) -> None:
    """Everything the node added goes; the sysctls get their values from before."""
    ours = [c for c in cgroup_roots() if c not in led["cgroups"]]
    kill_cgroup_processes(ours)
    remove_netns()
    unmount_new(node, led["mounts"])
    remove_cgroups(ours)
    remove_chains(led["iptables"], "iptables")
    remove_chains(led["ip6tables"], "ip6tables")
    for k, v in led["sysctls"].items():
        try:
            if _sysctl_file(k).read_text().strip() != v:
                _sysctl_file(k).write_text(v + "\n")
        except OSError as e:
            log(f"sysctl {k} not restored to {v}: {e}")
    if not led["bridge"] and Path(f"/sys/class/net/{paths.BRIDGE}").exists():
        run(["ip", "link", "delete", paths.BRIDGE], check=False)
    for p in FIXED_PATHS:
        if p not in led["paths"] and os.path.lexists(p):
            unmount_new(node, led["mounts"])
            shutil.rmtree(p, ignore_errors=True)
            if os.path.lexists(p):
                log(f"could not remove {p}")
