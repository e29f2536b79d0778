"""``engine state migrate --to URL|PATH``: copy a state between SQLite and PostgreSQL.

Every stack of the source is locked for the whole copy (no run writes while it is read); the
target must hold no state. The rows of every copied table (runs, resources, pending deletes,
journal) are written in one transaction, read back in that same transaction and compared with
the source, column by column, before it commits: a target is either a verified copy or left as
it was. After the commit they are read once more, from a new connection, and compared again.
"""

from __future__ import annotations

import contextlib

from .errors import ConfigError, StateError
from .lifecycle import Session
from .pgstate import PgTarget
from .state import COPIED, State


def _same_location(a, b) -> bool:
    if isinstance(a, PgTarget) or isinstance(b, PgTarget):
        return isinstance(a, PgTarget) and isinstance(b, PgTarget) and a.public == b.public
    return a.resolve() == b.resolve()


def _rows(state: State) -> dict[str, list[dict]]:
    return {t: state.table_rows(t) for t in COPIED}


def _compare(source: dict[str, list[dict]], copied: dict[str, list[dict]], where: str) -> None:
    for table, rows in source.items():
        got = copied[table]
        if len(got) != len(rows):
            raise StateError(f"state migrate: {where}: {table} has {len(got)} rows, the source {len(rows)}")
        for a, b in zip(rows, got):
            diff = sorted(k for k in a if a[k] != b.get(k) or type(a[k]) is not type(b.get(k)))
            if diff:
                key = {k: a[k] for k in COPIED[table]}
                raise StateError(f"state migrate: {where}: {table} row {key} differs in {', '.join(diff)}")


def migrate(source, target, lock_timeout: float = 0.0) -> dict:
    if _same_location(source, target):
        raise ConfigError(f"the target {target} is the source itself", "--to")
    if not source.exists():
        raise ConfigError(f"no state at {source} to migrate", "--state")
    session = Session(state=source, lock_timeout=lock_timeout)
    src = State(source)
    try:
        stacks = sorted({r[0] for r in src._x(
            "select stack from runs union select stack from resources union select stack from pending_deletes "
            "union select stack from journal").fetchall() if r[0] is not None})
        with contextlib.ExitStack() as locks:
            for stack in stacks:
                locks.enter_context(session.lock(stack, f"state migrate --to {target}", src))
            rows = _rows(src)
            dst = State(target)
            try:
                if not dst.is_empty():
                    raise ConfigError(f"the target {target} holds a state already (refusing to merge into it)", "--to")
                with dst.write():
                    if dst.pg is not None:  # nobody else writes the target while it is filled
                        dst._x("lock table runs, resources, pending_deletes, journal in exclusive mode")
                    if not dst.is_empty():
                        raise ConfigError(f"the target {target} holds a state already (refusing to merge into it)",
                                          "--to")
                    for table, table_rows in rows.items():
                        for row in table_rows:
                            dst._insert(table, row)
                    if dst.pg is not None:
                        dst._x("select setval(pg_get_serial_sequence('journal', 'seq'), "
                               "coalesce((select max(seq) from journal), 0) + 1, false)")
                    _compare(rows, _rows(dst), "before commit")  # raises: the transaction rolls back
            finally:
                dst.close()
            check = State.reader(target)
            try:
                _compare(rows, _rows(check), "after commit")
            finally:
                check.close()
    finally:
        src.close()
    return {"source": str(source), "target": str(target), "stacks": stacks,
            "rows": {t: len(r) for t, r in rows.items()}}
