"""The anchor of bench_k8s_dask: what a data team writes by hand with dask-kubernetes' own
KubeCluster on the same cluster: make a 4-worker cluster from the same image, run the seed's
map from this process through the scheduler's ClusterIP, close it (the operator deletes it).

    python bench/plain_kubecluster.py IMAGE NAMESPACE
"""

from __future__ import annotations

import sys


def transform(x):
    return x * x


def main(image: str, namespace: str) -> None:
    from dask_kubernetes.operator import KubeCluster
    from distributed import Client

    cluster = KubeCluster(name="plain-bench", namespace=namespace, image=image, n_workers=4,
                          port_forward_cluster_ip=False, shutdown_on_close=True, quiet=True)
    try:
        client = Client(cluster)
        client.wait_for_workers(4, timeout=120)
        print(client.gather(client.map(transform, [1, 2, 3, 4, 5, 6, 7, 8])), flush=True)
        client.close()
    finally:
        cluster.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
