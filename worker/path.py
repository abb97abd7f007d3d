"""One task type's job path, wired in one place: its settler, its pipeline and the pool that runs
the pipeline's jobs. The service builds each task type's path here, and so do the unit tests and
bench/jobpath.py, so what they run is what the worker runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from worker.admission import Recovery
from worker.delivery import Limits
from worker.handlers import Handler, StopSignal
from worker.hooks import Hooks
from worker.job import JobPipeline
from worker.outcome import Settler
from worker.payload import SEED, PayloadCodec
from worker.pool import Pool
from worker.run import Run
from worker.timing import Timing
from worker.transport import Transport


@dataclass(frozen=True)
class JobPath:
    pipeline: JobPipeline
    pool: Pool[Run]


def build(
    task_type: str,
    handler: Handler,
    transport: Transport,
    hooks: Hooks,
    timing: Timing,
    limits: Limits,
    *,
    worker_id: str,
    capacity: int,
    timeout_s: float,
    recovery: Recovery,
    is_cancelled: Callable[[str], bool],
    schedules: bool = False,
    codec: PayloadCodec = SEED,
    stopping: StopSignal | None = None,
    deliver: Handler | None = None,
) -> JobPath:
    """`schedules`: the stream takes scheduled messages (long retry delays leave the consumer);
    `stopping`: the drain's signal every handler sees; `deliver`: the handler of callback jobs."""
    settler = Settler(transport, worker_id, limits, timing.lease_s, schedules)
    # The pool keeps the running jobs; the pipeline reads the same books (a redelivery of a job
    # running here is adopted, a recovery re-leases them all).
    running: dict[int, Run] = {}
    pipeline = JobPipeline(
        task_type,
        handler,
        settler,
        transport,
        hooks,
        timing,
        limits,
        worker_id,
        is_cancelled,
        recovery,
        running,
        codec,
        stopping,
        deliver,
    )
    return JobPath(pipeline, Pool(task_type, capacity, timeout_s, pipeline, timing, running))
