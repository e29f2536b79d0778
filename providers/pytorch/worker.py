"""What each torch elastic worker runs: ``torchrun ... worker.py JOB_DIR``.

It loads the task's function and inputs (cloudpickled by the engine into JOB_DIR), joins the
process group that torchrun's environment describes (``init_process_group`` over gloo on
CPU), calls the function, and leaves the outcome in files, because the engine is not its
parent: rank 0 writes ``result.pkl``, a rank that raises writes
``errors/<restart>-<rank>.json`` (message and traceback) and exits 1 so the agent restarts
the group or gives up.

torchrun runs it by path, not with ``-m``: ``-m providers.pytorch.worker`` would import the
package, hence the engine and pydantic, in every worker. Only torch and cloudpickle are
needed here.
"""

import contextlib
import os
import sys

# Run by path, this file's folder is sys.path[0]: its siblings (config.py, plugin.py, ...) must
# not shadow the user's modules of the same names.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _restore_filenames(fn, filename) -> None:
    """cloudpickle ships code by value under the file name '<dynamic-code>'; give the task's
    functions their file back so a rank's traceback shows real paths and source lines."""
    import types

    def fix(code):
        consts = tuple(fix(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
        return code.replace(co_filename=filename, co_consts=consts) if code.co_filename == "<dynamic-code>" else code

    for f in {id(f): f for f in [fn, *getattr(fn, "__globals__", {}).values()]}.values():
        if isinstance(f, types.FunctionType) and f.__module__ == fn.__module__:
            f.__code__ = fix(f.__code__)


def _call(fn, inputs: dict):
    import asyncio
    import inspect

    out = fn(**inputs)
    return asyncio.run(out) if inspect.isawaitable(out) else out


def main(job_dir: str) -> int:
    import json
    import time
    import traceback

    rank = int(os.environ.get("RANK", "0"))
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    try:
        import cloudpickle

        with open(os.path.join(job_dir, "payload.pkl"), "rb") as f:
            payload = cloudpickle.load(f)
        if payload.get("file"):
            _restore_filenames(payload["fn"], payload["file"])
        os.chdir(payload["cwd"])  # relative paths mean what they mean to the task in-process

        import torch
        import torch.distributed as dist

        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group(backend=backend)
        with contextlib.ExitStack() as hooks:
            for hook in payload.get("per_rank", ()):
                hooks.enter_context(hook())
            result = _call(payload["fn"], payload["inputs"])
        if rank == 0:
            _write_atomic(os.path.join(job_dir, "result.pkl"), cloudpickle.dumps(result))
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception as e:  # noqa: BLE001 - every failure of the body is reported, then fails the rank
        doc = {"rank": rank, "restart": restart, "time": time.time(), "pid": os.getpid(),
               "type": type(e).__qualname__, "message": str(e), "traceback": traceback.format_exc()}
        _write_atomic(os.path.join(job_dir, "errors", f"{restart}-{rank}.json"), json.dumps(doc).encode())
        if restart < int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")):
            traceback.print_exc()  # the group restarts: say why now; a final failure the engine prints
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
