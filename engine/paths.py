"""Property paths: where in a resource's inputs something is, as a tuple of keys and indices.

A path is a tuple of ``str`` (a map key) and ``int`` (a list index), so a key may hold any
character: ``("labels", "app.kubernetes.io/version")``, ``("spark_conf", "spark.executor.memory")``.
Users write them, and plans show them, in Pulumi's property-path syntax
(``sdk/go/common/resource/properties_path.go``)::

    a.b            labels["app.kubernetes.io/version"]      containers[0].image
    *              containers[*].image                      ["key with \\"quote\\""]

The one departure from Pulumi: a backslash inside a quoted key escapes the next ``"`` or ``\\``,
so that every key round-trips (Pulumi cannot write a key that ends in a backslash).
In patterns (``ignore_changes``, ``replace_on_changes``, a provider's ``replace_keys``) the key
``*`` matches any key or index at its level, and a pattern covers every path below it.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any, Iterable, Iterator, Union

from .errors import ConfigError

Path = tuple[Union[str, int], ...]
WILDCARD = "*"
_MISSING = object()
_BARE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class PathError(ValueError):
    """A property path that does not parse; says where and why."""


@lru_cache(maxsize=4096)
def parse(text: str) -> Path:
    """``'labels["app.kubernetes.io/version"]'`` -> ``("labels", "app.kubernetes.io/version")``.

    A bare segment runs to the next ``.`` or ``[`` and is always a key (``layers.03`` is the
    key ``"03"``); ``[3]`` is an index, ``[*]`` the wildcard, ``["..."]`` a key of any text."""
    if not isinstance(text, str):
        raise PathError(f"a property path is a string or a tuple, not {type(text).__name__}")
    if not text:
        raise PathError("empty property path")
    out: list[str | int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "[":
            i = _bracket(text, i, out)
        elif c == "." or not out:
            if c == ".":
                i += 1
                if not out:
                    raise PathError(f"{text!r}: a path cannot start with '.'")
            j = i
            while j < n and text[j] not in ".[":
                if text[j] in ']"':
                    raise PathError(f"{text!r}: unexpected {text[j]!r} at {j}; quote the key: "
                                    f"[\"...\"]")
                j += 1
            if j == i:
                raise PathError(f"{text!r}: empty key at {i}" + ("" if i < n else " (trailing '.')"))
            out.append(text[i:j])
            i = j
        else:
            raise PathError(f"{text!r}: expected '.' or '[' at {i}, found {c!r}")
    return tuple(out)


def _bracket(text: str, i: int, out: list) -> int:
    """Parse ``[...]`` starting at ``text[i] == '['``; append its element; return the next index."""
    n = len(text)
    if i + 1 < n and text[i + 1] == '"':
        key, j = [], i + 2
        while True:
            if j >= n:
                raise PathError(f"{text!r}: missing closing quote of the key opened at {i + 1}")
            c = text[j]
            if c == "\\" and j + 1 < n and text[j + 1] in '"\\':
                key.append(text[j + 1])
                j += 2
            elif c == '"':
                j += 1
                break
            else:
                key.append(c)
                j += 1
        if j >= n or text[j] != "]":
            raise PathError(f"{text!r}: missing ']' after the quoted key at {j}")
        out.append("".join(key))
        return j + 1
    close = text.find("]", i)
    if close == -1:
        raise PathError(f"{text!r}: missing ']' for the '[' at {i}")
    inner = text[i + 1:close]
    if inner == WILDCARD:
        out.append(WILDCARD)
    elif inner.isdigit() and inner.isascii():
        out.append(int(inner))
    else:
        raise PathError(f"{text!r}: [{inner}] is neither an index (a number >= 0), [*] nor a quoted key")
    return close + 1


def render(path: Path) -> str:
    """The Pulumi-syntax text of a path: keys of letters, digits and ``_`` after a dot, others
    quoted in brackets, indices in brackets (``metadata.labels["taskrig/run-id"]``)."""
    parts = []
    for k in path:
        if type(k) is int:
            parts.append(f"[{k}]")
        elif k == WILDCARD:
            parts.append("*" if not parts else "[*]")
        elif k and _BARE.issuperset(k):
            parts.append(f".{k}" if parts else k)
        else:
            parts.append('["' + k.replace("\\", "\\\\").replace('"', '\\"') + '"]')
    return "".join(parts)


def as_path(p: str | Path | list) -> Path:
    """A path from Pulumi-syntax text or a tuple (or a list, as JSON gives it back)."""
    if isinstance(p, str):
        return parse(p)
    if isinstance(p, (tuple, list)) and all(type(k) is str or (type(k) is int and k >= 0) for k in p):
        return tuple(p)
    raise PathError(f"{p!r} is not a property path: give a string like 'a.b[0]' or a tuple of keys and indices")


def as_paths(values: Iterable[str | Path]) -> tuple[Path, ...]:
    """Normalise a provider's paths once (strings parsed, tuples kept)."""
    return tuple(p if type(p) is tuple else as_path(p) for p in values)


def patterns(values: tuple, field: str, owner: str | None = None) -> tuple[Path, ...]:
    """Parsed ``ignore_changes`` or ``replace_on_changes`` (cached: every plan asks again);
    a bad one is a ConfigError naming ``field`` (``options.ignore_changes``) and the path."""
    try:
        return _patterns(values)
    except TypeError:  # unhashable entries (lists from a JSON round trip): parse uncached
        return tuple(_pattern(v) for v in values) if _all_good(values) else _bad(values, field, owner)
    except PathError:
        return _bad(values, field, owner)


@lru_cache(maxsize=4096)
def _patterns(values: tuple) -> tuple[Path, ...]:
    return tuple(_pattern(v) for v in values)


def _pattern(v) -> Path:
    p = as_path(v)
    if not p:
        raise PathError("empty property path")
    return p


def _all_good(values) -> bool:
    try:
        for v in values:
            _pattern(v)
    except PathError:
        return False
    return True


def _bad(values, field: str, owner: str | None):
    for v in values:
        try:
            _pattern(v)
        except PathError as e:
            where = f" of {owner}" if owner else ""
            raise ConfigError(f"bad property path {v!r}{where}: {e}", field) from None
    raise AssertionError("unreachable: every path parsed")


def covers(pattern: Path, path: Path) -> bool:
    """``("workers",)`` covers ``("workers", "number_of_workers")``; ``*`` matches any one key
    or index (Pulumi's ``PropertyPath.Contains``)."""
    if len(path) < len(pattern):
        return False
    for want, got in zip(pattern, path):
        if want != WILDCARD and (want != got or type(want) is not type(got)):
            return False
    return True


def above(path: Path, pattern: Path) -> bool:
    """``path`` holds something ``pattern`` names: ``("labels",)`` is above ``labels["a.b"]``."""
    return len(path) < len(pattern) and covers(pattern[:len(path)], path)


def overlaps(a: Path, b: Path) -> bool:
    """One path is the other or lies below it (no wildcards): a change at either touches both."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def covered(path: Path, pats: Iterable[Path]) -> bool:
    return any(covers(p, path) for p in pats)


def lookup(value: Any, path: Path) -> tuple[bool, Any]:
    """(found, value) at ``path``: a key only in a dict, an index only in a list's range."""
    for k in path:
        if type(k) is int:
            if not isinstance(value, list) or k >= len(value):
                return False, None
        elif not isinstance(value, dict) or k not in value:
            return False, None
        value = value[k]
    return True, value


def get(value: Any, path: Path, default: Any = None) -> Any:
    found, v = lookup(value, path)
    return v if found else default


def diff(old: Any, new: Any, prefix: Path = ()) -> list[Path]:
    """Paths where two JSON-like values differ: dicts recursed key by key, lists element by
    element when of one length (otherwise the list is one change), anything else compared."""
    if old == new:  # one C-level comparison for the common, unchanged case
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[Path] = []
        for k in sorted(old.keys() | new.keys(), key=str):
            if k not in old or k not in new:
                out.append(prefix + (k,))
            else:
                out.extend(diff(old[k], new[k], prefix + (k,)))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out.extend(diff(a, b, prefix + (i,)))
        return out
    return [prefix]


def expand(pattern: Path, *values: Any) -> Iterator[Path]:
    """The concrete paths a pattern names in any of ``values`` (its wildcards filled in with
    the keys or indices present there), each once."""
    yield from _expand(pattern, values, ())


def _expand(pattern: Path, values: tuple, prefix: Path) -> Iterator[Path]:
    if not pattern:
        yield prefix
        return
    head, rest = pattern[0], pattern[1:]
    if head == WILDCARD:
        keys: dict = {}
        for v in values:
            if isinstance(v, dict):
                keys.update(dict.fromkeys(v))
            elif isinstance(v, list):
                keys.update(dict.fromkeys(range(len(v))))
        heads: Iterable = keys
    else:
        heads = (head,)
    for k in heads:
        below = tuple(x for x in (get(v, (k,), _MISSING) for v in values) if x is not _MISSING)
        if below or not rest:
            yield from _expand(rest, below, prefix + (k,))


def reset(target: Any, path: Path, old: Any) -> None:
    """Put ``old``'s value at ``path`` into ``target`` in place, or remove the key there if
    ``old`` has none (Pulumi's ``PropertyPath.Reset``): maps on the way are made as needed;
    lists are never grown or shrunk, so an index outside ``target``'s list is left alone."""
    found, value = lookup(old, path)
    value = copy.deepcopy(value)
    node = target
    for k in path[:-1]:
        if type(k) is int:
            if not isinstance(node, list) or k >= len(node):
                return
            node = node[k]
        else:
            if not isinstance(node, dict):
                return
            if not isinstance(node.get(k), (dict, list)):
                if not found:
                    return
                node[k] = {}
            node = node[k]
    last = path[-1]
    if type(last) is int:
        if isinstance(node, list) and last < len(node) and found:
            node[last] = value
    elif isinstance(node, dict):
        if found:
            node[last] = value
        else:
            node.pop(last, None)
