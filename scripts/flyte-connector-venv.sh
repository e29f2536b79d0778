#!/usr/bin/env bash
# Creates (if missing) a separate venv with Flyte's connector server, `c0` from flyte[connector],
# for the tests and the benchmark that compare it with ours. Separate, because flyte pins its own
# protobuf and flyteidl2. Prints the venv's python.   usage: scripts/flyte-connector-venv.sh [DIR]
set -euo pipefail
dir=${1:-/tmp/flyte-conn-venv}
py=${PYTHON:-python3}
if ! "$dir/bin/python" -c 'import flyte.connectors, flyte._bin.connect, grpc_health, prometheus_client, httpx' 2>/dev/null; then
  "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install -q 'flyte[connector]' httpx >&2
fi
echo "$dir/bin/python"
