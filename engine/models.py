"""Flyte 2's ``flyte.models`` names that connector tasks are written against.

``NativeInterface`` says what a class-defined task takes and returns (a function task reads
that from its signature); ``SerializationContext`` is what ``custom_config`` is given when
the engine turns such a task into a flyteidl2 ``TaskTemplate``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Optional

_EMPTY = inspect.Parameter.empty


@dataclass
class NativeInterface:
    """Inputs ``{name: type}`` or ``{name: (type, default)}``, outputs ``{name: type}``."""

    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_types(cls, inputs: dict[str, Any], outputs: dict[str, Any]) -> "NativeInterface":
        return cls(inputs=dict(inputs), outputs=dict(outputs))

    def input_types(self) -> dict[str, Any]:
        return {k: (v[0] if isinstance(v, tuple) else v) for k, v in self.inputs.items()}

    def defaults(self) -> dict[str, Any]:
        return {k: v[1] for k, v in self.inputs.items() if isinstance(v, tuple) and v[1] is not _EMPTY}

    def signature(self) -> inspect.Signature:
        """A keyword-or-positional signature in declaration order, for binding call arguments."""
        defaults = self.defaults()
        params = [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults.get(k, _EMPTY),
                                    annotation=t) for k, t in self.input_types().items()]
        # Python wants parameters with defaults last; keep the declared order otherwise.
        params.sort(key=lambda p: p.default is not _EMPTY)
        return inspect.Signature(params)


@dataclass
class SerializationContext:
    """Where a task is being serialized for; the local engine fills what it knows."""

    project: Optional[str] = None
    domain: Optional[str] = None
    org: Optional[str] = None
    version: Optional[str] = None
    root_dir: Optional[str] = None
    code_bundle: Any = None
    image_cache: Any = None


__all__ = ["NativeInterface", "SerializationContext"]
