"""An async service loop under test: `run(stop)` as a task for the length of a block."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def running(
    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]], stop_within_s: float = 5
) -> AsyncIterator[asyncio.Task[None]]:
    """`run(stop)` runs as a task during the block; leaving it sets `stop`, and the loop must end
    within `stop_within_s` (a loop that does not stop fails the test)."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop))
    yield task
    stop.set()
    await asyncio.wait_for(task, stop_within_s)
