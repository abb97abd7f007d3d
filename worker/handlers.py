"""Pluggable order handlers: a task type maps to one async callable.

A handler module has `register(registry, settings)`; ORDERFLOW_HANDLERS lists the modules to load
(default `worker.demo`). Adding a task type takes a few lines:

    # myapp/handlers.py                      ORDERFLOW_HANDLERS=worker.demo,myapp.handlers
    class Invoice(msgspec.Struct):              ORDERFLOW_TASK_TYPES=default,invoice:4:600
        customer: str
    async def send_invoice(job: Job) -> None:
        await billing.send(job.order_id, job.payload.customer)  # idempotent by order id
    def register(registry, settings):
        registry.add("invoice", send_invoice, payload=Invoice)

A type's payload is the seed's order (product_id, count, username) unless it declares its own: a
msgspec Struct or a JSON Schema (worker/payload.py). The workers publish it for the ingest, which
checks every order of the type against it (orderflow/payloads.py); `job.payload` is the decoded one.

A handler may return the order's result: a JSON-serialisable value, at most 64 KiB encoded,
stored with `done` in the same write (GET /orders/{id} shows it). One that cannot be stored fails
the run as a failed attempt (`ResultError: ...`): a result is part of the work.

Raise PoisonError for input that can never succeed (not retried: copied to ORDERS_DLQ with reason
`poison`, status `failed`, so `orderflow dlq replay` can run it once the handler is fixed); any
other exception is a failed attempt, retried with backoff until ORDERFLOW_MAX_DELIVER, then
dead-lettered.

A long job checkpoints: `await job.checkpoint(state)` stores a small JSON-serialisable state with
the order (confirmed by JetStream); the order's next run, after a hand-back, a crash or a retry,
starts with it as `job.resume_from` (None on a first run). When a drain hands the job back, the
handler is cancelled a moment before the deadline; a checkpoint made while it unwinds
(`except asyncio.CancelledError: await job.checkpoint(state); raise`) is awaited within a bound.

A handler can do better than wait for that cancel: `job.stopping` is set when the worker starts to
drain (SIGTERM), `job.deadline_s` says how long it has before it is handed back (the drain budget,
or the pod's real SIGKILL time when that is sooner), and after a checkpoint `job.handback()` then
`return` gives the order back at once: no cancellation, no attempt spent. The cancel stays as the
backstop for a handler that does not look.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import time
from collections.abc import Generator
from typing import Any, Protocol

from orderflow.config import Settings
from orderflow.contract import Order, TypedOrder
from worker.payload import SEED, PayloadCodec, codec_of


class PoisonError(Exception):
    """The input can never be processed: dead-letter it at once (reason `poison`), do not retry."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be stored: not JSON-serialisable, too large, or NATS unreachable."""


class StopSignal:
    """Set when the worker starts to drain; the same for every job of the worker. Awaitable
    (`await job.stopping`, or `.wait()`) and readable (`.is_set()`); only the worker sets it."""

    __slots__ = ("_event", "hand_back_at")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.hand_back_at = math.inf  # monotonic: when running jobs are handed back

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def __await__(self) -> Generator[Any, None, None]:
        return self.wait().__await__()

    def left_s(self) -> float:
        """Seconds until running jobs are handed back; infinite while the worker is not stopping."""
        return max(0.0, self.hand_back_at - time.monotonic())

    def set(self, hand_back_at: float) -> None:
        """The drain's: from now, running jobs are handed back at `hand_back_at` (monotonic)."""
        self.hand_back_at = hand_back_at
        self._event.set()


class _Control(Protocol):
    stopping: StopSignal

    async def checkpoint(self, state: Any) -> None: ...
    async def record(self, event: str, progress_s: float | None, length_s: float | None) -> None: ...
    def handback(self) -> None: ...


class Job:
    """What a handler sees of one run of an order."""

    __slots__ = (
        "_control",
        "delivery",
        "failed_attempts",
        "order",
        "payload",
        "resume_from",
        "task_type",
        "worker_id",
    )

    def __init__(
        self,
        order: Order | TypedOrder,
        task_type: str,
        failed_attempts: int,
        delivery: int,
        worker_id: str,
        resume_from: Any,
        control: _Control,
        payload: Any = None,
    ) -> None:
        self.order = order
        # the type's declared payload, decoded (its Struct, or a dict for a JSON Schema); for the
        # seed's order the order itself (product_id, count, username)
        self.payload: Any = order if payload is None else payload
        self.task_type = task_type
        self.failed_attempts = failed_attempts  # failed attempts before this run
        self.delivery = delivery  # deliveries of this order so far, this one included
        self.worker_id = worker_id
        self.resume_from = resume_from  # the last checkpoint's state, None on a first run
        self._control = control

    @property
    def order_id(self) -> str:
        return self.order.order_id

    @property
    def attempt(self) -> int:
        """1 on the first try, n after n-1 failed attempts (hand-backs and crashes don't count)."""
        return self.failed_attempts + 1

    async def checkpoint(self, state: Any) -> None:
        """Store `state` (JSON-serialisable, at most 64 KiB) as the point to resume from; returns
        once JetStream has it. Raises CheckpointError; the job itself carries on either way."""
        await self._control.checkpoint(state)

    @property
    def stopping(self) -> StopSignal:
        """Set when the worker starts to drain (SIGTERM): `await job.stopping`, `job.stopping.is_set()`."""
        return self._control.stopping

    @property
    def deadline_s(self) -> float:
        """Seconds left before this job is handed back (cancelled); infinite while not stopping."""
        return self._control.stopping.left_s()

    def handback(self) -> None:
        """Hand the order back when the handler returns: at once, without a cancel, costing no
        attempt; it resumes from its last checkpoint. Only while stopping (else RuntimeError): call
        it after `await job.checkpoint(state)`, then `return`."""
        if not self._control.stopping.is_set():
            raise RuntimeError("job.handback() is for a stopping worker (job.stopping is not set)")
        self._control.handback()

    async def record(self, event: str) -> None:
        """Append a run record (start/done/...) to ORDER_RUNS; the demo handler's runs are counted."""
        await self._control.record(event, None, None)

    async def record_progress(self, event: str, progress_s: float, length_s: float) -> None:
        """A run record that also says how far the job got (the chaos ledger's work-redone figure)."""
        await self._control.record(event, progress_s, length_s)

    def __repr__(self) -> str:
        return f"Job({self.order.order_id!r}, attempt={self.attempt}, delivery={self.delivery})"


class Handler(Protocol):
    # None, or the order's result: a JSON-serialisable value, at most 64 KiB encoded
    async def __call__(self, job: Job, /) -> Any: ...


class Registry:
    """Task type -> handler (and its payload). A module may also offer a catch-all (`fallback`)
    for every configured type that no module registers explicitly; an explicit registration always
    wins, whatever the order of ORDERFLOW_HANDLERS."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._payloads: dict[str, PayloadCodec] = {}
        self._fallback: tuple[str, Handler] | None = None
        self._loading = "?"

    def add(self, task_type: str, handler: Handler, payload: Any = None) -> None:
        """`payload`: a msgspec.Struct class or a JSON Schema (dict) for the type's orders; None
        keeps the seed's order. A schema that is not valid JSON Schema fails here, at start."""
        if task_type in self._handlers:
            raise ValueError(f"task type {task_type!r} already has a handler")
        codec = codec_of(task_type, payload)
        self._handlers[task_type] = handler
        self._payloads[task_type] = codec

    def fallback(self, handler: Handler) -> None:
        """Run `handler` for every configured type without an explicit one (the demo's way)."""
        if self._fallback is not None:
            raise ValueError(
                f"two catch-all handlers: {self._fallback[0]} and {self._loading}; list only one of them"
            )
        self._fallback = (self._loading, handler)

    def get(self, task_type: str) -> Handler:
        found = self._handlers.get(task_type)
        if found is not None:
            return found
        if self._fallback is not None:
            return self._fallback[1]
        raise KeyError(task_type)

    def payload(self, task_type: str) -> PayloadCodec:
        """How the type's orders are decoded (the catch-all's types take the seed's order)."""
        return self._payloads.get(task_type, SEED)

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._handlers or self._fallback is not None


def load_handlers(settings: Settings) -> Registry:
    """Import ORDERFLOW_HANDLERS and check every configured task type has a handler."""
    registry = Registry()
    for name in settings.handlers:
        module = importlib.import_module(name)
        register = getattr(module, "register", None)
        if register is None:
            raise ValueError(f"handler module {name!r} has no register(registry, settings)")
        registry._loading = name
        register(registry, settings)
    missing = [t.name for t in settings.served_types if t.name not in registry]
    if missing:
        raise ValueError(
            f"no handler for task type(s) {', '.join(missing)}: add one in a module listed in ORDERFLOW_HANDLERS"
        )
    return registry
