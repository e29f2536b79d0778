"""Images the real builds of tests/test_image_build.py make: FROM the local host-copy Python
base (TASKRIG_BASE_IMAGE, made by `scripts/local-cluster.sh base-image`), as no registry is
reachable from the test machines."""

import os
from pathlib import Path

import engine

BASE = os.environ.get("TASKRIG_BASE_IMAGE", "localhost/taskrig-python:3.11")
SRC = Path(__file__).resolve().parents[1] / "data" / "image_build_src"

base = engine.Image.from_base(BASE).clone(name="taskrig-test-build")

# pip from PyPI and a source folder: what a pod of the local cluster then imports.
app = (base.with_pip_packages("six==1.17.0")
       .with_source_folder(SRC, dst="/app")
       .with_env_vars({"PYTHONPATH": "/app/image_build_src"}))

# No network needed: quick builds for the replace and failure cases.
tiny = base.clone(name="taskrig-test-tiny").with_env_vars({"TINY": "1"})
tiny_changed = base.clone(name="taskrig-test-tiny").with_env_vars({"TINY": "2"})
broken = (base.clone(name="taskrig-test-broken").with_env_vars({"STAGE": "before"})
          .with_commands(["python -c 'import no_such_module_here'"]))
