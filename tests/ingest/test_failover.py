"""A NATS restart or failover inside the publish budget costs latency, not 503s (issue #16 item 3):
real nats-server restarts under a real ingest, and the reconnect choice in process."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlparse

import pytest
from harness import NatsServer, Service, connect, http, run, stored_order_ids
from nats.aio.client import Server
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from ingest.publisher import Published, Publisher, Refusals, Sent
from orderflow import contract
from orderflow.config import Settings
from orderflow.link import Link
from orderflow.metrics import IngestMetrics
from orderflow.natsmux import Requester

ORDER = b'{"product_id": "33", "count": "3", "username": "maksim.konovalov"}'


@pytest.mark.procs
def test_orders_posted_during_a_quick_nats_restart_get_200_later_and_are_stored_once(
    spawn: Callable[..., Service], nats_server: NatsServer
) -> None:
    """1. Four clients post orders back to back (half with an Idempotency-Key);
    2. nats-server is stopped and started again (about a second or two), well inside the publish
       budget (10 s here, generous for a loaded machine);
    3. every order is answered 200 — some of them slower, while NATS was away — none 503;
    4. every 200 is in the stream exactly once (retries reuse the Nats-Msg-Id)."""
    svc = spawn("ingest", PUBLISH_TIMEOUT_S=10).wait_ready()
    stop = threading.Event()
    results: list[tuple[int, str, float]] = []

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            headers = {"Idempotency-Key": f"c{n}-{i}"} if n % 2 else {}
            started = time.monotonic()
            status, _, body = http("POST", svc.url + "/orders", ORDER, headers, timeout=30)
            order_id = json.loads(body).get("order_id", "") if status == 200 else ""
            results.append((status, order_id, time.monotonic() - started))
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    nats_server.restart()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(60)
    statuses = Counter(s for s, _, _ in results)
    assert statuses == {200: len(results)}, statuses
    waited = max(d for _, _, d in results)
    assert waited > 0.3, f"no request waited for the restart ({waited:.3f}s): did it happen?"
    ids = [i for _, i, _ in results]
    stored = run(stored_order_ids(nats_server.url))
    assert sorted(stored) == sorted(ids) and len(set(stored)) == len(stored)
    assert svc.metric("orderflow_orders_refused_total") == 0
    assert svc.proc is not None and svc.proc.poll() is None


@pytest.mark.procs
def test_a_write_sent_to_a_stream_leader_that_died_is_sent_again_to_the_new_one_at_once(
    nats_server: NatsServer,
) -> None:
    """1. A publish goes to a "leader" that swallows it (a plain subscriber standing in for a node
       killed mid-request: no PubAck will ever come); a read waits on another subject.
    2. A new leader is elected (what IngestState does on the LEADER_ELECTED advisory:
       Requester.leader_changed()).
    3. The write is failed at once and sent again with the same Nats-Msg-Id; the stand-in leader
       answers the second copy: stored, long before the 30 s budget. The read is left alone."""

    async def main() -> tuple[Sent, list[str], float, bool]:
        async with connect(nats_server.url) as nc:
            seen: list[str] = []
            arrived = asyncio.Event()

            async def leader(msg: Msg) -> None:
                seen.append((msg.headers or {}).get(contract.H_MSG_ID, ""))
                arrived.set()
                if len(seen) > 1:  # the first copy went to the dead leader
                    await msg.respond(b'{"stream":"ORDERS","seq":1}')

            async def replica(msg: Msg) -> None:  # a read nobody answers in time
                return None

            await nc.subscribe("failover.write", cb=leader)
            await nc.subscribe("failover.read", cb=replica)
            requests = await Requester(nc).start()
            settings = Settings(publish_timeout_s=30.0)
            metrics = IngestMetrics(CollectorRegistry())
            publisher = Publisher(nc, Link(), requests, settings, metrics, Refusals(metrics, 10.0))
            started = time.monotonic()
            write = asyncio.create_task(publisher.send("failover.write", b"{}", {contract.H_MSG_ID: "o-1"}))
            read = asyncio.create_task(requests.request("failover.read", b"", None, 30.0))
            await asyncio.wait_for(arrived.wait(), 10)
            assert requests.leader_changed() == 1
            sent = await asyncio.wait_for(write, 10)
            elapsed = time.monotonic() - started
            read_waiting = not read.done()
            read.cancel()
            await requests.stop()
            return sent, seen, elapsed, read_waiting

    sent, seen, elapsed, read_waiting = asyncio.run(main())
    assert sent.result is Published.STORED
    assert seen == ["o-1", "o-1"]
    assert elapsed < 10 and read_waiting


class Clock:
    """A stand-in for time.monotonic (named as such)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def servers(*netlocs: str) -> list[Server]:
    return [Server(uri=urlparse(f"nats://{n}")) for n in netlocs]


def test_after_losing_a_node_the_others_are_tried_at_once_and_the_lost_one_last() -> None:
    clock = Clock()
    link = Link(reconnect_wait_s=0.5, clock=clock)
    pool = servers("a:4222", "b:4222", "c:4222")
    link.connected("a:4222")
    lost: list[int] = []
    link.on_lost(lambda: lost.append(1))
    link.lost()
    assert lost == [1] and not link.up.is_set() and link.down_since == 100.0
    first, delay = link.pick(pool, {})
    assert first is not None and first.uri.netloc != "a:4222" and delay == 0.0
    clock.now += 0.01  # the attempt fails (connection refused)
    second, delay = link.pick(pool, {})
    assert second is not None and second.uri.netloc not in ("a:4222", first.uri.netloc) and delay == 0.0
    clock.now += 0.01
    third, delay = link.pick(pool, {})
    assert third is not None and third.uri.netloc == "a:4222" and delay == 0.0  # due: lost 0.5 s "ago"
    clock.now += 0.01
    again, delay = link.pick(pool, {})  # every node tried just now: the oldest, after a wait
    assert again is first and abs(delay - 0.47) < 1e-9
    link.connected("b:4222")
    assert link.up.is_set() and link.down_since is None


def test_a_single_server_is_retried_at_once_then_every_reconnect_wait() -> None:
    clock = Clock()
    link = Link(reconnect_wait_s=0.5, clock=clock)
    (only,) = pool = servers("a:4222")
    link.connected("a:4222")
    link.lost()
    assert link.pick(pool, {}) == (only, 0.0)
    picked, delay = link.pick(pool, {})
    assert picked is only and delay == 0.5
