"""Connector benchmarks (figures for BENCHMARKS.md; nothing here asserts).

1. ``rpc``: CreateTask+GetTask pairs on loopback from 64 concurrent clients, through the same
   flyteidl2 client (grpc.aio stubs, client processes of their own), against our
   ``engine connectors serve`` and Flyte's ``c0`` (flyte[connector], in its own venv, made by
   scripts/flyte-connector-venv.sh) serving the same connector (this file's EchoConnector):
   throughput and p50/p99 latency of a pair, in one run. Goal: at least 2x c0's throughput.
   A third row serves constant answers from a bare grpc.aio server: the ceiling any Python
   gRPC server reaches beside the same clients on the same cores (which c0's 2x lies above on
   a two-core machine, where the clients take much of the CPU).
2. ``poll``: N (10,000) connector jobs polled concurrently in one engine process (an async task
   gathering N calls of a connector task, each a run with its job recorded in SQLite): peak
   memory, and the CPU of the poll loop while all N jobs poll. Goal: under 300 MB.

    python bench/bench_connectors.py            # both
    python bench/bench_connectors.py rpc --seconds 10
    python bench/bench_connectors.py poll --jobs 10000
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from flyteidl2.core.execution_pb2 import TaskExecution

try:  # our engine; under Flyte's c0 (another venv) the same connector on Flyte's SDK
    from engine.connectors import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta
except ImportError:
    from flyte.connectors import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta


@dataclass
class EchoMeta(ResourceMeta):
    job_id: str
    x: int
    finish_at: float = 0.0


class EchoConnector(AsyncConnector):
    """A job that does no I/O: what is measured is the server (or the poll loop), not a backend.
    It runs until ``finish_at`` (wall clock) and then returns ``2 * x``."""

    name = "Bench Echo Connector"
    task_type_name = "bench_echo"
    metadata_type = EchoMeta
    created = 0
    gets = 0
    hold_until = 0.0  # the poll benchmark holds every job running until this wall time

    async def create(self, task_template, inputs=None, **kwargs) -> EchoMeta:
        inputs = inputs or {}
        EchoConnector.created += 1
        return EchoMeta(job_id=uuid.uuid4().hex, x=int(inputs.get("x", 0)), finish_at=float(inputs.get("finish_at", 0)))

    async def get(self, resource_meta: EchoMeta, **kwargs) -> Resource:
        EchoConnector.gets += 1
        if time.time() < max(resource_meta.finish_at, EchoConnector.hold_until):
            return Resource(phase=TaskExecution.RUNNING)
        return Resource(phase=TaskExecution.SUCCEEDED, outputs={"y": resource_meta.x * 2})

    async def delete(self, resource_meta: EchoMeta, **kwargs) -> None:
        pass


ConnectorRegistry.register(EchoConnector())


# ---------------------------------------------------------------------------- 1. rpc
def _client(address: str, concurrency: int, seconds: float, warmup: float, out) -> None:
    """One client process: ``concurrency`` coroutines doing CreateTask then GetTask in a loop."""
    import asyncio

    import grpc
    from flyteidl2.connector import connector_pb2, service_pb2_grpc
    from flyteidl2.core import interface_pb2, literals_pb2, tasks_pb2, types_pb2
    from flyteidl2.task import common_pb2

    template = tasks_pb2.TaskTemplate(type="bench_echo", interface=interface_pb2.TypedInterface(
        inputs=interface_pb2.VariableMap(variables=[interface_pb2.VariableEntry(
            key="x", value=interface_pb2.Variable(type=types_pb2.LiteralType(simple=types_pb2.INTEGER)))])))
    category = connector_pb2.TaskCategory(name="bench_echo", version=0)

    async def main():
        latencies: list[float] = []
        errors = 0
        async with grpc.aio.insecure_channel(address) as ch:
            stub = service_pb2_grpc.AsyncConnectorServiceStub(ch)
            t_start = time.monotonic()
            t_measure, t_end = t_start + warmup, t_start + warmup + seconds

            async def worker(i: int):
                nonlocal errors
                n = 0
                while time.monotonic() < t_end:
                    n += 1
                    req = connector_pb2.CreateTaskRequest(template=template, inputs=common_pb2.Inputs(literals=[
                        common_pb2.NamedLiteral(name="x", value=literals_pb2.Literal(scalar=literals_pb2.Scalar(
                            primitive=literals_pb2.Primitive(integer=n))))]))
                    t0 = time.monotonic()
                    try:
                        meta = (await stub.CreateTask(req, timeout=30)).resource_meta
                        res = (await stub.GetTask(connector_pb2.GetTaskRequest(resource_meta=meta, task_category=category),
                                                  timeout=30)).resource
                        ok = res.phase == TaskExecution.SUCCEEDED
                    except grpc.aio.AioRpcError:
                        ok = False
                    t1 = time.monotonic()
                    if t0 >= t_measure and t1 <= t_end:
                        if ok:
                            latencies.append(t1 - t0)
                        else:
                            errors += 1

            await asyncio.gather(*(worker(i) for i in range(concurrency)))
        out.put((latencies, errors))

    asyncio.run(main())


def measure(address: str, clients: int = 64, procs: int = 2, seconds: float = 10.0, warmup: float = 2.0) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    ps = [ctx.Process(target=_client, args=(address, n, seconds, warmup, q)) for n in per]
    for p in ps:
        p.start()
    lat, errors = [], 0
    for _ in ps:
        got, e = q.get(timeout=seconds + warmup + 120)
        lat += got
        errors += e
    for p in ps:
        p.join(timeout=30)
    lat.sort()
    pct = lambda f: round(lat[min(len(lat) - 1, int(f * len(lat)))] * 1000, 2) if lat else None  # noqa: E731
    return {"pairs": len(lat), "errors": errors, "pairs_per_s": round(len(lat) / seconds, 1),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def _ceiling_server(ports) -> None:
    """The ceiling of the comparison: a grpc.aio server answering CreateTask and GetTask with
    constant responses (no connector, no conversion, no metrics). What any Python gRPC server
    can do on this machine beside the same clients; ours and c0 sit below it."""
    import asyncio

    import grpc
    from flyteidl2.connector import connector_pb2, service_pb2_grpc

    created = connector_pb2.CreateTaskResponse(resource_meta=EchoMeta(job_id="ceiling", x=1).encode())
    got = connector_pb2.GetTaskResponse(resource=connector_pb2.Resource(phase=TaskExecution.SUCCEEDED))

    class Ceiling(service_pb2_grpc.AsyncConnectorServiceServicer):
        async def CreateTask(self, request, context):
            return created

        async def GetTask(self, request, context):
            return got

    async def main():
        server = grpc.aio.server()
        service_pb2_grpc.add_AsyncConnectorServiceServicer_to_server(Ceiling(), server)
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def measure_ceiling(clients: int, procs: int, seconds: float) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_ceiling_server, args=(ports,), daemon=True)
    server.start()
    try:
        return measure(f"127.0.0.1:{ports.get(timeout=60)}", clients, procs, seconds)
    finally:
        server.terminate()
        server.join(timeout=10)


def bench_rpc(seconds: float, clients: int, procs: int) -> dict:
    import os
    import sys

    from _common import ROOT, ratio, table

    sys.path.insert(0, str(ROOT / "tests"))
    from tasks.connector_support import flyte_connector_python, serve_connectors, start_c0, stop

    here = str(ROOT / "bench")
    results = {}
    proc, address, _ = serve_connectors(f"{here}/bench_connectors.py")
    try:
        results["taskrig"] = measure(address, clients, procs, seconds)
    finally:
        stop(proc)
    python = flyte_connector_python()
    if python is None:
        results["flyte_c0"] = None
    else:
        proc, address = start_c0(python, "bench_connectors", here, env={"PYTHONPATH": here})
        try:
            results["flyte_c0"] = measure(address, clients, procs, seconds)
        finally:
            stop(proc)
    results["grpc_aio_ceiling"] = measure_ceiling(clients, procs, seconds)
    ours, theirs, ceiling = results["taskrig"], results["flyte_c0"] or {}, results["grpc_aio_ceiling"]
    print(table(["server", "pairs/s", "p50 ms", "p99 ms", "errors"],
                [[k, v["pairs_per_s"], v["p50_ms"], v["p99_ms"], v["errors"]] for k, v in results.items() if v]))
    speedup = ratio(ours["pairs_per_s"], theirs.get("pairs_per_s"))
    print(f"throughput vs Flyte's c0: {speedup}x (goal >= 2x), {clients} clients in {procs} processes, "
          f"{os.cpu_count()} cores")
    print(f"a grpc.aio server answering constants: {ratio(ceiling['pairs_per_s'], theirs.get('pairs_per_s'))}x c0; "
          f"taskrig reaches {ratio(ours['pairs_per_s'], ceiling['pairs_per_s'])} of it")
    return {"rpc": results, "speedup": speedup, "ceiling_vs_c0": ratio(ceiling["pairs_per_s"], theirs.get("pairs_per_s")),
            "clients": clients, "seconds": seconds}


# ---------------------------------------------------------------------------- 2. poll
def bench_poll(jobs: int, hold: float) -> dict:
    """N connector calls awaited concurrently inside one run; every job runs until a common
    finish time, so for a while all N are recorded and polled at once."""
    import asyncio
    import tempfile
    import threading

    import psutil

    import engine
    from engine.connectors import AsyncConnectorExecutorMixin
    from engine.extend import TaskTemplate
    from engine.models import NativeInterface

    class EchoTask(AsyncConnectorExecutorMixin, TaskTemplate):
        def __init__(self):
            super().__init__(name="echo", task_type="bench_echo",
                             interface=NativeInterface(inputs={"x": int, "finish_at": float}, outputs={"y": int}))

    echo = EchoTask()
    env = engine.TaskEnvironment(name="bench_poll")
    marks: dict[str, float] = {}

    @env.task
    async def fan_out(n: int, finish_at: float) -> int:
        results = await asyncio.gather(*(echo.aio(x=i, finish_at=finish_at) for i in range(n)))
        return sum(results)

    me = psutil.Process()
    peak = {"rss": 0}
    stop_sampling = threading.Event()

    def sample():
        while not stop_sampling.is_set():
            peak["rss"] = max(peak["rss"], me.memory_info().rss)
            if "all_created" not in marks and EchoConnector.created >= jobs:
                time.sleep(2 * 2.0)  # every job at its capped poll interval
                marks["all_created"], marks["cpu0"], marks["gets0"] = time.time(), sum(me.cpu_times()[:2]), EchoConnector.gets
                marks["finish_at"] = EchoConnector.hold_until = marks["all_created"] + hold
            if "finish_at" in marks and "window_end" not in marks and time.time() >= marks["finish_at"]:
                marks["window_end"], marks["cpu1"], marks["gets1"] = time.time(), sum(me.cpu_times()[:2]), EchoConnector.gets
            time.sleep(0.05)

    rss0 = me.memory_info().rss
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        # Every job runs until `hold` seconds after the last one was made (and polled a while):
        # the window measured has all N polling at their capped interval.
        EchoConnector.hold_until = float("inf")
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, run = engine.with_runcontext(state=f"{tmp}/state.db").run(fan_out, n=jobs, finish_at=0.0)
        total = time.time() - t0
        stop_sampling.set()
        sampler.join()
    window = marks.get("window_end", 0) - marks.get("all_created", 0)
    doc = {"jobs": jobs, "ok": out == sum(2 * i for i in range(jobs)), "total_s": round(total, 1),
           "create_all_s": round(marks.get("all_created", t0) - t0, 1), "peak_rss_mb": round(peak["rss"] / 2**20, 1),
           "rss_before_mb": round(rss0 / 2**20, 1), "poll_window_s": round(window, 1),
           "poll_cpu_percent": round(100 * (marks["cpu1"] - marks["cpu0"]) / window, 1) if window > 0 else None,
           "gets_per_s": round((marks["gets1"] - marks["gets0"]) / window) if window > 0 else None}
    print(f"{jobs} jobs polled concurrently in one engine process: peak RSS {doc['peak_rss_mb']} MB (goal < 300), "
          f"poll loop {doc['poll_cpu_percent']}% of one core for {doc['gets_per_s']} gets/s over {doc['poll_window_s']} s "
          f"with all {jobs} polling; creating them took {doc['create_all_s']} s, the whole run {doc['total_s']} s")
    return {"poll": doc}


if __name__ == "__main__":
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import emit

    ap = argparse.ArgumentParser(description="connector benchmarks")
    ap.add_argument("which", nargs="?", choices=["rpc", "poll", "all"], default="all")
    ap.add_argument("--seconds", type=float, default=10.0, help="rpc: measured seconds per server")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--hold", type=float, default=20.0, help="poll: seconds all jobs poll together")
    args = ap.parse_args()
    doc = {"bench": "connectors"}
    if args.which in ("rpc", "all"):
        doc.update(bench_rpc(args.seconds, args.clients, args.client_procs))
    if args.which in ("poll", "all"):
        doc.update(bench_poll(args.jobs, args.hold))
    emit(doc)
