"""The durable pull consumers on ORDERS, one per task type (or one for all), created or brought to
orderflow's config, with the priority group where the server has one; the consumers in their way
(a work-queue stream takes no two that overlap), listed and deleted; and the raw JetStream API
calls they need (nats-py's dataclasses drop fields it does not know)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.js import api as jsapi

from orderflow import contract, drift
from orderflow.broker import BrokerConfigError
from orderflow.config import Settings

log = logging.getLogger(__name__)

_COMPARED_CONSUMER = (
    "ack_policy",
    "ack_wait",
    "max_deliver",
    "filter_subject",
    "filter_subjects",
    "max_ack_pending",
    "backoff",
)


def consumer_config(settings: Settings, task_type: str) -> jsapi.ConsumerConfig:
    split = settings.split_types
    filters = contract.consumer_filters(task_type, split)
    return jsapi.ConsumerConfig(
        durable_name=contract.consumer_name(task_type, split),
        ack_policy=jsapi.AckPolicy.EXPLICIT,
        deliver_policy=jsapi.DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_s,
        # Attempts are counted and dead-lettered by the worker (outcome.py), not by the server:
        # a server-side max_deliver would strand the last failed message in a work-queue stream.
        max_deliver=-1,
        # One filter as `filter_subject`, several as `filter_subjects` (nats-server 2.10+).
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
        max_ack_pending=settings.max_ack_pending,
        # No `backoff`: it would override ack_wait for redeliveries; retries use nak(delay).
    )


@dataclass(frozen=True)
class ConsumerHandle:
    task_type: str
    name: str
    ack_wait_s: float  # as the server has it: heartbeats are paced from this
    priority: bool  # pulls may carry a priority: the consumer has orderflow's prioritized group


class JetStreamApiError(Exception):
    pass


async def raw_api(nc: Client, subject: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JetStream API call with its raw JSON answer (nats-py's dataclasses drop fields it does not
    know, such as the consumer's priority groups)."""
    reply = await nc.request(f"$JS.API.{subject}", json.dumps(request or {}).encode(), timeout=5.0)
    answer: dict[str, Any] = json.loads(reply.data or b"{}")
    error = answer.get("error")
    if error:
        raise JetStreamApiError(f"{error.get('description', error)} (code {error.get('err_code')})")
    return answer


def _priority_diffs(have: dict[str, Any], want: bool) -> list[tuple[str, Any, Any]]:
    groups = have.get("priority_groups") or []
    policy = have.get("priority_policy") or "none"
    want_groups = [contract.PRIORITY_GROUP] if want else []
    want_policy = "prioritized" if want else "none"
    out: list[tuple[str, Any, Any]] = []
    if groups != want_groups:
        out.append(("priority_groups", groups, want_groups))
    if policy != want_policy:
        out.append(("priority_policy", policy, want_policy))
    return out


def subjects_overlap(a: str, b: str) -> bool:
    """Whether two subject filters can match one subject (`*` one token, `>` the rest)."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        x = ta[i] if i < len(ta) else None
        y = tb[i] if i < len(tb) else None
        if x == ">" or y == ">":
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != y and x != "*" and y != "*":
            return False
    return True


def _filters(config: dict[str, Any]) -> list[str]:
    return config.get("filter_subjects") or (
        [config["filter_subject"]] if config.get("filter_subject") else [">"]
    )


@dataclass(frozen=True)
class ConsumerConflict:
    name: str
    filters: list[str]
    pending: int
    ack_pending: int
    waiting: int = 0  # open pull requests: a worker is using it right now

    @property
    def idle(self) -> bool:
        return self.pending == 0 and self.ack_pending == 0

    @classmethod
    def of(cls, info: dict[str, Any]) -> ConsumerConflict:
        """From a raw CONSUMER.INFO (or CONSUMER.LIST entry) answer."""
        return cls(
            info["name"],
            _filters(info["config"]),
            info.get("num_pending", 0),
            info.get("num_ack_pending", 0),
            info.get("num_waiting", 0),
        )


async def list_consumers(nc: Client) -> list[ConsumerConflict]:
    """Every consumer on ORDERS with its filters and work ([] while the stream does not exist)."""
    try:
        listing = await raw_api(nc, f"CONSUMER.LIST.{contract.STREAM}")
    except JetStreamApiError as exc:
        if "(code 10059)" in str(exc):  # stream not found
            return []
        raise
    return [ConsumerConflict.of(info) for info in listing.get("consumers") or []]


async def conflicting_consumers(nc: Client, settings: Settings) -> list[ConsumerConflict]:
    """Consumers on ORDERS that orderflow's configured ones would overlap. A work-queue stream
    takes no two consumers whose filters overlap ("filtered consumer not unique on workqueue
    stream"): switching from one task type (`workers`, every order) to several (`workers-<type>`)
    leaves the old one in the way until it is deleted."""
    ours = {contract.consumer_name(t.name, settings.split_types): t.name for t in settings.task_types}
    wanted = {name: contract.consumer_filters(t, settings.split_types) for name, t in ours.items()}
    return [
        c
        for c in await list_consumers(nc)
        if c.name not in wanted
        and any(subjects_overlap(f, w) for f in c.filters for ws in wanted.values() for w in ws)
    ]


async def delete_idle_consumer(nc: Client, name: str) -> ConsumerConflict:
    """Delete an ORDERS consumer, but only one with no undelivered and no un-acked work (a worker
    still holding its messages could not ack them any more). Raises BrokerConfigError otherwise."""
    c = ConsumerConflict.of(await raw_api(nc, f"CONSUMER.INFO.{contract.STREAM}.{name}"))
    if not c.idle:
        raise BrokerConfigError(
            f"consumer {name} still has {c.pending} undelivered and {c.ack_pending} un-acked messages; "
            "let the workers that use it finish them (run them with its old ORDERFLOW_TASK_TYPES), then delete it"
        )
    return await delete_consumer(nc, name)


async def delete_consumer(nc: Client, name: str) -> ConsumerConflict:
    """Delete an ORDERS consumer whatever it holds: its messages stay in the stream (work-queue
    retention removes a message only when it is acked) for the consumers that match them. Only
    safe while no worker uses it (`orderflow dev` before it starts its workers); else use
    delete_idle_consumer."""
    c = ConsumerConflict.of(await raw_api(nc, f"CONSUMER.INFO.{contract.STREAM}.{name}"))
    await raw_api(nc, f"CONSUMER.DELETE.{contract.STREAM}.{name}")
    return c


async def ensure_consumer(nc: Client, settings: Settings, task_type: str) -> ConsumerHandle:
    """The task type's durable pull consumer, created or brought to orderflow's config. With
    ORDERFLOW_PRIORITY=auto it gets the priority group; a server that cannot (older than 2.12)
    gets the consumer without it, said once, and the worker pulls as before."""
    want = consumer_config(settings, task_type)
    name = want.durable_name
    assert name is not None
    want_priority = settings.priority == "auto"
    conflicts = await conflicting_consumers(nc, settings)
    if conflicts:
        c = conflicts[0]
        raise BrokerConfigError(
            f"consumer {c.name} (filters {', '.join(c.filters)}) overlaps {name} "
            f"({', '.join(contract.consumer_filters(task_type, settings.split_types))}) on the work-queue stream "
            f"{contract.STREAM}, which allows no overlap; it has {c.pending} undelivered and {c.ack_pending} "
            f"un-acked messages. Once both are 0: orderflow consumers delete {c.name}"
        )
    try:
        have: dict[str, Any] | None = (await raw_api(nc, f"CONSUMER.INFO.{contract.STREAM}.{name}"))["config"]
    except JetStreamApiError as exc:
        if "(code 10014)" not in str(exc):  # consumer not found
            raise
        have = None
    if have is not None:
        diffs = drift.diff(want, jsapi.ConsumerConfig.from_response(dict(have)), _COMPARED_CONSUMER)
        diffs += _priority_diffs(have, want_priority)
        if not diffs:
            return _handle(task_type, name, have, settings)
    config: dict[str, Any] = {**want.as_dict(), "name": name}
    if want_priority:
        config.update(priority_groups=[contract.PRIORITY_GROUP], priority_policy="prioritized")
    create = f"CONSUMER.CREATE.{contract.STREAM}.{name}"
    try:
        info = await raw_api(nc, create, {"stream_name": contract.STREAM, "config": config})
    except JetStreamApiError as exc:
        if not want_priority or "priority" not in str(exc).lower():
            raise
        log.warning(
            "consumer %s: this server has no prioritized priority groups (%s); pulling without priority",
            name,
            exc,
        )
        config.pop("priority_groups")
        config.pop("priority_policy")
        info = await raw_api(nc, create, {"stream_name": contract.STREAM, "config": config})
    if have is None:
        log.info("created consumer %s (filter %s)", name, want.filter_subject or want.filter_subjects)
    else:
        log.warning("%s — updated", drift.describe(f"consumer {name}", diffs))
    handle = _handle(task_type, name, info["config"], settings)
    if want_priority and not handle.priority:
        log.warning("consumer %s has no priority group on this server; pulling without priority", name)
    return handle


def _handle(task_type: str, name: str, config: dict[str, Any], settings: Settings) -> ConsumerHandle:
    ack_wait_ns = config.get("ack_wait") or int(settings.ack_wait_s * 1e9)
    priority = config.get("priority_policy") == "prioritized" and contract.PRIORITY_GROUP in (
        config.get("priority_groups") or []
    )
    return ConsumerHandle(task_type, name, ack_wait_ns / 1e9, priority)
