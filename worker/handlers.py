"""Pluggable order handlers: a task type maps to one async callable.

A handler module has `register(registry, settings)`; ORDERFLOW_HANDLERS lists the modules to load
(default `worker.demo`). Adding a task type takes a few lines:

    # myapp/handlers.py                      ORDERFLOW_HANDLERS=worker.demo,myapp.handlers
    async def send_invoice(job: Job) -> None:   ORDERFLOW_TASK_TYPES=default,invoice:4:600
        await billing.send(job.order.order_id)  # idempotent by order id
    def register(registry, settings):
        registry.add("invoice", send_invoice)

Raise PoisonError for input that can never succeed (terminated, not retried); any other exception
is retried with backoff until ORDERFLOW_MAX_DELIVER, then dead-lettered.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from orderflow.config import Settings
from orderflow.contract import Order


class PoisonError(Exception):
    """The input can never be processed: terminate the message, do not retry."""


@dataclass
class Job:
    """What a handler sees of one delivery."""

    order: Order
    task_type: str
    attempt: int  # JetStream delivery count, 1 on the first delivery
    worker_id: str
    # Appends a run record (start/done/...) to ORDER_RUNS; handlers that want their runs counted
    # (the demo handler does) call it.
    record: Callable[[str], Awaitable[None]] = field(repr=False)


class Handler(Protocol):
    async def __call__(self, job: Job) -> None: ...


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def add(self, task_type: str, handler: Handler) -> None:
        if task_type in self._handlers:
            raise ValueError(f"task type {task_type!r} already has a handler")
        self._handlers[task_type] = handler

    def get(self, task_type: str) -> Handler:
        return self._handlers[task_type]

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._handlers


def load_handlers(settings: Settings) -> Registry:
    """Import ORDERFLOW_HANDLERS and check every configured task type has a handler."""
    registry = Registry()
    for name in settings.handlers:
        module = importlib.import_module(name)
        register = getattr(module, "register", None)
        if register is None:
            raise ValueError(f"handler module {name!r} has no register(registry, settings)")
        register(registry, settings)
    missing = [t.name for t in settings.task_types if t.name not in registry]
    if missing:
        raise ValueError(
            f"no handler for task type(s) {', '.join(missing)}: add one in a module listed in ORDERFLOW_HANDLERS"
        )
    return registry
