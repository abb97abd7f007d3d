"""The waiting rules in process (ingest/watch.py, ingest/waiting.py): one dispatcher from order id to
waiters, its cap, its shutdown, ?wait's values and the event stream's changes. The real watch on a
real nats-server is tests/ingest/test_waiting.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ingest import waiting
from ingest.watch import Full, StatusWatch
from orderflow import contract


async def registered(watch: StatusWatch) -> None:
    for _ in range(1000):
        if watch.count:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the stream never registered")


def rec(status: str, **fields: Any) -> bytes:
    return contract.encode({"order_id": "o-1", "status": status, **fields})


@pytest.mark.parametrize("raw", [["0"], ["30"], ["60"], ["0.5"]])
def test_wait_takes_seconds_from_0_to_60(raw: list[str]) -> None:
    assert waiting.wait_of(raw) == float(raw[0])


@pytest.mark.parametrize("raw", [["61"], ["-1"], ["nan"], ["inf"], ["soon"], [""], ["1", "2"]])
def test_wait_refuses_anything_else(raw: list[str]) -> None:
    assert waiting.wait_of(raw) is None


def test_a_write_reaches_only_the_waiters_of_its_order_and_the_cap_holds() -> None:
    watch = StatusWatch(cap=2)
    with watch.register("o-1") as a, watch.register("o-2") as b:
        with pytest.raises(Full), watch.register("o-3"):
            pass
        watch.deliver("o-1", rec("done"))
        watch.deliver("o-9", rec("done"))  # nobody waits: not even decoded
        watch.deliver("o-1", b"not json")  # a bad record is dropped, not passed on
        assert a.updates.get_nowait() == {"order_id": "o-1", "status": "done"}
        assert a.updates.empty() and b.updates.empty()
        assert watch.count == 2
    assert watch.count == 0 and not watch._by_order
    with watch.register("o-3"):  # room again
        pass


def test_close_wakes_every_waiter_and_a_late_one_at_once() -> None:
    async def main() -> None:
        watch = StatusWatch(cap=10)
        with watch.register("o-1") as waiter:
            await watch.close()
            assert waiter.updates.get_nowait() is None
        with watch.register("o-1") as late:
            assert late.updates.get_nowait() is None

    asyncio.run(main())


def test_until_final_answers_at_the_final_record_or_at_the_end_of_the_wait() -> None:
    async def main() -> None:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        for status in ("processing", "queued", "processing", "done", "processing"):
            queue.put_nowait({"status": status})
        got = await waiting.until_final(queue, {"status": "queued"}, 5)
        assert got == {"status": "done"}
        started = asyncio.get_running_loop().time()
        got = await waiting.until_final(asyncio.Queue(), {"status": "queued"}, 0.05)
        assert got == {"status": "queued"} and asyncio.get_running_loop().time() - started < 1
        closing: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        closing.put_nowait(None)
        assert await waiting.until_final(closing, {"status": "processing"}, 30) == {"status": "processing"}

    asyncio.run(main())


def test_the_stream_sends_the_current_record_then_each_change_until_the_final_one() -> None:
    async def main() -> list[bytes]:
        watch = StatusWatch(cap=10)

        async def find(order_id: str) -> dict[str, Any]:
            return {"order_id": order_id, "status": "queued"}

        chunks: list[bytes] = []

        async def read() -> None:
            async for chunk in waiting.stream(watch, "o-1", find, dict, {"status": "queued"}):
                chunks.append(chunk)

        reader = asyncio.create_task(read())
        await registered(watch)
        for status in ("processing", "processing", "queued", "processing", "done"):
            watch.deliver("o-1", rec(status, worker_id="w"))
        await asyncio.wait_for(reader, 5)
        assert watch.count == 0
        return chunks

    chunks = asyncio.run(main())
    statuses = [c.split(b'"status":"')[1].split(b'"')[0].decode() for c in chunks]
    assert statuses == ["queued", "processing", "queued", "processing", "done"]  # no lease refresh
    assert chunks[0].startswith(b"event: status\nid: 1\ndata: {") and chunks[-1].endswith(b"}\n\n")


def test_the_stream_ends_when_the_process_shuts_down() -> None:
    async def main() -> list[bytes]:
        watch = StatusWatch(cap=10)

        async def find(order_id: str) -> dict[str, Any]:
            return {"order_id": order_id, "status": "processing"}

        async def read() -> list[bytes]:
            return [c async for c in waiting.stream(watch, "o-1", find, dict, {})]

        reader = asyncio.create_task(read())
        await registered(watch)
        await watch.close()
        return await asyncio.wait_for(reader, 5)

    assert len(asyncio.run(main())) == 1


def test_a_quiet_stream_looks_at_the_store_in_case_the_watch_missed_a_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch's consumer re-created after a reconnect may miss a write: a stream quiet for
    KEEPALIVE_S reads the order and sends what changed (here its final status), else a keepalive."""
    monkeypatch.setattr(waiting, "KEEPALIVE_S", 0.02)
    reads = iter(["processing", "processing", "processing", "done"])

    async def find(order_id: str) -> dict[str, Any]:
        return {"order_id": order_id, "status": next(reads)}

    async def main() -> list[bytes]:
        watch = StatusWatch(cap=10)
        return [c async for c in waiting.stream(watch, "o-1", find, dict, {})]

    chunks = asyncio.run(main())
    assert chunks[1:-1] == [b": keepalive\n\n"] * 2
    assert b'"status":"done"' in chunks[-1] and chunks[-1].startswith(b"event: status\nid: 2\n")
