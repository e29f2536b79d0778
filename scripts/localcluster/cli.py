"""``local-cluster.sh build|start|stop|status``: argparse, so it runs with the system Python."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .host import ClusterError, log


def _list(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="local-cluster.sh",
                                 description="The project's own single-node Kubernetes cluster.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the binaries once (cached under ~/.cache)")
    b.add_argument("--force", action="store_true", help="build again even if cached")
    s = sub.add_parser("start", help="start the node; prints KUBECONFIG=PATH once it is Ready")
    s.add_argument("--operators", type=_list, default=[], help="comma-separated: dask")
    s.add_argument("--crds", type=_list, default=None,
                   help="CRD families to load (dask,ray,spark,pytorch; default all)")
    s.add_argument("--watch", type=int, default=None, metavar="PID", help="stop the node once PID has exited")
    sub.add_parser("stop", help="stop the node and undo every change it made to the host")
    sub.add_parser("reload-image", help="load the task image of the code as it is now into the running node")
    sub.add_parser("base-image", help="make the host-copy Python base image (with pip) and load it into "
                                      "podman's/buildah's store; prints TASKRIG_BASE_IMAGE=NAME")
    st = sub.add_parser("status", help="exit 0 = ready, 3 = not running, 1 = unhealthy")
    st.add_argument("--json", action="store_true")
    w = sub.add_parser("watchdog")
    w.add_argument("pid", type=int)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            from .build import build
            from .node import prepare

            build(force=args.force)
            prepare()
        elif args.cmd == "start":
            from .node import start

            kc = start(args.operators, args.crds, args.watch)
            print(f"KUBECONFIG={kc}", flush=True)
        elif args.cmd == "reload-image":
            from .node import reload_images

            print(f"TASKRIG_TASK_IMAGE={reload_images()}", flush=True)
        elif args.cmd == "base-image":
            print(f"TASKRIG_BASE_IMAGE={base_image()}", flush=True)
        elif args.cmd == "stop":
            from .node import stop

            stop()
        elif args.cmd == "status":
            from .node import status

            code, doc = status()
            if args.json:
                print(json.dumps(doc, indent=1))
            else:
                for name, p in doc["processes"].items():
                    print(f"{name}: " + (f"running, pid {p['pid']}, rss {p['rss_mib']} MiB" if p else "not running"))
                print(f"egress guard rules: {doc['guard_rules']}")
                print("ready" if doc["ready"] else "not ready")
                if doc.get("kubeconfig"):
                    print(f"KUBECONFIG={doc['kubeconfig']}")
            return code
        elif args.cmd == "watchdog":
            return _watchdog(args.pid)
    except ClusterError as e:
        log(f"error: {e}")
        return 1
    return 0


def base_image() -> str:
    """The base image for `FROM` in builds here (no registry): written as an archive by
    images.python_base_image, loaded by the engine's builder (so this needs the project's venv)."""
    from . import images

    name, archive, digest = images.python_base_image()
    try:
        from engine.image import load_archive
    except ImportError as e:
        raise ClusterError(f"loading {name} needs the engine (scripts/install.sh): {e}") from e
    tool = load_archive(archive, name, images.BASE_DIGEST_LABEL, digest)
    log(f"base image {name} ({digest}) is in {tool}'s store")
    return name


def _watchdog(pid: int) -> int:
    from .host import alive
    from .node import stop

    while alive(pid):
        time.sleep(1)
    log(f"pid {pid} has exited: stopping the node")
    stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
