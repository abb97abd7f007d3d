"""What the job pipeline needs from NATS, behind one small Protocol, so that the pipeline's rules run
in process against a stand-in (tests/worker/standin.py) as well as against the real server.

JetStream facts used here:
- A delivery's reply subject is its ack subject and carries its metadata:
  `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<timestamp ns>.<pending>`
  (9 tokens), or with `<domain>.<account hash>` after `$JS.ACK` and a random token at the end
  (12 tokens, nats-server 2.10+). The timestamp is the message's publish time.
- Publishing to it: `+ACK` (or empty) acks, `-NAK` naks (`-NAK {"delay": ns}` redelivers after
  the delay), `+WPI` is "in progress" (resets the ack_wait clock), `+TERM` stops redelivery (in a
  work-queue stream it also removes the message). None of these is confirmed unless sent as a
  request; the pipeline confirms the stored status before it acks instead.
- KV ORDER_STATUS is stream `KV_ORDER_STATUS`, key `$KV.ORDER_STATUS.<id>`; a direct get of the
  subject reads it; a delete is a message with `KV-Operation: DEL`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from nats.aio.client import Client

from orderflow import contract
from orderflow.natsmux import Requester

log = logging.getLogger(__name__)

_KV_STREAM = "KV_" + contract.STATUS_BUCKET
_CANCELS_PREFIX = f"$KV.{contract.CANCELS_BUCKET}."
_ACK, _NAK, _WPI, _TERM = b"+ACK", b"-NAK", b"+WPI", b"+TERM"


class Message(Protocol):
    """The part of a nats-py Msg the pipeline reads."""

    subject: str
    reply: str
    data: bytes
    headers: dict[str, str] | None


class Meta:
    """A delivery's metadata from its ack subject (nats-py's Msg.metadata builds datetimes)."""

    __slots__ = ("delivered", "published_at", "seq")

    def __init__(self, reply: str) -> None:
        tokens = reply.split(".")
        # 9 tokens: $JS.ACK.stream.consumer.delivered.sseq.cseq.ts.pending; 12: domain + hash too
        i = 4 if len(tokens) == 9 else 6
        self.delivered = int(tokens[i])
        self.seq = int(tokens[i + 1])
        self.published_at = int(tokens[i + 3]) / 1e9


class Transport(Protocol):
    async def in_progress(self, msg: Message) -> None: ...
    async def ack(self, msg: Message) -> None: ...
    async def nak(self, msg: Message, delay_s: float | None = None) -> None: ...
    async def term(self, msg: Message) -> None: ...
    async def get_status(self, order_id: str) -> contract.StatusRecord | None: ...
    async def put_status(self, record: contract.StatusRecord, confirm: bool) -> None: ...
    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        """A confirmed publish to a stream (the DLQ, a scheduled retry); raises if not stored."""

    async def forget_cancel(self, order_id: str) -> None: ...
    async def record_run(self, run: contract.RunRecord) -> None: ...


class NatsTransport:
    def __init__(self, nc: Client, requests: Requester) -> None:
        self._nc = nc
        self._requests = requests

    async def in_progress(self, msg: Message) -> None:
        await self._nc.publish(msg.reply, _WPI)

    async def ack(self, msg: Message) -> None:
        await self._nc.publish(msg.reply, _ACK)

    async def nak(self, msg: Message, delay_s: float | None = None) -> None:
        payload = _NAK
        if delay_s is not None and delay_s > 0:
            payload += b" " + json.dumps({"delay": int(delay_s * 1e9)}).encode()
        await self._nc.publish(msg.reply, payload)

    async def term(self, msg: Message) -> None:
        await self._nc.publish(msg.reply, _TERM)

    async def get_status(self, order_id: str) -> contract.StatusRecord | None:
        data = await self._requests.direct_get(_KV_STREAM, contract.STATUS_SUBJECT_PREFIX + order_id)
        return contract.decode_status(data) if data else None

    async def put_status(self, record: contract.StatusRecord, confirm: bool) -> None:
        subject = contract.STATUS_SUBJECT_PREFIX + record.order_id
        data = contract.encode(record)
        if confirm:
            await self._requests.js_publish(subject, data)
        else:
            await self._nc.publish(subject, data)

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        await self._requests.js_publish(subject, data, headers)

    async def forget_cancel(self, order_id: str) -> None:
        await self._nc.publish(_CANCELS_PREFIX + order_id, b"", headers={"KV-Operation": "DEL"})

    async def record_run(self, run: contract.RunRecord) -> None:
        # Its own Nats-Msg-Id: a record retried after a lost PubAck is stored once.
        msg_id = f"{run.order_id}.{run.event}.{run.worker_id}.{run.attempt}.{run.at:.6f}"
        await self._requests.js_publish(
            contract.RUNS_PREFIX + run.order_id, contract.encode(run), {contract.H_MSG_ID: msg_id}
        )


def header(msg: Message, name: str, default: str = "") -> str:
    headers: dict[str, Any] | None = msg.headers
    return str(headers.get(name, default)) if headers else default


async def keep_trying(write: Callable[[], Awaitable[None]], what: str, attempts: int = 12) -> None:
    """A confirmed write, tried again through a NATS restart or a JetStream leader election
    (0.1 s between tries, doubling up to 5 s: about half a minute in all with the default 12);
    the last failure is raised. The write must be safe to repeat (a status record is the same
    record again; a run record carries its own Nats-Msg-Id)."""
    delay = 0.1
    for attempt in range(attempts):
        try:
            await write()
            return
        except Exception as exc:
            if attempt == attempts - 1:
                raise
            log.info("%s not stored yet (%r); retrying", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
