"""Support for the ``local`` backend: real engines as real OS processes on this machine."""

from .process import TAG_VAR, ProcessRecord, find_tagged, log_tail, spawn, spawn_forked, terminate, wait_until

__all__ = ["TAG_VAR", "ProcessRecord", "find_tagged", "log_tail", "spawn", "spawn_forked", "terminate", "wait_until"]
