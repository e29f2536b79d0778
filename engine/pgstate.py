"""A PostgreSQL state: where it is (``postgresql://user@host:port/db?schema=...``) and how to reach it.

The URL is libpq's, with one parameter of ours: ``schema`` (default ``taskrig``), the schema
that holds the state's tables (created if missing). Every other parameter goes to libpq as
given, so ``passfile=``, ``sslmode=``, ``connect_timeout=`` and the environment (``PGPASSWORD``,
``~/.pgpass``) work as they do for ``psql``. A password in the URL is a secret: it is
registered with the redactor the moment the URL is parsed, and ``str()`` of a target masks it.

A PostgreSQL state has no file beside which to keep local files, so its runtime folder (logs
and scratch of local processes) is ``$ENGINE_RUNTIME_DIR``, else ``.engine/runtime`` of the
working directory, resolved once when the target is parsed.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from .errors import StateError

SCHEMES = ("postgresql", "postgres")
DEFAULT_SCHEMA = "taskrig"
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def is_url(value) -> bool:
    return isinstance(value, (str, PgTarget)) and (isinstance(value, PgTarget)
                                                   or value.split("://", 1)[0].lower() in SCHEMES and "://" in value)


def _bad(url_masked: str, what: str) -> StateError:
    return StateError(f"state URL {url_masked}: {what}")


@dataclass(frozen=True)
class PgTarget:
    """A parsed PostgreSQL state URL. ``conninfo`` is what libpq gets (the URL without ``schema``)."""

    conninfo: str
    schema: str
    masked: str
    public: str  # the URL without its password (a child process's argument; the password goes by env)
    password: str | None
    runtime: Path
    host: str = ""
    params: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.masked

    def __fspath__(self):  # never a path: a mistaken open() fails loudly instead of creating a file
        raise TypeError(f"{self.masked} is a PostgreSQL state, not a file")

    # ------------------------------------------------------------------ what Session asks of a location
    def resolve(self) -> "PgTarget":
        return self

    def exists(self) -> bool:
        """Whether the schema holds a state (its ``meta`` table): preview and the read-only
        commands show an empty state otherwise, creating nothing."""
        conn = connect(self)
        try:
            row = conn.execute("select 1 from pg_catalog.pg_tables where schemaname = %s and tablename = 'meta'",
                               [self.schema]).fetchone()
            return row is not None
        finally:
            conn.close()

    @property
    def runtime_dir(self) -> Path:
        return self.runtime

    @property
    def local_dir(self) -> Path:
        """Per-host bookkeeping of this state (reaper guards), keyed by the URL without password."""
        digest = hashlib.sha256(self.public.encode()).hexdigest()[:12]
        return self.runtime.parent / "pg-state" / digest

    def lock_key(self, name: str) -> int:
        """A signed 64-bit advisory-lock key for ``name`` (a stack) in this state's schema."""
        h = hashlib.sha256(f"taskrig\0{self.schema}\0{name}".encode()).digest()
        return int.from_bytes(h[:8], "big", signed=True)


def parse(url: str) -> PgTarget:
    """Parse and check a state URL; a StateError names what is wrong (never the password)."""
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise StateError(f"state URL is not a valid URL: {e}") from None
    password = unquote(parts.password) if parts.password is not None else None
    if password:
        from .secrets import register

        register([password, quote(password, safe=""), parts.password])
    netloc_public = parts.netloc.rsplit("@", 1)
    userinfo = netloc_public[0] if len(netloc_public) == 2 else ""
    hostport = netloc_public[-1]
    user = userinfo.split(":", 1)[0]
    masked_netloc = (f"{user}:***@" if password is not None else (f"{user}@" if userinfo else "")) + hostport
    public_netloc = (f"{user}@" if userinfo else "") + hostport
    query = parse_qsl(parts.query, keep_blank_values=True)
    masked = urlunsplit((parts.scheme, masked_netloc, parts.path, parts.query, ""))
    if parts.scheme.lower() not in SCHEMES:
        raise _bad(masked, f"scheme {parts.scheme!r} is not postgresql://")
    if parts.fragment:
        raise _bad(masked, "a fragment (#...) has no meaning here")
    try:
        port = parts.port
    except ValueError:
        raise _bad(masked, f"port {hostport.rsplit(':', 1)[-1]!r} is not a number from 1 to 65535") from None
    if port is not None and not 0 < port < 65536:
        raise _bad(masked, f"port {port} is not a number from 1 to 65535")
    db = unquote(parts.path.lstrip("/"))
    if "/" in db:
        raise _bad(masked, f"database name {db!r} contains '/'")
    schemas = [v for k, v in query if k == "schema"]
    if len(schemas) > 1:
        raise _bad(masked, "schema is given more than once")
    schema = schemas[0] if schemas else DEFAULT_SCHEMA
    if not _SCHEMA_RE.match(schema):
        raise _bad(masked, f"schema {schema!r} is not a plain identifier (letters, digits, '_'; at most 63)")
    rest = [(k, v) for k, v in query if k != "schema"]
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
    public = urlunsplit((parts.scheme, public_netloc, parts.path, parts.query, ""))
    # libpq's own parser checks every other parameter (an unknown one, a bad sslmode...).
    from psycopg import conninfo as ci

    try:
        params = ci.conninfo_to_dict(conninfo)
    except Exception as e:  # noqa: BLE001 - psycopg.ProgrammingError: libpq's message names the parameter
        from .secrets import redact_text

        raise _bad(masked, re.sub(r"\s+", " ", redact_text(str(e).strip()))) from None
    runtime = Path(os.environ.get("ENGINE_RUNTIME_DIR") or Path.cwd() / ".engine" / "runtime").resolve()
    return PgTarget(conninfo=conninfo, schema=schema, masked=masked, public=public, password=password,
                    runtime=runtime, host=parts.hostname or "", params=params)


def connect(target: PgTarget, read_only: bool = False, application: str = "taskrig"):
    """An autocommit connection with the state's schema first on the search path and
    ``synchronous_commit=on`` (a commit returns once it is durable). Connection failures are
    StateErrors naming the (masked) URL."""
    try:
        import psycopg
    except ImportError:
        raise StateError("a postgresql:// state needs psycopg 3: pip install 'taskrig[postgres]'") from None

    from .secrets import redact_text

    if os.environ.get("PGPASSWORD"):
        from .secrets import register

        register([os.environ["PGPASSWORD"]])
    kwargs = {"autocommit": True}
    if "connect_timeout" not in target.params:
        kwargs["connect_timeout"] = 10
    if "application_name" not in target.params:
        kwargs["application_name"] = application
    try:
        conn = psycopg.connect(target.conninfo, **kwargs)
    except psycopg.Error as e:
        text = re.sub(r"\s+", " ", redact_text(str(e).strip()))
        raise StateError(f"cannot connect to the PostgreSQL state {target.masked}: {text}") from None
    try:
        setup = f'set search_path to "{target.schema}"; set synchronous_commit to on'
        if read_only:
            setup += "; set default_transaction_read_only to on"
        conn.execute(setup)
    except psycopg.Error as e:
        conn.close()
        raise StateError(f"PostgreSQL state {target.masked}: {redact_text(str(e).strip())}") from None
    return conn
