"""One rank of the test launcher: enter the per-rank hooks around a body that logs."""

import contextlib
import json
import os
import sys
from pathlib import Path

import cloudpickle

from providers.wandb import get_wandb_run

out = Path(sys.argv[1])
hooks = cloudpickle.loads((out / "hooks.pkl").read_bytes())
rank = int(os.environ["RANK"])
with contextlib.ExitStack() as stack:
    for hook in hooks:
        stack.enter_context(hook())
    run = get_wandb_run()
    if run is not None:
        run.log({"rank": rank})
    (out / f"{rank}.json").write_text(json.dumps({"rank": rank, "run": run.id if run else None}))
