"""The anchor of bench_ray.py: the same call with plain Ray, no engine.

``ray.init()`` with Ray's defaults (a local cluster in this process's care), one remote call,
``ray.shutdown()``. Prints the result and its own phase timings as one JSON line.

    python bench/plain_ray.py 7
"""

import json
import sys
import time


def main(x: int) -> None:
    t0 = time.perf_counter()
    import ray

    @ray.remote
    def square(v: int) -> int:
        return v * v

    t1 = time.perf_counter()
    ray.init()
    t2 = time.perf_counter()
    result = ray.get(square.remote(x))
    t3 = time.perf_counter()
    ray.shutdown()
    t4 = time.perf_counter()
    print(json.dumps({"result": result, "import_s": t1 - t0, "start_s": t2 - t1, "call_s": t3 - t2,
                      "close_s": t4 - t3}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
