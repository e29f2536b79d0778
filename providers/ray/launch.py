"""``python providers/ray/launch.py READY_FILE GCS_ADDRESS HEAD_TEMP_DIR [ray start options...]``:
one Ray node (HEAD_TEMP_DIR is ``-`` for the head itself).

This is ``ray start --block`` plus what the local backend needs and Ray's CLI lacks. It patches
a few of Ray's internals in this process only; the processes the node starts are plain Ray.

- Loopback stays loopback. Ray rewrites ``127.0.0.1`` into the machine's external address
  (``resolve_ip_for_localhost``), which would put the cluster on the network. The provider
  starts every node with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, under which Ray treats
  localhost as loopback in every process the node starts; only this process has to undo the
  side effect of that switch that forbids joining a cluster.
- ``--ray-client-server-port=0`` means no Ray Client server (Ray would start one on 10001, a
  port that clashes between clusters, and a Python process the task does not need).
- A worker node starts as soon as the GCS serves, not once the head is registered. `ray start`
  waits for the head's registration (polling every 2 s) only to learn the head's temp and
  session dirs; the provider knows the first and the GCS has the session name from its first
  moment, so the two start-ups overlap instead of running one after the other.
- Readiness. ``ray start`` returns before the GCS lists the node as alive. A thread here polls
  the GCS until this node (matched by its temp dir) is ALIVE, then writes READY_FILE, so the
  provider can promise the task that ``ray.nodes()`` shows every node it asked for.

``--block`` keeps this process as the parent of the node's processes: when any of them dies it
stops the rest and exits, so "launcher alive" is "node alive", which is what ``read`` checks.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

# Run by path (no package import, so no engine import cost): this folder must not shadow
# top-level modules (config, plugin, local) for Ray.
if sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
    del sys.path[0]

LOOPBACK = ("localhost", "127.0.0.1", "::1")
POLL = 0.05


def _reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _poll(gcs_address: str, ask, deadline: float = float("inf")):
    """``ask(client)`` every 50 ms until it returns something (a GCS that is still starting is
    simply asked again); None once the deadline passes."""
    from ray._raylet import GcsClient

    client = None
    while time.monotonic() < deadline:
        if client is not None or _reachable(gcs_address):
            try:
                client = client or GcsClient(address=gcs_address)
                answer = ask(client)
                if answer:
                    return answer
            except Exception:  # noqa: BLE001 - not serving yet
                pass
        time.sleep(POLL)
    return None


def _signal_ready(ready_file: str, gcs_address: str, temp_dir: str) -> None:
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    def this_node(client):
        for node_id, info in client.get_all_node_info(timeout=5).items():
            if info.state == GcsNodeInfo.GcsNodeState.ALIVE and os.path.realpath(info.temp_dir) == temp_dir:
                return {"node_id": node_id.hex(), "node_name": info.node_name}
        return None

    found = _poll(gcs_address, this_node)
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(found, f)
    os.replace(tmp, ready_file)


def _join_early(gcs_address: str, head_temp_dir: str) -> None:
    """Let a worker's `ray start` through without waiting for the head's registration: once the
    GCS serves the session name, answer its head lookup with the head's dirs."""
    import ray._private.node as node
    import ray._private.ray_constants as ray_constants
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    session = _poll(gcs_address, lambda c: c.internal_kv_get(b"session_name", ray_constants.KV_NAMESPACE_SESSION),
                    time.monotonic() + 120)
    if session is None:
        return  # `ray start` will wait and report on its own
    head = GcsNodeInfo(temp_dir=head_temp_dir, session_dir=os.path.join(head_temp_dir, session.decode()),
                       state=GcsNodeInfo.GcsNodeState.ALIVE, is_head_node=True)
    lookup = node.get_all_node_info_until_retrieved

    def head_first(gcs_client, node_selectors=None, **kw):
        if node_selectors and all(s.is_head_node for s in node_selectors):
            return [head]
        return lookup(gcs_client, node_selectors=node_selectors, **kw)

    node.get_all_node_info_until_retrieved = head_first


def main(argv: list[str]) -> None:
    ready_file, gcs_address, head_temp_dir, options = argv[0], argv[1], argv[2], argv[3:]
    temp_dir = next(o.split("=", 1)[1] for o in options if o.startswith("--temp-dir="))

    import ray._private.ray_constants as ray_constants
    import ray._private.services as services
    import ray.scripts.scripts as scripts

    ray_constants.ENABLE_RAY_CLUSTER = True  # allow `ray start --address` (a multi-node cluster)
    services.resolve_ip_for_localhost = lambda host: "127.0.0.1" if host in LOOPBACK else host

    if "--ray-client-server-port=0" in options:
        options = [o for o in options if o != "--ray-client-server-port=0"]
        scripts.get_ray_client_dependency_error = lambda: "the Ray Client server is off for this node"

    threading.Thread(target=_signal_ready, args=(ready_file, gcs_address, os.path.realpath(temp_dir)),
                     daemon=True, name="ready").start()
    if head_temp_dir != "-":
        try:
            _join_early(gcs_address, head_temp_dir)
        except (AttributeError, ImportError, TypeError, ValueError):
            pass  # a Ray whose internals differ: `ray start` waits for the head as it always does

    sys.argv = ["ray", "start", "--block", *options]
    scripts.main()


if __name__ == "__main__":
    main(sys.argv[1:])
