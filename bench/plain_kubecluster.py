"""The anchor of bench_k8s_dask: what a data team writes by hand with dask-kubernetes' own
KubeCluster on the same cluster: make a 4-worker cluster from the same image, run the seed's
map from this process through the scheduler's ClusterIP, close it (the operator deletes it).

    python bench/plain_kubecluster.py IMAGE NAMESPACE

One thing is changed in KubeCluster, and only to get past a bug of the operator's: its first
wait (``_wait_for_controller``, "is the Dask operator running?") polls for phase ``Running``.
dask-kubernetes 2026.3.0 writes ``Running`` from the scheduler Service's status handler, which
on a fast node fires while the DaskCluster's create handler is still running; that handler's
own ``Pending`` then lands last and the cluster stays ``Pending`` for good (dask/dask-kubernetes
#968: "not actioned after 60 seconds"). Here that wait accepts any phase the operator wrote,
which answers the question it asks; KubeCluster's next waits (the scheduler pod, its Service,
a connection to the scheduler) are its own, unchanged.

On this machine it still fails after those two changes: KubeCluster asks kr8s 0.20.15 (the
version dask-kubernetes 2026.3.0 installs with) for the scheduler Service's ready pods, and kr8s
raises "Unexpected type <class 'list'> returned from API" (its asyncio Service gets pods of its
sync Pod class), in more than one of KubeCluster's own waits. BENCHMARKS.md says so.
"""

from __future__ import annotations

import sys


def transform(x):
    return x * x


def _operator_actioned_it(KubeCluster) -> None:
    import asyncio
    import time

    from dask_kubernetes.operator._objects import DaskCluster

    async def wait_for_controller(self):
        start = time.time()
        cluster = await DaskCluster.get(self.name, namespace=self.namespace, timeout=30)
        while start + self._resource_timeout > time.time():
            await cluster.async_refresh()
            if (cluster.raw.get("status") or {}).get("phase"):
                return
            await asyncio.sleep(0.25)
        raise TimeoutError(f"Dask Cluster resource not actioned after {self._resource_timeout} seconds")

    KubeCluster._wait_for_controller = wait_for_controller


def main(image: str, namespace: str) -> None:
    from dask_kubernetes.operator import KubeCluster, make_cluster_spec
    from distributed import Client

    _operator_actioned_it(KubeCluster)

    # dask-kubernetes 2026.3.0 starts its pods with ``dask-scheduler`` / ``dask-worker``, console
    # scripts that distributed 2026.8 no longer installs (only ``dask``): the spec says
    # ``dask scheduler`` / ``dask worker``, as ours does.
    spec = make_cluster_spec(name="plain-bench", image=image, n_workers=4, worker_command="dask worker")
    spec["spec"]["scheduler"]["spec"]["containers"][0]["args"] = ["dask", "scheduler", "--host", "0.0.0.0"]
    cluster = KubeCluster(custom_cluster_spec=spec, namespace=namespace, port_forward_cluster_ip=False,
                          shutdown_on_close=True, quiet=True)
    try:
        client = Client(cluster)
        client.wait_for_workers(4, timeout=120)
        print(client.gather(client.map(transform, [1, 2, 3, 4, 5, 6, 7, 8])), flush=True)
        client.close()
    finally:
        cluster.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
