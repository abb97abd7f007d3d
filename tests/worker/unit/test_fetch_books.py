"""The fetch loop's books (worker/consumer.py), in process: a stand-in NATS connection records the
pull requests and the test plays the server's side (deliveries, 408s with the undelivered rest)."""

from __future__ import annotations

import asyncio
from typing import Any

from loops import running
from standin import FakeMsg, StandInNats, fast_timing

from worker.consumer import FetchLoop
from worker.delivery import Kind
from worker.pool import Pool, Slot


class HeldPipeline:
    """Jobs that run until the test releases them; the pool's side of a pipeline."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.given_back: list[Any] = []

    def open(self, msg: Any, timeout_s: float) -> Slot:
        return Slot(int(msg.reply.split(".")[5]), 1e9)

    async def run(self, slot: Any) -> None:
        await self.release.wait()

    async def beat(self, slot: Any, now: float) -> None:
        return None

    def crashed(self, slot: Any, exc: BaseException) -> None:
        raise AssertionError(exc)


async def settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def rig(capacity: int = 4) -> tuple[StandInNats, Pool[Slot], HeldPipeline, FetchLoop]:
    nc = StandInNats()
    pipeline = HeldPipeline()
    pool = Pool("default", capacity, 60, pipeline, fast_timing())
    loop = FetchLoop(nc, "workers", pool, 1.0, 1.0, pipeline.given_back.append)
    return nc, pool, pipeline, loop


def test_a_request_asks_for_the_free_slots_and_reserves_them_until_delivered_or_ended() -> None:
    async def main() -> None:
        nc, pool, pipeline, loop = rig(4)
        async with running(loop.run, 2):
            await settle_loop()
            [(reply, request)] = nc.requests
            assert request["batch"] == 4 and loop.reserved == 4
            for seq in (1, 2):
                await nc.deliver(FakeMsg(f"o-{seq}", seq=seq))
            assert (loop.reserved, pool.free_slots) == (2, 2)
            await settle_loop()
            assert len(nc.requests) == 1  # 2 free slots, both still reserved: nothing more to ask
            await nc.status(reply, "408", pending=2)  # the request expired with 2 undelivered
            await settle_loop()
            assert loop.reserved == 2  # the new request for the 2 free slots
            assert nc.requests[-1][1]["batch"] == 2
            pipeline.release.set()

    asyncio.run(main())


def test_the_books_never_let_deliveries_outnumber_the_slots() -> None:
    """Many requests and deliveries in every order the server may choose: at no point is a message
    given to the pool without a free slot, and none is handed back while slots are promised."""

    async def main() -> None:
        nc, pool, pipeline, loop = rig(3)
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        seq = 0
        for _ in range(50):
            await settle_loop()
            # serve every open request completely
            while loop.reserved:
                seq += 1
                await nc.deliver(FakeMsg(f"o-{seq}", seq=seq))
                assert len(pool.running) <= pool.capacity
            pipeline.release.set()
            await settle_loop()
            pipeline.release.clear()
        assert pipeline.given_back == []
        assert seq >= 50
        stop.set()
        pipeline.release.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())


def test_a_delivery_after_stop_is_given_back_unstarted() -> None:
    async def main() -> None:
        nc, pool, pipeline, loop = rig(2)
        async with running(loop.run, 2):
            await settle_loop()
        closing = asyncio.create_task(loop.close())
        await settle_loop()
        await nc.deliver(FakeMsg("late", seq=9))
        reply = nc.requests[0][0]
        await nc.status(reply, "408", pending=1)
        await asyncio.wait_for(closing, 3)
        assert [m.subject for m in pipeline.given_back] == ["orders.default.late"]
        assert pool.running == {}

    asyncio.run(main())


def test_a_reconnect_forgets_every_open_request() -> None:
    async def main() -> None:
        nc, _pool, _pipeline, loop = rig(4)
        async with running(loop.run, 2):
            await settle_loop()
            assert loop.reserved == 4
            loop.reset()
            await settle_loop()
            assert len(nc.requests) == 2 and loop.reserved == 4  # asked again at once

    asyncio.run(main())


def test_pulls_carry_the_priority_group_and_the_current_rank() -> None:
    async def main() -> None:
        nc, _pool, _pipeline, loop = rig(2)
        loop.priority = 9
        async with running(loop.run, 2):
            await settle_loop()
            assert nc.requests[-1][1] | {} == {
                "batch": 2,
                "expires": 1_000_000_000,
                "group": "orderflow",
                "priority": 9,
            }
            loop.priority = 0  # a rank change applies to the next request; the open one keeps its books
            await nc.status(nc.requests[-1][0], "408", pending=2)
            await settle_loop()
            assert nc.requests[-1][1]["priority"] == 0

    asyncio.run(main())


def test_a_refused_request_is_not_retried_in_a_hot_loop() -> None:
    async def main() -> None:
        nc, _pool, _pipeline, loop = rig(2)
        async with running(loop.run, 3):
            await settle_loop()
            await nc.status(nc.requests[-1][0], "400", pending=2)
            await asyncio.sleep(0.3)
            assert len(nc.requests) == 1  # backing off for a second

    asyncio.run(main())


def test_a_stopped_slot_keeps_its_reason() -> None:
    async def main() -> None:
        _nc, pool, _pipeline, _loop = rig(1)
        pool.start(FakeMsg("o-1", seq=1))
        [slot] = list(pool)
        pool.stop(slot, Kind.CANCELLED)
        pool.stop(slot, Kind.HANDED_BACK)  # a second stop changes nothing
        assert slot.stop_reason is Kind.CANCELLED
        await asyncio.sleep(0.01)
        assert pool.free_slots == 1

    asyncio.run(main())
