"""Loading a TARGET (``path/to/file.py:task`` or ``package.module:task``) and its inputs."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pydantic

from .errors import ConfigError, TargetError
from .sdk import Task, config_error


def load_module(spec: str):
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise TargetError(f"no such file: {spec}", "TARGET")
        name = path.stem if path.stem.isidentifier() else "engine_target"
        sys.path.insert(0, str(path.resolve().parent))
        mspec = importlib.util.spec_from_file_location(name, path.resolve())
        module = importlib.util.module_from_spec(mspec)
        sys.modules[name] = module
        _exec(lambda: mspec.loader.exec_module(module), spec)
        _pickle_by_value(module)
        return module
    if "/" in spec:
        raise TargetError(f"no such file: {spec}", "TARGET")
    if importlib.util.find_spec(spec.split(".")[0]) is None:
        raise TargetError(f"no module named {spec!r}", "TARGET")
    return _exec(lambda: importlib.import_module(spec), spec)


def _exec(fn, spec: str):
    """Run the user's module; a config it builds that fails validation is bad input (exit 2)."""
    try:
        return fn()
    except pydantic.ValidationError as e:
        raise config_error(e, e.title) from None  # built inside the module: name the class
    except ConfigError:
        raise
    except Exception as e:
        raise TargetError(f"importing {spec} failed: {type(e).__name__}: {e}", "TARGET") from e


def _pickle_by_value(module) -> None:
    """Functions of a file loaded by path are shipped to cluster workers by value: the workers
    cannot import a module that only exists as a path on the engine's side."""
    try:
        import cloudpickle
    except ImportError:
        return
    cloudpickle.register_pickle_by_value(module)


def is_program(target: str) -> bool:
    """A folder (or its Pulumi.yaml) names a Pulumi program rather than a task."""
    p = Path(target)
    return ":" not in target and (p.is_dir() or p.name in ("Pulumi.yaml", "Pulumi.yml"))


def load_target(target: str) -> Task:
    if ":" not in target:
        raise TargetError(f"{target!r} is not FILE.py:TASK or MODULE:TASK", "TARGET")
    spec, _, attr = target.rpartition(":")
    module = load_module(spec)
    obj = getattr(module, attr, None)
    if obj is None:
        raise TargetError(f"{spec} has no task named {attr!r}", "TARGET")
    if not isinstance(obj, Task):
        raise TargetError(f"{spec}:{attr} is a {type(obj).__name__}, not an @env.task", "TARGET")
    return obj


def parse_inputs(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``NAME=VALUE``: VALUE as JSON when it parses, else the string itself."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.isidentifier():
            raise ConfigError(f"{pair!r} is not NAME=VALUE", "-i")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    return out
