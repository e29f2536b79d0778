"""The anchor of bench_dask.py: the same map with plain Dask, no engine.

Starts ``LocalCluster(n_workers=4)`` (Dask's defaults otherwise), connects a client, runs the
map, closes both. Prints the result and its own phase timings as one JSON line.

    python bench/plain_dask.py 100
"""

import json
import sys
import time


def square(x):
    return x * x


def main(n: int) -> None:
    t0 = time.perf_counter()
    from distributed import Client, LocalCluster

    t1 = time.perf_counter()
    cluster = LocalCluster(n_workers=4)
    client = Client(cluster)
    t2 = time.perf_counter()
    result = sum(client.gather(client.map(square, range(n))))
    t3 = time.perf_counter()
    client.close()
    cluster.close()
    t4 = time.perf_counter()
    print(json.dumps({"result": result, "import_s": t1 - t0, "start_s": t2 - t1, "map_s": t3 - t2,
                      "close_s": t4 - t3}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
