"""Switching one task type to several in production: the worker names the consumer in the way and
the one command that resolves it; `orderflow consumers delete` refuses while it holds work."""

from __future__ import annotations

from typing import Any

import pytest
from harness import NatsServer, cli, publish_orders, run, statuses, wait_until

pytestmark = pytest.mark.slow
SPLIT = {"TASK_TYPES": "default,invoice"}


def test_the_switch_to_split_types_names_the_conflict_and_the_command_that_resolves_it(
    nats_server: NatsServer, spawn: Any
) -> None:
    """1. A worker with one task type made consumer `workers`; three orders wait on it.
    2. A worker with two types exits 2, no traceback, naming `workers` and
       `orderflow consumers delete workers`.
    3. `orderflow consumers` lists it as overlapping; `delete` refuses: 3 undelivered.
    4. A worker with the old setting finishes them; now `delete` removes it, and the worker with
       two types starts."""
    old = spawn("worker", WORK_S="0.05").wait_ready()
    old.stop()
    ids = run(publish_orders(nats_server.url, 3))

    new = spawn("worker", **SPLIT)
    assert new.wait(60) == 2
    logs = new.logs()
    assert "Traceback" not in logs
    assert "consumer workers (filters orders.>) overlaps workers-default" in logs
    assert logs.rstrip().endswith("Once both are 0: orderflow consumers delete workers")

    listed = cli(nats_server.url, "consumers", TASK_TYPES=SPLIT["TASK_TYPES"])
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("workers "))
    assert "undelivered       3" in line and "overlaps ORDERFLOW_TASK_TYPES=default,invoice" in line
    refused = cli(nats_server.url, "consumers", "delete", "workers")
    assert refused.returncode == 1
    assert "still has 3 undelivered and 0 un-acked messages" in refused.stderr

    spawn("worker", WORK_S="0.05").wait_ready()  # the old setting drains its consumer

    def done() -> bool:
        st = run(statuses(nats_server.url))
        return all(i in st and st[i].status == "done" for i in ids)

    wait_until(done, 30, "the old worker to finish the waiting orders")
    wait_until(
        lambda: cli(nats_server.url, "consumers", "delete", "workers").returncode == 0,
        30,
        "the consumer to be idle and deleted",
        interval=1.0,
    )
    assert "workers " not in cli(nats_server.url, "consumers", "list").stdout
    spawn("worker", **SPLIT).wait_ready()
    assert "workers-invoice" in cli(nats_server.url, "consumers").stdout


def test_deleting_a_consumer_that_does_not_exist_says_so(nats_server: NatsServer, spawn: Any) -> None:
    spawn("worker").wait_ready()
    out = cli(nats_server.url, "consumers", "delete", "workers-nope")
    assert out.returncode == 1 and "workers-nope" in out.stderr and "Traceback" not in out.stderr
