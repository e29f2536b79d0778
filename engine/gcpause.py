"""The cyclic garbage collector, held off while the engine builds a whole stack's records and plan.

A plan of 100,000 resources allocates over a million rows, dicts, records and steps, none of
them in a cycle. CPython starts a collection every 700 allocations, and its full collections
walk the whole, growing heap again each time: half the CPU of a 100,000-resource preview
(bench/bench_plan.py), still a sixth with mypy's raised thresholds. Reference counting frees
all of it; the collector is only held off for the bounded span of one bulk read or plan, and
what that span allocated joins the oldest generation when it ends, unwalked.

Pauses nest and overlap across threads; the collector resumes when the last one ends (and
only if it was running when the first began). Callers pause for whole-stack work only, never
per resource or per nested call, so a long-lived process (``connectors serve``) is never left
without collections for longer than one such span.
"""

from __future__ import annotations

import contextlib
import gc
import threading

_lock = threading.Lock()
_depth = 0
_resume = False


@contextlib.contextmanager
def paused():
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                _promote_young()
                gc.enable()


def _promote_young() -> None:
    """What the pause allocated (the records and plan it returns, mostly) moves to the oldest
    generation without being walked: freeze then unfreeze is two list splices, and counts
    restart at zero. Otherwise the first allocation after ``enable`` walks all of it in one
    young collection (0.1 to 0.25 s at 100,000 resources). Nothing escapes collection: the
    next full collection walks it, as it walks every long-lived object."""
    gc.freeze()
    gc.unfreeze()


def relax_for_this_process() -> None:
    """The ``engine`` command's own process: a collection every 200,000 allocations instead of
    700, as mypy's command sets it for the same reason. What no pause covers (a plugin building
    100,000 declarations, the apply, the task body) then pays a sixth of the collector's default
    cost. Never on import: a program that uses the engine as a library keeps its own settings."""
    gc.set_threshold(200_000, 30, 30)
