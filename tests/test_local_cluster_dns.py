"""The local cluster's DNS (scripts/localcluster/dns.py): records from Service and Endpoints
objects, answers from the real dnslib server over UDP and TCP on 127.0.0.1, the watch loop
against a fake CoreV1Api, and `python -m localcluster.dns` against a fake API server."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from kubernetes import client as k
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from localcluster.dns import (  # noqa: E402
    ClusterDNSServer, ClusterRecords, ClusterResolver, Watcher)

D = "cluster.local"


# ------------------------------------------------------------------------------------ helpers
def service(name, ns="default", ip="10.0.0.10", ports=(), **spec):
    return k.V1Service(metadata=k.V1ObjectMeta(name=name, namespace=ns),
                       spec=k.V1ServiceSpec(cluster_ip=ip, ports=[k.V1ServicePort(name=n, port=p, protocol=pr)
                                                                  for n, p, pr in ports] or None, **spec))


def endpoints(name, addresses, ns="default", not_ready=(), ports=()):
    def addr(a):
        ip, host = a if isinstance(a, tuple) else (a, None)
        return k.V1EndpointAddress(ip=ip, hostname=host)
    subset = k.V1EndpointSubset(addresses=[addr(a) for a in addresses] or None,
                                not_ready_addresses=[addr(a) for a in not_ready] or None,
                                ports=[k.CoreV1EndpointPort(name=n, port=p) for n, p in ports] or None)
    return k.V1Endpoints(metadata=k.V1ObjectMeta(name=name, namespace=ns), subsets=[subset])


def query(port, name, qtype="A", tcp=False) -> DNSRecord:
    return DNSRecord.parse(DNSRecord.question(name, qtype).send("127.0.0.1", port, tcp=tcp, timeout=2))


def addresses(reply, qtype="A"):
    return sorted(str(rr.rdata) for rr in reply.rr if rr.rtype == getattr(QTYPE, qtype))


@pytest.fixture
def dns():
    """(records, port): a real UDP+TCP server on 127.0.0.1 answering from fresh records."""
    records = ClusterRecords(D)
    server = ClusterDNSServer(ClusterResolver(records), "127.0.0.1", 0)
    port = server.start()
    yield records, port
    server.stop()


# ------------------------------------------------------------------------ answers over the wire
def test_clusterip_service_a_record(dns):
    records, port = dns
    records.apply("Service", "ADDED", service("web", ip="10.0.0.10"))
    r = query(port, f"web.default.svc.{D}")
    assert r.header.rcode == RCODE.NOERROR and r.header.aa
    assert addresses(r) == ["10.0.0.10"]
    assert all(rr.ttl == 5 for rr in r.rr)


def test_headless_service_answers_every_ready_endpoint(dns):
    records, port = dns
    records.apply("Service", "ADDED", service("db", ip="None"))
    records.apply("Endpoints", "ADDED", endpoints("db", [("10.244.0.5", "db-0"), "10.244.0.6"],
                                                  not_ready=["10.244.0.7"]))
    assert addresses(query(port, f"db.default.svc.{D}")) == ["10.244.0.5", "10.244.0.6"]
    assert addresses(query(port, f"db-0.db.default.svc.{D}")) == ["10.244.0.5"]


def test_headless_publish_not_ready_includes_not_ready(dns):
    records, port = dns
    records.apply("Service", "ADDED", service("db", ip="None", publish_not_ready_addresses=True))
    records.apply("Endpoints", "ADDED", endpoints("db", ["10.244.0.5"], not_ready=["10.244.0.7"]))
    assert addresses(query(port, f"db.default.svc.{D}")) == ["10.244.0.5", "10.244.0.7"]


def test_unknown_cluster_name_is_authoritative_nxdomain_with_short_soa(dns):
    records, port = dns
    records.apply("Service", "ADDED", service("web"))
    r = query(port, f"nope.default.svc.{D}")
    assert r.header.rcode == RCODE.NXDOMAIN and r.header.aa and not r.rr
    (soa,) = r.auth
    assert soa.rtype == QTYPE.SOA and str(soa.rname) == f"{D}." and soa.ttl == 5
    assert soa.rdata.times[-1] == 5  # the SOA minimum: how long NXDOMAIN may be cached


def test_outside_names_are_refused_and_nothing_leaves_loopback(dns, monkeypatch):
    _, port = dns
    sent = []
    for method in ("sendto", "connect"):
        original = getattr(socket.socket, method)

        def spy(self, *args, _original=original):
            sent.append(args[-1])
            return _original(self, *args)
        monkeypatch.setattr(socket.socket, method, spy)
    for name in ("example.com", "kubernetes.io", "local", f"x{D}"):
        r = query(port, name)
        assert r.header.rcode == RCODE.REFUSED, name
        assert not r.rr and not r.header.aa and not r.header.ra
    assert sent and {addr[0] for addr in sent} == {"127.0.0.1"}, sent


def test_aaaa_for_a_known_name_is_nodata(dns):
    records, port = dns
    records.apply("Service", "ADDED", service("web"))
    r = query(port, f"web.default.svc.{D}", "AAAA")
    assert r.header.rcode == RCODE.NOERROR and not r.rr
    assert [a.rtype for a in r.auth] == [QTYPE.SOA]


def test_modify_then_delete(dns):
    records, port = dns
    records.apply("Service", "ADDED", service("web", ip="10.0.0.10"))
    records.apply("Service", "MODIFIED", service("web", ip="10.0.0.20"))
    assert addresses(query(port, f"web.default.svc.{D}")) == ["10.0.0.20"]
    records.apply("Service", "DELETED", service("web", ip="10.0.0.20"))
    assert query(port, f"web.default.svc.{D}").header.rcode == RCODE.NXDOMAIN
    assert query(port, f"default.svc.{D}").header.rcode == RCODE.NXDOMAIN  # no Service left there


def test_endpoints_deleted_leaves_headless_name_without_addresses(dns):
    records, port = dns
    records.apply("Service", "ADDED", service("db", ip="None"))
    records.apply("Endpoints", "ADDED", endpoints("db", [("10.244.0.5", "db-0")]))
    records.apply("Endpoints", "DELETED", endpoints("db", []))
    r = query(port, f"db.default.svc.{D}")
    assert r.header.rcode == RCODE.NOERROR and not r.rr
    assert query(port, f"db-0.db.default.svc.{D}").header.rcode == RCODE.NXDOMAIN


def test_pod_name_is_answered_from_the_name(dns):
    _, port = dns
    assert addresses(query(port, f"10-244-0-7.anything.pod.{D}")) == ["10.244.0.7"]
    for bad in (f"10-244-0-300.ns.pod.{D}", f"10-244-0-7.pod.{D}", f"x.10-244-0-7.ns.pod.{D}"):
        assert query(port, bad).header.rcode == RCODE.NXDOMAIN, bad


def test_srv_for_named_ports(dns):
    records, port = dns
    records.apply("Service", "ADDED", service("web", ports=[("http", 80, "TCP"), ("dns", 53, "UDP"),
                                                            (None, 8080, "TCP")]))
    r = query(port, f"_http._tcp.web.default.svc.{D}", "SRV")
    (srv,) = r.rr
    assert (srv.rdata.priority, srv.rdata.weight, srv.rdata.port) == (0, 100, 80)
    assert str(srv.rdata.target) == f"web.default.svc.{D}."
    assert query(port, f"_dns._udp.web.default.svc.{D}", "SRV").rr[0].rdata.port == 53
    assert query(port, f"_dns._tcp.web.default.svc.{D}", "SRV").header.rcode == RCODE.NXDOMAIN


def test_headless_srv_uses_the_endpoints_ports(dns):
    records, port = dns
    records.apply("Service", "ADDED", service("db", ip="None", ports=[("pg", 5432, "TCP")]))
    records.apply("Endpoints", "ADDED", endpoints("db", ["10.244.0.5"], ports=[("pg", 15432)]))
    (srv,) = query(port, f"_pg._tcp.db.default.svc.{D}", "SRV").rr
    assert srv.rdata.port == 15432


def test_tcp_query(dns):
    records, port = dns
    records.apply("Service", "ADDED", service("web", ip="10.0.0.10"))
    assert addresses(query(port, f"web.default.svc.{D}", tcp=True)) == ["10.0.0.10"]


def test_big_headless_answer_is_truncated_on_udp_and_whole_on_tcp(dns):
    records, port = dns
    ips = [f"10.244.0.{i}" for i in range(2, 62)]
    records.apply("Service", "ADDED", service("big", ip="None"))
    records.apply("Endpoints", "ADDED", endpoints("big", ips))
    udp = query(port, f"big.default.svc.{D}")
    assert udp.header.tc and not udp.rr
    assert addresses(query(port, f"big.default.svc.{D}", tcp=True)) == sorted(ips)


def test_external_name_is_a_cname(dns):
    records, port = dns
    records.apply("Service", "ADDED", service("ext", ip=None, type="ExternalName", external_name="db.example.org"))
    records.apply("Service", "ADDED", service("alias", ip=None, type="ExternalName",
                                              external_name=f"web.default.svc.{D}"))
    records.apply("Service", "ADDED", service("web", ip="10.0.0.10"))
    r = query(port, f"ext.default.svc.{D}")
    assert [(rr.rtype, str(rr.rdata)) for rr in r.rr] == [(QTYPE.CNAME, "db.example.org.")]
    r = query(port, f"alias.default.svc.{D}")  # a target in our own zone is followed
    assert [rr.rtype for rr in r.rr] == [QTYPE.CNAME, QTYPE.A] and addresses(r) == ["10.0.0.10"]


def test_zone_apex_soa_and_empty_non_terminals(dns):
    records, port = dns
    records.apply("Service", "ADDED", service("web", ns="team"))
    r = query(port, D, "SOA")
    assert r.header.rcode == RCODE.NOERROR and r.rr[0].rtype == QTYPE.SOA
    for name in (f"team.svc.{D}", f"svc.{D}"):
        r = query(port, name)
        assert r.header.rcode == RCODE.NOERROR and not r.rr, name


def test_unknown_names_servfail_until_ready():
    records, ready = ClusterRecords(D), threading.Event()
    records.apply("Service", "ADDED", service("web"))
    server = ClusterDNSServer(ClusterResolver(records, ready=ready), "127.0.0.1", 0)
    port = server.start()
    try:
        assert query(port, f"nope.default.svc.{D}").header.rcode == RCODE.SERVFAIL
        assert addresses(query(port, f"web.default.svc.{D}")) == ["10.0.0.10"]
        ready.set()
        assert query(port, f"nope.default.svc.{D}").header.rcode == RCODE.NXDOMAIN
    finally:
        server.stop()


# ----------------------------------------------------------------------------- records alone
def test_replace_drops_what_the_list_no_longer_has():
    records = ClusterRecords(D)
    records.apply("Service", "ADDED", service("old"))
    records.replace("Service", [service("new", ip="10.0.0.11")])
    assert records.lookup(f"old.default.svc.{D}") is None
    assert [str(a) for a in records.lookup(f"new.default.svc.{D}")[QTYPE.A]] == ["10.0.0.11"]


def test_dict_objects_raw_json_and_to_dict():
    records = ClusterRecords(D)
    raw = k.ApiClient().sanitize_for_serialization(service("raw", ip="None", ports=[("http", 80, "TCP")]))
    records.apply("Service", "ADDED", raw)  # camelCase, as a watch's raw_object
    records.apply("Endpoints", "ADDED", endpoints("raw", [("10.244.0.9", "h")], ports=[("http", 8080)]).to_dict())
    assert [str(a) for a in records.lookup(f"h.raw.default.svc.{D}")[QTYPE.A]] == ["10.244.0.9"]
    assert records.lookup(f"_http._tcp.raw.default.svc.{D}")[QTYPE.SRV][0].port == 8080


def test_names_are_case_insensitive_and_serial_moves():
    records = ClusterRecords(D)
    before = records.serial
    records.apply("Service", "ADDED", service("web"))
    assert records.serial > before
    assert records.lookup(f"WEB.Default.svc.{D.upper()}.")[QTYPE.A]


# ------------------------------------------------------------------------------ the watcher
class Recording(ClusterRecords):
    def __init__(self):
        super().__init__(D)
        self.log = []

    def apply(self, kind, event_type, obj):
        self.log.append((kind, event_type, obj.metadata.name))
        super().apply(kind, event_type, obj)

    def replace(self, kind, objs):
        objs = list(objs)
        self.log.append((kind, "LIST", sorted(o.metadata.name for o in objs)))
        super().replace(kind, objs)


def test_watcher_apply_event():
    records = ClusterRecords(D)
    w = Watcher("/nonexistent", records)
    w.apply_event("Service", "ADDED", service("web", ip="10.0.0.10"))
    w.apply_event("Service", "MODIFIED", service("web", ip="10.0.0.12"))
    w.apply_event("Service", "BOOKMARK", {"metadata": {"resourceVersion": "9"}})  # ignored
    assert [str(a) for a in records.lookup(f"web.default.svc.{D}")[QTYPE.A]] == ["10.0.0.12"]
    w.apply_event("Service", "DELETED", service("web", ip="10.0.0.12"))
    assert records.lookup(f"web.default.svc.{D}") is None
    with pytest.raises(ApiException) as e:
        w.apply_event("Service", "ERROR", {"code": 410, "reason": "Expired", "message": "too old"})
    assert e.value.status == 410


class FakeStream:
    """What the client's Watch reads: JSON lines, then (``hold``) silence until shut down."""

    status = 200

    def __init__(self, events, hold=False):
        self.events, self.hold, self.shut = events, hold, threading.Event()

    def stream(self, amt=None, decode_content=False):
        for e in self.events:
            yield (json.dumps(e) + "\n").encode()
        if self.hold and not self.shut.wait(10):
            raise AssertionError("the watch was never shut down")

    def shutdown(self):
        self.shut.set()

    def close(self):
        pass

    def release_conn(self):
        pass


class FakeApi:
    """CoreV1Api's two list functions; each call takes the next scripted answer (the last repeats)."""

    def __init__(self, script):
        self.script = {kind: deque(steps) for kind, steps in script.items()}
        self.calls = []

    def list_service_for_all_namespaces(self, **kw):
        return self._next("Service", kw)

    def list_endpoints_for_all_namespaces(self, **kw):
        return self._next("Endpoints", kw)

    def _next(self, kind, kw):
        mode = "watch" if kw.get("watch") else "list"
        self.calls.append((kind, mode, kw.get("resource_version")))
        steps = self.script[(kind, mode)]
        step = steps.popleft() if len(steps) > 1 else steps[0]
        return step()


def raw(obj):
    return k.ApiClient().sanitize_for_serialization(obj)


def service_list(rv, *svcs):
    return lambda: k.V1ServiceList(metadata=k.V1ListMeta(resource_version=rv), items=list(svcs))


def endpoints_list(rv):
    return lambda: k.V1EndpointsList(metadata=k.V1ListMeta(resource_version=rv), items=[])


def test_watcher_relists_on_410_and_stops_promptly():
    added = service("c", ip="10.0.0.30")
    added.metadata.resource_version = "3"
    api = FakeApi({
        ("Service", "list"): [service_list("1", service("a")), service_list("7", service("b"))],
        ("Service", "watch"): [lambda: FakeStream([{"type": "ADDED", "object": raw(added)},
                                                   {"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                                                                "reason": "Expired",
                                                                                "message": "too old"}}]),
                               lambda: FakeStream([], hold=True)],
        ("Endpoints", "list"): [endpoints_list("1")],
        ("Endpoints", "watch"): [lambda: FakeStream([], hold=True)],
    })
    records = Recording()
    w = Watcher("/unused", records, api=api, backoff=(5.0, 5.0))  # a 410 must not wait this out
    w.start()
    try:
        assert w.ready.wait(3)
        deadline = time.monotonic() + 3
        while ("Service", "watch", "7") not in api.calls and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ("Service", "watch", "7") in api.calls, api.calls
        assert [e for e in records.log if e[0] == "Service"] == [
            ("Service", "LIST", ["a"]), ("Service", "ADDED", "c"), ("Service", "LIST", ["b"])]
        assert ("Service", "watch", "1") in api.calls  # the first watch went on from the list
        assert records.lookup(f"b.default.svc.{D}") and records.lookup(f"c.default.svc.{D}") is None
    finally:
        t = time.monotonic()
        w.stop()
        assert w.join(2), "watch threads still running after stop()"
        assert time.monotonic() - t < 2


def test_watcher_backs_off_and_retries_after_errors():
    def fail():
        raise ApiException(status=500, reason="boom")
    api = FakeApi({
        ("Service", "list"): [fail, fail, service_list("1", service("a"))],
        ("Service", "watch"): [lambda: FakeStream([], hold=True)],
        ("Endpoints", "list"): [endpoints_list("1")],
        ("Endpoints", "watch"): [lambda: FakeStream([], hold=True)],
    })
    w = Watcher("/unused", ClusterRecords(D), api=api, backoff=(0.1, 0.15))
    t = time.monotonic()
    w.start()
    try:
        assert w.ready.wait(3)
        assert time.monotonic() - t >= 0.2  # 0.1 then 0.15 (capped), not a busy loop
        assert [c for c in api.calls if c[:2] == ("Service", "list")] == [("Service", "list", None)] * 3
    finally:
        w.stop()
        assert w.join(2)


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}))
    return path


def test_watcher_uses_a_private_configuration(tmp_path):
    before = k.Configuration.get_default_copy().host
    w = Watcher(str(write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")), ClusterRecords(D))
    assert w._client().api_client.configuration.host == "http://127.0.0.1:1"
    assert k.Configuration.get_default_copy().host == before


# ------------------------------------------------------------- the entry point, end to end
class FakeApiServer(ThreadingHTTPServer):
    """Just enough of /api/v1 for the client's list and watch of Services and Endpoints."""

    daemon_threads = True

    def __init__(self, services):
        super().__init__(("127.0.0.1", 0), _ApiHandler)
        self.services = services
        self.events = queue.Queue()  # Service watch events to send
        self.closing = threading.Event()
        self.requests = []


class _ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # a watch is a chunked stream, one JSON event per line

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlparse(self.path)
        qs = parse_qs(url.query)
        self.server.requests.append(self.path)
        kind = {"/api/v1/services": "ServiceList", "/api/v1/endpoints": "EndpointsList"}.get(url.path)
        if kind is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if "watch" not in qs:
            items = [raw(s) for s in self.server.services] if kind == "ServiceList" else []
            body = json.dumps({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "5"},
                               "items": items}).encode()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while not self.server.closing.is_set():
            try:
                event = self.server.events.get(timeout=0.1) if kind == "ServiceList" else None
            except queue.Empty:
                continue
            if event is None:
                self.server.closing.wait(0.1)
                continue
            line = (json.dumps(event) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
        self.close_connection = True


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the server takes a fixed port here)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no free port")


def wait_until(check, timeout=8.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:  # noqa: BLE001 - not up yet
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_module_entry_point_serves_watches_and_stops_on_sigterm(tmp_path):
    api = FakeApiServer([service("web", ip="10.0.0.10")])
    threading.Thread(target=api.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    kc = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{api.server_address[1]}")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    proc = subprocess.Popen([sys.executable, "-m", "localcluster.dns", "--kubeconfig", str(kc),
                             "--address", "127.0.0.1", "--port", str(port)],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        r = wait_until(lambda: query(port, f"web.default.svc.{D}"))
        wait_until(lambda: addresses(query(port, f"web.default.svc.{D}")) == ["10.0.0.10"])
        assert query(port, "example.com").header.rcode == RCODE.REFUSED
        new = service("new", ip="10.0.0.40")
        new.metadata.resource_version = "6"
        api.events.put({"type": "ADDED", "object": raw(new)})
        wait_until(lambda: addresses(query(port, f"new.default.svc.{D}")) == ["10.0.0.40"])
        assert any("resourceVersion=5" in p and "watch" in p for p in api.requests), api.requests
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert time.monotonic() - t < 3  # the held watch did not have to time out
        err = proc.stderr.read()
        assert "[cluster-dns] ready" in err and "stopped" in err, err
        assert r.header.rcode in (RCODE.NOERROR, RCODE.SERVFAIL)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        api.closing.set()
        api.shutdown()
        api.server_close()
