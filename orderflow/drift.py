"""What the server holds against what orderflow wants: values compared in one spelling, each
difference named for the log line or the error, and a store cap never set below what a stream holds."""

from __future__ import annotations

import logging
from typing import Any

from nats.js import api as jsapi

log = logging.getLogger(__name__)


def norm(value: Any) -> Any:
    """One spelling for a config value, whichever way the server reads it back."""
    if hasattr(value, "value"):  # enums
        return value.value
    if isinstance(value, list) and value and isinstance(value[0], jsapi.StreamSource):
        return [
            (s.name, s.filter_subject or None, [(t.src, t.dest) for t in s.subject_transforms or []])
            for s in value
        ]
    if isinstance(value, float):
        return round(value, 3)
    if value in (None, 0, -1, []):  # unset and "unlimited" read back in several spellings
        return None
    return value


def diff(want: Any, have: Any, keys: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    """(key, the server's value, orderflow's) for each of `keys` orderflow sets and the server differs on."""
    out = []
    for key in keys:
        w, h = norm(getattr(want, key, None)), norm(getattr(have, key, None))
        if getattr(want, key, None) is None:
            continue  # not ours to decide: server default
        if w != h:
            out.append((key, h, w))
    return out


def describe(what: str, diffs: list[tuple[str, Any, Any]]) -> str:
    return f"{what}: " + "; ".join(f"{k} is {h!r} on the server, orderflow wants {w!r}" for k, h, w in diffs)


def not_below_contents(want: jsapi.StreamConfig, info: jsapi.StreamInfo) -> jsapi.StreamConfig:
    """A cap below what a stream holds would make the server delete its oldest messages at once
    (queued orders, whatever the discard policy): keep what is there, say so."""
    held = info.state.bytes or 0
    if want.max_bytes is not None and 0 < want.max_bytes < held:
        log.warning(
            "stream %s holds %d bytes, more than its share of the store (%d): capped at what it holds "
            "until it shrinks (next start-up)",
            want.name,
            held,
            want.max_bytes,
        )
        return want.evolve(max_bytes=held)
    return want
