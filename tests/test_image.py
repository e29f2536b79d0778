"""engine.Image and engine.extend.ImageBuildEngine: immutable specs with content-addressed tags,
a rendered Dockerfile and build context, a build through a working local builder recorded as
an image:index:Image resource; the seed's connector-image script with only its imports changed."""

import asyncio
import dataclasses
import importlib.util
import json
import re
import shutil
import sys

import pytest

import engine as flyte
from conftest import EXAMPLES, TASKS
from engine.errors import ConfigError
from engine.extend import ImageBuildEngine
from engine.image import NoBuilder, find_builder, render_context

APP = f"{TASKS}/image_app.py"
SEED = f"{EXAMPLES}/connector_image.py"
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
INSTRUCTIONS = {"FROM", "RUN", "ENV", "WORKDIR", "COPY", "LABEL"}


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined; each must be a known one."""
    out = []
    for line in re.sub(r"\s*\\\n\s*", " ", dockerfile).splitlines():
        if line and not line.startswith("#"):
            assert line.split()[0] in INSTRUCTIONS, line
            out.append(line)
    return out


SEED_DOCKERFILE = [
    f"FROM python:{PY}-slim-bookworm",
    "WORKDIR /root",
    'ENV PYTHONUNBUFFERED="1" PIP_DISABLE_PIP_VERSION_CHECK="1"',
    "RUN python -m pip install --no-cache-dir --pre 'flyteintegrations-connectors[bigquery]'",
]


def test_the_seed_script_renders_its_dockerfile_in_dry_run(engine):
    r = engine("image", "build", f"{SEED}:build_flyte_connector_image", "--dry-run",
               "-i", "registry=ghcr.io/my-org", "-i", "name=my-connector")
    assert r.returncode == 0, r.stderr
    lines = instructions(r.stdout)
    assert lines[:4] == SEED_DOCKERFILE
    tag = re.search(r"ghcr\.io/my-org/my-connector:([0-9a-f]{20})", r.stdout).group(1)
    assert lines[4] == f'LABEL org.opencontainers.image.ref.name="ghcr.io/my-org/my-connector:{tag}" ' \
                       f'dev.taskrig.image.tag="{tag}"'
    assert "image:index:Image  my-connector  create" in r.stderr  # the plan, on stderr
    assert not engine.state.exists()  # a dry run writes nothing

    # The same script in-process, exactly as written (builder="local"), previewed by a scope.
    seed = load(SEED, "connector_image")
    with ImageBuildEngine.scope(dry_run=True) as scope:
        asyncio.run(seed.build_flyte_connector_image(registry="ghcr.io/my-org", name="my-connector", builder="local"))
    (result,) = scope.results
    assert result.uri == f"ghcr.io/my-org/my-connector:{tag}" and result.dockerfile == r.stdout
    assert not result.built and [s.op for s in result.plan.steps] == ["create"]


def test_images_are_immutable_with_content_addressed_tags(tmp_path):
    app = load(APP, "image_app")
    base = app.base
    more = base.with_pip_packages("six")
    assert more is not base and len(more.layers) == len(base.layers) + 1  # a new image each time
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.name = "other"
    assert app.image.tag == app.same.tag  # the same spec (env vars in any order) names one image
    assert app.image.tag != app.changed.tag
    assert base.with_pip_packages("six", pre=True).tag != more.tag
    assert app.image.uri == f"localhost:5000/team/app:{app.image.tag}"
    # A source folder counts by its contents.
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    before = base.with_source_folder(src).tag
    assert base.with_source_folder(src).tag == before
    (src / "a.py").write_text("x = 2\n")
    assert base.with_source_folder(src).tag != before
    assert flyte.Image.from_base("python:3.12-slim").uri == "python:3.12-slim"  # nothing to build
    assert flyte.Image.from_base("python:3.12-slim").clone(name="mine").with_env_vars({"A": "1"}).uri.startswith("mine:")


def test_bad_specs_name_the_field():
    with pytest.raises(ConfigError, match=r"^registry: '<YOUR_REGISTRY>' is not a registry"):
        flyte.Image.from_debian_base(registry="<YOUR_REGISTRY>", name="x")
    with pytest.raises(ConfigError, match=r"^name: 'My Image' is not an image name"):
        flyte.Image.from_debian_base(name="My Image")
    with pytest.raises(ConfigError, match="clone"):
        flyte.Image.from_base("python:3.12").with_pip_packages("six").uri
    with pytest.raises(ConfigError, match="^python_version"):
        flyte.Image.from_debian_base(python_version=(2, 7))
    with pytest.raises(ConfigError, match="^with_source_folder"):
        flyte.Image.from_debian_base().with_source_folder("/no/such/folder")
    with pytest.raises(ConfigError, match="^builder: builder 'remote' is not available"):
        asyncio.run(ImageBuildEngine.build(flyte.Image.from_debian_base().with_pip_packages("six"), builder="remote"))


def test_every_layer_renders_and_the_context_holds_the_sources(engine, tmp_path):
    r = engine("image", "build", f"{APP}:image", "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = instructions(r.stdout)
    assert lines[0] == "FROM python:3.12-slim-bookworm"
    assert "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends " \
           "curl ca-certificates && rm -rf /var/lib/apt/lists/*" in lines
    assert "RUN python -m pip install --no-cache-dir --index-url https://pypi.org/simple six==1.16.0 'attrs>=23'" \
           in lines
    assert r'ENV APP_MODE="prod" GREETING="say \"hi\" to \$USER"' in lines
    copy = next(line for line in lines if line.startswith("COPY "))
    assert copy.endswith(" /app/image_src/") and lines[-2] == "RUN python /app/image_src/main.py"
    # The build context a builder gets: that Dockerfile, and the source folder under the COPY path.
    app = load(APP, "image_app")
    ctx = render_context(ImageBuildEngine.declaration(app.image).inputs, tmp_path / "ctx")
    assert (ctx / "Dockerfile").read_text() == r.stdout
    src = copy.split()[1].rstrip("/")
    assert (ctx / src / "main.py").read_text() == (TASKS / "image_src" / "main.py").read_text()
    assert (ctx / src / "pkg" / "__init__.py").exists()
    doc = json.loads(engine("image", "build", f"{APP}:image", "--dry-run", "--json").stdout)
    assert doc[0]["uri"] == app.image.uri and doc[0]["plan"]["steps"][0]["op"] == "create"


def test_a_second_build_is_no_change_and_a_changed_layer_a_replacement(engine, monkeypatch):
    """The plan against the state. The image is recorded as if built, and only docker is looked
    at (no engine here): with no builder to ask, a recorded image stands as recorded (a working
    builder would find it absent and plan a create). tests/test_image_build.py builds for real."""
    from engine.resource import Record
    from engine.snapshot import SnapshotManager
    from engine.state import State

    monkeypatch.setenv("ENGINE_IMAGE_BUILDER", "docker")
    engine.env["ENGINE_IMAGE_BUILDER"] = "docker"
    if find_builder()[0] is not None:
        pytest.skip("docker works here: this plan would read the image back from it")

    app = load(APP, "image_app")
    decl = ImageBuildEngine.declaration(app.image)
    state = State(engine.state)
    SnapshotManager(state, "images", None).imported(Record(
        urn=decl.urn, type=decl.type, stack="images", id=decl.physical_name, inputs=decl.inputs,
        outputs={"uri": app.image.uri}, ephemeral=False))
    state.close()
    same = json.loads(engine("image", "build", f"{APP}:same", "--dry-run", "--json").stdout)[0]["plan"]
    assert [s["op"] for s in same["steps"]] == ["same"] and same["summary"]["same"] == 1
    changed = json.loads(engine("image", "build", f"{APP}:changed", "--dry-run", "--json").stdout)[0]["plan"]
    (step,) = changed["steps"]
    assert step["op"] == "replace"
    assert step["diff"]["layers.03.pip[0]"] == {"old": "six==1.16.0", "new": "six==1.17.0"}  # lists element-wise
    assert "layers.03.pip[0]" in step["replace_keys"] and "tag" in step["replace_keys"]
    r = engine("image", "build", f"{APP}:same")  # an image already built needs no builder to say so
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == app.image.uri and "1 unchanged" in r.stderr


def test_without_a_working_builder_the_error_names_what_was_looked_for(engine, tmp_path, monkeypatch):
    docker = shutil.which("docker")
    if find_builder()[0] is not None:  # hide podman and buildah: a PATH with docker's CLI alone, if any
        (tmp_path / "bin").mkdir()
        if docker:
            (tmp_path / "bin" / "docker").symlink_to(docker)
        monkeypatch.setenv("PATH", str(tmp_path / "bin"))
        engine.env["PATH"] = str(tmp_path / "bin")
        if find_builder()[0] is not None:
            pytest.skip("docker with buildx and an engine works here")
    r = engine("image", "build", f"{APP}:tiny")
    assert r.returncode == 1
    assert "no working image builder for builder='local'; looked for: docker buildx" in r.stderr
    assert "podman: `podman` is not on PATH" in r.stderr or "podman info` failed" in r.stderr
    assert "buildah" in r.stderr and "dry_run=True" in r.stderr
    if docker:  # a docker CLI without an engine is not a builder
        assert "`docker info` failed" in r.stderr
    assert not engine.state.exists()  # refused before the state was touched
    with pytest.raises(NoBuilder, match="looked for"):
        asyncio.run(ImageBuildEngine.build(load(APP, "image_app").tiny, builder="local"))


# Real builds (podman and buildah, FROM the local base image, a pod running the result): tests/test_image_build.py
