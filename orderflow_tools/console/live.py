"""The overview's live updates: one poller for every open overview, so NATS is read once per
EVERY_S however many browsers watch (bench/console_cost.py measures what one costs NATS). It runs
while someone watches and stops with the last one; each watcher gets the newest snapshot."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

log = logging.getLogger("orderflow.console")

EVERY_S = 1.0


class Live:
    def __init__(self, read: Callable[[], Awaitable[dict[str, Any]]], every_s: float = EVERY_S) -> None:
        self.read = read
        self.every_s = every_s
        self.watchers = 0
        self.version = 0  # snapshots made so far
        self.snapshot = b""
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while self.watchers:
            try:
                event = f"data: {json.dumps(await self.read())}\n\n".encode()
            except Exception as exc:  # NATS away: the watchers keep the last one, we try again
                log.warning("the overview's live update failed: %s", exc)
            else:
                async with self.changed:
                    self.snapshot, self.version = event, self.version + 1
                    self.changed.notify_all()
            await asyncio.sleep(self.every_s)
        # No await since the last watcher left: a new one finds task None and starts another.
        self.task = None

    def _newer(self, seen: int) -> bool:
        return self.version > seen

    async def events(self, gone: Callable[[], Awaitable[bool]]) -> AsyncGenerator[bytes, None]:
        """Each new snapshot as one Server-Sent Event, until `gone()` says the client left."""
        self.watchers += 1
        if self.task is None:
            self.task = asyncio.create_task(self._poll())
        seen = 0
        try:
            while not await gone():
                async with self.changed:
                    try:
                        await asyncio.wait_for(
                            self.changed.wait_for(functools.partial(self._newer, seen)), 5 * self.every_s
                        )
                    except TimeoutError:
                        continue  # nothing new (NATS away): look whether the client left
                    seen, event = self.version, self.snapshot
                yield event
        finally:
            self.watchers -= 1
