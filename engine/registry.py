"""The registries: plugin config type -> plugin, and resource type token -> provider.

They are the only global mutable state. Providers register themselves when their package is
imported; the engine imports them through the ``taskrig.providers`` entry-point group only
when a type token is asked for that nobody registered (a ``destroy`` in a fresh process).
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
from typing import Any


class TaskPluginRegistry:
    """Plugin config type (exact) -> plugin, as in Flyte's ``TaskPluginRegistry``."""

    _plugins: dict[type, Any] = {}

    @classmethod
    def register(cls, config_type: type, plugin: Any, override: bool = False) -> None:
        if config_type in cls._plugins and not override:
            raise ValueError(f"a plugin for {config_type.__qualname__} is already registered; pass override=True")
        cls._plugins[config_type] = plugin

    @classmethod
    def find(cls, config_type: type) -> Any | None:
        return cls._plugins.get(config_type)

    def __repr__(self) -> str:
        return f"TaskPluginRegistry({', '.join(t.__qualname__ for t in self._plugins)})"


class ProviderRegistry:
    """Type token (``local:dask:Cluster``) -> provider class."""

    _providers: dict[str, type] = {}
    _entry_points_loaded = False
    _loading = threading.RLock()
    _in_progress = False

    @classmethod
    def register(cls, provider_cls: type, override: bool = False) -> type:
        token = provider_cls.type_token
        if not token:
            raise ValueError(f"{provider_cls.__qualname__} has no type_token")
        if token in cls._providers and cls._providers[token] is not provider_cls and not override:
            raise ValueError(f"a provider for {token} is already registered; pass override=True")
        cls._providers[token] = provider_cls
        return provider_cls

    @classmethod
    def load_entry_points(cls) -> None:
        # Apply looks providers up from several threads: the others wait until every package
        # is imported (a flag set first would let them miss types still being registered).
        # Re-entered by the loading thread (a package that looks a type up) it returns at once.
        if cls._entry_points_loaded:
            return
        with cls._loading:
            if cls._entry_points_loaded or cls._in_progress:
                return
            cls._in_progress = True
            try:
                for ep in entry_points(group="taskrig.providers"):
                    try:
                        ep.load()
                    except ImportError:
                        # An extra that is not installed (say ray): its types stay unknown, and a
                        # state that holds one fails at lookup with a message naming the type.
                        continue
                cls._entry_points_loaded = True
            finally:
                cls._in_progress = False

    @classmethod
    def find(cls, token: str) -> type | None:
        """The provider of ``token``; a provider registered as ``package:*`` serves every type
        of that package that none registered exactly (``kubernetes:*`` for any kind)."""
        if token not in cls._providers:
            cls.load_entry_points()
        return cls._providers.get(token) or cls._providers.get(token.split(":", 1)[0] + ":*")

    @classmethod
    def tokens(cls) -> list[str]:
        return sorted(cls._providers)
