"""Flyte 2's ``flyte.io.File``: a reference to a file by path or URI.

The local engine never uploads anything, so a File is only its location; connectors return
one as a string (or ``{"path": ...}``) and the engine hands the task a File.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class File:
    path: str
    name: Optional[str] = None

    @classmethod
    def from_local_sync(cls, path: str | os.PathLike) -> "File":
        return cls(path=os.fspath(path))

    @classmethod
    def coerce(cls, value: Any) -> "File":
        """A File from what a connector or a serialized literal gives: a path, a URI, a dict."""
        if isinstance(value, File):
            return value
        if isinstance(value, (str, os.PathLike)):
            return cls(path=os.fspath(value))
        if isinstance(value, dict) and isinstance(value.get("path") or value.get("uri"), str):
            return cls(path=value.get("path") or value["uri"], name=value.get("name"))
        raise TypeError(f"cannot make a File from {type(value).__name__}")

    @property
    def local_path(self) -> Optional[str]:
        """The path on this machine, for ``file://`` URIs and plain paths; None for remote URIs."""
        if self.path.startswith("file://"):
            return self.path[len("file://"):]
        return None if "://" in self.path else self.path

    def __fspath__(self) -> str:
        local = self.local_path
        if local is None:
            raise ValueError(f"{self.path} is not a local file")
        return local

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"File({self.path!r})" if self.name is None else f"File({self.path!r}, name={self.name!r})"


__all__ = ["File"]
