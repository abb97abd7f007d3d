"""The wire contract shared by ingest, worker, CLI and tests: names (streams, subjects, buckets,
headers, ids), the order and the status and run records, and their codec. A client's POST /orders
body is checked by orderflow/validation.py."""

from __future__ import annotations

import re
from typing import Any

import msgspec

# --- names (docs/architecture.md) -------------------------------------------------------------------------
STREAM = "ORDERS"
SUBJECT_PREFIX = "orders."
STREAM_SUBJECTS = ("orders.>",)
DLQ_STREAM = "ORDERS_DLQ"
DLQ_PREFIX = "dlq.orders."
DLQ_SUBJECTS = ("dlq.orders.>",)
STATUS_BUCKET = "ORDER_STATUS"
STATUS_SUBJECT_PREFIX = "$KV.ORDER_STATUS."
# Every run of a handler is appended here (start and end), so a test or the chaos ledger can
# count how often each order really ran. Not part of the processing path.
RUNS_STREAM = "ORDER_RUNS"
RUNS_PREFIX = "orderflow.runs."
RUNS_SUBJECTS = ("orderflow.runs.>",)
CONTROL_CANCEL = "orderflow.control.cancel"
DURABLE = "workers"
# Idempotency-Key records (ingest/keys.py): key -> {fingerprint, order_id, at, claim}.
KEYS_BUCKET = "ORDER_KEYS"
# Cancel markers: an order cancelled before any worker got it. Every worker watches this bucket.
CANCELS_BUCKET = "ORDER_CANCELS"
# Live workers and when each started: the order of their pull priorities (oldest first).
WORKERS_BUCKET = "ORDER_WORKERS"
# Each task type's payload as its workers declare it (orderflow/payloads.py): key = the type, value
# a TypeRecord. Workers write it at start; the ingest watches it and validates orders by it.
TYPES_BUCKET = "ORDER_TYPES"
# The consumers' priority group: pulls carry a priority from the worker's rank.
PRIORITY_GROUP = "orderflow"
# Retries that wait longer than a few ack waits are scheduled messages (nats-server 2.12) in a stream
# of their own (scheduling needs discard-old, and ORDERS must refuse rather than drop when full):
# published on orderflow.schedule.<type>.<id>, fired at the retry time to orderflow.retry.<type>.<id>,
# which ORDERS sources as orders.<type>.<id>.
RETRIES_STREAM = "ORDER_RETRIES"
SCHEDULE_PREFIX = "orderflow.schedule."
RETRY_PREFIX = "orderflow.retry."
RETRIES_SUBJECTS = ("orderflow.schedule.>", "orderflow.retry.>")

# Headers. Nats-Msg-Id is JetStream's own de-duplication key (duplicate_window).
H_MSG_ID = "Nats-Msg-Id"
H_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
H_ERROR = "Orderflow-Error"
H_ATTEMPTS = "Orderflow-Attempts"
H_ORDER_ID = "Orderflow-Order-Id"
H_SUBJECT = "Orderflow-Subject"
H_WORKER = "Orderflow-Worker"
# Why an order is in ORDERS_DLQ: out of failed attempts, its worker died too often, delivered too
# often, the handler called it poison, the payload is not an order at all, or it is an order whose
# payload does not fit its task type's as the worker has it now (a schema changed while it waited).
H_REASON = "Orderflow-Reason"
DLQ_REASONS = ("attempts", "crashes", "deliveries", "poison", "undecodable", "payload")
# "A status record may exist for this order: read it before running" (keyed orders, DLQ replays,
# rescheduled retries). A generated id cannot have one, so its first delivery skips the read.
H_STATUS_CHECK = "Orderflow-Status-Check"
# A DLQ replay: runs again with fresh counts, whatever the old record says (dead, failed).
H_REPLAY = "Orderflow-Replay"
# The name of the API key that created the order (orderflow/auth.py); absent when auth is off.
# Workers copy it into the status record, so GET /orders/{id} answers only that key (or an admin).
H_CLIENT = "Orderflow-Client"
# Deliveries of this order before this message (a rescheduled retry is a new message).
H_DELIVERIES = "Orderflow-Deliveries"
H_FAILED_ATTEMPTS = "Orderflow-Failed-Attempts"
H_HANDBACKS = "Orderflow-Handbacks"
H_CRASHES = "Orderflow-Crashes"
# A callback delivery (worker/callback.py): a job of its own, published as the order
# `<order id>.callback` on the order's task type when the order became final; this header names
# the order it reports. Its handler is built in; it never has a callback of its own.
H_CALLBACK_FOR = "Orderflow-Callback-For"
CALLBACK_SUFFIX = ".callback"
# JetStream message scheduling (ADR-51, nats-server 2.12).
H_SCHEDULE = "Nats-Schedule"
H_SCHEDULE_TARGET = "Nats-Schedule-Target"

MAX_BODY_BYTES = 16 * 1024
# A checkpoint lives in the order's status record; KV values are cheap below this.
MAX_CHECKPOINT_BYTES = 64 * 1024
# A handler's result is stored with `done` in the same record: the same bound.
MAX_RESULT_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY = 128
MAX_USERNAME = 64
QUANTITY_MIN, QUANTITY_MAX = 0, 100

# scheduled: a delayed order waiting for its time (orderflow/lookup.py; never a stored record)
STATUSES = ("scheduled", "queued", "processing", "done", "failed", "dead", "cancelled")
FINAL_STATUSES = frozenset({"done", "failed", "dead", "cancelled"})

# An order id is a KV key and a subject token: letters, digits, '-', '_', '=', dots between.
# \Z, not $: `$` also matches before a trailing newline ("X\n" is not an id, "5\n" not a number).
_ID_RE = re.compile(r"^[A-Za-z0-9_=-]+(?:\.[A-Za-z0-9_=-]+)*\Z")


def consumer_name(task_type: str, split: bool) -> str:
    """Durable consumer of one task type: `workers`, or `workers-<type>` when types are split."""
    return f"{DURABLE}-{task_type}" if split else DURABLE


def consumer_filters(task_type: str, split: bool) -> list[str]:
    """What one task type's consumer takes: everything, or `orders.<type>` and `orders.<type>.>`
    (orders are published per order, `orders.<type>.<id>`; the bare `orders.<type>` keeps messages
    stored before that change flowing)."""
    if not split:
        return [STREAM_SUBJECTS[0]]
    return [f"{SUBJECT_PREFIX}{task_type}", f"{SUBJECT_PREFIX}{task_type}.>"]


def order_subject(task_type: str, order_id: str) -> str:
    """One subject per order, so a queued order can be found by id (a direct get of
    `orders.*.<id>`) without a status record."""
    return f"{SUBJECT_PREFIX}{task_type}.{order_id}"


def task_type_of(subject: str) -> str:
    """`orders.<type>.<id>` (or the older `orders.<type>`) -> `<type>`."""
    rest = subject[len(SUBJECT_PREFIX) :] if subject.startswith(SUBJECT_PREFIX) else subject
    return rest.split(".", 1)[0]


# An Idempotency-Key names its order in a namespace of its own: `key-<key>`. A generated id is 32
# hex characters (ingest/ids.py) and never holds a '-', so no key can name an order the ingest
# generated (it used to become the order id as given: a key equal to an earlier generated id was
# answered 200, and the worker acked it as that order's, already done).
KEYED_PREFIX = "key-"
MAX_ORDER_ID = MAX_IDEMPOTENCY_KEY + len(KEYED_PREFIX)


def callback_id(order_id: str) -> str:
    """The id of the job that delivers an order's callback (also its Nats-Msg-Id: a settle step
    repeated after a crash publishes it once within the duplicate window)."""
    return order_id + CALLBACK_SUFFIX


def keyed_order_id(key: str) -> str:
    """The order id of the order an Idempotency-Key creates (also its Nats-Msg-Id)."""
    return KEYED_PREFIX + key


def valid_key(value: str) -> bool:
    """An Idempotency-Key as a client may send it (not one that names a callback job's id)."""
    return (
        0 < len(value) <= MAX_IDEMPOTENCY_KEY
        and _ID_RE.match(value) is not None
        and not value.endswith(CALLBACK_SUFFIX)
    )


def valid_order_id(value: str) -> bool:
    if value.endswith(CALLBACK_SUFFIX):  # a callback job's id: its order's id and the suffix
        value = value[: -len(CALLBACK_SUFFIX)]
    return 0 < len(value) <= MAX_ORDER_ID and _ID_RE.match(value) is not None


# --- the order ---------------------------------------------------------------------------------
class Order(msgspec.Struct, frozen=True, omit_defaults=True):
    """What travels in the ORDERS stream: the validated, normalised order."""

    order_id: str
    product_id: int
    count: int
    username: str
    created_at: float = 0.0
    # where to POST the order's final view, signed (orderflow/callbackurl.py checked it)
    callback_url: str | None = None
    # the name of its webhook secret (its API key's `webhook_secret`); none: the workers' default
    callback_secret: str | None = None


class TypedOrder(msgspec.Struct, frozen=True, omit_defaults=True):
    """An order of a type that declares a payload of its own (orderflow/payloads.py): the payload
    as the client sent it, checked by the ingest against the type's JSON Schema and stored as
    compact JSON with sorted keys (an Idempotency-Key compares it)."""

    order_id: str
    payload: msgspec.Raw
    created_at: float = 0.0
    callback_url: str | None = None
    callback_secret: str | None = None


class OrderRef(msgspec.Struct, frozen=True):
    """Only the id of a stored order, whatever its payload (hand-backs, tools, dead letters), and
    where its callback goes, if it has one."""

    order_id: str
    callback_url: str | None = None
    callback_secret: str | None = None


class FieldError(msgspec.Struct, frozen=True):
    field: str
    message: str


# The one empty checkpoint (msgspec omits a default only when it is this very object).
NO_CHECKPOINT = msgspec.Raw()


class StatusRecord(msgspec.Struct, omit_defaults=True):
    """The value kept in KV ORDER_STATUS under the order id. Times are epoch seconds.

    Counts carry over from run to run: `attempts` are failed attempts (a handler error or a
    timeout; what ORDERFLOW_MAX_DELIVER bounds), `deliveries` every delivery of the order,
    `handbacks` drains that returned it unfinished, `crashes` runs whose worker died. While a run
    is alive its worker holds a lease (`lease_until`); its last checkpoint travels with the record
    until the order is done."""

    order_id: str
    status: str
    attempts: int = 0
    updated_at: float = 0.0
    worker_id: str | None = None
    task_type: str | None = None
    started_at: float | None = None  # the last run's start
    # the first run's start, and how many runs the handler was started for (failed, handed back,
    # crashed or the one that finished): `attempts` counts only the failed ones
    first_started_at: float | None = None
    runs: int = 0
    # what the handler returned (JSON, at most MAX_RESULT_BYTES), stored with `done`; empty: none
    result: msgspec.Raw = NO_CHECKPOINT
    finished_at: float | None = None
    error: str | None = None
    deliveries: int = 0
    handbacks: int = 0
    crashes: int = 0
    lease_until: float | None = None
    checkpoint: msgspec.Raw = NO_CHECKPOINT  # the state as JSON; empty: none
    checkpoint_at: float | None = None
    retry_at: float | None = None
    # the retry waits as a scheduled message (the delivery that wrote this was acked)
    scheduled: bool = False
    # seconds the order's runs have used so far (all runs, redone work included)
    run_s: float = 0.0
    # the API key that created it (its Orderflow-Client header), and what kind of error `error`
    # is (handler_error, timeout, invalid_order, ...): what a client may see instead of the text
    client: str | None = None
    error_class: str | None = None


class RunRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of a handler run's history in ORDER_RUNS."""

    order_id: str
    event: str  # start | done | error | interrupted
    worker_id: str
    attempt: int
    at: float
    # the demo handler's simulated progress at this event (seconds of work done; `start`: where the
    # run resumed from), and its job's total length
    progress_s: float | None = None
    length_s: float | None = None
    # the order's task type (absent in records of older workers)
    task_type: str | None = None


_encoder = msgspec.json.Encoder()
_order_decoder = msgspec.json.Decoder(Order)
_typed_decoder = msgspec.json.Decoder(TypedOrder)
_ref_decoder = msgspec.json.Decoder(OrderRef)
_status_decoder = msgspec.json.Decoder(StatusRecord)
_run_decoder = msgspec.json.Decoder(RunRecord)


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode_order(data: bytes) -> Order:
    """Decode a stored order; raises msgspec.ValidationError/DecodeError on a poison payload."""
    order = _order_decoder.decode(data)
    if not valid_order_id(order.order_id) or not (
        QUANTITY_MIN <= order.product_id <= QUANTITY_MAX and QUANTITY_MIN <= order.count <= QUANTITY_MAX
    ):
        raise msgspec.ValidationError("order out of contract")
    return order


def decode_typed_order(data: bytes) -> TypedOrder:
    """Decode a stored order of a declared payload (its payload still raw JSON)."""
    order = _typed_decoder.decode(data)
    if not valid_order_id(order.order_id):
        raise msgspec.ValidationError("order id out of contract")
    return order


def order_id_of(data: bytes) -> str | None:
    """The id of a stored order of any payload, or None when there is none to read."""
    ref = order_ref(data)
    return None if ref is None else ref.order_id


def order_ref(data: bytes) -> OrderRef | None:
    """The id (and callback URL) of a stored order of any payload, or None when there is none."""
    try:
        ref = _ref_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return ref if valid_order_id(ref.order_id) else None


def decode_status(data: bytes) -> StatusRecord:
    return _status_decoder.decode(data)


def decode_run(data: bytes) -> RunRecord:
    return _run_decoder.decode(data)
