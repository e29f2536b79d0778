"""Bad input never touches the state: a one-line error naming what is wrong, exit 2, and the
state file byte-identical."""

import hashlib
import sqlite3

import pytest

from conftest import TASKS


def _pg_digest(engine):
    """Every row of every table of the test's PostgreSQL schema, in order."""
    from pg_fixture import pg_connect

    with pg_connect(engine.pg) as conn:
        tables = [r[0] for r in conn.execute("select tablename from pg_tables where schemaname = %s order by 1",
                                             [engine.pg["schema"]])]
        dump = {t: conn.execute(f'select * from "{engine.pg["schema"]}"."{t}" order by 1').fetchall() for t in tables}
    return hashlib.sha256(repr(dump).encode()).hexdigest()


@pytest.fixture
def populated(engine):
    """A state with one run; returns its digest function (a test that takes ``state_url`` before
    this fixture gets the PostgreSQL schema's)."""
    r = engine("up", f"{TASKS}/plain.py:add", "-i", "a=1")
    assert r.returncode == 0, r.stderr
    if engine.pg is not None:
        return lambda: _pg_digest(engine)
    digest = lambda: hashlib.sha256(engine.state.read_bytes()).hexdigest()  # noqa: E731
    # Checkpoint the WAL into the main file so "byte-identical" covers everything written.
    conn = sqlite3.connect(engine.state)
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    return digest


def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("target,needles", [
    (f"{TASKS}/bad_config.py:t", ["workers.number_of_workers", "greater than or equal to 1"]),
    (f"{TASKS}/unknown_field.py:t", ["WorkerGroup", "number_of_workerz"]),
    (f"{TASKS}/missing.py:t", ["no such file"]),
    (f"{TASKS}/plain.py:nope", ["no task named 'nope'"]),
    ("no_such_module_xyz:t", ["no module named"]),
    ("plain", ["is not FILE.py:TASK"]),
])
def test_bad_target_or_config(engine, populated, target, needles):
    before = populated()
    for cmd in ("up", "preview"):
        _one_line_error(engine(cmd, target), *needles)
    assert populated() == before


def test_bad_input_value(engine, state_url, populated):
    before = populated()
    if state_url:  # a bad plugin config too, on the PostgreSQL state
        _one_line_error(engine("up", f"{TASKS}/bad_config.py:t"), "workers.number_of_workers")
    _one_line_error(engine("up", f"{TASKS}/plain.py:add", "-i", "a=1", "-i", "zzz=1"), "unexpected keyword argument 'zzz'")
    _one_line_error(engine("up", f"{TASKS}/plain.py:add"), "missing a required argument: 'a'")
    _one_line_error(engine("up", f"{TASKS}/plain.py:add", "-i", "novalue"), "is not NAME=VALUE")
    assert populated() == before


def test_unreadable_state_file(engine):
    engine.state.parent.mkdir(parents=True)
    garbage = b"this is not a database\n" * 50
    engine.state.write_bytes(garbage)
    for args in (("up", f"{TASKS}/plain.py:add", "-i", "a=1"), ("state", "list"), ("runs",), ("destroy", "plain")):
        _one_line_error(engine(*args), "not an SQLite database")
    assert engine.state.read_bytes() == garbage


def test_newer_schema_version_is_refused_untouched(engine, populated):
    conn = sqlite3.connect(engine.state)
    conn.execute("update meta set value='99' where key='schema_version'")
    conn.commit()
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    before = populated()
    for args in (("up", f"{TASKS}/plain.py:add", "-i", "a=1"), ("preview", f"{TASKS}/plain.py:add"), ("runs",)):
        _one_line_error(engine(*args), "schema version 99", "newer")
    assert populated() == before


def test_foreign_sqlite_database_is_refused(engine):
    engine.state.parent.mkdir(parents=True)
    conn = sqlite3.connect(engine.state)
    conn.execute("create table other (x)")
    conn.commit()
    conn.close()
    before = engine.state.read_bytes()
    _one_line_error(engine("runs"), "not an engine state")
    assert engine.state.read_bytes() == before
