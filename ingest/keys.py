"""Idempotency-Key (the IETF httpapi draft, Stripe's behaviour): a key record per client key in KV
ORDER_KEYS, so that a repeat is answered from the record for as long as its order's status is kept
(max_age ORDERFLOW_STATUS_TTL_S, 7 days: one setting for both), not only inside JetStream's 2-minute
duplicate window. The key names the order `key-<key>` (contract.keyed_order_id), never an id the
ingest generates; that id is also the Nats-Msg-Id, so a retry of a publish is de-duplicated.

The record {fingerprint, order_id, at, claim} is written as a KV *create* (expected last subject
sequence 0) before the order is published. Whoever creates it owns the key; everyone else reads it:

| the record says                                           | answer                                   |
|-----------------------------------------------------------|------------------------------------------|
| another body (fingerprint differs)                        | 422, nothing stored                      |
| same body, the order exists (status record or message)    | 200 with the same order id, nothing new  |
| same body, no order yet, written < in_flight_s ago        | 409: the first request is still in flight|
| same body, no order, older (or marked failed)             | take it over (compare-and-set), publish  |
| none, but the order it would name exists (record expired) | 422 for any body until the new one expires|

`in_flight_s` is the publish budget plus a second for clocks of different pods: no request that
wrote a record publishes for longer. A publish that fails marks the record failed (best effort),
so a retry after Retry-After need not wait for that age. The `claim` nonce tells a writer its own
record from another's (a create whose PubAck was lost and is retried finds its own record).
The fingerprint is of the validated order (task type, product_id, count, username): bodies that
differ only in spelling ("3" and 3, key order, whitespace, ignored fields) are the same request.
Only keyed requests pay for this; the common path (no key) writes nothing more."""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import msgspec

from ingest.publisher import RETRY_PAUSE_S, Publisher, Refusals
from orderflow import buckets, contract
from orderflow.lookup import BadRecord, OrderLookup
from orderflow.natsmux import Requester

log = logging.getLogger(__name__)

KEYS_STREAM = "KV_" + buckets.KEYS_BUCKET
# nats-server's "wrong last sequence": JSStreamWrongLastSequenceErrF (10071, with the subject's
# sequence) from a single server, JSStreamWrongLastSequenceConstantErr (10164, without it) from a
# replicated stream's leader (and while a write on the same subject is still in process there)
_JS_WRONG_LAST_SEQUENCE = (10071, 10164)
_CLOCK_MARGIN_S = 1.0
T = TypeVar("T")
UNKNOWN_BODY = "?"  # the fingerprint of a key whose order outlived its record: matches no body


class KeyRecord(msgspec.Struct, omit_defaults=True):
    fingerprint: str
    order_id: str
    at: float  # epoch s when the record was written (or taken over)
    claim: str  # a nonce of the request that wrote it
    failed: bool = False  # its publish failed: no request is in flight for it


_decode_record = msgspec.json.Decoder(KeyRecord)


class Outcome(enum.Enum):
    NEW = "new"  # the key is ours: publish
    RETRY = "retry"  # an earlier request with this key failed; the key is ours now: publish
    REPLAY = "replay"  # the order exists: 200 with its id, nothing stored
    MISMATCH = "mismatch"  # 422
    IN_FLIGHT = "in_flight"  # 409
    UNAVAILABLE = "unavailable"  # the key store cannot answer: 503


def fingerprint(
    order: contract.Order | contract.TypedOrder, task_type: str, client: str | None = None
) -> str:
    """The request a key was used with. `client` (the API key's name) is part of it: another API
    key's request with the same Idempotency-Key is another request (422), never a replay answered
    with the first client's order id."""
    if isinstance(order, contract.TypedOrder):  # its payload is stored with sorted keys
        canonical = task_type.encode() + b"\0" + bytes(order.payload)
    else:
        canonical = f"{task_type}\0{order.product_id}\0{order.count}\0{order.username}".encode()
    if order.callback_url is not None:  # a key repeated with another callback is another order
        canonical += b"\0" + order.callback_url.encode()
    if client is not None:  # none: auth is off (and records from before it keep their prints)
        canonical = b"client\0" + client.encode() + b"\0" + canonical
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def judge(record: KeyRecord, fingerprint: str, order_exists: bool, now: float, in_flight_s: float) -> Outcome:
    """What an existing key record means for a request with `fingerprint` (the table above)."""
    if record.fingerprint != fingerprint:
        return Outcome.MISMATCH
    if order_exists:
        return Outcome.REPLAY
    if not record.failed and now - record.at < in_flight_s:
        return Outcome.IN_FLIGHT
    return Outcome.RETRY


class Claim(msgspec.Struct):
    outcome: Outcome
    seq: int = 0  # the key record's sequence (ours for NEW/RETRY)
    record: KeyRecord | None = None
    key: str = ""


class IdempotencyKeys:
    def __init__(
        self,
        requests: Requester,
        publisher: Publisher,
        lookup: OrderLookup,
        refusals: Refusals,
        publish_timeout_s: float,
    ) -> None:
        self._requests = requests
        self._publisher = publisher
        self._lookup = lookup
        self._refusals = refusals
        self._in_flight_s = publish_timeout_s + _CLOCK_MARGIN_S
        self._publish_timeout_s = publish_timeout_s

    async def _riding_out(self, read: Callable[[], Awaitable[T]]) -> T:
        """A read of the key store or the order, tried again through a NATS restart or failover
        within the publish budget, as the publish that follows it is (Publisher.send): a keyed
        request during a quick restart costs latency, not a 503. A bad record is no NATS trouble."""
        deadline = time.monotonic() + self._publish_timeout_s
        pause_s = RETRY_PAUSE_S
        while True:
            try:
                return await read()
            except BadRecord:
                raise
            except Exception:
                next_pause_s = await self._publisher.ride_out(deadline - time.monotonic(), pause_s)
                if next_pause_s is None:
                    raise
                pause_s = next_pause_s

    async def claim(
        self, order: contract.Order | contract.TypedOrder, task_type: str, client: str | None = None
    ) -> Claim:
        """`order.order_id` is the key's id (contract.keyed_order_id); the record is kept under
        the key itself."""
        key = order.order_id.removeprefix(contract.KEYED_PREFIX)
        fp = fingerprint(order, task_type, client)
        mine = KeyRecord(fp, order.order_id, time.time(), os.urandom(8).hex())
        for _ in range(3):  # a record can expire between our create and our read
            seq = await self._write(key, mine, expected_seq=0)
            if seq > 0:
                return await self._fresh(key, seq, mine)
            if seq < 0:
                return Claim(Outcome.UNAVAILABLE)
            found = await self._riding_out(partial(self._read, key))
            if found is None:
                continue
            record, seq = found
            if record.claim == mine.claim:
                return await self._fresh(key, seq, record)  # our own create, whose PubAck was lost
            if record.fingerprint != mine.fingerprint:
                return Claim(Outcome.MISMATCH, seq, record, key)
            exists = await self._riding_out(partial(self._lookup.exists, record.order_id))
            outcome = judge(record, mine.fingerprint, exists, time.time(), self._in_flight_s)
            if outcome is not Outcome.RETRY:
                return Claim(outcome, seq, record, key)
            # Take the key over by compare-and-set: of two retries, one wins, the other sees 409.
            taken = await self._write(key, mine, expected_seq=seq)
            if taken > 0:
                return Claim(Outcome.RETRY, taken, mine, key)
            return Claim(Outcome.IN_FLIGHT if taken == 0 else Outcome.UNAVAILABLE)
        return Claim(Outcome.UNAVAILABLE)

    async def _fresh(self, key: str, seq: int, record: KeyRecord) -> Claim:
        """A record we just created. Its order may still exist: the record lives as long as a
        status (ORDERFLOW_STATUS_TTL_S) but is written at the request and the status at the end
        of the work, so the status outlives it by the order's time to done. The key is still taken
        then, by a body no longer known: the record says so (a fingerprint no body has), and every
        request with the key answers 422 until it expires. (Publishing would have been answered
        200 and acked by the worker as that order's, already done: never run.)"""
        if not await self._riding_out(partial(self._lookup.exists, record.order_id)):
            return Claim(Outcome.NEW, seq, record, key)
        taken = msgspec.structs.replace(record, fingerprint=UNKNOWN_BODY)
        await self._write(key, taken, expected_seq=seq, note=False)
        return Claim(Outcome.MISMATCH, seq, taken, key)

    async def failed(self, claim: Claim) -> None:
        """The publish after a claim failed: say so in the record (best effort), so the client's
        retry need not wait for the in-flight window."""
        if claim.record is None or claim.seq <= 0:
            return
        record = msgspec.structs.replace(claim.record, failed=True)
        try:
            await self._write(claim.key, record, expected_seq=claim.seq, note=False)
        except Exception as exc:  # the record simply ages out of the window instead
            log.debug("could not mark key %s failed: %r", claim.key, exc)

    async def _write(self, key: str, record: KeyRecord, expected_seq: int, note: bool = True) -> int:
        """The record's new sequence; 0 if the expected last sequence did not match (someone else's
        record is there); -1 if the key store did not answer (a refusal, noted)."""
        sent = await self._publisher.send(
            buckets.KEYS_SUBJECT_PREFIX + key,
            contract.encode(record),
            {contract.H_EXPECTED_LAST_SUBJECT_SEQ: str(expected_seq)},
        )
        if sent.result.stored:
            seq = msgspec.json.decode(sent.puback).get("seq")
            return int(seq) if isinstance(seq, int) and seq > 0 else 1
        if sent.err_code in _JS_WRONG_LAST_SEQUENCE:
            return 0
        if note and sent.refusal is not None:
            self._refusals.note(*sent.refusal)
        return -1

    async def _read(self, key: str) -> tuple[KeyRecord, int] | None:
        msg = await self._requests.direct_get_last(KEYS_STREAM, buckets.KEYS_SUBJECT_PREFIX + key)
        if msg is None:
            return None
        headers = msg.headers or {}
        if headers.get("KV-Operation") in ("DEL", "PURGE"):
            return None
        return _decode_record.decode(msg.data), int(headers.get("Nats-Sequence", "0"))
