"""`orderflow pause` and `orderflow resume` against a real nats-server and real worker processes:
a paused type's orders stay queued (none runs) while the other type flows, a worker restarted
while paused keeps it paused, and after resume every order is done, none lost."""

from __future__ import annotations

import time
from typing import Any

import pytest
from harness import NatsServer, cli, consumer_info, publish_orders, run, run_records, statuses, wait_until

pytestmark = pytest.mark.slow

TYPES = "default,report"


def _done(url: str, prefix: str) -> int:
    return sum(1 for k, v in run(statuses(url)).items() if k.startswith(prefix) and v.status == "done")


def test_pause_holds_one_type_while_the_other_flows_and_survives_a_worker_restart(
    nats_server: NatsServer, spawn: Any
) -> None:
    url = nats_server.url
    env = {"TASK_TYPES": TYPES, "WORK_S": "0.05", "CONSUMER_INFO_INTERVAL_S": "0.2"}
    worker = spawn("worker", **env).wait_ready()

    paused = cli(url, "pause", "report", "--reason", "billing migration", "--by", "ops-ann", TASK_TYPES=TYPES)
    assert paused.returncode == 0, paused.stderr
    assert "paused report (consumer workers-report) by ops-ann" in paused.stdout
    assert run(consumer_info(url, "workers-report")).paused is True

    run(publish_orders(url, 5, prefix="r", task_type="report"))
    run(publish_orders(url, 5, prefix="d"))
    wait_until(lambda: _done(url, "d-") == 5, 30, "the unpaused type's orders done")
    wait_until(
        lambda: worker.metric('orderflow_consumer_paused{consumer="workers-report"}') == 1, 10, "metric"
    )
    assert worker.metric('orderflow_consumer_paused{consumer="workers-default"}') == 0

    status = cli(url, "status", TASK_TYPES=TYPES)
    assert status.returncode == 0, status.stderr
    line = next(s for s in status.stdout.splitlines() if "workers-report" in s)
    assert "PAUSED by ops-ann since " in line and "billing migration" in line
    assert "PAUSED" not in next(s for s in status.stdout.splitlines() if "workers-default" in s)

    # A worker restart while paused: its consumer create/update leaves the pause alone.
    worker.stop()
    worker = spawn("worker", **env).wait_ready()
    run(publish_orders(url, 3, prefix="e"))
    wait_until(lambda: _done(url, "e-") == 3, 30, "the unpaused type flows after the restart")
    time.sleep(0.5)  # a pull that a resumed consumer would have served meanwhile
    info = run(consumer_info(url, "workers-report"))
    assert info.paused is True and info.num_pending == 5 and info.num_ack_pending == 0
    records = run(run_records(url))
    assert not any(k.startswith("r-") for k in records), "a paused type's order ran"
    assert _done(url, "r-") == 0

    resumed = cli(url, "resume", "report", TASK_TYPES=TYPES)
    assert resumed.returncode == 0 and "resumed report" in resumed.stdout, resumed.stderr
    wait_until(lambda: _done(url, "r-") == 5, 30, "the paused type's orders done after resume")
    assert all(len(runs) == 2 for k, runs in run(run_records(url)).items() if k.startswith("r-"))
    assert "PAUSED" not in cli(url, "status", TASK_TYPES=TYPES).stdout
    again = cli(url, "resume", "report", TASK_TYPES=TYPES)
    assert again.returncode == 0 and "was not paused" in again.stdout


def test_pause_refuses_an_unknown_type_and_an_empty_reason(nats_server: NatsServer, spawn: Any) -> None:
    url = nats_server.url
    spawn("worker", TASK_TYPES=TYPES, WORK_S="0.05").wait_ready()
    unknown = cli(url, "pause", "nosuch", "--reason", "x", TASK_TYPES=TYPES)
    assert unknown.returncode == 2 and "task type 'nosuch' has no consumer on ORDERS" in unknown.stderr
    empty = cli(url, "pause", "report", "--reason", "  ", TASK_TYPES=TYPES)
    assert empty.returncode == 2 and "a pause needs a reason" in empty.stderr
    assert run(consumer_info(url, "workers-report")).paused in (None, False)


def test_a_consumer_update_keeps_the_pause(nats_server: NatsServer) -> None:
    """A release that changes the consumer's config (here its ack wait) updates it at worker start:
    the server keeps pause_until (nats-server 2.15 here), so the type stays paused."""
    from dataclasses import replace

    from harness import connect

    from orderflow import consumers, streams
    from orderflow.envsettings import load_settings

    settings = load_settings("worker", {"ORDERFLOW_TASK_TYPES": TYPES, "ORDERFLOW_NATS_URL": nats_server.url})

    async def go() -> tuple[Any, Any]:
        async with connect(nats_server.url) as nc:
            js = nc.jetstream()
            await streams.ensure_layout(js, settings)
            await consumers.ensure_consumer(nc, settings, "report")
            await consumers.raw_api(
                nc, "CONSUMER.PAUSE.ORDERS.workers-report", {"pause_until": "2099-01-01T00:00:00Z"}
            )
            handle = await consumers.ensure_consumer(
                nc, replace(settings, ack_wait_s=settings.ack_wait_s + 7), "report"
            )
            return handle, await js.consumer_info("ORDERS", "workers-report")

    handle, info = run(go())
    assert handle.ack_wait_s == settings.ack_wait_s + 7  # it was updated
    assert info.paused is True
