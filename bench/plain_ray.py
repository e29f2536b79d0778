"""The anchor of bench_ray.py: the same call with plain Ray, no engine.

``ray.init()`` with Ray's defaults (a local cluster in this process's care), one remote call,
``ray.shutdown()``. Prints the result and its own phase timings as one JSON line.

    python bench/plain_ray.py 7
"""

import sys

from _common import Laps


def main(x: int) -> None:
    laps = Laps()
    import ray

    @ray.remote
    def square(v: int) -> int:
        return v * v

    laps.lap("import_s")
    ray.init()
    laps.lap("start_s")
    result = ray.get(square.remote(x))
    laps.lap("call_s")
    ray.shutdown()
    laps.lap("close_s")
    laps.report(result)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
