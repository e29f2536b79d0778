"""Dask bodies that run in a pod of the kubernetes backend (image None: ENGINE_K8S_IMAGE, the
test cluster's task image). Each reports where it ran, so the tests can tell a pod from here."""

import os
import socket
import time

import engine
from providers.dask import Dask, Scheduler, WorkerGroup

four = engine.TaskEnvironment(name="k8s_body", plugin_config=Dask(workers=WorkerGroup(number_of_workers=4)),
                              backend="kubernetes")

one = engine.TaskEnvironment(name="k8s_body1", plugin_config=Dask(workers=WorkerGroup(number_of_workers=1)),
                             backend="kubernetes")

# Kept between runs; the body's pod gets 256Mi, the scheduler and worker their own 1Gi.
_big = engine.Resources(memory="1Gi")
kept = engine.TaskEnvironment(
    name="k8s_body_kept", backend="kubernetes", resources=engine.Resources(memory="256Mi"),
    plugin_config=Dask(scheduler=Scheduler(resources=_big), workers=WorkerGroup(number_of_workers=1, resources=_big)),
    reusable=engine.ReusePolicy(idle_ttl=600))


def square_where(x):
    return x * x, socket.gethostname()


@four.task
def where(data: list) -> dict:
    from distributed import Client

    client = Client()
    pairs = client.gather(client.map(square_where, data))
    workers = client.run(socket.gethostname)
    print(f"squares computed by {len(workers)} workers", flush=True)
    return {"result": [p[0] for p in pairs], "hostname": socket.gethostname(),
            "in_cluster": bool(os.environ.get("KUBERNETES_SERVICE_HOST")), "worker_hosts": sorted(workers.values()),
            "computed_on": sorted({p[1] for p in pairs})}


def _nested_failure(n):
    raise ValueError(f"boom from the pod {socket.gethostname()} at {n}")


@one.task
def boom(n: int = 3) -> int:
    return _nested_failure(n)


@one.task
def sleepy(seconds: float = 120.0) -> str:
    print("sleeping in the pod", flush=True)
    time.sleep(seconds)
    return "done"


@kept.task
def chatty(lines: int = 3) -> int:
    for i in range(lines):
        print(f"line {i} from {socket.gethostname()}", flush=True)
        time.sleep(0.4)
    return lines


@kept.task
def hog(mib: int = 2048) -> int:
    chunks = []
    for _ in range(mib // 64):
        chunk = bytearray(64 * 2**20)
        chunk[::4096] = b"x" * len(chunk[::4096])  # touched: resident, not just reserved
        chunks.append(chunk)
    return len(chunks)
