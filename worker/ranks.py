"""This worker's rank among the live workers, by age: 0 for the oldest, capped at 9 (the highest
pull priority JetStream takes). Each worker keeps an entry in KV ORDER_WORKERS (key = its id,
value = when it started), refreshed every `refresh_s`; a worker that stops deletes it, one that
dies is forgotten `ttl_s` after its last refresh (the bucket's max age, and locally the same).
Every worker watches the bucket, so a rank follows the others' comings and goings within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from orderflow import buckets, contract

log = logging.getLogger(__name__)

MAX_PRIORITY = 9
_KEY_UNSAFE = re.compile(r"[^-/_=.a-zA-Z0-9]")


def rank_of(me: tuple[float, str], others: list[tuple[float, str]]) -> int:
    """How many live workers are older than `me` (ties broken by id), capped at MAX_PRIORITY."""
    return min(MAX_PRIORITY, sum(1 for o in others if o < me))


class Ranks:
    def __init__(
        self,
        worker_id: str,
        refresh_s: float,
        ttl_s: float,
        on_change: Callable[[int], None],
        leave_s: float = 1.0,
        facts: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.key = _KEY_UNSAFE.sub("_", worker_id)
        self.started_at = time.time()
        self.refresh_s = refresh_s
        self.ttl_s = ttl_s
        self.leave_s = leave_s
        self.rank: int | None = None
        self._on_change = on_change
        # What the worker knows at each refresh (slots, draining, deletion cost), written beside
        # started_at for the console; readers take only started_at and ignore the rest.
        self._facts = facts or dict
        self._seen: dict[str, tuple[float, float]] = {}  # key -> (started_at, seen at, monotonic)
        # No rank until the watch has delivered the entries already there: before that this worker
        # would count itself the oldest and pull at priority 0.
        self._synced = False
        self._left = False  # left the ranks (draining): refresh no more
        self._echo_at = 0.0  # monotonic time the watch last delivered this worker's own entry
        # Why others dropped out of the ranks since the last look, for the rank-change log line: a
        # worker that left is draining (it still runs its jobs, it no longer fetches) or stopped;
        # one not heard of for ttl_s may be alive but cut off or blocked.
        self._gone: dict[str, str] = {}

    async def run(self, js: JetStreamContext) -> None:
        """Until cancelled: keep this worker's entry fresh and its rank up to date.

        The watch must bring back each of this worker's own refreshes. One that has not come back
        by the next refresh means the watch is dead: a NATS restart ends the server's ephemeral
        consumer behind nats-py's watcher without an error, and the worker would count every other
        entry gone after the TTL and pull at priority 0 for the rest of its life (the chaos
        rehearsal found work spread over every pod again after its NATS restart). Then it watches
        again, which delivers every entry there is."""
        kv = await js.key_value(contract.WORKERS_BUCKET)
        follow = asyncio.ensure_future(self._follow(js))
        try:
            put_at: float | None = None  # when the last refresh the server stored was sent (monotonic)
            while not self._left:
                if put_at is not None and self._echo_at < put_at:
                    log.info("ranks: the watch did not bring back this worker's refresh; watching again")
                    follow.cancel()
                    follow = asyncio.ensure_future(self._follow(js))
                    put_at = None
                try:
                    value = json.dumps({**self._facts(), "started_at": self.started_at}).encode()
                    sent = time.monotonic()  # the echo may come in before the put's answer does
                    await kv.put(self.key, value)
                    put_at = sent
                except Exception as exc:
                    log.debug("rank entry not refreshed: %r", exc)
                self._seen[self.key] = (self.started_at, time.monotonic())
                self._update()
                await asyncio.sleep(self.refresh_s)
        finally:
            follow.cancel()

    async def _follow(self, js: JetStreamContext) -> None:
        await buckets.follow_bucket(
            js, contract.WORKERS_BUCKET, self._seen_entry, log, "ranks", logging.DEBUG
        )

    def _seen_entry(self, entry: KeyValue.Entry | None) -> None:
        if entry is None:  # the entries already there are in
            self._synced = True
        else:
            if entry.key == self.key:
                self._echo_at = time.monotonic()
            if entry.operation in ("DEL", "PURGE"):
                if self._seen.pop(entry.key, None) is not None and entry.key != self.key:
                    self._gone[entry.key] = "left: draining or stopped"
            else:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    started = float(json.loads(entry.value or b"{}")["started_at"])
                    self._seen[entry.key] = (started, time.monotonic())
        self._update()

    def _update(self) -> None:
        if not self._synced:
            return
        now = time.monotonic()
        for key in [k for k, (_, seen) in self._seen.items() if now - seen > self.ttl_s and k != self.key]:
            del self._seen[key]
            self._gone[key] = f"not heard of for {self.ttl_s:g}s"
        others = [(started, key) for key, (started, _) in self._seen.items() if key != self.key]
        rank = rank_of((self.started_at, self.key), others)
        if rank != self.rank:
            if self.rank is not None:
                # Only the ranks are known here: a worker that left may still be draining.
                gone = "; ".join(f"{key} {why}" for key, why in sorted(self._gone.items()))
                log.info(
                    "pull priority %d -> %d: %d other workers fetching%s",
                    self.rank,
                    rank,
                    len(others),
                    f" ({gone})" if gone else "",
                )
            self.rank = rank
            self._on_change(rank)
        self._gone.clear()

    async def leave(self, js: JetStreamContext) -> None:
        """On the way out: younger workers move up now, not after the TTL. No refresh after it, or
        the entry would come back for the rest of the drain (and its TTL after). At most
        `leave_s` (Timing.rank_leave_s): it only saves the others the TTL, and it runs inside the drain budget (a
        NATS restart at the SIGTERM left both requests unanswered for their 5 s JetStream timeout
        each, and the chaos rehearsal's kubelet SIGKILLed the idle pod at the end of its grace)."""
        self._left = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.leave_s):
                kv = await js.key_value(contract.WORKERS_BUCKET)
                await kv.delete(self.key)
