"""The overview's live updates (orderflow_tools/console/live.py) in process: one poller for every
open overview, so NATS is read once a tick however many watch; it stops with the last watcher and
starts again with the next; a failed read keeps the watchers waiting for the next one."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from orderflow_tools.console.live import Live


def test_one_poller_serves_every_watcher_and_stops_with_the_last() -> None:
    async def scenario() -> None:
        reads = 0

        async def read() -> dict[str, Any]:
            nonlocal reads
            reads += 1
            if reads == 2:
                raise OSError("NATS away")  # this tick is skipped; the watchers wait for the next
            return {"read": reads}

        async def still_here() -> bool:
            return False

        live = Live(read, every_s=0.02)

        async def watch(n: int) -> list[int]:
            got = []
            async with contextlib.aclosing(live.events(still_here)) as events:
                async for event in events:
                    got.append(json.loads(event.decode().removeprefix("data: "))["read"])
                    if len(got) == n:
                        break
            return got

        seen = await asyncio.gather(*(watch(4) for _ in range(8)))
        for got in seen:
            assert 2 not in got and got == sorted(got)
        assert reads <= 7, reads  # 8 watchers x 4 updates from about 5 reads, not 32
        assert live.watchers == 0
        await asyncio.sleep(0.1)
        assert live.task is None  # stopped with the last watcher
        before = reads
        assert len(await watch(1)) == 1 and reads > before  # and started again by the next

    asyncio.run(scenario())
