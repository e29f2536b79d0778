#!/usr/bin/env bash
# Installs everything the tests need (all extras, then system services they start) and runs
# the whole suite, slow cases included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh all,test
command -v java >/dev/null || { echo "installing Java for Spark" >&2; apt-get update -q && apt-get install -y -q default-jre-headless; }
# The kubernetes tests start a real kube-apiserver (../shared/k8s/apiserver, built once and
# cached): here they must run, not skip.
export TASKRIG_K8S_REQUIRED=${TASKRIG_K8S_REQUIRED:-1}
# Build it (once, ~10 min on 2 cores, then cached) before pytest, not inside a test's timeout.
apiserver=${TASKRIG_K8S_APISERVER:-../shared/k8s/apiserver}
if [ -x "$apiserver" ]; then "$apiserver" build; fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
