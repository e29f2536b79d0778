#!/usr/bin/env bash
# Installs everything the tests need (all extras, then system services they start) and runs
# the whole suite, slow cases included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh all,test
command -v java >/dev/null || { echo "installing Java for Spark" >&2; apt-get update -q && apt-get install -y -q default-jre-headless; }
# Image builds (tests/test_image_build.py): podman and buildah with the project's own image store
# (~/.cache/taskrig-images); here they must build, not skip.
bash scripts/image-builder.sh
export TASKRIG_IMAGE_BUILD_REQUIRED=${TASKRIG_IMAGE_BUILD_REQUIRED:-1}
# The kubernetes tests run against the project's own single-node cluster (scripts/local-cluster.sh,
# started by the tests themselves) or TASKRIG_K8S_KUBECONFIG: here they must run, not skip.
export TASKRIG_K8S_REQUIRED=${TASKRIG_K8S_REQUIRED:-1}
# Build its binaries (once, ~12 min on 2 cores, then cached) before pytest, not inside a test's timeout.
if [ -z "${TASKRIG_K8S_KUBECONFIG:-}" ]; then bash scripts/local-cluster.sh build; fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
