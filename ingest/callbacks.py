"""An order's `callback_url`, taken out of the POST /orders body before the order is validated
(a declared payload's schema never sees it) and checked by orderflow/callbackurl.py. The hot path
pays one substring scan: a body that does not name the field is not decoded twice."""

from __future__ import annotations

import msgspec

from orderflow import auth, callbackurl, contract
from orderflow.config import Settings

Order = contract.Order | contract.TypedOrder
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


def resolve(
    body: bytes, identity: auth.Identity, settings: Settings
) -> tuple[bytes, str | None] | contract.FieldError:
    """`take`, then the API key's default callback_url where the body names none (checked too)."""
    taken = take(body, settings)
    if isinstance(taken, contract.FieldError) or taken[1] is not None or identity.callback_url is None:
        return taken
    problem = check(identity.callback_url, settings, "the API key's default ")
    return problem if problem is not None else (taken[0], identity.callback_url)


def attach(order: Order, url: str | None, identity: auth.Identity) -> Order:
    """The order with its callback and the name of its key's webhook secret."""
    if url is None:
        return order
    return msgspec.structs.replace(order, callback_url=url, callback_secret=identity.webhook_secret)
