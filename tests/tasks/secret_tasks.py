"""Tasks that take secrets, for the secret tests: every plugin that takes one."""

import hashlib
import os
import stat
from pathlib import Path

import engine
from providers.dask import Dask, WorkerGroup
from providers.wandb import WandB, get_wandb_run


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


SECRETS = [engine.Secret(key="db_password", as_env_var="DB_PASSWORD"),
           engine.Secret(key="token", group="svc", mount="/etc/flyte/secrets")]

dask_env = engine.TaskEnvironment(name="secret_dask", plugin_config=Dask(workers=WorkerGroup(number_of_workers=1)),
                                  secrets=SECRETS)
wandb_env = engine.TaskEnvironment(name="secret_wandb", plugin_config=WandB(mode="offline", config={"lr": 0.1}),
                                   secrets=[engine.Secret(key="wandb_api_key")])
missing_env = engine.TaskEnvironment(name="secret_missing",
                                     plugin_config=Dask(workers=WorkerGroup(number_of_workers=1)),
                                     secrets=[engine.Secret(key="nowhere_to_be_found", group="vault")])


@dask_env.task
def uses_secrets() -> dict:
    """Proves the task got the values (by hash, so the output never holds one)."""
    from distributed import Client

    path = Path(os.environ["SVC_TOKEN_FILE"])
    with Client() as c:
        # A worker computes the env secret's hash: the value reaches the cluster as a task input.
        remote = c.submit(sha, os.environ["DB_PASSWORD"]).result()
    return {"env_sha": sha(os.environ["DB_PASSWORD"]), "remote_sha": remote, "file_sha": sha(path.read_text()),
            "file_mode": oct(stat.S_IMODE(path.stat().st_mode)),
            "dir_mode": oct(stat.S_IMODE(path.parents[4].stat().st_mode)),
            "path": str(path), "token_env": os.environ.get("SVC_TOKEN")}


@dask_env.task
def leaks_in_error() -> None:
    """A library error that quotes its credential, as auth errors sometimes do."""
    raise PermissionError(f"login refused for password {os.environ['DB_PASSWORD']!r}")


@wandb_env.task
def wandb_with_key(steps: int = 2) -> dict:
    run = get_wandb_run()
    for i in range(steps):
        run.log({"loss": 1.0 / (i + 1)})
    return {"id": run.id, "env_sha": sha(os.environ["WANDB_API_KEY"])}


@missing_env.task
def needs_missing() -> int:
    return 1


plain_env = engine.TaskEnvironment(name="secret_plain", secrets=[engine.Secret(key="token", group="svc", mount="/s")])


@plain_env.task
def mounted_then_sleep(marker: str, seconds: float = 60.0) -> str:
    """Leaves the mounted file's path in a marker, then sleeps: the crash test kills it here."""
    import time

    Path(marker).write_text(os.environ["SVC_TOKEN_FILE"])
    time.sleep(seconds)
    return "done"


@plain_env.task
def quick() -> int:
    return 1
