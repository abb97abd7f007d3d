"""Every duration the worker derives, in one frozen object built from the settings and the
consumer's ack_wait as the server has it (an operator may have edited it).

The arithmetic, all of it (ack_wait = A, defaults A = 30 s):

- heartbeat_s = A/3: a running job sends `in_progress` when its last one is this old; the ticker
  looks every `tick_s` (<= A/6), so a live job is never silent for more than A/2 and JetStream
  never redelivers it while it runs.
- lease_s = 0.75 A: a `processing` record is a lease held until `lease_until`. The holder
  refreshes it with every heartbeat (at least every A/2), so a live lease never lapses; a dead
  holder's message comes back only A after its last heartbeat, by when its lease (0.75 A) has
  lapsed, so the next worker takes the job at once and counts a crash.
- lease_after_s = min(1 s, A/3): a first delivery writes no lease until its job has run this
  long (a short job's only stored write is its `done`). The first tick after it sends
  `in_progress` too: at delivery, JetStream persists the message's *publish* time as the
  delivery's timestamp, so after a nats-server restart a job that queued for long would be
  redelivered at once; a job that outlives the restart must have refreshed it.
- recovery_window_s = max(5 s, A/3): after a (re)connect or a stream/consumer leader change a
  restored consumer may redeliver what its lost state did not record, even as a first delivery;
  inside the window every delivery reads the status before it runs, and every running job
  re-writes its lease at once.
- orphan_grace_s = 2 s: a redelivery with no status record at all may be a job whose first run
  died young, or one still alive on a worker that has not yet reconnected; waiting this long
  for its lease to appear tells the two apart (reconnects take ~0.5 s).
- tick_s = min(1 s, A/6): the pool's one ticker (heartbeats, leases).
- handback_lead_s = min(2 s, 10 % of the drain budget): running jobs are handed back this long
  before the drain deadline; unwind_s = half of it is what a handler gets to checkpoint while it
  unwinds, the rest is for the confirmed `queued` write and the nak.
- reschedule_after_s = 3 A: a retry that waits longer than this leaves the consumer as a scheduled
  message (nats-server 2.12) instead of sitting ack-pending for the whole delay.
- loop_block_limit_s = A/4: liveness fails when the event loop has not run for this long; with
  the chart's probe timing the container restarts before A runs out (heartbeats stop when the
  loop is blocked, so the job would otherwise be redelivered while it still runs).
- rank_refresh_s = 2 s, rank_ttl_s = 3 x that: a worker's entry in ORDER_WORKERS, refreshed, and
  forgotten by the others when it stops.
- the drain's tail, after its deadline, inside the grace period's 5 s safety margin (the chart:
  grace = ceil(drain) + NATS drain + 5 s): cancel_within_s = 2 s for the background tasks to end
  once cancelled (cancelled again until they do: a cancel can be lost, gh-86296), then
  rank_leave_s = 1 s at most to delete this worker's entry in ORDER_WORKERS (it only saves the
  others the TTL; NATS away at the SIGTERM would otherwise cost two 5 s JetStream timeouts).
- fetch_grace_s = 1 s: after a NATS restart an open pull request is gone without a status, so a
  request's reservation is released `fetch_expiry_s + fetch_grace_s` after it was sent.
- a delivery given back unstarted (it reached a worker that stopped fetching) is naked with a
  delay of fetch_expiry_s: the stopped worker's last pull requests live that long, and a message
  offered again sooner would go straight back to them (first in line with priority groups).
- the drain's deadline (`drain_deadline`): the budget (drain_timeout_s), unless the pod's own
  deletion says the SIGKILL comes sooner. kill_in_s = the sooner of deletionTimestamp - now and
  deletionGracePeriodSeconds - (time since SIGTERM) (the API's stamp is whole seconds and another
  machine's clock; the grace counts from the kubelet's kill, a moment before our SIGTERM without a
  preStop hook, and the chart has none). Then drain_s = min(budget, kill_in_s + time since SIGTERM
  - pod_margin_s), never below 0, and `ruled_by` says which one won. pod_margin_s = 1 s is what the
  hand-back needs after the deadline: phase 3's confirmed `queued` writes and naks flushed by the
  connection's drain, on a loaded node. With the pod's deadline the hand-back lead shrinks with
  it: lead = min(handback_lead_s, 10 % of drain_s), unwind = half of that. A 5 s grace against a
  60 s budget: drain_s = 4 s, hand-back at 3.6 s, the handler's unwind 0.2 s.
- nats_drain_timeout_s: the connection drain at the very end, the one value the ingest, the
  worker and the chart share (Settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from orderflow.config import Settings


@dataclass(frozen=True)
class Timing:
    ack_wait_s: float
    heartbeat_s: float
    tick_s: float
    lease_s: float
    lease_after_s: float
    recovery_window_s: float
    orphan_grace_s: float
    drain_timeout_s: float
    handback_lead_s: float
    unwind_s: float
    reschedule_after_s: float
    loop_block_limit_s: float
    rank_refresh_s: float
    rank_ttl_s: float
    rank_leave_s: float
    cancel_within_s: float
    fetch_expiry_s: float
    fetch_grace_s: float
    nats_drain_timeout_s: float
    pod_margin_s: float = 1.0

    @classmethod
    def derive(cls, settings: Settings, ack_wait_s: float | None = None) -> Timing:
        a = ack_wait_s if ack_wait_s is not None else settings.ack_wait_s
        heartbeat = max(0.1, a / 3)
        lead = min(2.0, settings.drain_timeout_s * 0.1)
        return cls(
            ack_wait_s=a,
            heartbeat_s=heartbeat,
            tick_s=max(0.05, min(1.0, a / 6)),
            lease_s=0.75 * a,
            lease_after_s=min(1.0, heartbeat),
            recovery_window_s=max(5.0, a / 3),
            orphan_grace_s=2.0,
            drain_timeout_s=settings.drain_timeout_s,
            handback_lead_s=lead,
            unwind_s=lead / 2,
            reschedule_after_s=3 * a,
            loop_block_limit_s=a / 4,
            rank_refresh_s=2.0,
            rank_ttl_s=6.0,
            rank_leave_s=1.0,
            cancel_within_s=2.0,
            fetch_expiry_s=settings.fetch_expiry_s,
            fetch_grace_s=1.0,
            nats_drain_timeout_s=settings.nats_drain_timeout_s,
        )

    def drain_deadline(self, kill_in_s: float | None, since_sigterm_s: float = 0.0) -> DrainDeadline:
        """The drain's length from SIGTERM: the budget, or the pod's SIGKILL time less the margin
        when that is sooner. `kill_in_s`: seconds from now to the SIGKILL (None: unknown)."""
        budget = self.drain_timeout_s
        if kill_in_s is not None:
            pod_s = max(0.0, kill_in_s + since_sigterm_s - self.pod_margin_s)
            if pod_s < budget:
                return DrainDeadline(pod_s, min(self.handback_lead_s, 0.1 * pod_s), "pod")
        return DrainDeadline(budget, self.handback_lead_s, "budget")

    @staticmethod
    def kill_in_s(
        deletion_at: float | None, grace_s: float | None, now: float, since_sigterm_s: float
    ) -> float | None:
        """Seconds from `now` (epoch) to the SIGKILL, from the pod's deletionTimestamp (epoch) and
        deletionGracePeriodSeconds: the sooner of the two; None when the pod is not being deleted."""
        known = []
        if deletion_at is not None:
            known.append(deletion_at - now)
        if grace_s is not None:
            known.append(grace_s - since_sigterm_s)
        return min(known) if known else None

    def timeout_tick_s(self, timeout_s: float) -> float:
        """The hard-timeout sweep of a pool: a tenth of its timeout, at most every second."""
        return max(0.01, min(1.0, timeout_s / 10))


@dataclass(frozen=True)
class DrainDeadline:
    """How long a drain may take from SIGTERM, when it hands back what still runs (lead_s before
    the end; a handler unwinds for half of it), and which deadline ruled."""

    drain_s: float
    lead_s: float
    ruled_by: Literal["budget", "pod"]

    @property
    def unwind_s(self) -> float:
        return self.lead_s / 2

    @property
    def hand_back_s(self) -> float:
        """Seconds from SIGTERM to the hand-back."""
        return max(0.0, self.drain_s - self.lead_s)
