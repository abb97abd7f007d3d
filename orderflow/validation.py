"""A client's POST /orders body checked field by field (product_id, count, username), every bad
field named; the order it makes. Orders of a declared payload are checked by orderflow/payloads.py."""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec

from orderflow.contract import MAX_USERNAME, QUANTITY_MAX, QUANTITY_MIN, FieldError, Order
from orderflow.logformat import CONTROLS

_INT_RE = re.compile(r"^-?[0-9]+\Z")
# A username is shown and logged: no C0/C1 control, line separator or bidi control (a NUL, CR/LF,
# ESC or U+202E RIGHT-TO-LEFT OVERRIDE would forge or garble what a person reads).
_USERNAME_CONTROL_RE = re.compile(f"[{CONTROLS}]")
USERNAME_PATTERN = f"^[^{CONTROLS}]*$"  # the same, for the OpenAPI document

_json_any = msgspec.json.Decoder()


def _quantity(body: dict[str, Any], name: str, errors: list[FieldError]) -> int:
    if name not in body:
        errors.append(FieldError(name, "is required"))
        return 0
    value = body[name]
    # bool is an int subclass in Python, and JSON true must not pass as 1.
    if isinstance(value, bool) or value is None:
        errors.append(FieldError(name, "must be an integer 0..100 (number or decimal string)"))
        return 0
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and len(value) <= 8 and _INT_RE.match(value):
        number = int(value)
    else:
        errors.append(FieldError(name, "must be an integer 0..100 (number or decimal string)"))
        return 0
    if not QUANTITY_MIN <= number <= QUANTITY_MAX:
        errors.append(FieldError(name, f"must be between {QUANTITY_MIN} and {QUANTITY_MAX}"))
    return number


def validate_order(body: bytes, order_id: str) -> Order | list[FieldError]:
    """Parse and check a POST /orders body. Returns the order or every field error."""
    try:
        data = _json_any.decode(body)
    except (msgspec.DecodeError, RecursionError):  # msgspec raises RecursionError past ~1000 levels
        return [FieldError("body", "must be a JSON object")]
    if not isinstance(data, dict):
        return [FieldError("body", "must be a JSON object")]
    errors: list[FieldError] = []
    product_id = _quantity(data, "product_id", errors)
    count = _quantity(data, "count", errors)
    username = data.get("username")
    if "username" not in data:
        errors.append(FieldError("username", "is required"))
    elif not isinstance(username, str) or not username.strip():
        errors.append(FieldError("username", "must be a non-empty string"))
    elif len(username) > MAX_USERNAME:
        errors.append(FieldError("username", f"must be at most {MAX_USERNAME} characters"))
    elif (bad := _USERNAME_CONTROL_RE.search(username)) is not None:
        errors.append(
            FieldError(
                "username",
                f"must not contain control or bidi characters (U+{ord(bad.group()):04X} at {bad.start()})",
            )
        )
    if errors:
        return errors
    assert isinstance(username, str)
    return Order(order_id, product_id, count, username, time.time())
