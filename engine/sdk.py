"""The user-facing SDK, with Flyte 2's names: TaskEnvironment, Resources, ReusePolicy, Secret."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import inspect
import math
import re
from datetime import timedelta
from pathlib import PurePath
from typing import Any, Callable, Optional, Union

import pydantic
from pydantic import ConfigDict, field_validator
from pydantic.dataclasses import dataclass as pdataclass, is_pydantic_dataclass

from .errors import ConfigError
from .lock import check_stack_name

_STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

_MEM_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
              "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_MEM_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtKMGT]i?)?[bB]?\s*$")
_CPU_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)(m?)\s*$")


def parse_memory(value: Union[int, str, None]) -> Optional[int]:
    """Kubernetes quantities (``250Mi``, ``4Gi``, ``1G``) or bytes, to bytes."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value)
    m = _MEM_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a memory quantity (e.g. 250Mi, 4Gi)")
    return int(float(m.group(1)) * _MEM_UNITS[(m.group(2) or "").lower()])


def parse_cpu(value: Union[int, float, str, None]) -> Optional[float]:
    """CPU count from ``2``, ``0.5`` or ``500m``."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = _CPU_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a CPU quantity (e.g. 2, 0.5, 500m)")
    return float(m.group(1)) / (1000 if m.group(2) else 1)


@pdataclass(config=_STRICT)
class Resources:
    """What a task or a cluster member asks for, as in Flyte 2."""

    cpu: Union[int, float, str, None] = None
    memory: Union[int, str, None] = None
    gpu: Union[int, str, None] = None
    disk: Union[int, str, None] = None
    shm: Union[int, str, None] = None

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v):
        c = parse_cpu(v)
        if c is not None and c <= 0:
            raise ValueError("must be greater than 0")
        return v

    @field_validator("memory", "disk", "shm")
    @classmethod
    def _mem(cls, v):
        m = parse_memory(v)
        if m is not None and m <= 0:
            raise ValueError("must be greater than 0")
        return v

    def cpu_count(self) -> Optional[float]:
        return parse_cpu(self.cpu)

    def threads(self, default: int = 1) -> int:
        c = self.cpu_count()
        return max(1, math.ceil(c)) if c else default

    def memory_bytes(self) -> Optional[int]:
        return parse_memory(self.memory)

    def to_dict(self) -> dict:
        return {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory), ("gpu", self.gpu),
                                  ("disk", self.disk), ("shm", self.shm)) if v is not None}


@pdataclass(config=_STRICT)
class ReusePolicy:
    """Keep the environment's resources between runs; destroy them after ``idle_ttl`` unused."""

    idle_ttl: Union[int, float, timedelta] = 300
    replicas: Union[int, tuple] = 1
    concurrency: int = 1

    @field_validator("idle_ttl")
    @classmethod
    def _ttl(cls, v):
        secs = v.total_seconds() if isinstance(v, timedelta) else float(v)
        if secs <= 0:
            raise ValueError("must be a positive number of seconds")
        return v

    @property
    def ttl_seconds(self) -> float:
        return self.idle_ttl.total_seconds() if isinstance(self.idle_ttl, timedelta) else float(self.idle_ttl)


_ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@pdataclass(config=_STRICT)
class Secret:
    """A reference to a secret, resolved at provision time; its value is never recorded.

    As in Flyte 2: the task sees it as the environment variable ``as_env_var`` (default
    ``GROUP_KEY``/``KEY``, upper case, ``-`` as ``_``), unless ``mount`` asks for a file
    instead. On the local backend the file lives under a private temporary directory (the
    mount path re-rooted there, then ``GROUP/KEY``) whose path is in ``<NAME>_FILE``.
    """

    key: str
    group: Optional[str] = None
    mount: Union[str, PurePath, None] = None
    as_env_var: Optional[str] = None

    @field_validator("key", "group")
    @classmethod
    def _name(cls, v):
        if v is not None and (not v or "/" in v or v in (".", "..")):
            raise ValueError(f"{v!r} cannot name a secret (no '/', not empty)")
        return v

    @field_validator("mount")
    @classmethod
    def _mount(cls, v):
        if v is not None and ".." in PurePath(str(v)).parts:
            raise ValueError(f"{str(v)!r}: a mount path cannot contain '..'")
        return v

    @field_validator("as_env_var")
    @classmethod
    def _env(cls, v):
        if v is not None and not _ENV_NAME_RE.match(v):
            raise ValueError(f"{v!r} is not an environment variable name ({_ENV_NAME_RE.pattern})")
        return v

    @property
    def default_env_var(self) -> str:
        return (f"{self.group}_{self.key}" if self.group else self.key).replace("-", "_").replace(".", "_").upper()

    @property
    def env_var(self) -> Optional[str]:
        """The variable that holds the value in the task: none for a mounted secret unless asked."""
        return self.as_env_var or (None if self.mount else self.default_env_var)

    @property
    def ref(self) -> str:
        """How messages name it: ``group/key`` or ``key`` (never the value)."""
        return f"{self.group}/{self.key}" if self.group else self.key


def config_error(e: pydantic.ValidationError, root: str = "") -> ConfigError:
    """One line naming the field path of the first error (``plugin_config.workers.number_of_workers``)."""
    err = e.errors()[0]
    path = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    field = ".".join(p for p in (root, path) if p)
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return ConfigError(f"{err['msg']}{more}", field or None)


def validate_config(config: Any, root: str = "plugin_config") -> None:
    """Validate a plugin config written as plain dataclasses (Flyte's style) as one tree, so an
    error names the whole path: ``plugin_config.workers.number_of_workers``. Constraints are
    ``Annotated[int, Field(ge=1)]`` on the fields; pydantic models validated themselves."""
    if dataclasses.is_dataclass(config) and not is_pydantic_dataclass(type(config)):
        try:
            _adapter(type(config)).validate_python(dataclasses.asdict(config))
        except pydantic.ValidationError as e:
            raise config_error(e, root) from None


@functools.lru_cache(maxsize=None)
def _adapter(config_type: type) -> pydantic.TypeAdapter:
    # Building an adapter builds its schema (~1 ms): a program with 200 components pays it once.
    return pydantic.TypeAdapter(config_type)


def _validate(cls, value, field):
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, dict):
        try:
            return cls(**value)
        except pydantic.ValidationError as e:
            raise config_error(e, field) from None
    raise ConfigError(f"expected {cls.__name__}, got {type(value).__name__}", field)


class TaskEnvironment:
    """A named bundle of image, resources and plugin config; one environment is one stack."""

    def __init__(self, name: str, image: Any = None, resources: Resources | dict | None = None,
                 env_vars: dict[str, str] | None = None, secrets: Any = None, plugin_config: Any = None,
                 reusable: ReusePolicy | dict | None = None, backend: str | None = None,
                 depends_on: list["TaskEnvironment"] | None = None, description: str | None = None,
                 cache: Any = None):
        self.name = check_stack_name(name)
        self.image = image
        self.resources = _validate(Resources, resources, "resources")
        self.env_vars = dict(env_vars or {})
        for k, v in self.env_vars.items():
            if not isinstance(v, str):
                raise ConfigError(f"must be a string, got {type(v).__name__}", f"env_vars.{k}")
        if isinstance(secrets, (str, Secret)):
            secrets = [secrets]
        self.secrets = [Secret(key=s) if isinstance(s, str) else s for s in (secrets or [])]
        self.plugin_config = plugin_config
        configs = self.plugin_configs
        for i, cfg in enumerate(configs):
            validate_config(cfg, "plugin_config" + (f"[{i}]" if len(configs) > 1 else ""))
        self.reusable = _validate(ReusePolicy, reusable, "reusable")
        if backend is not None and backend not in ("local", "kubernetes"):
            raise ConfigError(f"unknown backend {backend!r} (local, kubernetes)", "backend")
        self.backend = backend
        self.depends_on = list(depends_on or [])
        self.description = description
        self.cache = cache
        self.tasks: dict[str, "Task"] = {}

    @property
    def plugin_configs(self) -> list[Any]:
        pc = self.plugin_config
        if pc is None:
            return []
        return list(pc) if isinstance(pc, (list, tuple)) else [pc]

    def task(self, fn: Callable | None = None, *, name: str | None = None, timeout: float | timedelta | None = None,
             retries: int = 0, **_flyte_options: Any):
        """``@env.task`` or ``@env.task(timeout=...)`` on a sync or async function."""

        def wrap(f: Callable) -> Task:
            t = Task(self, f, name=name, timeout=timeout, retries=retries)
            self.tasks[t.short_name] = t
            return t

        return wrap(fn) if fn is not None else wrap

    def __repr__(self) -> str:
        return f"TaskEnvironment(name={self.name!r}, plugin_config={self.plugin_config!r})"


class Task:
    """A function bound to an environment. Calling it outside a run starts one."""

    def __init__(self, env: TaskEnvironment, fn: Callable, name: str | None = None,
                 timeout: float | timedelta | None = None, retries: int = 0):
        self.env = env
        self.fn = fn
        self.short_name = name or fn.__name__
        self.name = f"{env.name}.{self.short_name}"
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.retries = retries
        self.is_async = inspect.iscoroutinefunction(fn)
        self.own_configs: list[Any] = []  # added by decorators such as providers.wandb.wandb_init
        functools.update_wrapper(self, fn)

    @property
    def plugin_configs(self) -> list[Any]:
        """The environment's plugin configs, then this task's own."""
        return self.env.plugin_configs + self.own_configs

    def with_plugin_config(self, config: Any) -> "Task":
        """A new task, same function and environment, with one more plugin config of its own
        (Flyte's outermost decorators, ``@wandb_init`` over ``@env.task``). It replaces this
        one in the environment's task table, as the decorated name replaces it in the module."""
        validate_config(config, f"{self.name}.plugin_config")
        t = copy.copy(self)
        t.own_configs = [*self.own_configs, config]
        self.env.tasks[t.short_name] = t
        return t

    def bind(self, *args: Any, partial: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Positional and keyword arguments as named inputs, checked against the signature.
        ``partial``: inputs may be missing (a preview, which plans without running the body),
        never unknown."""
        try:
            sig = inspect.signature(self.fn)
            bound = sig.bind_partial(*args, **kwargs) if partial else sig.bind(*args, **kwargs)
        except TypeError as e:
            raise ConfigError(f"{e}", f"inputs of {self.name}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def call_body(self, inputs: dict[str, Any]) -> Any:
        """Run the body to completion in this thread (an async body gets its own loop)."""
        if self.is_async:
            return asyncio.run(self.fn(**inputs))
        return self.fn(**inputs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .lifecycle import call_task

        return call_task(self, self.bind(*args, **kwargs))

    def __repr__(self) -> str:
        return f"Task({self.name})"
