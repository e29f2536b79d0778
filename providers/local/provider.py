"""The base of the local backend's providers: what they share about where they keep files."""

from __future__ import annotations

from pathlib import Path

from engine.extend import Provider


class LocalProcesses(Provider):
    """A resource made of processes on this machine. Their logs and scratch live in the
    engine's runtime folder (beside the state file), a subfolder per physical name, so that
    recovery and ``destroy`` find them from the name alone."""

    host_local = True  # processes of this machine: with a shared state, other hosts leave them alone

    def _dir(self, name: str) -> Path:
        base = Path(self.context.runtime_dir) if self.context else Path(".engine/runtime")
        return base / name
