#!/usr/bin/env bash
# The main job on the embedded default (local backend, SQLite state): installs taskrig with
# Dask, previews the seed's Dask example, then runs it (provision 4 workers, run, tear down).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh dask
.venv/bin/engine preview examples/dask_example.py:process_data
.venv/bin/engine up examples/dask_example.py:process_data -i 'data=[1,2,3,4,5,6,7,8]'
.venv/bin/engine runs
