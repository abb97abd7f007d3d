"""Admission: should a delivery run at all? It turns facts into a verdict, one rule each, in this
order (`admit`, a pure function; the pipeline, worker/job.py, gathers the facts):
 1. cancelled (a cancel marker, or the status says so)      -> term, never run
 2. already done                                            -> ack, never run (the done-dedupe)
 3. dead or failed before, and not a DLQ replay             -> term (a replay starts with fresh
    counts from that record, once; its later deliveries carry their counts like any order's)
 4. its retry is already scheduled as a newer message       -> ack this leftover
 5. `processing` with a live lease held by another worker   -> defer until the lease ends
    (a redelivery after a NATS restart while its first run is alive; costs no attempt)
 6. `processing` with a lapsed lease, or held by this worker id while not running here, or no
    record at all on a redelivery once the orphan grace is over -> the previous run died: a crash
    (no record for a message published before a NATS restart also waits the grace: a restored
    consumer may resend a running job as a first delivery; found by the chaos rehearsal)
 7. out of runs (worker/delivery.py `Limits.spent`: crashes, deliveries or failed attempts)
                                                            -> dead-letter
 8. otherwise                                               -> run

Which deliveries are admitted this way, and what that costs: worker/job.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from orderflow import contract
from worker.delivery import Books, Delivery, Kind, Limits, Outcome
from worker.transport import header


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome | None = None  # settle without running
    crash: bool = False  # the previous run died: counted in the books
    orphan: bool = False  # no record of an earlier delivery yet: wait and look again
    lost_s: float = 0.0  # the dead run's work since its last checkpoint (a lower bound)
    books: Books | None = None  # the order's counts from its record; None: the delivery's own


def admit(
    d: Delivery,
    previous: contract.StatusRecord | None,
    *,
    cancelled: bool,
    worker_id: str,
    running_here: bool,
    limits: Limits,
    lease_s: float,
    orphan_checked: bool = False,
    suspect: bool = False,
    now: float | None = None,
) -> Verdict:
    """The rules above. The verdict carries the order's books as its status record has them
    (`books`), for the pipeline to run or settle the delivery with; `d` is not changed."""
    t = time.time() if now is None else now
    replay = bool(header(d.msg, contract.H_REPLAY))
    if cancelled or (previous is not None and previous.status == "cancelled"):
        return Verdict(Outcome(Kind.ALREADY_CANCELLED))
    crash, lost = False, 0.0
    books = d.books
    if previous is not None:
        status = previous.status
        if status == "done":
            return Verdict(Outcome(Kind.ALREADY_DONE))
        if status in ("dead", "failed") and not replay:
            return Verdict(Outcome(Kind.ALREADY_FINAL))
        if status == "queued" and previous.scheduled and books.failed < previous.attempts:
            return Verdict(Outcome(Kind.SUPERSEDED))
        # A replay starts afresh from the final record it was replayed from, once: the replayed
        # message carries its header on every redelivery, and from its first failure on the record
        # is its own (queued), so from then on its books carry over like any order's (else a failing
        # replay ran at attempt 1 with no backoff until the delivery cap, 101 times).
        if not (replay and status in ("dead", "failed")):
            books = Books.of(previous).at_least(books)
        if status == "processing":
            lease_end = previous.lease_until or previous.updated_at + lease_s
            holder = previous.worker_id
            if running_here:
                outcome = Outcome(Kind.RUNNING_ELSEWHERE, "running here under another delivery", 1.0)
                return Verdict(outcome, books=books)
            if holder != worker_id and lease_end > t:
                outcome = Outcome(Kind.RUNNING_ELSEWHERE, f"running on {holder}", lease_end - t + 0.5)
                return Verdict(outcome, books=books)
            crash = True  # lapsed, or our own id from a previous life of this worker
            start = max(previous.started_at or 0.0, previous.checkpoint_at or 0.0)
            lost = max(0.0, previous.updated_at - start) if start else 0.0
    elif d.meta.delivered > 1 or suspect:
        # Delivered before and nothing recorded: its first run died young (before its lease was
        # written), or is alive on a worker that has not yet re-leased it after a reconnect. After
        # a NATS restart the restored consumer may even have lost the earlier delivery and send
        # it again as a first one (`suspect`: published before the recovery window opened).
        if not orphan_checked:
            return Verdict(orphan=True)
        crash = d.meta.delivered > 1
    if crash:
        books = books.with_crash()
    return Verdict(limits.spent(books, d.deliveries), crash, books=books, lost_s=lost)


class Recovery:
    """After a (re)connect or a JetStream leader change, for `window_s`: every delivery reads its
    status before running and writes its lease at once."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.until = 0.0
        self.opened_at = 0.0  # epoch s: messages published before it may have run before

    def open(self) -> None:
        self.until = time.monotonic() + self.window_s
        self.opened_at = time.time()

    def suspects(self, d: Delivery) -> bool:
        """Inside the window, a message published before it opened may be running elsewhere."""
        return self.active and d.meta.published_at < self.opened_at

    @property
    def active(self) -> bool:
        return time.monotonic() < self.until
