"""An order's `callback_url`, taken out of the POST /orders body before the order is validated
(a declared payload's schema never sees it) and checked by orderflow/callbackurl.py. The hot path
pays one substring scan: a body that does not name the field is not decoded twice."""

from __future__ import annotations

import msgspec

from orderflow import callbackurl, contract
from orderflow.config import Settings

_any = msgspec.json.Decoder()
_encode = msgspec.json.Encoder(order="sorted").encode
_NAME = b'"' + callbackurl.FIELD.encode() + b'"'


def take(body: bytes, settings: Settings) -> tuple[bytes, str | None] | contract.FieldError:
    """(the body without the field, the URL or None), or the field's error."""
    if _NAME not in body:
        return body, None
    try:
        data = _any.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return body, None  # the order's own validation names the body
    if not isinstance(data, dict) or callbackurl.FIELD not in data:
        return body, None
    url = data.pop(callbackurl.FIELD)
    problem = check(url, settings)
    if problem is not None:
        return problem
    assert isinstance(url, str)
    return _encode(data), url


def check(url: object, settings: Settings, what: str = "") -> contract.FieldError | None:
    try:
        callbackurl.parse(url, settings.callback_allow_http, settings.callback_hosts)
    except callbackurl.Refused as exc:
        return contract.FieldError(callbackurl.FIELD, what + str(exc))
    return None
