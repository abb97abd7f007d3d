"""The fetch loop: pull exactly as many messages as the pool has free, unreserved slots.

JetStream facts this relies on:
- A pull consumer only delivers against a pull request (`$JS.API.CONSUMER.MSG.NEXT`): batch=n,
  expires=t. The server delivers up to n messages to the request's reply subject as they come (a
  delivery keeps its stream subject, so it does not say which request it served), and when a
  request ends unfilled it sends a status message to that reply subject: `408 Request Timeout`
  (expired), `409` (e.g. max_waiting exceeded), `400`, `404`, each with
  `Nats-Pending-Messages`, the part of the batch it did not deliver; `100` is an idle heartbeat.
  A request that is filled ends without a status. So the books are one exact count: a request
  reserves its batch, each delivery and each undelivered remainder releases its share, and a new
  request never asks for more than the free, unreserved slots. (nats-py's `fetch()` can return
  while its request stays open on the server; the rest of the batch then arrives with no slot.)
- After a NATS restart an open request is gone without a status: a reconnect releases every
  reservation, and so does silence for longer than expiry + grace.
- Priority groups (nats-server 2.11; the `prioritized` policy since 2.12): a request may carry
  `"group"` and `"priority"` (0-9). The server serves the lowest number first while its requests
  have batch left, and a higher one whenever no lower one is waiting: with each worker pulling at
  its rank, the oldest workers take the work and the newest run dry when load falls. A rank
  change applies to the next request; the open ones keep their books.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from nats.aio.msg import Msg

from orderflow import contract
from worker.transport import Message

log = logging.getLogger(__name__)


class Subscribed(Protocol):
    async def unsubscribe(self) -> None: ...


class Connection(Protocol):
    """What the fetch loop needs of a nats-py Client: an inbox, a subscription to it, publishes."""

    def new_inbox(self) -> str: ...
    async def subscribe(self, subject: str, *, cb: Callable[[Msg], Awaitable[None]]) -> Subscribed: ...
    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None: ...


class Slots(Protocol):
    """What the fetch loop needs of its pool (worker/pool.py's Pool, whatever its slot type)."""

    capacity: int
    on_free: Callable[[], None]

    @property
    def free_slots(self) -> int: ...

    def start(self, msg: Message) -> None: ...


class FetchLoop:
    def __init__(
        self,
        nc: Connection,
        consumer: str,
        pool: Slots,
        expiry_s: float,
        grace_s: float,
        on_unstarted: Callable[[Msg], None],
    ) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{contract.STREAM}.{consumer}"
        self._pool = pool
        self._expiry_s = expiry_s
        self._grace_s = grace_s
        self._on_unstarted = on_unstarted
        self._sub: Subscribed | None = None
        self._prefix = ""
        self._ids = itertools.count()
        self.reserved = 0  # slots promised to open requests
        self._batches: dict[str, int] = {}  # open requests' batches by reply token
        self._quiet_until = 0.0  # monotonic: no delivery or status since; then nothing is open
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._refused: str | None = None  # the server refused a request (400): say so, back off
        self.priority: int | None = None  # the pull priority (None: no priority group)
        self.unstarted = 0
        pool.on_free = self._wakeup.set

    async def supervised(self, name: str, stop: asyncio.Event, crashed: Callable[[], None]) -> None:
        """`run` until `stop`, started again after an error that escaped it (`crashed` counts it)."""
        while not stop.is_set():
            try:
                await self.run(stop)
            except asyncio.CancelledError:
                raise
            except Exception:
                crashed()
                log.exception("%s crashed; restarting it", name)
                await asyncio.sleep(0.5)

    async def run(self, stop: asyncio.Event) -> None:
        if self._sub is None:
            self._prefix = self._nc.new_inbox() + "."
            self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_message)
        self.reset()  # a restarted loop starts with clean books
        waiting_for_stop = asyncio.ensure_future(stop.wait())
        waiting_for_stop.add_done_callback(lambda _: self._wakeup.set())
        try:
            while not stop.is_set():
                self._wakeup.clear()
                if self._refused is not None:
                    log.error("pull request refused by the server: %s; retrying in 1 s", self._refused)
                    self._refused = None
                    await asyncio.sleep(1.0)
                if self.reserved and time.monotonic() > self._quiet_until:
                    self.reset()  # silence: the server has forgotten the requests
                unreserved = self._pool.free_slots - self.reserved
                threshold = 1 if not self.reserved else max(1, self._pool.capacity // 2)
                if unreserved >= threshold:
                    await self._request(unreserved)
                    continue
                try:
                    async with asyncio.timeout_at(_loop_time(self._quiet_until) if self.reserved else None):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
        finally:
            waiting_for_stop.cancel()

    def reset(self) -> None:
        """After a reconnect: the server has forgotten every open request."""
        self.reserved = 0
        self._batches.clear()
        self._wakeup.set()

    def _heard(self) -> None:
        self._quiet_until = time.monotonic() + self._expiry_s + self._grace_s

    async def _request(self, batch: int) -> None:
        token = str(next(self._ids))
        request: dict[str, object] = {"batch": batch, "expires": int(self._expiry_s * 1e9)}
        if self.priority is not None:
            request["group"] = contract.PRIORITY_GROUP
            request["priority"] = self.priority
        self.reserved += batch
        self._batches[token] = batch
        self._heard()
        try:
            await self._nc.publish(
                self._next_subject, json.dumps(request).encode(), reply=self._prefix + token
            )
        except Exception as exc:
            log.debug("pull request failed: %r", exc)
            self.reserved = max(0, self.reserved - batch)
            self._batches.pop(token, None)
            await asyncio.sleep(0.2)

    async def _on_message(self, msg: Msg) -> None:
        if not msg.reply:  # a status: 100 idle heartbeat; 400/404/408/409 end the request
            headers = msg.headers or {}
            status = headers.get("Status")
            batch = self._batches.pop(msg.subject[len(self._prefix) :], None)
            if status == "100" or batch is None:
                return
            self._heard()
            pending = headers.get("Nats-Pending-Messages", "")
            undelivered = min(batch, int(pending)) if pending.isdigit() else batch
            self.reserved = max(0, self.reserved - undelivered)
            self._wakeup.set()
            if status == "400":
                self._refused = headers.get("Description", "400")
            elif status not in ("404", "408"):
                log.debug("pull request ended: %s %s", status, headers.get("Description"))
            return
        self._heard()
        if self.reserved > 0:
            self.reserved -= 1
        if self._stopping or self._pool.free_slots <= 0:
            # Delivered after this worker stopped fetching, or for a request whose books a
            # reconnect cleared and whose slots are taken since: give it back unstarted.
            self.unstarted += 1
            self._on_unstarted(msg)
            return
        self._pool.start(msg)

    async def close(self) -> None:
        """After the loop stopped: wait out the open requests (at most expiry + grace) and hand back
        whatever they still bring, so nothing sits un-acked until ack_wait."""
        self._stopping = True
        deadline = time.monotonic() + self._expiry_s + self._grace_s
        while self.reserved and time.monotonic() < deadline:
            self._wakeup.clear()
            try:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    await self._wakeup.wait()
            except TimeoutError:
                break
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:  # the connection may be gone already
                log.debug("unsubscribe failed: %r", exc)
            self._sub = None


def _loop_time(monotonic_deadline: float) -> float:
    """A time.monotonic() deadline on the event loop's clock (the same clock under both asyncio and
    uvloop, but say so once)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())
