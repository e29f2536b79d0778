"""Each run's own environment variables, without touching another run's.

A run's variables (the environment's ``env_vars``, its secrets, what plugins attach such as
``DASK_SCHEDULER_ADDRESS``) used to be written into the process-wide ``os.environ``: two runs
in threads of one process (parallel agent tool calls) saw each other's values, and one
run's secret stayed in the process after it. Instead ``os.environ`` becomes a view that
answers from the current run's overlay first, the overlay carried in a context variable:

- code of the run (its thread, asyncio tasks, threads it starts) reads and writes its own
  variables through ``os.environ`` / ``os.getenv``; a write inside a run stays in the run;
- a child process started with ``subprocess`` inherits the run's view;
- code outside any run sees and changes the real process environment, as before.

Native code that calls ``getenv(3)`` itself reads the real process environment only; a
plugin whose library does so (Ray's token settings) uses ``native`` for those variables.
Installed once, on the first run of the process (``install``).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import subprocess
import threading
from collections.abc import MutableMapping
from typing import Iterator

_DELETED = object()
# The current run's overlay: name -> value, or _DELETED for a name the run removed.
_overlay: contextvars.ContextVar[dict | None] = contextvars.ContextVar("taskrig_run_env", default=None)


class ScopedEnviron(MutableMapping):
    """``os.environ`` as each run sees it: its overlay over the real process environment."""

    def __init__(self, real: MutableMapping):
        self.real = real

    def __getitem__(self, key: str) -> str:
        layer = _overlay.get()
        if layer is not None and key in layer:
            value = layer[key]
            if value is _DELETED:
                raise KeyError(key)
            return value
        return self.real[key]

    def __setitem__(self, key: str, value: str) -> None:
        layer = _overlay.get()
        if layer is None:
            self.real[key] = value
        else:
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"str expected, not {type(key if not isinstance(key, str) else value).__name__}")
            layer[key] = value

    def __delitem__(self, key: str) -> None:
        layer = _overlay.get()
        if layer is None:
            del self.real[key]
            return
        if key not in self:
            raise KeyError(key)
        layer[key] = _DELETED

    def __iter__(self) -> Iterator[str]:
        layer = _overlay.get()
        if layer is None:
            yield from self.real
            return
        for k in self.real:
            if k not in layer:
                yield k
        for k, v in list(layer.items()):
            if v is not _DELETED:
                yield k

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key) -> bool:
        layer = _overlay.get()
        if layer is not None and key in layer:
            return layer[key] is not _DELETED
        return key in self.real

    def copy(self) -> dict:
        return dict(self)

    def __repr__(self) -> str:
        return f"environ({dict(self)!r})"

    def __or__(self, other):
        return {**self, **other}

    def __ror__(self, other):
        return {**other, **self}

    def __ior__(self, other):
        self.update(other)
        return self


_install_lock = threading.Lock()


def install() -> None:
    """Make ``os.environ`` the scoped view, threads inherit the run they are started in, and
    ``subprocess`` children get the run's variables. Idempotent."""
    with _install_lock:
        if isinstance(os.environ, ScopedEnviron):
            return
        os.environ = ScopedEnviron(os.environ)  # os.getenv reads the module global: it follows
        _patch_threads()
        _patch_subprocess()


def _patch_threads() -> None:
    """A thread started inside a run runs in a copy of the run's context (what Python 3.14
    calls ``thread_inherit_context``): its ``os.environ`` and ``engine.ctx()`` are the run's.
    Threads started outside a run are left as they are."""
    init, run = threading.Thread.__init__, threading.Thread.run

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._taskrig_context = contextvars.copy_context() if _overlay.get() is not None else None

    def _run(self):
        ctx = getattr(self, "_taskrig_context", None)
        if ctx is None:
            return run(self)
        self._taskrig_context = None  # a context runs in one thread at a time: this one
        return ctx.run(run, self)

    threading.Thread.__init__ = __init__
    threading.Thread.run = _run


def _patch_subprocess() -> None:
    """``Popen(env=None)`` inherits the C-level environment, which has none of a run's
    variables; inside a run it gets the run's view instead."""
    init = subprocess.Popen.__init__

    def __init__(self, *args, **kwargs):
        if kwargs.get("env") is None and _overlay.get() is not None:
            kwargs["env"] = dict(os.environ)
        init(self, *args, **kwargs)

    subprocess.Popen.__init__ = __init__


@contextlib.contextmanager
def scoped(variables: dict[str, str]):
    """Inside: ``os.environ`` is the enclosing view (a caller's run, or the process) plus
    ``variables``; writes stay here. After: nothing of it remains anywhere."""
    install()
    parent = _overlay.get()
    layer = dict(parent) if parent else {}
    layer.update({k: str(v) for k, v in variables.items()})
    token = _overlay.set(layer)
    try:
        yield layer
    finally:
        _overlay.reset(token)


# One process environment at the C level: runs that need variables there take turns.
_native_lock = threading.RLock()


@contextlib.contextmanager
def native(names):
    """For a library that reads ``getenv(3)`` itself: the current run's values of ``names``
    written into the real process environment while inside, restored after. Runs that need
    this take turns (one such library per process, e.g. one Ray driver)."""
    with _native_lock:
        real = os.environ.real if isinstance(os.environ, ScopedEnviron) else os.environ
        saved = {n: real.get(n) for n in names}
        try:
            for n in names:
                value = os.environ.get(n)
                if value is None:
                    real.pop(n, None)
                else:
                    real[n] = value
            yield
        finally:
            for n, v in saved.items():
                if v is None:
                    real.pop(n, None)
                else:
                    real[n] = v
