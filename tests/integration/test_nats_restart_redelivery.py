"""A NATS restart must not hand a running job to a second worker (README: guarantee 2), found by the chaos
rehearsal: nats-server (2.15) times a delivery that was never acked nor marked in progress from
the message's *publish* time after a restart, so a message that queued longer than ack_wait and
was delivered just before the restart came straight back, while its first run was still alive.
The worker marks every delivery in progress when it starts it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from harness import NatsServer, count_events, publish_orders, run, run_records, statuses, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.mark.parametrize("restart_after_s", [3.5, 5.0])
def test_jobs_that_queued_longer_than_ack_wait_survive_a_nats_restart_without_a_second_run(
    nats_server: NatsServer, spawn: Any, restart_after_s: float
) -> None:
    """1. 60 orders queue at once for 2 workers x 8 slots; jobs take 2-3 s; ack_wait 5 s.
    2. restart_after_s later (later jobs have queued for more than ack_wait by then, and some of
       them were delivered less than a heartbeat ago) NATS restarts with the same store.
    3. Every order is done once: no order has a second start while its first run was alive."""
    for i in range(2):
        spawn("worker", ACK_WAIT_S=5, WORK_S="2-3", CONCURRENCY=8, WORKER_ID=f"w{i}").wait_ready()
    ids = run(publish_orders(nats_server.url, 60))
    time.sleep(restart_after_s)
    nats_server.restart()

    def all_done() -> bool:
        st = run(statuses(nats_server.url))
        return all(i in st and st[i].status == "done" for i in ids)

    wait_until(all_done, 90, "every order done", interval=1.0)
    records = run(run_records(nats_server.url))
    done = count_events(records, "done")
    twice = {i: [(r.event, r.worker_id, r.attempt) for r in records[i]] for i in ids if done.get(i, 0) != 1}
    assert twice == {}
