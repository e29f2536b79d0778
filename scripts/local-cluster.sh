#!/usr/bin/env bash
# The project's own single-node Kubernetes cluster, built from Debian 12's packages alone.
# usage: scripts/local-cluster.sh build                 build binaries and images once (cached, ~12 min)
#        scripts/local-cluster.sh start [--operators dask] [--watch PID]
#                                                       start the node; prints KUBECONFIG=PATH once Ready
#        scripts/local-cluster.sh stop                  stop it and undo every change to the host
#        scripts/local-cluster.sh reload-image          load the task image of the code as it is now
#        scripts/local-cluster.sh status [--json]       what runs; exit 0 = ready, 3 = stopped, 1 = unhealthy
#        scripts/local-cluster.sh base-image            the host-copy Python base image for builds (podman/buildah)
# Needs root. The code is scripts/localcluster/ (Python, run with the project's venv if present).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
py=$root/.venv/bin/python
[ -x "$py" ] || py=python3
# -P: the working directory is not on sys.path, so a checkout's build metadata (taskrig.egg-info,
# listing the files of its last `pip install -e`) never stands in for the installed distribution
PYTHONPATH=$root/scripts${PYTHONPATH:+:$PYTHONPATH} exec "$py" -P -m localcluster "$@"
