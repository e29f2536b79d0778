"""What plugin and provider authors use (Flyte's ``flyte.extend``)."""

from .plugin import Attachment, DeclareContext, TaskPlugin
from .registry import ProviderRegistry, TaskPluginRegistry
from .errors import NotFound
from .resource import Declaration, Diff, Options, Provider, ProviderContext, Read, Timeouts, make_urn
from .errors import ConfigError

__all__ = [
    "Attachment", "ConfigError", "Declaration", "DeclareContext", "Diff", "NotFound", "Options", "Provider",
    "ProviderContext", "ProviderRegistry", "Read", "TaskPlugin", "TaskPluginRegistry", "Timeouts", "make_urn",
]
