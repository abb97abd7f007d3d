"""The drain (worker/drain.py) owns every task the worker started and waits for the work in
flight. In process: the real service, job path and fetch loop on the stand-in transport and a
stand-in NATS connection; no server, no signal (tests/worker/test_scenarios.py has those)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from standin import FakeMsg, StandInNats, StandInTransport, fast_timing, limits, settings

from orderflow.consumers import ConsumerHandle
from orderflow.natsmux import Requester
from worker import drainreport
from worker.admission import Recovery
from worker.consumer import FetchLoop
from worker.drain import drain
from worker.handlers import Job
from worker.hooks import Hooks
from worker.path import build
from worker.service import TypeRunner, WorkerService


class HeldNaks(StandInTransport):
    """The stand-in transport, whose naks wait until the test lets them go."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def nak(self, msg: object, delay_s: float | None = None) -> None:
        await self.release.wait()
        await super().nak(msg, delay_s)


async def noop(job: Job) -> None:
    return None


def test_the_drain_waits_for_a_settle_in_flight_and_leaves_no_task_of_its_own(tmp_path: Path) -> None:
    """1. A delivery the fetch loop will not start is given back: its settle (a `queued` record,
       then a nak) runs outside any job's task, and its nak is held.
    2. The drain runs its phases (nothing runs in the pool) and does not end while that settle is
       in flight.
    3. The nak goes out; the drain ends, and no task is left running: not the settle, not the
       request mux's sweeper. Its report says it drained (worker/drainreport.py)."""

    async def main() -> tuple[HeldNaks, bool]:
        s = settings(drain_timeout_s=10, termination_log=tmp_path / "drain.json")
        service = WorkerService(s)
        timing = service.timing = fast_timing()
        transport = HeldNaks()
        path = build(
            "default", noop, transport, Hooks(), timing, limits(s), worker_id="me", capacity=2,
            timeout_s=60.0, recovery=Recovery(timing.recovery_window_s), is_cancelled=set().__contains__,
        )  # fmt: skip
        nc = StandInNats()
        loop = FetchLoop(nc, "workers", path.pool, 1.0, 1.0, path.pipeline.give_back)
        consumer = ConsumerHandle("default", "workers", 30.0, False)
        service.runners.append(TypeRunner("default", consumer, path.pipeline, path.pool, loop))
        service.requests = await Requester(nc).start()  # type: ignore[arg-type]

        path.pipeline.give_back(FakeMsg("o-1"))
        draining = asyncio.create_task(drain(service))
        await asyncio.sleep(0.5)
        waited = not draining.done()
        transport.release.set()
        await asyncio.wait_for(draining, 5.0)
        assert not {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        return transport, waited

    transport, waited = asyncio.run(main())
    assert waited, "the drain ended with a give-back's settle still in flight"
    assert transport.ops() == ["put:queued", "nak"]
    report = drainreport.read(tmp_path / "drain.json")
    assert report is not None and report.event == "drained"
    assert (report.running_at_sigterm, report.handed_back_at_deadline, report.unstarted) == (0, 0, 0)
