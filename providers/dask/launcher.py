"""Starts a local cluster's scheduler and workers from one interpreter that imported
``distributed`` once, by forking it.

Each of five fresh interpreters (a scheduler, four workers) spends about 0.3 s of CPU
importing distributed; on a two-core machine that is most of a cluster's start-up. Forked
children share the import instead (multiprocessing's forkserver preload does the same). Every
child is still a real dask process: the dask CLI's own ``main`` with the same arguments, in a
session of its own, writing its own log. This parent prints the children's pids as one JSON
line, then stays to reap them (an orphan's exit would otherwise leave a zombie where nothing
reaps) and exits with the last of them; it ignores SIGTERM, which is for the children.

    python -m providers.dask.launcher '[{"kind": "scheduler"|"worker", "args": [...], "log": P, "cwd": D}]'

Run with ``-m``, it imports its package first, and so the engine: every task module imports
the engine and its plugin, and a worker unpickling one of its functions imports that module.
Forked from here, the workers have them already (about 0.2 s less per Dask run on two cores
than running this file by path, which imports neither).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback


def _child(spec: dict, mains: dict) -> int:
    os.setsid()
    fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(spec["cwd"])
    kind = spec["kind"]
    sys.argv = [f"dask-{kind}", *spec["args"]]
    try:
        mains[kind](args=spec["args"], prog_name=f"dask {kind}", standalone_mode=True)
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        return 1


def main() -> None:
    specs = json.loads(sys.argv[1])
    from distributed.cli import dask_scheduler, dask_worker

    mains = {"scheduler": dask_scheduler.main, "worker": dask_worker.main}
    pids = []
    for spec in specs:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(spec, mains)
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        pids.append(pid)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(json.dumps(pids), flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the engine stops reading after the pids
    os.close(devnull)
    for _ in pids:
        try:
            os.wait()
        except ChildProcessError:
            break


if __name__ == "__main__":
    main()
