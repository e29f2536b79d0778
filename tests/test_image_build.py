"""Real image builds with podman and buildah (scripts/image-builder.sh installs them), FROM the
local host-copy Python base (no registry is reachable): pip installs from PyPI inside the build,
a source folder is copied in, a second build is a no-change plan, the image runs in a pod of the
project's local cluster and imports what it was built with, and every image is removed again
(the builder's store and the cluster's containerd)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, TASKS
from engine.errors import ConfigError
from engine.image import NoBuilder, find_builder, image_id, remove_from_local_cluster, require_builder

APP = f"{TASKS}/image_build_app.py"


def _load(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location("image_build_app", APP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, name)


@pytest.fixture(scope="module")
def base_image():
    """The base image in the builder's store, made by the script users run; cached in
    ~/.cache/taskrig-k8s/images, loaded only when its content changed. Without a builder the
    tests skip, or fail where TASKRIG_IMAGE_BUILD_REQUIRED=1 (scripts/test.sh)."""
    tool, reasons = find_builder()
    if tool is None:
        msg = "no working image builder (bash scripts/image-builder.sh): " + "; ".join(reasons)
        if os.environ.get("TASKRIG_IMAGE_BUILD_REQUIRED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "local-cluster.sh"), "base-image"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    name = r.stdout.strip().splitlines()[-1].split("=", 1)[1]
    assert image_id(tool, name) is not None
    mp = pytest.MonkeyPatch()
    mp.setenv("TASKRIG_BASE_IMAGE", name)
    yield name
    mp.undo()


def _run_pod(k8s, name: str, image: str, argv: list[str], timeout: float = 90) -> tuple[str, str]:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(k8s.kubeconfig, client_configuration=cfg)
    core = client.CoreV1Api(client.ApiClient(cfg))
    core.create_namespaced_pod(k8s.namespace, {
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": image, "imagePullPolicy": "Never", "command": argv}]}})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, k8s.namespace)
        waiting = [s.state.waiting for s in pod.status.container_statuses or [] if s.state.waiting]
        if waiting and waiting[0].reason in ("ErrImageNeverPull", "InvalidImageName", "CreateContainerError"):
            raise AssertionError(f"pod {name}: {waiting[0].reason}: {waiting[0].message}")
        if pod.status.phase in ("Succeeded", "Failed"):
            return pod.status.phase, core.read_namespaced_pod_log(name, k8s.namespace)
        time.sleep(0.3)
    raise AssertionError(f"pod {name} did not finish within {timeout}s")


IMPORTS = ("import json, six, greet; print(json.dumps({'six': six.__version__, 'six_at': six.__file__, "
           "'greet': greet.greet('pod'), 'greet_at': greet.__file__}))")


@pytest.mark.slow
def test_pip_packages_and_a_source_folder_build_and_run_in_a_pod(engine, base_image, k8s):
    app = _load("app")
    tool = require_builder()
    try:
        t0 = time.monotonic()
        r = engine("image", "build", f"{APP}:app", "--json", "--load-local-cluster", timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        built_s = time.monotonic() - t0
        (doc,) = json.loads(r.stdout)  # stdout is the JSON document alone; the build's progress went to stderr
        assert doc["built"] and doc["uri"] == app.uri and doc["dockerfile"] == app.dockerfile()
        assert f"FROM {base_image}\n" in doc["dockerfile"]
        assert f"[{tool} build {app.uri}] STEP 2/5: RUN python -m pip install --no-cache-dir six==1.17.0" in r.stderr
        (row,) = engine.resources()
        assert row["outputs"]["builder"] == tool and row["outputs"]["image_id"] == image_id(tool, app.uri)

        again = engine("image", "build", f"{APP}:app", "--json", timeout=120)
        assert again.returncode == 0, again.stderr
        (doc2,) = json.loads(again.stdout)
        assert not doc2["built"] and [s["op"] for s in doc2["plan"]["steps"]] == ["same"]
        assert f"[{tool} build" not in again.stderr  # nothing was run

        phase, log = _run_pod(k8s, "built", app.uri, ["python3", "-c", IMPORTS])
        assert phase == "Succeeded", log
        out = json.loads(log.strip().splitlines()[-1])
        assert out["six"] == "1.17.0" and out["greet"] == "hello from a source folder, pod"
        assert out["greet_at"] == "/app/image_build_src/greet.py"
        assert out["six_at"].endswith("/site-packages/six.py")  # installed by the build's pip, not the host's
        print(f"\n[test_image_build] {tool} build with pip + load into the cluster: {built_s:.1f}s")
    finally:
        remove_from_local_cluster(app.uri)
        d = engine("destroy", "images")
    assert d.returncode == 0, d.stderr
    assert engine.resources() == [] and image_id(tool, app.uri) is None


@pytest.mark.slow
def test_buildah_builds_replaces_and_names_the_failing_step(engine, base_image):
    """The same provider through buildah (bud, inspect, rmi): a changed layer is a new tag and
    the old image goes; a failing RUN names the builder, the step and the kept log."""
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (bash scripts/image-builder.sh)")
    env = {"ENGINE_IMAGE_BUILDER": "buildah"}
    tiny, changed = _load("tiny"), _load("tiny_changed")
    try:
        first = json.loads(engine("image", "build", f"{APP}:tiny", "--json", env=env, timeout=300).stdout)[0]
        assert first["built"] and image_id("buildah", tiny.uri) is not None
        assert engine.resources()[0]["outputs"]["builder"] == "buildah"
        second = json.loads(engine("image", "build", f"{APP}:tiny_changed", "--json", env=env, timeout=300).stdout)[0]
        assert second["built"] and [s["op"] for s in second["plan"]["steps"]] == ["replace"]
        assert image_id("buildah", changed.uri) is not None and image_id("buildah", tiny.uri) is None

        r = engine("image", "build", f"{APP}:broken", env=env, timeout=300)
        assert r.returncode == 1
        assert ("`buildah bud` of taskrig-test-broken:" in r.stderr
                and "failed at STEP 3/4: RUN python -c 'import no_such_module_here'" in r.stderr), r.stderr[-3000:]
        assert "ModuleNotFoundError: No module named 'no_such_module_here'" in r.stderr
        log = Path(r.stderr.split("the build log (", 1)[1].split(")", 1)[0])
        assert "STEP 3/4" in log.read_text()  # kept for reading
        assert [x["outputs"]["uri"] for x in engine.resources()] == [changed.uri]  # the failed one: not recorded
    finally:
        d = engine("destroy", "images", env=env)
    assert d.returncode == 0, d.stderr
    assert engine.resources() == [] and image_id("buildah", changed.uri) is None


def test_the_builder_can_be_chosen_and_a_bad_choice_is_named(monkeypatch):
    monkeypatch.setenv("ENGINE_IMAGE_BUILDER", "kaniko")
    with pytest.raises(ConfigError, match=r"^builder: ENGINE_IMAGE_BUILDER='kaniko' is not one of docker, podman"):
        find_builder()
    monkeypatch.setenv("ENGINE_IMAGE_BUILDER", "docker")  # a docker CLI without an engine, or none: not a builder
    tool, reasons = find_builder()
    if tool is None:
        with pytest.raises(NoBuilder, match=r"looked for: docker buildx: .*image-builder\.sh"):
            require_builder()
