"""``wandb:index:Run``: a W&B run as a resource of an engine run.

``create`` is ``wandb.init`` in the engine's process, with the engine's run id as the W&B run
id; ``delete`` finishes it with the task's exit status (the plugin records it when the run
ends). A run whose engine died has no live object anywhere: the next command's ``delete``
finds it by id in the run directory and, offline, marks it crashed by resuming it (W&B
marks an online run crashed by itself once its heartbeats stop). The API key reaches
``create`` as a secret input: it is never in the inputs the state records, in the outputs,
or in an error this module raises.
"""

from __future__ import annotations

import threading

from engine.extend import Provider, ProviderRegistry

from . import runtime

TYPE_TOKEN = "wandb:index:Run"

# W&B run id -> the live wandb Run this process created, and the status to finish it with.
_live: dict[str, object] = {}
_exit: dict[str, int] = {}
_lock = threading.Lock()


def live_run(run_id: str):
    return _live.get(run_id)


def set_exit_status(run_id: str, code: int) -> None:
    _exit[run_id] = code


def _masked(e: BaseException, key: str | None) -> BaseException:
    text = f"{type(e).__name__}: {e}"
    return RuntimeError(text.replace(key, "[secret]") if key else text)


class WandbRun(Provider):
    type_token = TYPE_TOKEN
    replace_keys = ("*",)

    def create(self, urn: str, inputs: dict, idempotency_key: str) -> tuple[str, dict]:
        key = inputs.get("api_key")
        try:
            with _lock:  # wandb.init is not meant to race itself in one process
                run = runtime.init_run(inputs, inputs["id"], key)
        except Exception as e:
            raise _masked(e, key) from None  # wandb's own text may quote what it was given
        _live[run.id] = run
        run_dir = run.dir.rsplit("/files", 1)[0] if run.dir else None
        return idempotency_key, {"id": run.id, "project": inputs["project"], "entity": inputs["entity"],
                                 "mode": inputs["mode"], "dir": inputs["dir"], "run_dir": run_dir,
                                 "url": run.url if inputs["mode"] == "online" else None}

    def read(self, id: str, inputs: dict, outputs: dict | None):
        run_id = inputs["id"]
        if run_id in _live:
            return outputs
        found = runtime.run_files(inputs["dir"], run_id)
        if not found:
            return None
        return outputs if outputs is not None else {"id": run_id, "files": found}

    def delete(self, id: str, inputs: dict, outputs: dict | None) -> None:
        run_id = inputs["id"]
        run = _live.pop(run_id, None)
        if run is not None:
            code = _exit.pop(run_id, 1)  # no status recorded: the run ended in a way nobody saw
            with _lock:
                runtime.finish_run(run, code)
            reason = f"rank process ended without finishing its W&B run (task exit status {code})"
        else:
            reason = "the engine process running the task died; marked crashed by the next command on the stack"
        if inputs["mode"] != "offline":
            return  # online: W&B marks a run whose heartbeats stopped crashed; disabled: nothing to mark
        # Runs no process finished: the engine's own (its process died) and ranks' that were
        # stopped with their job. Each gets a crashed segment.
        ids = ([] if run is not None else [run_id]) + runtime.rank_run_ids(inputs["dir"], run_id)
        for rid in ids:
            if runtime.run_files(inputs["dir"], rid) and runtime.exit_code(inputs["dir"], rid) is None:
                with _lock:
                    runtime.mark_crashed(inputs, rid, reason)


ProviderRegistry.register(WandbRun)
