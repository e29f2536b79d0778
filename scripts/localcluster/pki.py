"""The node's certificates and tokens (openssl): a CA, the API server's serving certificate
for every name a client uses (host, pods through the kubernetes Service), the service-account
signing key, and one admin token (system:masters) that the node's own components share."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from . import paths
from .host import run

_CNF = """[req]
distinguished_name = dn
prompt = no
[dn]
CN = taskrig-local-cluster
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {sans}
"""


def sans() -> str:
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           f"kubernetes.default.svc.{paths.CLUSTER_DOMAIN}"]
    ips = ["127.0.0.1", paths.NODE_IP, paths.KUBERNETES_SERVICE_IP]
    return ", ".join([f"IP:{i}" for i in ips] + [f"DNS:{d}" for d in dns])


def make(node: Path) -> Path:
    d = node / "pki"
    if (d / "tokens.csv").is_file():
        return d
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    (d / "openssl.cnf").write_text(_CNF.format(sans=sans()))
    ossl = lambda *a: run(["openssl", *a], cwd=d)  # noqa: E731
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    ossl("req", "-x509", "-new", "-config", "openssl.cnf", "-extensions", "v3_ca", "-key", "ca.key", "-sha256",
         "-days", "3650", "-subj", f"/CN=taskrig-local-cluster-ca-{secrets.token_hex(4)}", "-out", "ca.crt")
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "apiserver.key")
    ossl("req", "-new", "-config", "openssl.cnf", "-key", "apiserver.key", "-subj", "/CN=kube-apiserver",
         "-out", "apiserver.csr")
    ossl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial",
         f"0x{secrets.token_hex(8)}", "-sha256", "-days", "3650", "-extfile", "openssl.cnf",
         "-extensions", "v3_server", "-out", "apiserver.crt")
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key")
    ossl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub")
    token = secrets.token_hex(24)
    (d / "token").write_text(token + "\n")
    (d / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
    for f in d.iterdir():
        f.chmod(0o600)
    (d / "ca.crt").chmod(0o644)
    return d


def kubeconfig(node: Path, server: str) -> Path:
    d = node / "pki"
    ca = base64.b64encode((d / "ca.crt").read_bytes()).decode()
    token = (d / "token").read_text().strip()
    text = f"""apiVersion: v1
kind: Config
clusters:
- name: taskrig-local
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: taskrig-local
  context:
    cluster: taskrig-local
    user: admin
    namespace: default
current-context: taskrig-local
"""
    f = node / "kubeconfig"
    tmp = node / ".kubeconfig.tmp"
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(f)
    return f
