"""Where an order stands, from what JetStream holds (no `queued` record is written):

1. its status record in KV ORDER_STATUS (a direct get: one round trip, cheaper than nats-py's
   kv.get), written by workers (processing, done, failed, dead, cancelled, a retry's queued);
2. else its message in ORDERS (`orders.<type>.<id>`, a direct get of `orders.*.<id>`): queued;
2b. else its schedule in ORDER_RETRIES (`orderflow.schedule.<type>.<id>`): a delayed order,
   `scheduled` until nats-server copies it to ORDERS at `run_at`. Looked up here rather than
   written as a status record at intake: a delayed order costs one stored write, like any order,
   and only a lookup that found nothing in KV and ORDERS pays this one direct get;
3. else, one more look at the status record: a worker stores its final status *before* it acks
   (and so removes) the message, so a record that appeared between steps 1 and 2 is found now;
4. else unknown.

`render()` is how the HTTP API (and the CLI) show a record: every timestamp (a `*_at` or
`*_until` number, epoch seconds in KV) as ISO 8601 UTC, with the number kept as `<name>_s`;
every other field as stored, whatever fields the record carries.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from nats.aio.msg import Msg

from orderflow import contract
from orderflow.natsmux import Requester

STATUS_STREAM = "KV_" + contract.STATUS_BUCKET


class BadRecord(Exception):
    """A status record that is not a JSON object with an order id and a status."""


def iso(epoch_s: float) -> str:
    return (
        dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _is_timestamp(name: str, value: Any) -> bool:
    return (
        (name.endswith("_at") or name.endswith("_until"))
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    )


# Shown even when the stored record leaves them out (a record omits its defaults, 0).
COUNTS = ("attempts", "runs", "deliveries", "handbacks", "crashes")

# The view's names for what the record stores under names that read wrongly: `attempts` counts
# only the failed ones, `started_at` is the last run's start, `run_s` the time of every run. The
# view shows both: the old names stay (deprecated in /openapi.json) for the clients, dashboards and
# tools that read them; the record keeps its names (no migration of stored records).
NAMED = {"attempts": "failed_attempts", "started_at": "last_started_at", "run_s": "total_run_s"}


# What a client (an API key without `admin`) sees of its order: status, times, counts, a result
# and the class of an error; not the worker, the lease, the checkpoint or the error's text (a
# handler's exception text can carry anything). An allow-list: a field added to the record later
# stays internal until it is added here.
CLIENT_FIELDS = frozenset(
    {
        "order_id",
        "status",
        "task_type",
        "created_at",
        "updated_at",
        "started_at",
        "first_started_at",
        "finished_at",
        "retry_at",
        "run_at",
        *COUNTS,
        *NAMED.values(),
        "result",
        "error_class",
    }
)


def render(record: dict[str, Any], full: bool = True) -> dict[str, Any]:
    """The record as shown: the whole record, or (`full=False`) a client's view of it."""
    out: dict[str, Any] = {}
    shown = {**dict.fromkeys(COUNTS, 0), **record}
    for old, new in NAMED.items():
        if old in shown:
            shown[new] = shown[old]
    for name, value in shown.items():
        if not full and name not in CLIENT_FIELDS:
            continue
        if _is_timestamp(name, value):
            out[name] = iso(value)
            out[name + "_s"] = value
        else:
            out[name] = value
    return out


def decode_record(data: bytes) -> dict[str, Any]:
    try:
        record = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise BadRecord(str(exc)) from None
    if not isinstance(record, dict) or "order_id" not in record or "status" not in record:
        raise BadRecord("not a status record")
    return record


def queued_from_message(msg: Msg) -> dict[str, Any]:
    """The order's message in ORDERS as a record: queued, since the stream was given it."""
    headers = msg.headers or {}
    order = msgspec.json.decode(msg.data) if msg.data else {}
    created_at = order.get("created_at") if isinstance(order, dict) else None
    record: dict[str, Any] = {
        "order_id": order.get("order_id") if isinstance(order, dict) else None,
        "status": "queued",
        "attempts": 0,
        "task_type": contract.task_type_of(headers.get("Nats-Subject", "")),
    }
    client = headers.get(contract.H_CLIENT)
    if client:
        record["client"] = client
    if isinstance(created_at, int | float):
        record["updated_at"] = record["created_at"] = created_at
    return record


def scheduled_from_message(msg: Msg) -> dict[str, Any]:
    """A delayed order's schedule as a record: scheduled, to run at `run_at`."""
    headers = msg.headers or {}
    subject = headers.get("Nats-Subject", "")
    record = queued_from_message(msg)
    record["status"] = "scheduled"
    record["task_type"] = contract.task_type_of(
        contract.SUBJECT_PREFIX + subject[len(contract.SCHEDULE_PREFIX) :]
    )
    when = headers.get(contract.H_SCHEDULE, "").removeprefix("@at ")
    try:
        record["run_at"] = dt.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    return record


class OrderLookup:
    def __init__(self, requests: Requester, timeout_s: float | None = None) -> None:
        self._requests = requests
        self._timeout_s = timeout_s

    async def status_record(self, order_id: str) -> dict[str, Any] | None:
        data = await self._requests.direct_get(
            STATUS_STREAM, contract.STATUS_SUBJECT_PREFIX + order_id, self._timeout_s
        )
        return None if data is None else decode_record(data)

    async def message(self, order_id: str) -> Msg | None:
        return await self._requests.direct_get_last(
            contract.STREAM, contract.order_subject("*", order_id), self._timeout_s
        )

    async def find(self, order_id: str) -> dict[str, Any] | None:
        """The order's record (raw: numeric timestamps), or None if JetStream knows no such order.
        Raises natsmux.RequestTimeout / JetStreamError on NATS trouble, BadRecord on a bad record."""
        record = await self.status_record(order_id)
        if record is not None:
            return record
        msg = await self.message(order_id)
        if msg is not None:
            record = queued_from_message(msg)
            record["order_id"] = order_id
            return record
        msg = await self._requests.direct_get_last(
            contract.RETRIES_STREAM, f"{contract.SCHEDULE_PREFIX}*.{order_id}", self._timeout_s
        )
        if msg is not None and msg.headers and msg.headers.get(contract.H_MSG_ID) == order_id:
            # (a retry's schedule has its own Nats-Msg-Id and a status record, found in step 1)
            record = scheduled_from_message(msg)
            record["order_id"] = order_id
            return record
        return await self.status_record(order_id)

    async def exists(self, order_id: str) -> bool:
        return await self.find(order_id) is not None
