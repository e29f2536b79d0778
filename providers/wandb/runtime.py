"""What touches ``wandb`` itself: starting, finishing and marking runs, the per-rank hook, and
a reader of a run's transaction log.

This module imports nothing of the engine (nor pydantic): its ``RankInit`` is shipped, by
value, to torch elastic workers, which should not have to import the engine to log.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import struct
import time
from typing import Any, Iterator

# The W&B run a task's body sees where no engine context exists: a torch elastic rank (set by
# RankInit) or a plain function under @wandb_init.
_current: list[Any] = []


def current_run():
    return _current[-1] if _current else None


def _own_service() -> None:
    """Use a W&B service this process starts, not one inherited through WANDB_SERVICE from a
    parent that used wandb (a notebook, a test runner, the engine for a rank). A shared
    service keeps a dead writer's run id "in use", so the next command could not mark that
    run crashed, and a rank could not write into the engine's run. Once this process has set
    wandb up, its own service stands and nothing changes."""
    from wandb.sdk import wandb_setup

    setup = getattr(wandb_setup, "_singleton", None)
    if setup is None or getattr(setup, "_pid", None) != os.getpid():
        os.environ.pop("WANDB_SERVICE", None)


def init_run(spec: dict, run_id: str, api_key: str | None = None, *, dir: str | None = None,
             label: str | None = None, primary: bool = True, resume: str | None = None,
             group: str | None = None, extra_tags: tuple[str, ...] = ()):
    """``wandb.init`` for one run of ``spec`` (a resource's inputs). Silent and without console
    capture: the engine's own stdout carries ``--json`` documents that W&B must not write into.
    A secondary writer (``primary=False``: a rank logging into the engine's run) neither saves
    the run's files nor sets its final state; the engine's process does that at teardown."""
    import wandb

    _own_service()
    mode = spec["mode"]
    settings: dict[str, Any] = {"silent": True, "console": "off"}
    if api_key:
        settings["api_key"] = api_key  # in memory only: never wandb.login, which writes ~/.netrc
    if not primary:
        settings.update(x_primary=False, x_update_finish_state=False)
        if mode == "online":
            mode = "shared"  # W&B's multi-writer mode for one run
    if label:
        settings["x_label"] = label
    root = dir or spec["dir"]
    os.makedirs(root, exist_ok=True)  # wandb warns about a missing git root otherwise
    return wandb.init(
        id=run_id, project=spec["project"], entity=spec["entity"], name=spec["name"], notes=spec["notes"],
        group=group or spec["group"], job_type=spec["job_type"], tags=[*spec["tags"], *extra_tags],
        config=spec["config"] if primary else None, dir=root, mode=mode, resume=resume, reinit="create_new",
        settings=wandb.Settings(**settings),
    )


def finish_run(run, exit_code: int, timeout: float = 60.0) -> None:
    """``run.finish`` and then wait, bounded, until the run's ``.wandb`` file holds its exit
    record, so that whoever reads the file once this returns reads the whole run.

    ``finish`` returns once the service has acknowledged the exit record, and then asks it to
    close the run's stream without waiting (``inform_finish`` has no reply). wandb-core buffers
    the log in memory (LevelDB's 32 KiB blocks) and, offline, writes it out only when it closes
    that stream: right after ``finish`` the file can still be its bare 7-byte header."""
    settings = run.settings
    run.finish(exit_code=exit_code)
    if settings.mode == "disabled" or settings.x_skip_transaction_log:
        return  # mode "disabled", or told to keep no log: no file will come
    path, deadline, size = settings.sync_file, time.monotonic() + timeout, -1
    while True:
        now = os.path.getsize(path) if os.path.exists(path) else -1
        if now != size:  # parse only a file that has grown: a long run's log is large
            size = now
            if now > 0 and any(r.WhichOneof("record_type") == "exit" for r in read_records(path)):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"W&B run {run.id}: finished, but {path} holds no exit record after {timeout:.0f} s "
                               f"({size} bytes): the W&B service (wandb-core) did not write the run's log; "
                               f"see {os.path.join(settings.sync_dir, 'logs', 'debug-internal.log')}")
        time.sleep(0.01)


# ---------------------------------------------------------------------------------- records
def read_records(path: str) -> Iterator[Any]:
    """The records of a run's ``.wandb`` file (LevelDB's log format after W&B's 7-byte header),
    as ``wandb_internal_pb2.Record``. A torn tail (a killed writer) ends the iteration."""
    from wandb.proto import wandb_internal_pb2 as pb

    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b":W&B":
        return
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        chunk = data[pos:pos + length]
        pos += length
        if len(chunk) < length or kind == 0:
            return
        if kind == 1:  # FULL
            payload = chunk
        elif kind == 2:  # FIRST
            pending = chunk
            continue
        elif kind == 3:  # MIDDLE
            pending += chunk
            continue
        else:  # LAST
            payload = pending + chunk
        record = pb.Record()
        record.ParseFromString(payload)
        yield record


def run_files(root: str, run_id: str) -> list[str]:
    """Every ``.wandb`` file of ``run_id`` under ``root`` (its segments and its ranks' own dirs).
    W&B names a segment's folder ``<mode>-run-<second>-<id>`` and adds ``-<n>`` when another
    segment of the run began in the same second (a resume right after a crash). Oldest first."""
    folder = re.compile(rf"[a-z]+-run-(\d{{8}}_\d{{6}})-{re.escape(run_id)}(?:-(\d+))?")
    pats = [os.path.join(root, "wandb", f"*run-*-{glob.escape(run_id)}*", f"run-{glob.escape(run_id)}.wandb"),
            os.path.join(root, "rank-*", "wandb", f"*run-*-{glob.escape(run_id)}*", f"run-{glob.escape(run_id)}.wandb")]
    found = {}
    for path in {p for pat in pats for p in glob.glob(pat)}:
        m = folder.fullmatch(os.path.basename(os.path.dirname(path)))
        if m:
            found[path] = (m[1], int(m[2] or 0), path)
    return sorted(found, key=found.__getitem__)


def rank_run_ids(root: str, run_id: str) -> list[str]:
    """Ids of the runs ranks made for ``run_id`` (``<id>-rank<N>``, ``<id>-worker<N>``)."""
    ids = set()
    for pat in (os.path.join(root, "wandb", f"*run-*-{glob.escape(run_id)}-*"),
                os.path.join(root, "rank-*", "wandb", f"*run-*-{glob.escape(run_id)}-*")):
        for d in glob.glob(pat):
            tail = os.path.basename(d).split(f"-{run_id}-", 1)[-1].split("-")[0]  # no same-second suffix
            if tail.startswith(("rank", "worker")):
                ids.add(f"{run_id}-{tail}")
    return sorted(ids)


def exit_code(root: str, run_id: str) -> int | None:
    """The exit code some segment of the run recorded, or None: nobody finished it."""
    for path in run_files(root, run_id):
        for r in read_records(path):
            if r.WhichOneof("record_type") == "exit":
                return r.exit.exit_code
    return None


def mark_crashed(spec: dict, run_id: str, reason: str, root: str | None = None) -> None:
    """Write down that a run's process died: a new segment of the same run (W&B's resume)
    with ``engine/status: crashed`` and the reason in its summary, tagged ``crashed``, and
    finished with exit code 1, so the run is not left looking alive."""
    run = init_run(spec, run_id, dir=root, resume="allow", extra_tags=("crashed",))
    run.summary["engine/status"] = "crashed"
    run.summary["engine/error"] = reason
    finish_run(run, 1)


# ---------------------------------------------------------------------------------- ranks
class RankInit:
    """The per-rank hook: called in each torch elastic worker, it returns a context manager
    that starts this rank's W&B run as the config asks (``run_mode`` x ``rank_scope``, Flyte's
    semantics), makes it ``get_wandb_run()``'s answer, and finishes it with the body's status.

    - ``auto``: only the primary rank logs (global rank 0, or local rank 0 of each node with
      ``rank_scope="worker"``); the others get None.
    - ``shared``: every rank logs (into the engine's run, or its node's run with ``worker``).
    - ``new``: every rank has its own run ``<id>-rank<N>``, grouped under the engine's run id.

    Ranks that log into the engine's own run are secondary writers: the engine's process
    created that run before the task and finishes it at teardown.
    """

    def __init__(self, spec: dict, api_key_env: str | None):
        self.spec = {k: v for k, v in spec.items() if k != "api_key"}  # never a value in a pickle
        self.api_key_env = api_key_env

    def __call__(self):
        return self._run()

    @contextlib.contextmanager
    def _run(self):
        spec = self.spec
        rank, local, node = (int(os.environ.get(k, "0")) for k in ("RANK", "LOCAL_RANK", "GROUP_RANK"))
        worker = spec["rank_scope"] == "worker"
        primary = local == 0 if worker else rank == 0
        mode = spec["run_mode"]
        if mode == "auto" and not primary:
            yield None
            return
        base = spec["id"]
        if mode == "new":
            run_id, own, group = f"{base}-rank{rank}", True, base
        elif worker:
            run_id, own, group = f"{base}-worker{node}", primary, base
        else:
            run_id, own, group = base, False, None
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        # Writers of one run id each get a folder: two offline segments started in the same
        # second would otherwise share W&B's offline-run-<time>-<id> directory.
        root = os.path.join(spec["dir"], f"rank-{rank}") if not own or worker else spec["dir"]
        run = init_run(spec, run_id, key, dir=root, label=f"rank-{rank}", primary=own, group=group)
        _current.append(run)
        code = 1
        try:
            yield run
            code = 0
        finally:
            _current.remove(run)
            finish_run(run, code)
