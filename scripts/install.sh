#!/usr/bin/env bash
# Creates .venv (if missing) and installs taskrig with the given extras into it.
# usage: scripts/install.sh EXTRAS        e.g. scripts/install.sh dask   or   scripts/install.sh all,test
# PyTorch goes first, pinned to the CPU wheel (2.13.0): any other version would pull GBs of CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-dask}
py=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [[ ",$extras," == *",all,"* || ",$extras," == *",pytorch,"* ]]; then
  .venv/bin/python -c 'import torch' 2>/dev/null || .venv/bin/python -m pip install -q torch==2.13.0
fi
.venv/bin/python -m pip install -q -e ".[${extras}]"
