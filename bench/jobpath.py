"""bench/jobpath: the worker's own cost per job, in process, in seconds: the real Pool, JobPipeline,
Settler and hooks (with the real metrics) run N no-op jobs against a stand-in transport that does
no I/O (not NATS: every ack, status write and read returns at once). A regression in the job path
shows here before the slow benchmarks run.

    python -m bench.jobpath [--jobs 100000] [--capacity 100] [--rounds 3]

For scale it also times N bare asyncio tasks behind a semaphore of the same size. Prints figures;
it does not pass or fail on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry

from orderflow import contract
from orderflow.envsettings import load_settings
from orderflow.metrics import WorkerMetrics
from worker.admission import Recovery
from worker.delivery import Limits
from worker.handlers import Job
from worker.hooks import Hooks, MetricsHook, PodLoad
from worker.path import build
from worker.timing import Timing


class _Msg:
    __slots__ = ("data", "headers", "reply", "subject")

    def __init__(self, i: int, data: bytes) -> None:
        self.subject = f"orders.default.b{i}"
        self.data = data
        self.headers: dict[str, str] | None = None
        self.reply = f"$JS.ACK.ORDERS.workers.1.{i}.{i}.{time.time_ns()}.0"


class _StandInTransport:
    """Stands in for NATS: every call returns at once. Counts what a real one would send."""

    def __init__(self) -> None:
        self.sent = 0

    async def in_progress(self, msg: Any) -> None:
        self.sent += 1

    async def ack(self, msg: Any) -> None:
        self.sent += 1

    async def nak(self, msg: Any, delay_s: float | None = None) -> None:
        self.sent += 1

    async def term(self, msg: Any) -> None:
        self.sent += 1

    async def get_status(self, order_id: str) -> None:
        self.sent += 1

    async def put_status(self, record: Any, confirm: bool) -> None:
        contract.encode(record)  # the real one encodes it too
        self.sent += 1

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        self.sent += 1

    async def forget_cancel(self, order_id: str) -> None:
        self.sent += 1

    async def record_run(self, run: Any) -> None:
        self.sent += 1


async def noop(job: Job) -> None:
    return None


async def job_path_us(jobs: int, capacity: int) -> tuple[float, float]:
    """µs per job through the real pool and pipeline, and messages sent per job."""
    s = load_settings("worker", {})
    timing = Timing.derive(s)
    t = _StandInTransport()
    hooks = Hooks(MetricsHook(WorkerMetrics(CollectorRegistry()), "default"), PodLoad())
    recovery = Recovery(timing.recovery_window_s)  # closed: the common path
    pool = build(
        "default",
        noop,
        t,
        hooks,
        timing,
        Limits.of(s, timing),
        worker_id="bench",
        capacity=capacity,
        timeout_s=60.0,
        recovery=recovery,
        is_cancelled=set().__contains__,
    ).pool
    freed = asyncio.Event()
    pool.on_free = freed.set
    data = contract.encode(contract.Order("b1", 1, 1, "bench", 0.0))
    msgs = [_Msg(i + 1, data) for i in range(jobs)]
    start = time.perf_counter()
    for msg in msgs:
        while pool.free_slots <= 0:
            freed.clear()
            await freed.wait()
        pool.start(msg)
    await pool.wait_idle()
    return (time.perf_counter() - start) / jobs * 1e6, t.sent / jobs


async def bare_tasks_us(jobs: int, capacity: int) -> float:
    sem = asyncio.Semaphore(capacity)

    async def bare() -> None:
        async with sem:
            return None

    start = time.perf_counter()
    await asyncio.gather(*(bare() for _ in range(jobs)))
    return (time.perf_counter() - start) / jobs * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--capacity", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import uvloop  # the worker runs on uvloop

    per_job, bare, sent = [], [], 0.0
    for r in range(args.rounds):
        us, sent = uvloop.run(job_path_us(args.jobs, args.capacity))
        per_job.append(us)
        bare.append(uvloop.run(bare_tasks_us(args.jobs, args.capacity)))
        print(
            f"round {r + 1}/{args.rounds}: job path {us:.1f} us/job, bare task {bare[-1]:.1f} us", flush=True
        )
    print(
        f"job path (pool + pipeline + settler + hooks, stand-in transport, {args.capacity} slots): "
        f"{statistics.median(per_job):.1f} us/job, {sent:.0f} messages sent per job; "
        f"a bare asyncio task + semaphore: {statistics.median(bare):.1f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
