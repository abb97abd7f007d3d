"""The fetch loop: pull exactly as many messages as the pool has free slots.

JetStream facts this relies on:
- A pull consumer only delivers against a pull request (`$JS.API.CONSUMER.MSG.NEXT`): batch=n,
  expires=t. The server delivers up to n messages as they come, and when the request expires
  unfilled it sends a `408 Request Timeout` status (409 for other ends, e.g. max_waiting).
- nats-py's `fetch()` can return after the first message while its request stays open on the
  server; the rest of that batch then arrives later into the subscription with no slot to run it
  (num_ack_pending > slots). So this loop keeps its own books: slots reserved by the open request
  are counted until each is delivered or the request ends, and a request never asks for more than
  the free, unreserved slots.
- After a NATS restart an open request is gone without a status: a client-side deadline
  (expiry + grace) releases its reservation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from orderflow import contract
from worker.pool import Pool

log = logging.getLogger(__name__)

_STATUS = "Status"
_GRACE_S = 1.0


class FetchLoop:
    def __init__(self, nc: Client, consumer: str, pool: Pool, expiry_s: float) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{contract.STREAM}.{consumer}"
        self._pool = pool
        self._expiry_s = expiry_s
        self._sub: Subscription | None = None
        self._reserved = 0  # slots promised to the open pull request
        self._request_deadline = 0.0
        self.handed_back_unstarted = 0
        self._handing_back: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        if self._sub is None:
            inbox = self._nc.new_inbox()
            self._sub = await self._nc.subscribe(inbox)
        sub = self._sub
        self._reserved = 0  # a restarted loop starts with clean books
        while not stop.is_set():
            if self._reserved == 0:
                free = await self._pool.wait_for_free_slot()
                if stop.is_set():
                    break
                if free <= 0:
                    continue
                await self._request(sub.subject, free)
            try:
                msg = await sub.next_msg(timeout=max(0.01, self._request_deadline - time.monotonic()))
            except (TimeoutError, nats.errors.TimeoutError):
                # No status came (server restarted, connection lost): the request is gone.
                self._reserved = 0
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
                await asyncio.sleep(0.2)
                self._reserved = 0
                continue
            self._on_message(msg, stop)

    async def _request(self, inbox: str, batch: int) -> None:
        expires_ns = int(self._expiry_s * 1e9)
        payload = json.dumps({"batch": batch, "expires": expires_ns}).encode()
        self._reserved = batch
        self._request_deadline = time.monotonic() + self._expiry_s + _GRACE_S
        try:
            await self._nc.publish(self._next_subject, payload, reply=inbox)
        except Exception as exc:
            log.debug("pull request failed: %r", exc)
            self._reserved = 0
            await asyncio.sleep(0.2)

    def _on_message(self, msg: Msg, stop: asyncio.Event) -> None:
        status = msg.headers.get(_STATUS) if msg.headers else None
        if status is not None and not msg.reply:
            if status != "100":  # 100 = idle heartbeat; 404/408/409 end the request
                self._reserved = 0
            return
        if self._reserved > 0:
            self._reserved -= 1
        if stop.is_set() or self._pool.free_slots <= 0:
            # A delivery for a request we no longer hold slots for (late after a restart).
            task = asyncio.create_task(self.hand_back(msg))
            self._handing_back.add(task)
            task.add_done_callback(self._handing_back.discard)
            return
        self._pool.start(msg)

    async def hand_back(self, msg: Msg) -> None:
        """Give back a message that was fetched but never started: immediate redelivery."""
        self.handed_back_unstarted += 1
        try:
            await msg.nak()
        except Exception as exc:  # it comes back after ack_wait anyway
            log.debug("hand back failed: %r", exc)

    async def close(self) -> int:
        """After the loop stopped: wait out the open request (at most expiry + grace) and hand back
        whatever it still brings, so nothing sits un-acked until ack_wait."""
        if self._sub is None:
            return 0
        count = 0
        deadline = time.monotonic() + (self._expiry_s + _GRACE_S if self._reserved else 0.05)
        while True:
            try:
                msg = await self._sub.next_msg(timeout=max(0.01, deadline - time.monotonic()))
            except (TimeoutError, nats.errors.TimeoutError, nats.errors.ConnectionClosedError):
                break
            if msg.reply and msg.reply.startswith("$JS.ACK."):
                await self.hand_back(msg)
                count += 1
                self._reserved = max(0, self._reserved - 1)
            elif msg.headers and msg.headers.get(_STATUS) != "100":
                self._reserved = 0
            if self._reserved == 0:
                deadline = min(deadline, time.monotonic() + 0.05)
        await self._sub.unsubscribe()
        self._sub = None
        return count
