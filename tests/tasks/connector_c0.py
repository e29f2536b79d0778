"""Run Flyte's connector server (``c0``) bound to 127.0.0.1 only.

``c0`` listens on ``[::]:PORT`` and serves its metrics on 0.0.0.0; the tests and the
benchmark keep every socket on the loopback, so this starts the same ``c0`` command with those
two binds narrowed. Run it with the Python of the venv that has ``flyte[connector]``:

    /tmp/flyte-conn-venv/bin/python tests/tasks/connector_c0.py --port P --prometheus_port M --modules mod
"""

import sys

import grpc
import prometheus_client

_add_port = grpc.aio._server.Server.add_insecure_port


def _loopback_port(self, address):
    return _add_port(self, address.replace("[::]:", "127.0.0.1:"))


grpc.aio._server.Server.add_insecure_port = _loopback_port
_start_http = prometheus_client.start_http_server
prometheus_client.start_http_server = lambda port, addr="127.0.0.1", *a, **kw: _start_http(port, "127.0.0.1", *a, **kw)

if __name__ == "__main__":
    from flyte._bin.connect import main

    sys.exit(main())
