"""The ``engine`` command. Exit codes: 0 ok, 1 task or provider failed, 2 bad input, 3 lock held."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import signal
import sys
import traceback
from typing import Callable

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import gcpause
from .errors import ConfigError, EngineError
from .lifecycle import Session
from .render import (PLAN_FORMAT_VERSION, CollectingReporter, ConsoleReporter, iso, plan_json, print_plan,
                     summary_line)
from .report import Reporter
from .secrets import error_text, redact_text
from .state import State, locate

# Piped output (a log, a pipeline) gets wide lines instead of the 80 columns rich assumes.
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 200)
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


_DOC_FD = "taskrig.json_fd"


def _emit_json(doc) -> None:
    text = redact_text(json.dumps(doc, indent=2, sort_keys=False, default=str)) + "\n"  # the one redactor, last
    ctx = click.get_current_context(silent=True)
    target = ctx.meta.get(_DOC_FD) if ctx is not None else None
    if isinstance(target, int):
        data = text.encode()
        while data:
            data = data[os.write(target, data):]
    else:
        (target or sys.stdout).write(text)
        (target or sys.stdout).flush()


@contextlib.contextmanager
def _stdout_for_the_document():
    """While a ``--json`` command runs, file descriptor 1 points at stderr: whatever a task
    prints, a subprocess writes or a library logs goes there, and stdout carries exactly the
    one document, written to the real stdout at the end (``_emit_json``)."""
    ctx = click.get_current_context()
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        fd = None
    if fd is None:  # no descriptor (an in-process runner): swap the Python-level streams only
        ctx.meta[_DOC_FD] = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    saved = os.dup(fd)
    os.dup2(sys.stderr.fileno(), fd)
    ctx.meta[_DOC_FD] = saved
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, fd)
        os.close(saved)
        ctx.meta.pop(_DOC_FD, None)


def json_option(f):
    """``--json``: stdout is one JSON document and nothing else."""
    @click.option("--json", "as_json", is_flag=True,
                  help="Print one JSON document on stdout (everything else goes to stderr).")
    @functools.wraps(f)
    def wrapper(*a, as_json=False, **kw):
        if not as_json:
            return f(*a, as_json=False, **kw)
        with _stdout_for_the_document():
            return f(*a, as_json=True, **kw)
    return wrapper


def state_option(f):
    @click.option("--state", "state_path", default=None, metavar="PATH|URL",
                  help="State file, or postgresql://user@host:port/db?schema=NAME "
                       "(default: $ENGINE_STATE or .engine/state.db).")
    @functools.wraps(f)
    def wrapper(*a, state_path=None, **kw):
        return f(*a, state_path=locate(state_path or None), **kw)
    return wrapper


def _session(state_path, backend=None, lock_timeout=0.0, reporter=None) -> Session:
    return Session(state=state_path, backend=backend, lock_timeout=lock_timeout, reporter=reporter)


def _open_existing(state_path) -> State | None:
    return State(state_path) if state_path.exists() else None


def _read_existing(state_path) -> State | None:
    """For commands that only look: no lock, no migration, nothing written."""
    return State.reader(state_path) if state_path.exists() else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="taskrig")
def cli():
    """taskrig: every task run gets exactly the infrastructure it declares."""


inputs_option = click.option("-i", "--input", "inputs", multiple=True, metavar="NAME=VALUE",
                             help="A task input; VALUE is parsed as JSON when it parses.")
backend_option = click.option("--backend", type=click.Choice(["local", "kubernetes"]), default=None,
                              help="Where clusters are provisioned (default: the environment's, else local).")


def connector_endpoint_option(f):
    """``--connector-endpoint TASK_TYPE=HOST:PORT``: send that task type's connector jobs to a
    connector service instead of running the connector in-process (as ENGINE_CONNECTOR_ENDPOINTS)."""
    @click.option("--connector-endpoint", "connector_endpoints", multiple=True, metavar="TASK_TYPE=HOST:PORT",
                  help="Run connector tasks of TASK_TYPE through the connector service at HOST:PORT.")
    @functools.wraps(f)
    def wrapper(*a, connector_endpoints=(), **kw):
        if connector_endpoints:
            import os

            given = [os.environ.get("ENGINE_CONNECTOR_ENDPOINTS", ""), *connector_endpoints]
            os.environ["ENGINE_CONNECTOR_ENDPOINTS"] = ",".join(x for x in given if x)
        return f(*a, **kw)
    return wrapper


@cli.command()
@click.argument("target")
@inputs_option
@backend_option
@connector_endpoint_option
@json_option
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes, 1 on error.")
@state_option
def preview(target, inputs, backend, as_json, detailed_exitcode, state_path):
    """Show what `up TARGET` would provision, change and delete.

    TARGET is FILE.py:TASK, MODULE:TASK, or a Pulumi project folder (run in-process)."""
    from .target import is_program, load_target, parse_inputs

    session = _session(state_path, backend)
    if is_program(target):
        plan = session.preview_program(target)
        title = f"Preview of stack {plan.stack} (Pulumi program {target}):"
    else:
        task = load_target(target)
        plan = session.preview(task, task.bind(partial=True, **parse_inputs(inputs)))
        title = f"Preview of stack {plan.stack} (task {task.name}):"
    if as_json:
        _emit_json(plan_json(plan))
    else:
        print_plan(out, plan, title)
    if detailed_exitcode and plan.has_changes:
        sys.exit(2)


@cli.command()
@click.argument("target")
@inputs_option
@backend_option
@connector_endpoint_option
@json_option
@click.option("--lock-timeout", type=float, default=0.0, show_default=True,
              help="Seconds to wait for the stack's lock before exiting 3.")
@state_option
def up(target, inputs, backend, as_json, lock_timeout, state_path):
    """Plan, provision, run TARGET, tear down; prints the task's result.

    A Pulumi project folder as TARGET is planned and applied, and its resources stay."""
    from .target import is_program, load_target, parse_inputs

    if is_program(target):
        return _up_program(target, as_json, lock_timeout, state_path)
    task = load_target(target)
    values = parse_inputs(inputs)
    reporter = CollectingReporter() if as_json else ConsoleReporter(err)
    session = _session(state_path, backend, lock_timeout, reporter)
    try:
        result = session.execute(task, task.bind(**values))
    except BaseException as e:
        if as_json and isinstance(reporter, CollectingReporter) and not isinstance(e, (ConfigError, KeyboardInterrupt)):
            _emit_json(_up_doc(task, reporter, None, e))
        raise
    if as_json:
        _emit_json(_up_doc(task, reporter, result, None))
    else:
        out.print(f"[bold]Result:[/bold] {escape(redact_text(json.dumps(result.outputs, default=repr)))}")


def _up_program(target, as_json, lock_timeout, state_path) -> None:
    reporter = CollectingReporter() if as_json else ConsoleReporter(err)
    session = _session(state_path, None, lock_timeout, reporter)
    plan, run = session.up_program(target)
    if as_json:
        _emit_json({**plan_json(plan), "run_id": run["run_id"], "status": run["status"],
                    "applied": reporter.phases.get("up", [])})
    else:
        out.print(summary_line(plan).replace("to create", "created").replace("to update", "updated")
                  .replace("to replace", "replaced").replace("to delete", "deleted"))


def _up_doc(task, reporter: CollectingReporter, result, error) -> dict:
    plan = reporter.phases.get("up_plan") or {"stack": task.env.name, "steps": [], "summary": {}}
    doc = {"format_version": PLAN_FORMAT_VERSION, "stack": task.env.name, "task": task.name,
           "run_id": result.run["run_id"] if result else None,
           "status": result.run["status"] if result else "failed",
           "outputs": result.outputs if result else None,
           "steps": plan["steps"], "summary": plan["summary"],
           "applied": reporter.phases.get("up", []), "teardown": reporter.phases.get("teardown", [])}
    if error is not None:
        doc["error"] = error_text(error)
    if reporter.messages:
        doc["messages"] = reporter.messages
    return doc


@cli.command()
@click.argument("stack", required=False)
@click.option("--all", "all_stacks", is_flag=True, help="Destroy every stack in the state.")
@json_option
@click.option("--lock-timeout", type=float, default=0.0, show_default=True)
@state_option
def destroy(stack, all_stacks, as_json, lock_timeout, state_path):
    """Delete every resource of STACK (or of all stacks), recovering dead runs first."""
    if bool(stack) == bool(all_stacks):
        raise ConfigError("name a STACK or pass --all", "STACK")
    state = _open_existing(state_path)
    if state is None:
        stacks = []
    else:
        stacks = state.stacks() if all_stacks else [stack]
        state.close()
    if stack and not stacks:
        stacks = [stack]
    session = _session(state_path, lock_timeout=lock_timeout, reporter=Reporter() if as_json else ConsoleReporter(err))
    docs = []
    for s in stacks:
        plan = session.destroy(s)
        docs.append(plan_json(plan))
        if not as_json:
            out.print(f"Destroyed stack {escape(s)}: " + summary_line(plan).replace("to delete", "deleted"))
    if as_json:
        _emit_json(docs if all_stacks else (docs[0] if docs else {"stack": stack, "steps": [], "summary": {}}))


@cli.command()
@click.argument("stack", required=False)
@json_option
@click.option("--lock-timeout", type=float, default=0.0, show_default=True)
@state_option
def refresh(stack, as_json, lock_timeout, state_path):
    """Read every recorded resource back; record drift, drop what is gone."""
    state = _open_existing(state_path)
    stacks = ([stack] if stack else state.stacks()) if state else []
    if state:
        state.close()
    session = _session(state_path, lock_timeout=lock_timeout, reporter=Reporter() if as_json else ConsoleReporter(err))
    result = {}
    for s in stacks:
        result[s] = [_record_json(r) for r in session.refresh(s)]
        if not as_json:
            out.print(f"Refreshed stack {escape(s)}: {len(result[s])} resource(s) present")
    if as_json:
        _emit_json(result)


def _record_json(r) -> dict:
    return {"urn": r.urn, "type": r.type, "id": r.id, "stack": r.stack, "run_id": r.run_id, "outputs": r.outputs}


@cli.group("state")
def state_group():
    """Inspect the state database."""


@state_group.command("list")
@click.option("--stack", default=None)
@json_option
@state_option
def state_list(stack, as_json, state_path):
    """Every recorded resource."""
    state = _read_existing(state_path)
    # Old copies of replaced resources are listed too, marked: they exist until their delete succeeds.
    records = (state.resources(stack) + state.pending_deletes(stack)) if state else []
    if as_json:
        _emit_json([{**_record_json(r), "pending_delete": r.pending_delete} for r in records])
        return
    if not records:
        out.print("No resources.")
        return
    table = Table("URN", "TYPE", "ID", "RUN", "", box=None)
    for r in records:
        table.add_row(r.urn, r.type, r.id, r.run_id or "(reusable)", "pending deletion" if r.pending_delete else "")
    out.print(table)


@state_group.command("show")
@click.argument("urn")
@json_option
@state_option
def state_show(urn, as_json, state_path):
    """One resource with its inputs and outputs."""
    state = _read_existing(state_path)
    rec = state.resource(urn) if state else None
    if rec is None:
        raise ConfigError(f"no resource {urn} in {state_path}", "URN")
    doc = {**_record_json(rec), "inputs": rec.inputs, "deps": rec.deps, "options": rec.options.to_dict(),
           "ephemeral": rec.ephemeral, "created": iso(rec.created), "last_used": iso(rec.last_used),
           "idle_ttl": rec.idle_ttl}
    if as_json:
        _emit_json(doc)
    else:
        for k, v in doc.items():
            out.print(f"[bold]{k}[/bold]: {escape(json.dumps(v, default=str))}")


@state_group.command("migrate")
@click.option("--to", "to", required=True, metavar="PATH|URL",
              help="The target: postgresql://... or a file path; it must hold no state yet.")
@click.option("--lock-timeout", type=float, default=0.0, show_default=True,
              help="Seconds to wait for each stack's lock in the source.")
@json_option
@state_option
def state_migrate(to, lock_timeout, as_json, state_path):
    """Copy every stack, run, resource, pending delete and journal row of the state into an
    empty target (SQLite -> PostgreSQL or back), verified row for row."""
    from .migrate import migrate

    report = migrate(state_path, locate(to), lock_timeout)
    if as_json:
        _emit_json(report)
        return
    counts = ", ".join(f"{n} {t.replace('_', ' ')}" for t, n in report["rows"].items())
    out.print(f"Copied {len(report['stacks'])} stack(s) ({counts}) from {escape(report['source'])} to "
              f"{escape(report['target'])}; verified row for row.")


@cli.command()
@click.option("--stack", default=None)
@json_option
@state_option
def runs(stack, as_json, state_path):
    """Runs, oldest first, with their status."""
    state = _read_existing(state_path)
    rows = state.runs(stack) if state else []
    docs = [{"run_id": r["run_id"], "stack": r["stack"], "task": r["task"], "status": r["status"],
             "started": iso(r["started"]), "finished": iso(r["finished"]), "error": r["error"]} for r in rows]
    if as_json:
        _emit_json(docs)
        return
    table = Table("RUN", "STACK", "TASK", "STATUS", "STARTED", "ERROR", box=None)
    for d in docs:
        table.add_row(d["run_id"], d["stack"], d["task"], d["status"], d["started"] or "", (d["error"] or "")[:80])
    out.print(table)


@cli.command()
@click.argument("stack")
@click.argument("lock_id")
@state_option
def unlock(stack, lock_id, state_path):
    """Break STACK's lock when its holder cannot release it (the lock id must match).

    With a PostgreSQL state this clears a stale holder record; the advisory lock of a live
    session cannot be broken (it is released when that session ends)."""
    from .lock import force_unlock, pg_force_unlock
    from .pgstate import PgTarget

    if isinstance(state_path, PgTarget):
        if not state_path.exists():
            raise ConfigError(f"stack {stack!r} is not locked", "STACK")
        state = State(state_path)
        try:
            holder = pg_force_unlock(state, stack, lock_id)
        finally:
            state.close()
        out.print(f"Cleared the stale lock record of stack {escape(stack)} (pid {holder.get('pid')} on "
                  f"{holder.get('host')}, whose database session has ended: the lock itself was free).")
        return
    holder = force_unlock(state_path, stack, lock_id)
    out.print(f"Unlocked stack {escape(stack)} (was held by pid {holder.get('pid')} on {holder.get('host')}).")


# ---------------------------------------------------------------------------------- image
@cli.group("image")
def image_group():
    """Container images (Flyte's Image and ImageBuildEngine)."""


@image_group.command("build")
@click.argument("target")
@click.option("--dry-run", is_flag=True, help="Render and plan only; print the Dockerfile on stdout.")
@click.option("--builder", type=click.Choice(["local"]), default="local", show_default=True)
@click.option("--force", is_flag=True, help="Build even when the state says this spec is built.")
@click.option("--load-local-cluster", is_flag=True,
              help="Then import each image into the local cluster's containerd (scripts/local-cluster.sh).")
@inputs_option
@json_option
@click.option("--lock-timeout", type=float, default=0.0, show_default=True)
@state_option
def image_build(target, dry_run, builder, force, load_local_cluster, inputs, as_json, lock_timeout, state_path):
    """Build TARGET (FILE.py:NAME or MODULE:NAME): an engine.Image, or a function that calls
    ImageBuildEngine.build itself (its arguments from -i), every build of which --dry-run previews."""
    import asyncio
    import inspect

    from .image import Image, ImageBuildEngine
    from .target import load_module, parse_inputs
    from .errors import TargetError

    spec, sep, attr = target.rpartition(":")
    if not sep:
        raise TargetError(f"{target!r} is not FILE.py:NAME or MODULE:NAME", "TARGET")
    obj = getattr(load_module(spec), attr, None)
    if not isinstance(obj, Image) and not callable(obj):
        raise TargetError(f"{spec} has no image or build function named {attr!r}", "TARGET")
    session = _session(state_path, lock_timeout=lock_timeout, reporter=Reporter() if as_json else ConsoleReporter(err))
    with ImageBuildEngine.scope(dry_run=dry_run, session=session) as scope:
        if isinstance(obj, Image):
            asyncio.run(ImageBuildEngine.build(obj, builder=builder, force=force))
        else:
            called = obj(**parse_inputs(inputs))
            if inspect.isawaitable(called):
                asyncio.run(called)
    if load_local_cluster and not dry_run:
        from .image import load_into_local_cluster

        for r in scope.results:
            load_into_local_cluster(r.uri)
    if as_json:
        _emit_json([{"uri": r.uri, "built": r.built, "dockerfile": r.dockerfile,
                     "plan": plan_json(r.plan) if r.plan else None} for r in scope.results])
        return
    for r in scope.results:
        if dry_run:
            if r.plan is not None:
                print_plan(err, r.plan, f"Build plan for {r.uri}:")
            click.echo(r.dockerfile, nl=False)
        else:
            click.echo(r.uri)


@cli.group("connectors")
def connectors_group():
    """Connectors: serve them over flyteidl2's gRPC services, or list them."""


modules_option = click.option("--modules", "-m", multiple=True, metavar="M",
                              help="A module (dotted name or FILE.py) defining connectors; repeatable, or "
                                   "comma-separated. The taskrig.connectors entry points load too.")


@connectors_group.command("serve")
@click.option("--port", type=int, default=8000, show_default=True, help="gRPC port (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True)
@modules_option
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port.")
def connectors_serve(port, host, modules, metrics_port):
    """Serve AsyncConnectorService, ConnectorMetadataService and gRPC health until Ctrl-C."""
    import asyncio

    from .connectors.server import load_connectors, serve

    load_connectors(modules)
    asyncio.run(serve(port, host, metrics_port, announce=lambda m: click.echo(m, err=False) or sys.stdout.flush()))


@connectors_group.command("list")
@modules_option
@json_option
def connectors_list(modules, as_json):
    """The connectors registered (and defined) after loading the modules."""
    from .connectors import ConnectorRegistry
    from .connectors.server import load_connectors

    load_connectors(modules)
    docs = [{"name": c.name, "task_type": c.task_type_name, "version": int(c.task_type_version),
             "class": f"{type(c).__module__}.{type(c).__qualname__}"} for c in ConnectorRegistry.list_connectors()]
    if as_json:
        _emit_json(docs)
        return
    if not docs:
        out.print("No connectors.")
        return
    table = Table("NAME", "TASK TYPE", "VERSION", "CLASS", box=None)
    for d in docs:
        table.add_row(escape(d["name"]), escape(d["task_type"]), str(d["version"]), escape(d["class"]))
    out.print(table)


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def _exit_code(argv) -> Callable[[int], int]:
    """``preview --detailed-exitcode`` is Terraform's contract: 0 no changes, 2 changes, 1 any
    error (bad input included, whose usual code 2 would read as "changes")."""
    args = sys.argv[1:] if argv is None else list(argv)
    if "--detailed-exitcode" in args and "preview" in args:
        return lambda code: 1 if code else 0
    return lambda code: code


def main(argv=None) -> None:
    signal.signal(signal.SIGTERM, _sigterm)
    gcpause.relax_for_this_process()
    code = _exit_code(argv)
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(code(e.exit_code or 0))
    except click.ClickException as e:
        e.show()
        sys.exit(code(2))
    except EngineError as e:
        err.print(f"[red]error:[/red] {escape(redact_text(str(e)))}")
        sys.exit(code(e.exit_code or 0))
    except (KeyboardInterrupt, click.exceptions.Abort):  # click turns Ctrl-C into Abort
        err.print("[yellow]interrupted; the run was torn down[/yellow]")
        sys.exit(code(130))
    except Exception:
        sys.stderr.write(redact_text(traceback.format_exc()))  # the whole chain, then redacted
        sys.exit(code(1))


if __name__ == "__main__":
    main()
