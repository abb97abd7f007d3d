"""A stand-in transport for the worker's in-process unit layer: JetStream messages and the server's
side of acks, statuses and publishes, kept in memory and recorded. Not NATS: it knows only what the
pipeline asks of worker/transport.py's Transport, so the rules can be checked without a server."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from orderflow import contract
from orderflow.config import Settings
from orderflow.envsettings import load_settings
from worker.delivery import Limits
from worker.timing import Timing


class FakeMsg:
    """A delivery as nats-py would hand it over: subject, data, headers, and the ack subject that
    carries the metadata ($JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>)."""

    def __init__(
        self,
        order_id: str = "o-1",
        *,
        delivered: int = 1,
        seq: int = 1,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        task_type: str = "default",
        published_at: float | None = None,
    ) -> None:
        self.subject = contract.order_subject(task_type, order_id)
        self.data = (
            data if data is not None else contract.encode(contract.Order(order_id, 1, 2, "m", time.time()))
        )
        self.headers = headers
        ts = int((published_at if published_at is not None else time.time()) * 1e9)
        self.reply = f"$JS.ACK.ORDERS.workers.{delivered}.{seq}.{seq}.{ts}.0"


@dataclass
class StandInTransport:
    """Records every call as (op, order or subject, detail); statuses live in `records`."""

    records: dict[str, contract.StatusRecord] = field(default_factory=dict)
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    published: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    runs: list[contract.RunRecord] = field(default_factory=list)
    fail_puts: int = 0  # the next N confirmed status writes fail
    fail_publish: bool = False
    fail_runs: int = 0  # the next N run records fail (a PubAck lost with a connection or a leader)

    @staticmethod
    def _id(msg: Any) -> str:
        return str(msg.subject.split(".", 2)[2])

    async def in_progress(self, msg: Any) -> None:
        self.calls.append(("in_progress", self._id(msg), None))

    async def ack(self, msg: Any) -> None:
        self.calls.append(("ack", self._id(msg), None))

    async def nak(self, msg: Any, delay_s: float | None = None) -> None:
        self.calls.append(("nak", self._id(msg), delay_s))

    async def term(self, msg: Any) -> None:
        self.calls.append(("term", self._id(msg), None))

    async def get_status(self, order_id: str) -> contract.StatusRecord | None:
        self.calls.append(("get", order_id, None))
        return self.records.get(order_id)

    async def put_status(self, record: contract.StatusRecord, confirm: bool) -> None:
        if confirm and self.fail_puts > 0:
            self.fail_puts -= 1
            raise ConnectionError("stand-in: NATS away")
        self.calls.append(("put", record.order_id, (record.status, confirm)))
        self.records[record.order_id] = contract.decode_status(contract.encode(record))

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        if self.fail_publish:
            raise ConnectionError("stand-in: publish not stored")
        self.calls.append(("publish", subject, None))
        self.published.append((subject, data, headers))

    async def forget_cancel(self, order_id: str) -> None:
        self.calls.append(("forget_cancel", order_id, None))

    async def record_run(self, run: contract.RunRecord) -> None:
        if self.fail_runs > 0:
            self.fail_runs -= 1
            raise ConnectionError("stand-in: run record's PubAck lost")
        self.runs.append(run)

    def ops(self, order_id: str | None = None) -> list[str]:
        """The calls' names (for one order), with a status write shown as put:<status>."""
        out = []
        for op, who, detail in self.calls:
            if order_id is not None and who != order_id and not who.endswith(order_id):
                continue
            out.append(f"put:{detail[0]}" if op == "put" else op)
        return out


def settings(**env: Any) -> Settings:
    return load_settings("worker", {f"ORDERFLOW_{k.upper()}": str(v) for k, v in env.items()})


def limits(s: Settings | None = None, reschedule_after_s: float = 90.0) -> Limits:
    s = s or settings()
    return Limits(
        s.max_deliver, s.max_crashes, s.max_deliveries, s.retry_base_s, s.retry_max_s, reschedule_after_s
    )


def fast_timing(ack_wait_s: float = 30.0, **overrides: float) -> Timing:
    """The real arithmetic, with the waits that would slow a unit test shortened."""
    from dataclasses import replace

    t = Timing.derive(settings(), ack_wait_s)
    return replace(t, **{"orphan_grace_s": 0.05, **overrides})


class StandInNats:
    """What FetchLoop calls on a nats-py Client: new_inbox, subscribe(cb) and publish(reply)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (reply subject, request)
        self.cb: Callable[[Any], Awaitable[None]] | None = None

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: Callable[[Any], Awaitable[None]]) -> Any:
        self.cb = cb
        return self

    async def unsubscribe(self) -> None:
        return None

    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        self.requests.append((reply, json.loads(payload)))

    async def deliver(self, msg: Any) -> None:
        assert self.cb is not None
        await self.cb(msg)

    async def status(self, reply: str, code: str, pending: int) -> None:
        msg = FakeMsg("x")
        msg.subject, msg.reply = reply, ""
        msg.headers = {"Status": code, "Nats-Pending-Messages": str(pending)}
        assert self.cb is not None
        await self.cb(msg)
