"""The anchor of bench_dask.py: the same map with plain Dask, no engine.

Starts ``LocalCluster(n_workers=4)`` (Dask's defaults otherwise), connects a client, runs the
map, closes both. Prints the result and its own phase timings as one JSON line.

    python bench/plain_dask.py 100
"""

import sys

from _common import Laps


def square(x):
    return x * x


def main(n: int) -> None:
    laps = Laps()
    from distributed import Client, LocalCluster

    laps.lap("import_s")
    cluster = LocalCluster(n_workers=4)
    client = Client(cluster)
    laps.lap("start_s")
    result = sum(client.gather(client.map(square, range(n))))
    laps.lap("map_s")
    client.close()
    cluster.close()
    laps.lap("close_s")
    laps.report(result)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
