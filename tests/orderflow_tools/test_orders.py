"""`orderflow status ID [--watch]` and `orderflow cancel ID [--force]` against a real nats-server,
ingest and worker processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import Any

import pytest
from harness import REPO, NatsServer, Service, cli, connect, http, run, run_records, statuses, wait_until

from orderflow import contract

pytestmark = pytest.mark.slow
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ORDER = b'{"product_id":"33","count":"3","username":"maksim"}'


def post(ingest: Service) -> str:
    status, _, body = http("POST", ingest.url + "/orders", ORDER)
    assert status == 200, body
    return str(json.loads(body)["order_id"])


async def marker(url: str, order_id: str) -> bytes | None:
    async with connect(url) as nc:
        kv = await nc.jetstream().key_value(contract.CANCELS_BUCKET)
        try:
            return (await kv.get(order_id)).value
        except Exception:
            return None


def test_status_shows_iso_timestamps_and_watch_follows_the_order_until_done(
    nats_server: NatsServer, spawn: Any
) -> None:
    ingest = spawn("ingest").wait_ready()
    order_id = post(ingest)
    queued = cli(nats_server.url, "status", order_id)
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout)["status"] == "queued"  # its message in ORDERS, no record

    watch = subprocess.Popen(
        [sys.executable, "-m", "orderflow_tools.cli", "status", order_id, "--watch", "--nats-url", nats_server.url],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # it follows the queued order...
        assert watch.poll() is None
        spawn("worker", WORK_S="1").wait_ready()  # ...until a worker has done it
        out, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, err
    lines = out.splitlines()
    assert "queued" in lines[0] and any(
        line.split()[1] == "done" for line in lines[:-1] if line[:1].isdigit()
    )
    final = json.loads(out[out.index("{") :])
    assert final["status"] == "done"
    for name in ("updated_at", "started_at", "finished_at"):
        assert ISO.match(final[name]), final
        assert isinstance(final[name + "_s"], float)

    shown = json.loads(cli(nats_server.url, "status", order_id).stdout)
    assert ISO.match(shown["updated_at"]) and shown["status"] == "done"
    http_view = json.loads(http("GET", f"{ingest.url}/orders/{order_id}")[2])
    assert ISO.match(http_view["updated_at"]) and http_view["updated_at_s"] == shown["updated_at_s"]


def test_cancel_of_an_unknown_id_is_refused_unless_forced(nats_server: NatsServer, spawn: Any) -> None:
    """It used to write a `cancelled` record for any id, silently pre-cancelling a future order
    with that Idempotency-Key."""
    spawn("ingest").wait_ready()  # the layout: streams and buckets
    refused = cli(nats_server.url, "cancel", "no-such-order")
    assert refused.returncode == 1
    assert "not found" in refused.stderr and "--force" in refused.stderr
    assert "no-such-order" not in run(statuses(nats_server.url))
    assert run(marker(nats_server.url, "no-such-order")) is None

    forced = cli(nats_server.url, "cancel", "later-1", "--force", "--timeout-s", "0.5")
    assert forced.returncode == 0, forced.stderr
    assert "cancelled in advance" in forced.stdout
    assert run(marker(nats_server.url, "later-1")) is not None
    assert run(statuses(nats_server.url))["later-1"].status == "cancelled"


def test_cancel_of_a_queued_order_marks_it_and_no_worker_runs_it(nats_server: NatsServer, spawn: Any) -> None:
    """1. An order waits in ORDERS (no worker yet): cancel writes the marker first (a first
       delivery of a generated id reads no status, only the markers), finds no worker running it,
       records `cancelled`.
    2. A worker starts: it terms the order without running it and removes the marker.
    3. Cancelling it again: already final, refused."""
    ingest = spawn("ingest").wait_ready()
    order_id = post(ingest)
    out = cli(nats_server.url, "cancel", order_id, "--timeout-s", "0.5")
    assert out.returncode == 0, out.stderr
    assert "not running; marked cancelled" in out.stdout
    assert run(marker(nats_server.url, order_id)) is not None
    assert run(statuses(nats_server.url))[order_id].status == "cancelled"

    spawn("worker", WORK_S="0.1").wait_ready()

    async def stream_empty() -> bool:
        async with connect(nats_server.url) as nc:
            return (await nc.jetstream().stream_info(contract.STREAM)).state.messages == 0

    wait_until(lambda: run(stream_empty()), 15, "the cancelled order to be termed")
    wait_until(lambda: run(marker(nats_server.url, order_id)) is None, 10, "the marker to be removed")
    assert order_id not in run(run_records(nats_server.url))
    assert run(statuses(nats_server.url))[order_id].status == "cancelled"
    again = cli(nats_server.url, "cancel", order_id)
    assert again.returncode == 1 and "already cancelled" in again.stderr
