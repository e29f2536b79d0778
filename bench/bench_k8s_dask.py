"""``engine up --backend kubernetes`` of the seed's Dask example (provision the DaskCluster,
run the body in a pod on 4 worker pods, tear everything down) against a hand-written script
doing the same through dask-kubernetes' own KubeCluster (plain_kubecluster.py), on the same
local node with the same image, alternating, median of N. Goal: at most 1.2x.

Not the same work, and said so: the engine also ships the code bundle and the inputs, starts
the runner pod and waits, on delete, until the operator's pods are gone; the
anchor runs its map from this machine and returns once the DaskCluster object is deleted.

    python bench/bench_k8s_dask.py [--rounds 2]   (the node must be running:
                                                   scripts/local-cluster.sh start --operators dask)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, emit, ratio, table  # noqa: E402

NODE_ENV = Path(os.environ.get("TASKRIG_K8S_NODE") or Path.home() / ".cache/taskrig-k8s/node") / "env"
SEED = ROOT / "examples" / "dask_example.py"


def _timed(argv: list[str], env: dict, cwd: str) -> tuple[float, str | None]:
    """Seconds, and None or why it failed (its last error line)."""
    t0 = time.monotonic()
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    if r.returncode != 0 or "64" not in r.stdout:  # the last square, in either output
        lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()]
        return took, f"exit {r.returncode}: {lines[-1] if lines else 'no output'}"
    return took, None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if not NODE_ENV.exists():
        sys.exit("no local node runs: scripts/local-cluster.sh start --operators dask")
    node = dict(line.split("=", 1) for line in NODE_ENV.read_text().splitlines() if "=" in line)
    image = node["TASKRIG_TASK_IMAGE"]
    namespace = "default"
    env = {**os.environ, **node, "ENGINE_K8S_IMAGE": image, "ENGINE_K8S_NAMESPACE": namespace}
    engine_s, plain_s, plain_failed = [], [], None
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(args.rounds):
            took, failed = _timed([sys.executable, "-m", "engine.cli", "up", f"{SEED}:process_data", "-i",
                                   "data=[1,2,3,4,5,6,7,8]", "--backend", "kubernetes", "--json"], env, cwd)
            if failed:
                sys.exit(f"engine up failed: {failed}")
            engine_s.append(took)
            if plain_failed is None:
                took, plain_failed = _timed([sys.executable, str(ROOT / "bench" / "plain_kubecluster.py"), image,
                                             namespace], env, cwd)
                if not plain_failed:
                    plain_s.append(took)
    e = statistics.median(engine_s)
    p = statistics.median(plain_s) if plain_s else None
    print(table(["figure", "engine up --backend kubernetes", "KubeCluster script", "ratio"],
                [["wall, provision + run + teardown (s)", round(e, 1), round(p, 1) if p else "failed",
                  ratio(e, p) if p else "-"]]))
    if plain_failed:
        print(f"the KubeCluster script failed ({plain_failed}); see plain_kubecluster.py", file=sys.stderr)
    emit({"bench": "k8s_dask", "engine_s": [round(x, 2) for x in engine_s], "kubecluster_s": [round(x, 2) for x in plain_s],
          "kubecluster_failed": plain_failed, "ratio": ratio(e, p) if p else None, "goal": 1.2})

if __name__ == "__main__":
    main()
