"""W&B tasks the tests run through the real CLI, offline (no network)."""

import os
import time
from pathlib import Path

import engine
from providers.dask import Dask, WorkerGroup
from providers.wandb import WandB, get_wandb_run, wandb_init

env = engine.TaskEnvironment(name="wandb_t", plugin_config=WandB(project="taskrig-tests", mode="offline",
                                                                 tags=["test"], config={"lr": 0.01}))
plain = engine.TaskEnvironment(name="wandb_plain")
with_dask = engine.TaskEnvironment(
    name="wandb_dask", plugin_config=[Dask(workers=WorkerGroup(number_of_workers=1)), WandB(mode="offline")])


@env.task
def train(steps: int = 3) -> dict:
    run = get_wandb_run()
    for i in range(steps):
        run.log({"loss": 1.0 / (i + 1)})
    return {"id": run.id, "dir": run.dir, "project": run.project, "lr": run.config["lr"]}


@env.task
def fails(steps: int = 2) -> None:
    run = get_wandb_run()
    for i in range(steps):
        run.log({"loss": float(i)})
    raise ValueError("the training diverged on purpose")


@env.task
def slow(marker: str, seconds: float = 60.0) -> str:
    get_wandb_run().log({"loss": 0.5})
    Path(marker).write_text(get_wandb_run().id)
    time.sleep(seconds)
    return "done"


@wandb_init(project="decorated", mode="offline", tags=["decorated"])
@plain.task
def decorated(x: int) -> dict:
    run = get_wandb_run()
    run.log({"x": x})
    return {"id": run.id, "tags": list(run.tags), "project": run.project}


@plain.task
def no_wandb() -> bool:
    return get_wandb_run() is None


@with_dask.task
def beside_dask(n: int = 3) -> dict:
    from distributed import Client

    with Client() as c:
        total = sum(c.gather(c.map(lambda x: x * x, range(n))))
    get_wandb_run().log({"total": total})
    return {"total": total, "id": get_wandb_run().id, "dask": os.environ["DASK_SCHEDULER_ADDRESS"]}


# ---------------------------------------------------------------------------- ranks
# A minimal launcher in the task body, doing what a launcher plugin (torch elastic) does with
# engine.ctx().data["per_rank"]: ship the hooks to every rank and enter them around the body.
ranks_auto = engine.TaskEnvironment(name="wandb_ranks_auto", plugin_config=WandB(mode="offline"))
ranks_new = engine.TaskEnvironment(name="wandb_ranks_new", plugin_config=WandB(mode="offline", run_mode="new"))


def _launch(nproc: int) -> list:
    import json
    import subprocess
    import sys

    import cloudpickle

    hooks = engine.ctx().data["per_rank"]
    out = Path(f"ranks-{engine.ctx().run_id}")
    out.mkdir()
    (out / "hooks.pkl").write_bytes(cloudpickle.dumps(hooks))
    worker = Path(__file__).with_name("wandb_rank_worker.py")
    with open(out / "torchrun.log", "wb") as log:
        code = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                               str(nproc), "--monitor-interval", "0.2", str(worker), str(out)], stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
    if code != 0:
        raise RuntimeError(f"torchrun exited {code}:\n{(out / 'torchrun.log').read_text()[-3000:]}")
    return [json.loads((out / f"{r}.json").read_text()) for r in range(nproc)]


@ranks_auto.task
def ranks_auto_launch(nproc: int = 2) -> list:
    return _launch(nproc)


@ranks_new.task
def ranks_new_launch(nproc: int = 2) -> list:
    return _launch(nproc)
