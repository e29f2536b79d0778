"""A tiny model-training service on 127.0.0.1, for the connector example and the tests.

    POST /            {"dataset_uri": ..., "epochs": N}  -> {"job_id": ...}
    GET  /<job_id>    -> {"status": "running" | "finished" | "failed" | "cancelled", "results": ...}
    DELETE /<job_id>  -> 200 (also for a finished or unknown job)
    GET  /_stats      -> how many POST, GET and DELETE it saw, and every job

A job trains for ``epochs * --epoch-seconds`` (or ``seconds`` from the body) and then writes a
model file whose path is its ``results``. ``"fail": true`` makes it fail; ``"flaky_gets": N``
answers its first N GETs with 503, for the engine's retry of transient errors.

The seed example's endpoint is ``https://example-mltrain.com``, and it must run with only its
imports changed; so the service is also an HTTPS proxy that never leaves the machine: it
answers ``CONNECT example-mltrain.com:443`` itself, with a certificate it makes for that name.
Run it, then export what it prints (HTTPS_PROXY, SSL_CERT_FILE, NO_PROXY) for ``engine up``:

    python examples/mltrain_service.py --dir /tmp/mltrain &
    export $(head -1 /tmp/mltrain/env)
    engine up examples/connector_example.py:train_model -i epochs=3
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOSTNAME = "example-mltrain.com"


class Jobs:
    def __init__(self, folder: Path, epoch_seconds: float):
        self.folder, self.epoch_seconds = folder, epoch_seconds
        self.jobs: dict[str, dict] = {}
        self.counts = {"POST": 0, "GET": 0, "DELETE": 0}
        self.lock = threading.Lock()

    def create(self, body: dict) -> dict:
        job_id = uuid.uuid4().hex[:12]
        seconds = float(body.get("seconds") or float(body.get("epochs") or 1) * self.epoch_seconds)
        with self.lock:
            self.counts["POST"] += 1
            self.jobs[job_id] = {"job_id": job_id, "status": "running", "started": time.time(), "seconds": seconds,
                                 "dataset_uri": body.get("dataset_uri"), "epochs": body.get("epochs"),
                                 "fail": bool(body.get("fail")), "flaky_gets": int(body.get("flaky_gets", 0))}
        return {"job_id": job_id}

    def get(self, job_id: str) -> tuple[int, dict]:
        with self.lock:
            self.counts["GET"] += 1
            job = self.jobs.get(job_id)
            if job is None:
                return 404, {"error": f"no job {job_id}"}
            if job["flaky_gets"] > 0:
                job["flaky_gets"] -= 1
                return 503, {"error": "try again"}
            if job["status"] == "running" and time.time() - job["started"] >= job["seconds"]:
                if job["fail"]:
                    job["status"], job["error"] = "failed", "the loss diverged"
                else:
                    model = self.folder / f"model-{job_id}.txt"
                    model.write_text(f"trained on {job['dataset_uri']} for {job['epochs']} epochs\n")
                    job["status"], job["results"] = "finished", str(model)
            return 200, dict(job)

    def delete(self, job_id: str) -> tuple[int, dict]:
        with self.lock:
            self.counts["DELETE"] += 1
            job = self.jobs.get(job_id)
            if job is not None and job["status"] == "running":
                job["status"] = "cancelled"
            return 200, {"job_id": job_id, "status": job["status"] if job else "unknown"}

    def stats(self) -> dict:
        with self.lock:
            return {"posts": self.counts["POST"], "gets": self.counts["GET"], "deletes": self.counts["DELETE"],
                    "jobs": {k: dict(v) for k, v in self.jobs.items()}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "Server"

    def log_message(self, fmt, *args):  # quiet: the tests read the stats, not a log
        pass

    def _send(self, code: int, doc: dict) -> None:
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}") if n else {}

    def _authorized(self) -> bool:
        """With --token-env, every job call must carry that token (the secrets tests)."""
        token = self.server.token
        if token is None or self.headers.get("Authorization") == f"Bearer {token}":
            return True
        self._send(401, {"error": "missing or wrong bearer token"})
        return False

    def do_POST(self):
        if self._authorized():
            self._send(200, self.server.jobs.create(self._body()))

    def do_GET(self):
        path = self.path.strip("/")
        if path != "_stats" and not self._authorized():
            return
        if path == "_stats":
            self._send(200, self.server.jobs.stats())
        else:
            self._send(*self.server.jobs.get(path))

    def do_DELETE(self):
        if self._authorized():
            self._send(*self.server.jobs.delete(self.path.strip("/")))

    def do_CONNECT(self):
        """A proxy tunnel to the training host: served here, over TLS with our own certificate."""
        host = self.path.split(":")[0]
        if host != HOSTNAME or self.server.tls is None:
            self.send_error(403, f"this proxy only serves {HOSTNAME}")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        try:
            tls = self.server.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            return
        Handler(tls, self.client_address, self.server)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, jobs: Jobs, tls: ssl.SSLContext | None, token: str | None = None):
        super().__init__(address, Handler)
        self.jobs, self.tls, self.token = jobs, tls, token


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for HOSTNAME (openssl, from Debian's base system)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={HOSTNAME}",
                        "-addext", f"subjectAltName=DNS:{HOSTNAME}"], check=True, capture_output=True)
    return cert, key


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--dir", default=".mltrain", help="where models, the certificate and the env file go")
    ap.add_argument("--epoch-seconds", type=float, default=0.5)
    ap.add_argument("--token-env", default=None, help="require the bearer token in this environment variable")
    ap.add_argument("--max-lifetime", type=float, default=3600.0, help="exit after this many seconds")
    args = ap.parse_args(argv)
    folder = Path(args.dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    tls = None
    try:
        cert, key = make_certificate(folder)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
    except (OSError, subprocess.CalledProcessError):
        cert = None  # no openssl: plain HTTP only
    token = os.environ[args.token_env] if args.token_env else None
    server = Server(("127.0.0.1", args.port), Jobs(folder, args.epoch_seconds), tls, token)
    port = server.server_address[1]
    env = {"HTTPS_PROXY": f"http://127.0.0.1:{port}", "NO_PROXY": "127.0.0.1,localhost"}
    if cert:
        env["SSL_CERT_FILE"] = str(cert)
    (folder / "env").write_text(" ".join(f"{k}={v}" for k, v in env.items()) + "\n")
    print(json.dumps({"port": port, "url": f"http://127.0.0.1:{port}", "env": env}), flush=True)
    threading.Timer(args.max_lifetime, server.shutdown).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        os._exit(0)  # the lifetime timer thread must not keep the process up


if __name__ == "__main__":
    main()
