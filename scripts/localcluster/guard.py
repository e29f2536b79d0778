"""The egress guard: no packet for a cluster address may leave this machine.

Until kube-proxy has written a new Service's rules (up to 3.3 s here) a packet to its
ClusterIP follows the default route out, and the bridge plugin turns on forwarding for pods.
So before anything can create a Service, every outside interface REJECTs the service and
pod ranges (an ``unreachable`` route would not do: for the host's own packets the route is
looked up before kube-proxy's DNAT, so ClusterIPs would break from the host).
"""

from __future__ import annotations

import json
import shlex
import subprocess

from . import paths
from .host import run


def outside_interfaces() -> list[str]:
    """Every interface a default route uses (whatever its name), never the bridge or lo."""
    names: list[str] = []
    for family in ("-4", "-6"):
        out = subprocess.run(["ip", "-j", family, "route", "show", "default"], capture_output=True, text=True).stdout
        for r in json.loads(out or "[]"):
            dev = r.get("dev")
            if dev and dev not in (paths.BRIDGE, "lo") and dev not in names:
                names.append(dev)
    return names


def rules(interfaces: list[str]) -> list[list[str]]:
    out = []
    for dev in interfaces:
        for chain, sel in (("OUTPUT", ["-d", paths.SERVICE_CIDR]), ("OUTPUT", ["-d", paths.POD_CIDR]),
                           ("FORWARD", ["-d", paths.SERVICE_CIDR]), ("FORWARD", ["-s", paths.POD_CIDR]),
                           ("FORWARD", ["-d", paths.POD_CIDR])):
            out.append([chain, "-o", dev, *sel, "-m", "comment", "--comment", paths.GUARD_COMMENT, "-j", "REJECT"])
    return out


def install(interfaces: list[str]) -> None:
    for r in rules(interfaces):
        if run(["iptables", "-w", "-C", *r], check=False).returncode != 0:
            run(["iptables", "-w", "-I", r[0], "1", *r[1:]])


def installed_rules() -> list[str]:
    """The guard's rules as iptables-save prints them (what the test and ``status`` check)."""
    out = run(["iptables-save", "-t", "filter"]).stdout
    return [line for line in out.splitlines() if f'--comment {paths.GUARD_COMMENT}' in line
            or f'--comment "{paths.GUARD_COMMENT}"' in line]


def remove() -> None:
    for line in installed_rules():
        spec = shlex.split(line)[1:]  # "-A CHAIN ..." -> "CHAIN ..."
        run(["iptables", "-w", "-D", *spec], check=False)
