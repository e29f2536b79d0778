"""The project's own node (scripts/local-cluster.sh) does what the kubernetes backend relies on:
pods run the host's Python from the task image, in-cluster clients get a service-account
token and the API through the ``kubernetes`` Service, Services resolve through the cluster DNS,
nothing else resolves, and no packet for a cluster address can leave by an outside interface."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k8s_fixture import LOCAL_CLUSTER, ROOT

sys.path.insert(0, str(ROOT / "scripts"))

from localcluster import crds, guard, paths  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def local(k8s):
    if not k8s.local:
        pytest.skip("checks of the project's own node (TASKRIG_K8S_KUBECONFIG names another cluster)")
    return k8s


def _core(k8s):
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(k8s.kubeconfig, client_configuration=cfg)
    return client.CoreV1Api(client.ApiClient(cfg))


def _run_pod(k8s, name: str, script: str, timeout: float = 90) -> tuple[str, str]:
    """Run ``script`` with the task image's python3 in a pod; its phase and its log."""
    core = _core(k8s)
    core.create_namespaced_pod(k8s.namespace, {
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": k8s.task_image, "imagePullPolicy": "Never",
            "command": ["python3", "-c", script]}]}})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phase = core.read_namespaced_pod(name, k8s.namespace).status.phase
        if phase in ("Succeeded", "Failed"):
            return phase, core.read_namespaced_pod_log(name, k8s.namespace)
        time.sleep(0.3)
    raise AssertionError(f"pod {name} did not finish within {timeout}s")


IN_POD = r'''
import json, os, socket, ssl, urllib.request
out = {"hostname": socket.gethostname(), "service_host": os.environ.get("KUBERNETES_SERVICE_HOST")}
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(f"{sa}/token").read()
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
req = urllib.request.Request("https://kubernetes.default.svc/version", headers={"Authorization": f"Bearer {token}"})
out["version"] = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))["gitVersion"]
out["kubernetes"] = socket.gethostbyname("kubernetes.default.svc.cluster.local")
out["web"] = socket.gethostbyname("web")  # the search path: web.<ns>.svc.cluster.local
try:
    socket.gethostbyname("example.com")
    out["outside"] = "resolved"
except socket.gaierror as e:
    out["outside"] = "refused"
import distributed
out["distributed"] = distributed.__version__
print(json.dumps(out))
'''


def test_a_pod_runs_the_hosts_python_with_a_token_the_api_and_cluster_dns(local):
    import distributed

    core = _core(local)
    svc = core.create_namespaced_service(local.namespace, {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}})
    phase, log = _run_pod(local, "probe", IN_POD)
    assert phase == "Succeeded", log
    out = json.loads(log.strip().splitlines()[-1])
    assert out["hostname"] == "probe" and out["service_host"] == paths.KUBERNETES_SERVICE_IP
    assert out["version"].startswith("v1.20")
    assert out["kubernetes"] == paths.KUBERNETES_SERVICE_IP
    assert out["web"] == svc.spec.cluster_ip
    assert out["outside"] == "refused"  # the cluster DNS forwards nothing
    assert out["distributed"] == distributed.__version__


def test_the_cluster_dns_answers_the_host_only_from_what_it_knows(local):
    from dnslib import QTYPE, RCODE, DNSRecord

    def ask(name):
        return DNSRecord.parse(DNSRecord.question(name, "A").send(paths.NODE_IP, 53, timeout=3))

    r = ask("kubernetes.default.svc.cluster.local")
    assert [str(a.rdata) for a in r.rr if a.rtype == QTYPE.A] == [paths.KUBERNETES_SERVICE_IP]
    assert ask("nothing-here.default.svc.cluster.local").header.rcode == RCODE.NXDOMAIN
    assert ask("deb.debian.org").header.rcode == RCODE.REFUSED


def test_the_egress_guard_is_in_place_while_the_node_runs(local):
    """Service and pod ranges REJECTed on every outside interface, before any Service exists."""
    rules = guard.installed_rules()
    devs = guard.outside_interfaces()
    assert devs, "no default route: nothing to guard?"
    for dev in devs:
        for chain, sel in (("OUTPUT", f"-d {paths.SERVICE_CIDR}"), ("FORWARD", f"-d {paths.SERVICE_CIDR}"),
                           ("FORWARD", f"-s {paths.POD_CIDR}")):
            assert any(r.startswith(f"-A {chain} ") and sel in r and f"-o {dev}" in r and "REJECT" in r
                       for r in rules), (chain, sel, dev, rules)


def test_status_reports_every_process_and_ready(local):
    r = subprocess.run(["bash", str(LOCAL_CLUSTER), "status", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ready"] and doc["kubeconfig"] == local.kubeconfig
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
                 "containerd", "cluster-dns"):
        assert doc["processes"][name] and doc["processes"][name]["rss_mib"] > 0, name


def test_crds_are_adapted_for_120_in_code():
    """The upstream CRDs as 1.20 takes them: no CEL rules, no empty-string defaults, list-map
    keys required; everything else as upstream."""
    import yaml

    for fam in crds.FAMILIES:
        for ref, crd in zip(crds.FAMILIES[fam], crds.wanted([fam])):
            text = json.dumps(crd)
            assert "x-kubernetes-validations" not in text and '"default": ""' not in text, ref
    ray = yaml.safe_load((crds.PROJECT_CRDS / "ray.io_rayclusters.yaml").read_text())
    assert "x-kubernetes-validations" in json.dumps(ray)  # the shipped file stays upstream's
    assert crds.for_120(ray)["spec"]["names"] == ray["spec"]["names"]
    # a list-map key whose empty default was dropped becomes required
    schema = {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
              "items": {"type": "object", "properties": {"name": {"type": "string", "default": ""}}}}
    out = crds.for_120({"spec": {"versions": [{"schema": {"openAPIV3Schema": schema}}]}})
    items = out["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["items"]
    assert items["required"] == ["name"] and "default" not in items["properties"]["name"]


def test_guard_rules_name_only_outside_interfaces():
    for r in guard.rules(["ens3"]):
        assert r[r.index("-o") + 1] == "ens3" and r[-1] == "REJECT"
    assert paths.BRIDGE not in guard.outside_interfaces() and "lo" not in guard.outside_interfaces()


def test_unknown_operator_is_refused_naming_it(tmp_path):
    r = subprocess.run(["bash", str(LOCAL_CLUSTER), "start", "--operators", "flink"], capture_output=True,
                       text=True, timeout=60, env={**__import__("os").environ, "TASKRIG_K8S_NODE": str(tmp_path)})
    assert r.returncode == 1 and "unknown operator 'flink'" in r.stderr, r.stderr
    assert not list(Path(tmp_path).iterdir())  # nothing started, nothing written


def test_an_image_not_imported_fails_to_pull_without_leaving_the_machine(local):
    """Every registry is 127.0.0.1:1 on this node: the pull fails at once (no DNS lookup of
    the registry, no packet out) and the pod says why."""
    core = _core(local)
    core.create_namespaced_pod(local.namespace, {
        "metadata": {"name": "nopull"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "registry.example.com/nothing:1"}]}})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = core.read_namespaced_pod("nopull", local.namespace).status.container_statuses or []
        waiting = st and st[0].state.waiting
        if waiting and waiting.reason in ("ErrImagePull", "ImagePullBackOff") and waiting.message:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"no pull error within 60 s: {st}")
    assert "127.0.0.1:1" in waiting.message, waiting.message
