"""A delivery of an order as the worker sees it, and what it can come to: the outcome kinds, an
order's books (its counts and checkpoint, carried from run to run), the limits, and the one
judgement of an order out of runs (`Limits.spent`). Data and rules, no I/O: the pipeline
(worker/job.py) and the settler (worker/outcome.py) share them."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import msgspec

from orderflow import contract
from orderflow.config import Settings
from worker.timing import Timing
from worker.transport import Message, Meta, header


class Kind(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    TIMEOUT = "timeout"
    POISON = "poison"
    DEAD = "dead"
    CANCELLED = "cancelled"
    HANDED_BACK = "handed_back"
    ALREADY_DONE = "already_done"
    ALREADY_CANCELLED = "already_cancelled"
    ALREADY_FINAL = "already_final"  # dead or failed before, and not a replay
    SUPERSEDED = "superseded"  # a retry of it is already scheduled
    RUNNING_ELSEWHERE = "running_elsewhere"
    SLOT_CRASHED = "slot_crashed"
    UNSTARTED = "unstarted"  # delivered after this worker stopped fetching


# What a client sees of an error (GET /orders/{id} without admin): its class, not its text.
ERROR_CLASSES = {
    Kind.RETRY: "handler_error",
    Kind.TIMEOUT: "timeout",
    Kind.POISON: "invalid_order",
    Kind.SLOT_CRASHED: "worker_error",
    Kind.DEAD: "gave_up",
    Kind.CANCELLED: "cancelled",
    Kind.ALREADY_CANCELLED: "cancelled",
    Kind.HANDED_BACK: "handed_back",
    Kind.UNSTARTED: "handed_back",
}

# Outcomes that end a run the handler was running, and what they cost.
FAILED = frozenset({Kind.RETRY, Kind.TIMEOUT, Kind.POISON, Kind.SLOT_CRASHED})


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    error: str | None = None
    delay_s: float | None = None  # RUNNING_ELSEWHERE: when to look again
    # DEAD, POISON: why it goes to the DLQ (contract.DLQ_REASONS), in its Orderflow-Reason header
    reason: str | None = None
    # DONE: what the handler returned, encoded (stored with `done` in the same write)
    result: msgspec.Raw | None = None


@dataclass(frozen=True)
class Limits:
    max_attempts: int
    max_crashes: int
    max_deliveries: int
    retry_base_s: float
    retry_max_s: float
    reschedule_after_s: float
    # A delivery given back unstarted is offered again only after this (0: at once). The pull
    # requests a stopping worker sent before it stopped stay open on the server for up to
    # fetch_expiry_s (JetStream cannot cancel one), and with priority groups they are first in
    # line: a bare nak came straight back to them, up to a batch of times (15 deliveries of one
    # order in one drain), each with its status write and a delivery on the order's books.
    unstarted_delay_s: float = 0.0

    @classmethod
    def of(cls, s: Settings, timing: Timing) -> Limits:
        """A worker's limits: its settings, paced from its consumer's timing."""
        return cls(
            s.max_deliver,
            s.max_crashes,
            s.max_deliveries,
            s.retry_base_s,
            s.retry_max_s,
            timing.reschedule_after_s,
            unstarted_delay_s=timing.fetch_expiry_s,
        )

    def spent(self, b: Books, deliveries: int) -> Outcome | None:
        """The one judgement of an order out of runs, at admission and after a failed attempt:
        its dead letter, with the reason, once its worker died max_crashes times while running it,
        it was delivered more than max_deliveries times, or it failed max_attempts attempts."""
        if b.crashes >= self.max_crashes:
            return Outcome(Kind.DEAD, f"its worker died {b.crashes} times while running it", reason="crashes")
        if deliveries > self.max_deliveries:
            return Outcome(Kind.DEAD, f"delivered {deliveries} times without a result", reason="deliveries")
        if b.failed >= self.max_attempts:
            return Outcome(Kind.DEAD, f"failed {b.failed} attempts", reason="attempts")
        return None


@dataclass(slots=True)
class Books:
    """An order's counts and checkpoint, carried from run to run in its status record (and in a
    rescheduled retry's headers)."""

    failed: int = 0
    handbacks: int = 0
    crashes: int = 0
    checkpoint: msgspec.Raw | None = None
    checkpoint_at: float | None = None
    run_s: float = 0.0
    runs: int = 0  # runs before this delivery's
    first_started_at: float | None = None

    @classmethod
    def of(cls, record: contract.StatusRecord) -> Books:
        return cls(
            record.attempts,
            record.handbacks,
            record.crashes,
            record.checkpoint if len(record.checkpoint) else None,
            record.checkpoint_at,
            record.run_s,
            record.runs,
            record.first_started_at,
        )

    def at_least(self, other: Books) -> Books:
        """A copy whose counts are at least `other`'s (a delivery's headers may know of failures,
        hand-backs or crashes that the record read with it does not)."""
        return Books(
            max(self.failed, other.failed),
            max(self.handbacks, other.handbacks),
            max(self.crashes, other.crashes),
            self.checkpoint,
            self.checkpoint_at,
            self.run_s,
            self.runs,
            self.first_started_at,
        )

    def with_crash(self) -> Books:
        """A copy with one more crash: the order's previous run died."""
        crashed = self.at_least(self)
        crashed.crashes += 1
        return crashed

    @classmethod
    def from_headers(cls, msg: Message) -> Books:
        if not msg.headers:  # the common case: an order as the ingest stored it
            return cls()

        def number(name: str) -> int:
            raw = header(msg, name, "0")
            return int(raw) if raw.isdigit() else 0

        return cls(
            number(contract.H_FAILED_ATTEMPTS), number(contract.H_HANDBACKS), number(contract.H_CRASHES)
        )


class Delivery:
    """One delivery of an order, as the pipeline and the settler see it."""

    __slots__ = (
        "books",
        "callback_secret",
        "callback_url",
        "client",
        "deliveries",
        "error_class",
        "lease_at",
        "meta",
        "msg",
        "order_id",
        "run_started",
        "settling",
        "started_at",
        "task_type",
    )

    def __init__(self, msg: Message, meta: Meta, task_type: str) -> None:
        self.msg = msg
        self.meta = meta
        self.task_type = task_type
        self.order_id = ""
        self.callback_url: str | None = None  # where the order's final view goes, if anywhere
        self.callback_secret: str | None = None  # its secret's name (an API key's); none: default
        # every delivery of the order so far, this one included (a rescheduled retry is a new
        # message: its header says how many came before)
        base = header(msg, contract.H_DELIVERIES, "0") if msg.headers else "0"
        self.deliveries = meta.delivered + (int(base) if base != "0" and base.isdigit() else 0)
        self.books = Books.from_headers(msg)
        # the API key that created it: every copy of the order (retry, DLQ, replay) keeps its headers
        self.client = header(msg, contract.H_CLIENT) or None
        self.error_class: str | None = None
        self.started_at = time.time()
        self.run_started: float | None = None  # when the handler started (epoch s)
        self.lease_at: float | None = None  # monotonic time of the last lease write
        # Set, with no await before it, when the outcome is being settled: no lease is written
        # from then on (see Settler.lease).
        self.settling = False

    @property
    def attempt(self) -> int:
        """The attempt number a handler sees: 1 + the failed attempts before it."""
        return self.books.failed + 1
