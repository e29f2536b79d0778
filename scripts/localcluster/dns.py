"""The cluster DNS for Services: an authoritative-only server for the cluster domain.

Debian 12 has no CoreDNS package, so the node runs this instead: dnslib answers UDP and TCP
from an in-memory zone that a list+watch of Services and Endpoints keeps current, with the
names of the Kubernetes DNS specification. It is authoritative for the cluster domain and for
nothing else: other names are REFUSED and nothing is ever forwarded, so no query leaves the
machine. There is deliberately no upstream anywhere in this module.

Run by the node as ``python -m localcluster.dns --kubeconfig K --address A --port P``.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from dnslib import AAAA, CLASS, CNAME, OPCODE, QTYPE, RCODE, RR, SOA, SRV, A
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from .paths import CLUSTER_DOMAIN, NODE_IP

TTL = 5  # answers and negative answers (SOA minimum): pods see changes within seconds
SERVICE, ENDPOINTS = "Service", "Endpoints"
KINDS = (SERVICE, ENDPOINTS)
Zone = Mapping[str, Mapping[int, tuple]]  # name -> qtype -> rdata


def log(msg: str) -> None:
    print(f"[cluster-dns] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------- objects, normalised
def _get(obj: Any, snake: str, camel: str | None = None) -> Any:
    """A field of a client model object, of its ``to_dict()`` or of the raw JSON (camelCase)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        value = obj.get(snake)
        return obj.get(camel) if value is None and camel else value
    return getattr(obj, snake, None)


def _key(obj: Any) -> tuple[str, str] | None:
    meta = _get(obj, "metadata")
    name = _get(meta, "name")
    return (_get(meta, "namespace") or "default", name) if name else None


def _ip(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(str(text))
    except ValueError:
        return None


def _address(ip: str) -> tuple[int, Any]:
    """The (qtype, rdata) of an address record: A or AAAA by the address's family."""
    return (QTYPE.A, A(ip)) if _ip(ip).version == 4 else (QTYPE.AAAA, AAAA(ip))


Port = tuple[str, str, int]  # name, protocol label ("tcp"), number


def _ports(items: Iterable[Any] | None) -> tuple[Port, ...]:
    """Named ports only: an unnamed port has no SRV name."""
    out = []
    for p in items or ():
        name, number = _get(p, "name"), _get(p, "port")
        if name and number:
            out.append((str(name).lower(), str(_get(p, "protocol") or "TCP").lower(), int(number)))
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class _Service:
    ips: tuple[str, ...]  # cluster IPs; empty for headless and ExternalName services
    headless: bool
    external: str | None  # ExternalName target
    ports: tuple[Port, ...]
    publish_not_ready: bool


@dataclass(frozen=True)
class _Endpoints:
    ready: tuple[tuple[str, str | None], ...]  # (ip, hostname)
    not_ready: tuple[tuple[str, str | None], ...]
    ports: tuple[Port, ...]


def _service(obj: Any) -> _Service:
    spec = _get(obj, "spec") or {}
    cluster_ip = _get(spec, "cluster_ip", "clusterIP")
    external = _get(spec, "external_name", "externalName") if _get(spec, "type") == "ExternalName" else None
    ips = _get(spec, "cluster_ips", "clusterIPs") or ([cluster_ip] if cluster_ip else [])
    return _Service(
        ips=tuple(str(i) for i in ips if _ip(i)) if not external else (),
        headless=cluster_ip == "None",
        external=str(external).lower().rstrip(".") if external else None,
        ports=_ports(_get(spec, "ports")),
        publish_not_ready=bool(_get(spec, "publish_not_ready_addresses", "publishNotReadyAddresses")))


def _endpoint_addresses(items: Iterable[Any] | None) -> list[tuple[str, str | None]]:
    out = []
    for a in items or ():
        ip, host = _get(a, "ip"), _get(a, "hostname")
        if _ip(ip):
            out.append((str(ip), str(host).lower() if host else None))
    return out


def _endpoints(obj: Any) -> _Endpoints:
    ready, not_ready, ports = [], [], []
    for subset in _get(obj, "subsets") or ():
        ready += _endpoint_addresses(_get(subset, "addresses"))
        not_ready += _endpoint_addresses(_get(subset, "not_ready_addresses", "notReadyAddresses"))
        ports += _ports(_get(subset, "ports"))
    return _Endpoints(tuple(dict.fromkeys(ready)), tuple(dict.fromkeys(not_ready)),
                      tuple(dict.fromkeys(ports)))


_NORMALISE = {SERVICE: _service, ENDPOINTS: _endpoints}


# -------------------------------------------------------------------------------------- zone
class _ZoneBuilder:
    """Collects records, and an empty entry for every name that has records below it, so that
    such names answer NODATA rather than NXDOMAIN (RFC 8020: NXDOMAIN means nothing below)."""

    def __init__(self, domain: str):
        self.domain = domain
        self.names: dict[str, dict[int, list]] = {}
        for name in (domain, f"svc.{domain}", f"pod.{domain}"):
            self.names[name] = {}

    def add(self, name: str, qtype: int | None = None, rdata: Any = None) -> None:
        rrsets = self.names.setdefault(name, {})
        if qtype is not None:
            rrsets.setdefault(qtype, []).append(rdata)
        parent = name.partition(".")[2]
        if name != self.domain and parent not in self.names:
            self.add(parent)

    def frozen(self) -> dict[str, dict[int, tuple]]:
        return {n: {t: tuple(v) for t, v in rr.items()} for n, rr in self.names.items()}


def _add_srv(zone: _ZoneBuilder, base: str, ports: Iterable[Port]) -> None:
    for name, proto, number in ports:
        zone.add(f"_{name}._{proto}.{base}", QTYPE.SRV, SRV(priority=0, weight=100, port=number, target=base))


def _add_service(zone: _ZoneBuilder, base: str, svc: _Service, eps: _Endpoints | None) -> None:
    zone.add(base)
    if svc.external:
        zone.add(base, QTYPE.CNAME, CNAME(svc.external))
    elif not svc.headless:
        for ip in svc.ips:
            zone.add(base, *_address(ip))
        _add_srv(zone, base, svc.ports)
    elif eps is not None:
        # a headless Service's clients dial the pods: their addresses, and the endpoints' ports
        addresses = eps.ready + (eps.not_ready if svc.publish_not_ready else ())
        for ip, host in addresses:
            zone.add(base, *_address(ip))
            if host:
                zone.add(f"{host}.{base}", *_address(ip))
        _add_srv(zone, base, eps.ports if addresses else ())


def _build_zone(domain: str, services: Mapping, endpoints: Mapping) -> dict[str, dict[int, tuple]]:
    zone = _ZoneBuilder(domain)
    for (ns, name), svc in services.items():
        _add_service(zone, f"{name}.{ns}.svc.{domain}".lower(), svc, endpoints.get((ns, name)))
    return zone.frozen()


def _pod_address(name: str, domain: str) -> tuple[int, Any] | None:
    """``a-b-c-d.<ns>.pod.<domain>`` -> a.b.c.d, from the name alone (CoreDNS's ``pods insecure``)."""
    suffix = f".pod.{domain}"
    labels = name[:-len(suffix)].split(".") if name.endswith(suffix) else []
    if len(labels) != 2 or not all(labels):
        return None
    ip = _ip(labels[0].replace("-", ".")) or _ip(labels[0].replace("-", ":"))
    return _address(str(ip)) if ip else None


class ClusterRecords:
    """Services and Endpoints as the API server reports them, and the zone they make.

    Every change rebuilds the whole zone and swaps it in under a lock: a single node has few
    Services, and readers then never see a half-applied event.
    """

    def __init__(self, domain: str = CLUSTER_DOMAIN):
        self.domain = domain.lower().rstrip(".")
        self._lock = threading.Lock()
        self._objects: dict[str, dict[tuple[str, str], Any]] = {k: {} for k in KINDS}
        self._zone: dict[str, dict[int, tuple]] = _build_zone(self.domain, {}, {})
        self._serial = 1

    def apply(self, kind: str, event_type: str, obj: Any) -> None:
        """One watch event: ADDED and MODIFIED replace the object, DELETED removes it."""
        key, objects = _key(obj), self._kind(kind)
        if key is None:
            return
        with self._lock:
            if event_type == "DELETED":
                objects.pop(key, None)
            elif event_type in ("ADDED", "MODIFIED"):
                objects[key] = _NORMALISE[kind](obj)
            else:
                raise ValueError(f"unknown event type {event_type!r}")
            self._rebuild()

    def replace(self, kind: str, objs: Iterable[Any]) -> None:
        """A full list: objects absent from it are gone (deleted while we were not watching)."""
        objects, fresh = self._kind(kind), {}
        for obj in objs:
            key = _key(obj)
            if key is not None:
                fresh[key] = _NORMALISE[kind](obj)
        with self._lock:
            objects.clear()
            objects.update(fresh)
            self._rebuild()

    def lookup(self, name: str) -> Mapping[int, tuple] | None:
        """The records of ``name`` by qtype ({} if it exists without any), None if no such name."""
        name = name.lower().rstrip(".")
        with self._lock:
            found = self._zone.get(name)
        if found is not None:
            return found
        pod = _pod_address(name, self.domain)
        return {pod[0]: (pod[1],)} if pod else None

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._zone)

    @property
    def serial(self) -> int:
        """The SOA serial: one more per change."""
        with self._lock:
            return self._serial

    def _kind(self, kind: str) -> dict:
        if kind not in self._objects:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
        return self._objects[kind]

    def _rebuild(self) -> None:  # with self._lock held
        self._zone = _build_zone(self.domain, self._objects[SERVICE], self._objects[ENDPOINTS])
        self._serial = self._serial % 0xFFFFFFFF + 1


# ---------------------------------------------------------------------------------- resolver
class ClusterResolver(BaseResolver):
    """Answers for the cluster domain from ``records``, REFUSED for every other name.

    It has no upstream and no way to reach one: a name it does not know is answered here
    (NXDOMAIN) or refused, never forwarded. Until ``ready`` is set (the first full list), unknown
    cluster names get SERVFAIL, which clients retry, rather than a cached NXDOMAIN.
    """

    def __init__(self, records: ClusterRecords, ready: threading.Event | None = None):
        self.records = records
        self.domain = records.domain
        self.ready = ready

    def resolve(self, request, handler):
        try:
            return self._answer(request)
        except Exception as e:  # noqa: BLE001 - one bad query must not kill the server's thread
            log(f"query {request.q.qname} failed: {e!r}")
            return self._reply(request, RCODE.SERVFAIL, aa=False)

    def _answer(self, request):
        if request.header.opcode != OPCODE.QUERY:
            return self._reply(request, RCODE.NOTIMP, aa=False)
        if len(request.questions) != 1:
            return self._reply(request, RCODE.FORMERR, aa=False)
        q = request.q
        name = str(q.qname).lower().rstrip(".")
        if q.qclass != CLASS.IN or not self._in_zone(name):
            return self._reply(request, RCODE.REFUSED, aa=False)
        rrsets = self._rrsets(name)
        if rrsets is None:
            if self.ready is not None and not self.ready.is_set():
                return self._reply(request, RCODE.SERVFAIL, aa=False)
            return self._negative(request, RCODE.NXDOMAIN)
        answers = self._records(q.qname, rrsets, q.qtype)
        if not answers:
            return self._negative(request, RCODE.NOERROR)
        reply = self._reply(request, RCODE.NOERROR)
        for rr in answers:
            reply.add_answer(rr)
        return reply

    def _in_zone(self, name: str) -> bool:
        return name == self.domain or name.endswith("." + self.domain)

    def _rrsets(self, name: str) -> Mapping[int, tuple] | None:
        rrsets = self.records.lookup(name)
        if name == self.domain and rrsets is not None:
            rrsets = {**rrsets, QTYPE.SOA: (self._soa(),)}
        return rrsets

    def _records(self, qname, rrsets: Mapping[int, tuple], qtype: int, hops: int = 0) -> list[RR]:
        """The answer RRs; a CNAME is followed while its target is in our own zone."""
        if qtype == QTYPE.ANY:
            return [RR(qname, t, ttl=TTL, rdata=rd) for t, rds in rrsets.items() for rd in rds]
        if QTYPE.CNAME in rrsets and qtype != QTYPE.CNAME:
            (cname,) = rrsets[QTYPE.CNAME]
            out = [RR(qname, QTYPE.CNAME, ttl=TTL, rdata=cname)]
            target = str(cname.label).lower().rstrip(".")
            chained = self._rrsets(target) if self._in_zone(target) and hops < 8 else None
            return out + (self._records(cname.label, chained, qtype, hops + 1) if chained else [])
        return [RR(qname, qtype, ttl=TTL, rdata=rd) for rd in rrsets.get(qtype, ())]

    def _soa(self) -> SOA:
        return SOA(mname=f"ns.dns.{self.domain}", rname=f"hostmaster.{self.domain}",
                   times=(self.records.serial, 7200, 1800, 86400, TTL))

    def _negative(self, request, rcode: int):
        """NXDOMAIN or NODATA, with the SOA whose minimum (5 s) bounds negative caching."""
        reply = self._reply(request, rcode)
        reply.add_auth(RR(self.domain, QTYPE.SOA, ttl=TTL, rdata=self._soa()))
        return reply

    @staticmethod
    def _reply(request, rcode: int, aa: bool = True):
        reply = request.reply(ra=0, aa=int(aa))  # ra=0: we do not recurse, for anyone
        reply.header.rcode = rcode
        return reply


# ----------------------------------------------------------------------------------- servers
class _Handler(DNSHandler):
    """dnslib's handler, truncating UDP answers over 512 bytes (clients then retry over TCP, as
    for a big headless Service) and dropping TCP clients that stay silent."""

    udplen = 512

    def setup(self):
        if self.server.socket_type == socket.SOCK_STREAM:
            self.request.settimeout(5)

    def handle(self):
        try:
            super().handle()
        except OSError:  # the client went away or timed out: nothing to answer
            pass


class ClusterDNSServer:
    """A UDP and a TCP listener on the same address and port, both answering from ``resolver``.

    ``port=0`` picks a free port (the same for both; tests use it).
    """

    def __init__(self, resolver: BaseResolver, address: str, port: int = 53):
        self.resolver, self.address, self.port = resolver, address, port
        self._servers: list[DNSServer] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> int:
        """Bind both sockets and serve in background threads; returns the port."""
        self._servers = self._bind()
        self.port = self._servers[0].server.server_address[1]
        for srv, proto in zip(self._servers, ("udp", "tcp")):
            t = threading.Thread(target=srv.server.serve_forever, kwargs={"poll_interval": 0.1},
                                 name=f"cluster-dns-{proto}", daemon=True)
            t.start()
            self._threads.append(t)
        return self.port

    def stop(self) -> None:
        # both at once: each shutdown() waits out a poll interval of its serving loop
        stoppers = [threading.Thread(target=srv.server.shutdown, daemon=True) for srv in self._servers]
        for t in stoppers:
            t.start()
        for t in stoppers + self._threads:
            t.join(2)
        for srv in self._servers:
            srv.server.server_close()
        self._servers, self._threads = [], []

    def _bind(self) -> list[DNSServer]:
        logger = DNSLogger(log="error", prefix=False, logf=log)
        for _ in range(10):
            udp = DNSServer(self.resolver, self.address, self.port, logger=logger, handler=_Handler)
            try:
                tcp = DNSServer(self.resolver, self.address, udp.server.server_address[1], tcp=True,
                                logger=logger, handler=_Handler)
            except OSError:
                udp.server.server_close()
                if self.port:
                    raise
                continue  # the free UDP port was taken for TCP: try another
            return [udp, tcp]
        raise OSError(f"no port free for both UDP and TCP on {self.address}")


# ----------------------------------------------------------------------------------- watcher
def _shutdown(resp: Any) -> None:
    """Wake a thread blocked reading a watch response (urllib3's ``HTTPResponse.shutdown``)."""
    try:
        resp.shutdown()
    except Exception:  # noqa: BLE001 - already closed or released: nobody is blocked on it
        pass


class Watcher:
    """Keeps ``records`` in step with the API server: list, then watch from the list's
    resourceVersion. A 410 Gone relists at once; any other error retries the list after a
    backoff of 0.5 s doubling to 5 s. A watch is one blocking stream, so each kind has a
    thread of its own; ``stop()`` shuts their sockets, so they end without waiting for the
    30 s watch timeout.
    """

    _LISTS = {SERVICE: ("list_service_for_all_namespaces", "V1Service"),
              ENDPOINTS: ("list_endpoints_for_all_namespaces", "V1Endpoints")}

    def __init__(self, kubeconfig: str, records: ClusterRecords, *, api: Any = None,
                 watch_timeout: int = 30, backoff: tuple[float, float] = (0.5, 5.0)):
        self.kubeconfig = kubeconfig
        self.records = records
        self.ready = threading.Event()  # set once every kind has been listed in full
        self._api = api  # a CoreV1Api; made from the kubeconfig when None
        self._watch_timeout = watch_timeout
        self._backoff = backoff
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._listed: set[str] = set()
        self._streams: dict[str, Any] = {}  # kind -> the response being read
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run, args=(kind,), daemon=True,
                                          name=f"cluster-dns-watch-{kind}") for kind in KINDS]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            streams = list(self._streams.values())
        for resp in streams:
            _shutdown(resp)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads; True if they all ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def apply_event(self, kind: str, event_type: str, obj: Any) -> None:
        """One event of a watch stream into ``records``; BOOKMARKs only carry a resourceVersion
        (which the client's Watch keeps), an ERROR is raised so the stream is started again."""
        if event_type == "ERROR":
            raise _watch_error(obj)
        if event_type != "BOOKMARK":
            self.records.apply(kind, event_type, obj)

    # -- the loop of one kind
    def _run(self, kind: str) -> None:
        from kubernetes import watch

        delay = self._backoff[0]
        w = watch.Watch(return_type=self._LISTS[kind][1])
        while not self._stopping.is_set():
            try:
                rv = self._list(kind)
                delay = self._backoff[0]
                while not self._stopping.is_set():
                    rv = self._watch(w, kind, rv)
            except Exception as e:  # noqa: BLE001 - any failure: relist, after a pause
                if self._stopping.is_set():
                    break
                if getattr(e, "status", None) == 410:
                    continue  # our resourceVersion is too old: relist now
                log(f"{kind}: {_brief(e)}; listing again in {delay:.1f} s")
                self._stopping.wait(delay)
                delay = min(delay * 2, self._backoff[1])

    def _list(self, kind: str) -> str | None:
        result = getattr(self._client(), self._LISTS[kind][0])(_request_timeout=(10, 60))
        self.records.replace(kind, _get(result, "items") or [])
        with self._lock:
            self._listed.add(kind)
            if self._listed.issuperset(KINDS):
                self.ready.set()
        return _get(_get(result, "metadata"), "resource_version", "resourceVersion")

    def _watch(self, w: Any, kind: str, rv: str | None) -> str | None:
        """Apply one watch stream (ends after ``watch_timeout``); returns where to go on from."""
        fn = self._tracked(kind, getattr(self._client(), self._LISTS[kind][0]))
        stream = w.stream(fn, resource_version=rv, timeout_seconds=self._watch_timeout,
                          allow_watch_bookmarks=True, _request_timeout=(10, self._watch_timeout + 30))
        try:
            for event in stream:
                if self._stopping.is_set():
                    break
                self.apply_event(kind, event["type"], event["object"])
        finally:
            stream.close()
            with self._lock:
                self._streams.pop(kind, None)
        return w.resource_version or rv

    def _tracked(self, kind: str, fn):
        """``fn``, noting the streaming response it returns so that ``stop()`` can shut it."""
        def call(*args, **kwargs):
            resp = fn(*args, **kwargs)
            with self._lock:
                self._streams[kind] = resp
            if self._stopping.is_set():
                _shutdown(resp)
            return resp
        return call

    def _client(self):
        """A CoreV1Api on a private Configuration: the client's global default stays untouched."""
        with self._lock:
            if self._api is None:
                from kubernetes import client, config

                cfg = client.Configuration()
                config.load_kube_config(config_file=self.kubeconfig, client_configuration=cfg)
                self._api = client.CoreV1Api(client.ApiClient(cfg))
            return self._api


def _watch_error(obj: Any) -> Exception:
    from kubernetes.client.rest import ApiException

    return ApiException(status=_get(obj, "code"), reason=f"{_get(obj, 'reason')}: {_get(obj, 'message')}")


def _brief(e: BaseException) -> str:
    status = getattr(e, "status", None)
    if status is not None:
        return f"API error {status} {getattr(e, 'reason', '') or ''}".strip()
    return f"{type(e).__name__}: {e}"[:300]


# ------------------------------------------------------------------------------ entry point
def serve(kubeconfig: str, address: str, port: int = 53, *, domain: str = CLUSTER_DOMAIN) -> None:
    """Answer for ``domain`` on address:port (UDP and TCP) until SIGTERM or SIGINT."""
    records = ClusterRecords(domain)
    watcher = Watcher(kubeconfig, records)
    server = ClusterDNSServer(ClusterResolver(records, ready=watcher.ready), address, port)
    signals: list[int] = []  # appended to by the handlers: no lock there, which a handler could deadlock on
    previous = {s: signal.signal(s, lambda signum, _frame: signals.append(signum))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        watcher.start()
        log(f"listening on {address}:{server.port} (udp, tcp) for {records.domain}")
        _wait(lambda: bool(signals), watcher, records, f"{address}:{server.port}")
    finally:
        watcher.stop()
        server.stop()
        watcher.join(2)
        for s, handler in previous.items():
            signal.signal(s, handler)
    log(f"stopped ({signal.Signals(signals[0]).name})" if signals else "stopped")


def _wait(stopped, watcher: Watcher, records: ClusterRecords, where: str) -> None:
    """Block until ``stopped()``, saying once when the first full list has arrived."""
    announced = False
    while not stopped():
        if not announced and watcher.ready.is_set():
            log(f"ready on {where}: {len(records.names())} names under {records.domain}")
            announced = True
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m localcluster.dns", description=__doc__.splitlines()[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--address", default=NODE_IP)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--domain", default=CLUSTER_DOMAIN)
    args = ap.parse_args(argv)
    try:
        serve(args.kubeconfig, args.address, args.port, domain=args.domain)
    except OSError as e:
        log(f"cannot serve on {args.address}:{args.port}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
