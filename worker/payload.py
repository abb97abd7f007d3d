"""How one task type's stored orders become its handler's `job.order` and `job.payload`.

A type that declares no payload takes the seed's order: `job.payload` is the order itself
(product_id, count, username; unknown fields were dropped by the ingest). A type that declares a
msgspec Struct gets an instance of it (decoded from the stored JSON; unknown fields are ignored
unless the Struct says `forbid_unknown_fields=True`, and then the ingest refuses them already);
one that declares a JSON Schema gets the JSON object as a dict, extra fields and all unless the
schema forbids them (`"additionalProperties": false`).

Each worker decodes with the payload it has now. An order stored under another payload (queued
before a schema change, or published by hand) does not fit it: the pipeline dead-letters it with
the reason (worker/job.py), and `orderflow dlq replay` sends it again once a handler takes it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from nats.js import JetStreamContext

from orderflow import contract
from orderflow.payloads import PayloadSchema, TypeRecord, encode_record

_any = msgspec.json.Decoder()


class PayloadCodec:
    """The seed's order: the stored order is the payload (the hot path: one decode, as before)."""

    schema: dict[str, Any] | None = None  # what the workers publish for the ingest; None: the seed's

    def decode(self, data: bytes) -> tuple[contract.Order | contract.TypedOrder, Any]:
        """(order, payload); raises msgspec.DecodeError/ValidationError when the data does not fit."""
        order = contract.decode_order(data)
        return order, order


SEED = PayloadCodec()


class StructCodec(PayloadCodec):
    def __init__(self, task_type: str, struct: type[msgspec.Struct]) -> None:
        if getattr(struct.__struct_config__, "array_like", False):
            raise ValueError(
                f"payload of {task_type!r}: {struct.__name__} is array_like; a payload is a JSON object"
            )
        self.schema = msgspec.json.schema(struct)
        PayloadSchema(task_type, self.schema)  # what the ingest will compile must compile
        self._decoder = msgspec.json.Decoder(struct)

    def decode(self, data: bytes) -> tuple[contract.Order | contract.TypedOrder, Any]:
        order = contract.decode_typed_order(data)
        return order, self._decoder.decode(order.payload)


class SchemaCodec(PayloadCodec):
    def __init__(self, task_type: str, schema: dict[str, Any]) -> None:
        self._checker = PayloadSchema(task_type, schema)
        self.schema = schema

    def decode(self, data: bytes) -> tuple[contract.Order | contract.TypedOrder, Any]:
        order = contract.decode_typed_order(data)
        payload = _any.decode(order.payload)
        errors = self._checker.errors(payload)
        if errors:
            raise msgspec.ValidationError("; ".join(f"{e.field} {e.message}" for e in errors))
        return order, payload


def codec_of(task_type: str, payload: Any) -> PayloadCodec:
    """The codec of a declaration: None (the seed's order), a msgspec Struct class or a JSON Schema."""
    if payload is None:
        return SEED
    if isinstance(payload, type) and issubclass(payload, msgspec.Struct):
        return StructCodec(task_type, payload)
    if isinstance(payload, dict):
        return SchemaCodec(task_type, payload)
    raise ValueError(
        f"payload of {task_type!r}: a msgspec.Struct class or a JSON Schema (a dict), not {type(payload).__name__}"
    )


async def declare(
    js: JetStreamContext, task_types: Iterable[str], codec: Callable[[str], PayloadCodec], worker_id: str
) -> None:
    """Write each served type's payload to KV ORDER_TYPES for the ingest (orderflow/payloads.py).
    At every start, before any fetch: the newest worker's handler is the one the ingest follows
    (during a rolling update the old pods' orders may meet the new schema: dead-lettered, above)."""
    kv = await js.key_value(contract.TYPES_BUCKET)
    for task_type in task_types:
        record = TypeRecord(task_type, codec(task_type).schema, worker_id, time.time())
        await kv.put(task_type, encode_record(record))
