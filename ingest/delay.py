"""A delayed order's `not_before` (RFC 3339 with a zone) or `delay_s` (seconds), taken out of the
POST /orders body before the order is validated (like ingest/callbacks.py's `callback_url`). The
order is then stored as a scheduled message in ORDER_RETRIES (ingest/publisher.py) that nats-server
copies to the order's subject at its time. The hot path pays one substring scan per field name."""

from __future__ import annotations

import datetime as dt
import math

import msgspec

from orderflow import contract
from orderflow.config import Settings

NOT_BEFORE = "not_before"
DELAY_S = "delay_s"
# A `not_before` this far in the past (clocks differ, the request took a while) runs now; further
# back it is an error, not an order run late by surprise.
PAST_TOLERANCE_S = 5.0
_any = msgspec.json.Decoder()
_encode = msgspec.json.Encoder(order="sorted").encode
_NAMES = (b'"' + NOT_BEFORE.encode() + b'"', b'"' + DELAY_S.encode() + b'"')


def take(body: bytes, settings: Settings, now: float) -> tuple[bytes, float | None] | contract.FieldError:
    """(the body without the fields, the epoch second the order is due or None), or the error."""
    if _NAMES[0] not in body and _NAMES[1] not in body:
        return body, None
    try:
        data = _any.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return body, None  # the order's own validation names the body
    if not isinstance(data, dict) or (NOT_BEFORE not in data and DELAY_S not in data):
        return body, None
    if NOT_BEFORE in data and DELAY_S in data:
        return contract.FieldError(DELAY_S, f"give {NOT_BEFORE} or {DELAY_S}, not both")
    limit = settings.max_delay_s
    if DELAY_S in data:
        delay = data.pop(DELAY_S)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay):
            return contract.FieldError(DELAY_S, "must be a number of seconds")
        if delay < 0:
            return contract.FieldError(DELAY_S, "must be >= 0")
        if delay > limit:
            return contract.FieldError(DELAY_S, f"must be <= {limit:g} (ORDERFLOW_MAX_DELAY_S)")
        due = now + delay
    else:
        text = data.pop(NOT_BEFORE)
        when = _parse(text)
        if when is None:
            return contract.FieldError(NOT_BEFORE, "must be an RFC 3339 time with a zone")
        try:
            due = when.timestamp()
        except (OverflowError, OSError, ValueError):  # a year the platform's clock cannot hold
            return contract.FieldError(NOT_BEFORE, "must be an RFC 3339 time with a zone")
        if due < now - PAST_TOLERANCE_S:
            return contract.FieldError(NOT_BEFORE, f"is more than {PAST_TOLERANCE_S:g}s in the past")
        if due > now + limit:
            return contract.FieldError(NOT_BEFORE, f"is more than {limit:g}s ahead (ORDERFLOW_MAX_DELAY_S)")
    # Due now (or a moment ago): an ordinary order, no schedule to wait for.
    return _encode(data), (due if due > now else None)


def refused_in_batch(body: bytes) -> contract.FieldError | None:
    """A batch item naming either field: refused, not run at once (a batch is stored as one)."""
    if _NAMES[0] not in body and _NAMES[1] not in body:
        return None
    try:
        data = _any.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    for name in (NOT_BEFORE, DELAY_S):
        if isinstance(data, dict) and name in data:
            return contract.FieldError(name, "not taken in a batch: POST /orders takes a delayed order")
    return None


def _parse(text: object) -> dt.datetime | None:
    if not isinstance(text, str) or len(text) > 64 or "T" not in text.upper():
        return None
    try:
        when = dt.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def rfc3339(epoch_s: float) -> str:
    """The schedule's time, to the millisecond (nats-server parses fractional seconds)."""
    when = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
