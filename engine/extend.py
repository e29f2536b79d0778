"""What plugin and provider authors use (Flyte's ``flyte.extend``)."""

from .plugin import Attachment, DeclareContext, TaskPlugin
from .registry import ProviderRegistry, TaskPluginRegistry
from .errors import NotFound
from .resource import (Declaration, Diff, Options, Owned, Provider, ProviderContext, Read, Timeouts, call_deadline,
                       make_urn)
from .errors import BodyFailed, ConfigError
from .image import ImageBuildEngine
from .runenv import native as native_env
from .secrets import PLACEHOLDER_PREFIX, secret_digest, secret_placeholder

__all__ = [
    "Attachment", "BodyFailed", "ConfigError", "Declaration", "DeclareContext", "Diff", "ImageBuildEngine", "NotFound", "Options",
    "Owned", "Provider", "ProviderContext", "ProviderRegistry", "Read", "TaskPlugin", "TaskPluginRegistry", "Timeouts", "call_deadline", "make_urn", "native_env",
    "PLACEHOLDER_PREFIX", "secret_digest", "secret_placeholder",
]


def __getattr__(name: str):
    # TaskTemplate needs flyteidl2 (the connectors extra); importing it lazily keeps
    # ``engine.extend`` importable for plugins that never define one.
    if name == "TaskTemplate":
        from .connectors.task import TaskTemplate

        return TaskTemplate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
