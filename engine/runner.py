"""The other end of a body that runs away from the engine: ``python -m engine.runner``.

Run in a pod from the task image: fetch the run's code bundle from its data location, import
the task's module from it, call the plugins' ``--setup`` hooks (Dask's hands the code to its
scheduler and workers), load the inputs, call the body as the local backend does, and leave
its result (``outputs.pkl``, cloudpickle) or its error (``error.json``: type, message,
traceback) beside them. The engine reads those back; the exit code (0, or 1 for an error the
body raised) and the container's own end (OOMKilled, a signal) say which to expect.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import traceback
from pathlib import Path

from . import bundle, context, data

EXIT_BODY_FAILED = 1


def _find_task(module, env_name: str, short_name: str):
    from .sdk import TaskEnvironment

    for value in vars(module).values():
        if isinstance(value, TaskEnvironment) and value.name == env_name and short_name in value.tasks:
            return value.tasks[short_name]
    raise LookupError(f"module {module.__name__} has no environment {env_name!r} with a task {short_name!r} "
                      f"(is the bundle older than the image's engine?)")


def _fail(run: str, e: BaseException) -> int:
    doc = {"type": f"{type(e).__module__}.{type(e).__qualname__}", "message": str(e),
           "traceback": "".join(traceback.format_exception(e))}
    try:
        data.put(data.join(run, data.ERROR), json.dumps(doc).encode())
    except Exception as put_error:  # noqa: BLE001 - the log is the only way left to say it
        print(doc["traceback"], file=sys.stderr)
        print(f"[engine.runner] could not write the error to {run}: {put_error}", file=sys.stderr)
    return EXIT_BODY_FAILED


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.runner")
    ap.add_argument("--run", required=True, help="the run's data folder (an fsspec URL)")
    ap.add_argument("--module", required=True)
    ap.add_argument("--env", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--run-id", default="")
    ap.add_argument("--stack", default="")
    ap.add_argument("--ctx-data", default="{}", help="JSON: the plugins' engine.ctx().data entries")
    ap.add_argument("--setup", action="append", default=[], metavar="MODULE:FUNCTION",
                    help="called with the source folder before the body (a plugin's: ship the code on)")
    args = ap.parse_args(argv)
    import cloudpickle

    try:
        code = data.get(data.join(args.run, data.BUNDLE))
        if code is None:
            raise FileNotFoundError(f"no code bundle at {data.join(args.run, data.BUNDLE)}")
        src = Path(tempfile.mkdtemp(prefix="taskrig-src-"))
        bundle.extract(code, src)
        sys.path.insert(0, str(src))
        module = importlib.import_module(args.module)
        # The cluster's workers have the image, not the bundle: the bundle's functions travel
        # by value, as they do from an engine that loaded the task from a file.
        cloudpickle.register_pickle_by_value(sys.modules[args.module.split(".")[0]])
        task = _find_task(module, args.env, args.task)
        for ref in args.setup:
            name, _, attr = ref.partition(":")
            getattr(importlib.import_module(name), attr)(str(src))
        raw = data.get(data.join(args.run, data.INPUTS))
        inputs = cloudpickle.loads(raw) if raw else {}
    except BaseException as e:  # noqa: BLE001 - reported as the body's failure, with its traceback
        return _fail(args.run, e)
    tc = context.TaskContext(run_id=args.run_id, stack=args.stack, task=task.name, env=task.env, session=None,
                             data=json.loads(args.ctx_data), fn=task.fn, inputs=inputs)
    token = context.enter(tc)
    try:
        result = task.call_body(inputs)
    except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt / SystemExit of the body too
        return _fail(args.run, e)
    finally:
        context.leave(token)
        sys.stdout.flush()
    try:
        data.put(data.join(args.run, data.OUTPUTS), cloudpickle.dumps(result))
    except BaseException as e:  # noqa: BLE001 - an unpicklable result is the body's error
        return _fail(args.run, e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
