"""`orderflow pause TYPE --reason TEXT` and `orderflow resume TYPE`: stop a task type's workers from
taking new orders, and let them again.

A pause is the JetStream consumer pause (nats-server 2.11+, `$JS.API.CONSUMER.PAUSE`): server state,
so it survives worker and server restarts, and a worker's consumer create or update leaves it in
place (tests/orderflow_tools/test_pauses.py restarts a worker while paused). The type's orders stay
in ORDERS, queued; jobs already running finish. Who paused it, why and since when is kept in KV
ORDER_PAUSES (key: the type), made here on the first pause; `orderflow status` shows both, and the
workers export `orderflow_consumer_paused` (alert OrderflowTaskTypePaused after an hour).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orderflow.config import Settings
from orderflow_tools.natsconn import Session, session

PAUSES_BUCKET = "ORDER_PAUSES"
TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")  # as ORDERFLOW_TASK_TYPES takes them
PAUSES_MAX_BYTES = 1 << 20  # one small record per task type
REASON_MAX_CHARS = 500
# "Until resumed": a fixed far date (the server answers the time left in int64 nanoseconds, so
# nothing beyond ~2262).
PAUSE_UNTIL = "2099-12-31T23:59:59Z"


class PauseError(Exception):
    """Refused (unknown type, bad reason); str() is the message."""


@dataclass(frozen=True)
class Pause:
    task_type: str
    consumer: str
    paused: bool
    reason: str = ""
    by: str = ""
    since: str = ""


def add_parsers(sub: Any, settings: Callable[[argparse.Namespace], Settings]) -> None:
    p = sub.add_parser("pause", help="stop a task type's workers taking orders (they stay queued)")
    p.add_argument("task_type")
    p.add_argument("--reason", required=True, help=f"why (shown in status; at most {REASON_MAX_CHARS} chars)")
    p.add_argument("--by", default=None, help="who (default: the login name)")
    p.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")
    p.set_defaults(func=lambda a: asyncio.run(_pause_cmd(settings(a), a.task_type, a.reason, a.by)))
    r = sub.add_parser("resume", help="let a paused task type's workers take orders again")
    r.add_argument("task_type")
    r.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")
    r.set_defaults(func=lambda a: asyncio.run(_resume_cmd(settings(a), a.task_type)))


def check_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise PauseError("a pause needs a reason (--reason TEXT)")
    if len(reason) > REASON_MAX_CHARS:
        raise PauseError(f"the reason is {len(reason)} characters; at most {REASON_MAX_CHARS}")
    return reason


async def _api(s: Session, subject: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
    from orderflow import consumers

    return await consumers.raw_api(s.nc, subject, request)  # raw: CONSUMER.PAUSE is not in every nats-py


async def consumer_of(s: Session, settings: Settings, task_type: str) -> str:
    """The task type's consumer as it is on the server: `workers-<type>` when types are split,
    `workers` for this environment's only type. Raises PauseError for a type with no consumer."""
    from orderflow import consumers, contract

    if not TYPE_RE.match(task_type):
        raise PauseError(f"{task_type[:40]!r} is not a task type name (lowercase letters, digits, - and _)")
    names = {c.name for c in await consumers.list_consumers(s.nc)}
    for name in (
        contract.consumer_name(task_type, True),
        contract.consumer_name(task_type, settings.split_types),
    ):
        if name in names and (name != contract.DURABLE or task_type in {t.name for t in settings.task_types}):
            return name
    known = ", ".join(sorted(names)) or "none"
    raise PauseError(
        f"task type {task_type!r} has no consumer on ORDERS (consumers: {known}); has a worker run it?"
    )


async def _bucket(s: Session) -> Any:
    from nats.js import api as jsapi
    from nats.js.errors import BucketNotFoundError

    try:
        return await s.js.key_value(PAUSES_BUCKET)
    except BucketNotFoundError:
        return await s.js.create_key_value(
            jsapi.KeyValueConfig(bucket=PAUSES_BUCKET, history=1, max_bytes=PAUSES_MAX_BYTES)
        )


async def pause(s: Session, settings: Settings, task_type: str, reason: str, by: str) -> Pause:
    reason = check_reason(reason)
    consumer = await consumer_of(s, settings, task_type)
    since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    record = {"reason": reason, "by": by[:100], "since": since}
    # The reason first: a pause the server holds always has its reason to show.
    await (await _bucket(s)).put(task_type, json.dumps(record).encode())
    await _api(s, f"CONSUMER.PAUSE.ORDERS.{consumer}", {"pause_until": PAUSE_UNTIL})
    return Pause(task_type, consumer, True, reason, record["by"], since)


async def resume(s: Session, settings: Settings, task_type: str) -> bool:
    """Resume; False when it was not paused."""
    from nats.js.errors import BucketNotFoundError

    consumer = await consumer_of(s, settings, task_type)
    was = bool((await _api(s, f"CONSUMER.INFO.ORDERS.{consumer}")).get("paused"))
    await _api(s, f"CONSUMER.PAUSE.ORDERS.{consumer}", {})
    try:
        await (await s.js.key_value(PAUSES_BUCKET)).purge(task_type)
    except BucketNotFoundError:
        pass
    return was


async def reasons(s: Session) -> dict[str, dict[str, str]]:
    from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError

    try:
        kv = await s.js.key_value(PAUSES_BUCKET)
        keys = await kv.keys()
    except (BucketNotFoundError, NoKeysError):
        return {}
    out: dict[str, dict[str, str]] = {}
    for key in keys[:1000]:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue
        out[key] = json.loads(entry.value or b"{}")
    return out


def type_of(consumer: str, settings: Settings) -> str:
    from orderflow import contract

    prefix = contract.DURABLE + "-"
    if consumer.startswith(prefix):
        return consumer[len(prefix) :]
    return settings.task_types[0].name if len(settings.task_types) == 1 else consumer


async def listing(s: Session) -> list[dict[str, Any]]:
    """Every ORDERS consumer's info as the server answers it ([] while there is no ORDERS)."""
    from orderflow import consumers

    try:
        return list((await _api(s, "CONSUMER.LIST.ORDERS")).get("consumers") or [])
    except consumers.JetStreamApiError as exc:
        if "(code 10059)" in str(exc):  # stream not found
            return []
        raise


async def states(
    s: Session, settings: Settings, infos: list[dict[str, Any]] | None = None
) -> dict[str, Pause]:
    """Every ORDERS consumer's pause, by consumer name: the server's word, the KV's reason (read
    only when one is paused). `infos`: the consumers' listing when the caller has it already."""
    infos = await listing(s) if infos is None else infos
    why = await reasons(s) if any(info.get("paused") for info in infos) else {}
    out: dict[str, Pause] = {}
    for info in infos:
        name = info["name"]
        task_type = type_of(name, settings)
        rec = why.get(task_type, {}) if info.get("paused") else {}
        out[name] = Pause(
            task_type,
            name,
            bool(info.get("paused")),
            rec.get("reason", ""),
            rec.get("by", ""),
            rec.get("since", ""),
        )
    return out


async def _pause_cmd(settings: Settings, task_type: str, reason: str, by: str | None) -> int:
    async with session(settings) as s:
        try:
            p = await pause(s, settings, task_type, reason, by or getpass.getuser())
        except PauseError as exc:
            print(f"orderflow pause: {exc}", file=sys.stderr)
            return 2
        print(f"paused {p.task_type} (consumer {p.consumer}) by {p.by} since {p.since}: {p.reason}")
        return 0


async def _resume_cmd(settings: Settings, task_type: str) -> int:
    async with session(settings) as s:
        try:
            was = await resume(s, settings, task_type)
        except PauseError as exc:
            print(f"orderflow resume: {exc}", file=sys.stderr)
            return 2
        print(f"resumed {task_type}" if was else f"{task_type} was not paused; nothing to resume")
        return 0
