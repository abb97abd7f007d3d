"""Work concentrates on the oldest workers (issue #14, item 5): each worker pulls with a priority
from its rank by age among the live workers (KV ORDER_WORKERS), so under light load the newest
run dry, and their pod-deletion-cost stays at the idle value: the scale-down's victims. Real
nats-server (2.15, consumer priority groups), real `python -m worker` processes, real SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import time
from typing import Any

import pytest
from harness import NatsServer, Service, connect, publish_orders, run, run_records, statuses, wait_until
from poller import Poller

from orderflow import contract

pytestmark = pytest.mark.slow


def metric_in(body: str, name: str) -> float:
    """Sum of every sample of `name` (any labels) in a /metrics text."""
    total = 0.0
    for line in body.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Sampler(Poller):
    """Reads a few gauges of some workers every `interval_s` in a thread, until stopped."""

    def __init__(self, workers: dict[str, Service], names: list[str], interval_s: float = 0.2) -> None:
        super().__init__(interval_s)
        self.workers = workers
        self.names = names
        self.samples: dict[tuple[str, str], list[float]] = {(w, n): [] for w in workers for n in names}
        self.times: dict[str, list[float]] = {w: [] for w in workers}  # epoch s of each scrape

    def poll(self) -> None:
        for w, svc in self.workers.items():
            # one scrape per worker: its gauges are read together
            before = time.time()
            body = svc.get("/metrics")[2].decode()
            self.times[w].append((before + time.time()) / 2)
            for n in self.names:
                self.samples[(w, n)].append(metric_in(body, n))

    def of(self, worker: str, name: str) -> list[float]:
        return self.samples[(worker, name)]

    def during(self, worker: str, name: str, spans: list[tuple[float, float]]) -> list[float]:
        """The samples taken inside any of the (start, end) epoch spans."""
        return [
            v
            for t, v in zip(self.times[worker], self.of(worker, name), strict=True)
            if any(a <= t <= b for a, b in spans)
        ]


async def raw_consumer_config(url: str, name: str = "workers") -> dict[str, Any]:
    """The consumer's config as the server has it (nats-py's ConsumerConfig has no priority fields)."""
    async with connect(url) as nc:
        reply = await nc.request(f"$JS.API.CONSUMER.INFO.{contract.STREAM}.{name}", b"", timeout=5)
        config: dict[str, Any] = json.loads(reply.data)["config"]
        return config


async def rank_record(url: str, key: str) -> dict[str, Any]:
    async with connect(url) as nc:
        kv = await nc.jetstream().key_value(contract.WORKERS_BUCKET)
        record: dict[str, Any] = json.loads((await kv.get(key)).value or b"{}")
        return record


async def ranked(url: str, key: str) -> bool:
    """Whether `key` has an entry in ORDER_WORKERS (it refreshes its rank there)."""
    from nats.js.errors import BucketNotFoundError, KeyNotFoundError

    async with connect(url) as nc:
        try:
            await (await nc.jetstream().key_value(contract.WORKERS_BUCKET)).get(key)
        except (BucketNotFoundError, KeyNotFoundError):
            return False
        return True


def runs_by(url: str, ids: list[str]) -> dict[str, list[str]]:
    """Which workers started each order (one entry per run)."""
    records = run(run_records(url))
    return {i: [r.worker_id for r in records.get(i, []) if r.event == "start"] for i in ids}


def done_by(url: str, ids: list[str]) -> bool:
    records = run(run_records(url))
    return all(any(r.event == "done" for r in records.get(i, [])) for i in ids)


@pytest.mark.timeout(240)
def test_a_trickle_runs_on_the_older_worker_and_the_newer_stays_idle_until_the_older_stops(
    nats_server: NatsServer, spawn: Any
) -> None:
    """1. Worker A starts; worker B starts a few seconds later. Both have 8 slots. Once their ranks
       are known A pulls at priority 0 (the oldest), B at 1 (`orderflow_pull_priority`).
    2. A trickle of 8 orders, one a second, each 4 s of work: about 4 running at a time, a
       quarter of A's capacity. Every one runs on A; B runs none.
    3. Sampled the whole time: B's `orderflow_pod_deletion_cost` stays 0 (idle) and nothing is in
       flight there, while A's is above 0 whenever it has jobs running.
    4. SIGTERM A: B moves to priority 0 within seconds, and orders published from then on run on
       B within seconds (work is never left unserved: A's last open pull, if an order reaches it,
       gives the order back unstarted). A finishes what it runs and exits 0. B's priority stays 0
       from then on: through A's drain and past the rank entries' TTL."""
    url = nats_server.url
    settings = {"CONCURRENCY": 16, "WORK_S": "4"}
    a = spawn("worker", WORKER_ID="A", **settings).wait_ready()
    # A knows its rank (its entry is in ORDER_WORKERS) before B starts: B finds it there.
    wait_until(lambda: run(ranked(url, "A")), 20, "A's rank entry", 0.2)
    b = spawn("worker", WORKER_ID="B", **settings).wait_ready()
    wait_until(
        lambda: (a.metric("orderflow_pull_priority"), b.metric("orderflow_pull_priority")) == (0, 1),
        20,
        "A at priority 0 and B at 1",
        0.2,
    )
    # B's rank record says what the console shows of it: its slots (none busy), not draining, no
    # deletion cost set (no Kubernetes here).
    record = run(rank_record(url, "B"))
    assert record["slots_total"] == b.metric('orderflow_pool_slots{type="default"}') > 0
    assert (record["slots_busy"], record["draining"], record["deletion_cost"]) == (0, False, None)
    config = run(raw_consumer_config(url))
    assert config["priority_policy"] == "prioritized" and config["priority_groups"] == [
        contract.PRIORITY_GROUP
    ]

    gauges = ["orderflow_pod_deletion_cost", "orderflow_tasks_in_flight"]
    trickle: list[str] = []
    with Sampler({"A": a, "B": b}, gauges) as sampler:
        for i in range(8):
            trickle += run(publish_orders(url, 1, prefix=f"trickle{i}"))
            time.sleep(1.0)
        wait_until(lambda: done_by(url, trickle), 30, "the trickle to be done", 0.5)
    assert runs_by(url, trickle) == {i: ["A"] for i in trickle}
    assert b.metric('orderflow_task_duration_seconds_count{outcome="done",type="default"}') == 0
    assert max(sampler.of("B", "orderflow_tasks_in_flight")) == 0
    assert max(sampler.of("B", "orderflow_pod_deletion_cost")) == 0  # idle the whole time
    # While A runs a trickle order (inside its start..done records, 0.2 s in from either end for
    # the scrape's own duration), A's deletion cost is above the idle value.
    records = run(run_records(url))
    spans = [
        (start.at + 0.2, done.at - 0.2)
        for i in trickle
        for start in records[i]
        if start.event == "start"
        for done in records[i]
        if done.event == "done"
    ]
    a_busy = sampler.during("A", "orderflow_pod_deletion_cost", spans)
    assert len(a_busy) >= 10, "A was seen busy too rarely to judge its cost"
    assert min(a_busy) > 0, a_busy  # work at stake: never the idle value while it runs jobs
    assert max(sampler.of("A", "orderflow_tasks_in_flight")) <= 8  # well below its capacity

    # 4: the older worker goes away; the newer takes over.
    last = run(publish_orders(url, 1, prefix="before-stop"))  # A is running this one when it stops
    wait_until(lambda: a.metric("orderflow_tasks_in_flight") >= 1, 10, "A to run the last order")
    stopped_at = time.time()
    a.signal(signal.SIGTERM)
    wait_until(lambda: b.metric("orderflow_pull_priority") == 0, 5, "B to move up to priority 0", 0.1)
    published_at: dict[str, float] = {}
    with Sampler({"B": b}, ["orderflow_pull_priority"], interval_s=0.1) as ranks:
        for i in range(3):
            [order_id] = run(publish_orders(url, 1, prefix=f"after-stop{i}"))
            published_at[order_id] = time.time()
            time.sleep(0.5)
        assert a.wait(30) == 0  # A's drain lasts as long as its last job (4 s): a rank refresh or two
        time.sleep(8)  # past the rank entries' TTL (6 s): a stale entry of A would have shown by now
    after = list(published_at)
    wait_until(lambda: done_by(url, after + last), 30, "B to serve the orders after A stopped", 0.5)
    assert runs_by(url, last) == {last[0]: ["A"]}  # A's drain finished it
    assert runs_by(url, after) == {i: ["B"] for i in after}
    records = run(run_records(url))
    for order_id, at in published_at.items():
        [start] = [r for r in records[order_id] if r.event == "start"]
        assert start.at - at < 5.0, f"{order_id} waited {start.at - at:.1f}s for a worker"
    assert min(published_at.values()) - stopped_at < 3  # while A was still draining (4 s)
    # An order that reached A's last open pull came back to B after it, not through A again and
    # again (A's request is first in line while it lasts): at most one delivery to A, one to B.
    deliveries = {i: st.deliveries for i, st in run(statuses(url)).items() if i in published_at}
    assert deliveries.keys() == published_at.keys() and max(deliveries.values()) <= 2, deliveries
    # B stayed first in line from the moment A began to drain: a draining worker is gone from
    # the ranks for good, it does not come back with its next refresh.
    assert set(ranks.of("B", "orderflow_pull_priority")) == {0}, ranks.of("B", "orderflow_pull_priority")
    # B's rank was 1 from the start (it waited for the entries already there, and did not count
    # itself the oldest for a moment), then 1 -> 0 once, never back.
    assert re.findall(r"pull priority \d+ -> \d+", b.logs()) == ["pull priority 1 -> 0"]


@pytest.mark.timeout(180)
def test_the_ranks_survive_a_nats_restart(nats_server: NatsServer, spawn: Any) -> None:
    """Found by the chaos rehearsal: after a NATS restart every worker pulled at priority 0 for the
    rest of its life (its KV watch had died with the server's ephemeral consumer, without an
    error), so work spread over all pods again and scale-downs hit busy ones.
    1. A, then B; priorities (0, 1).
    2. nats-server restarts (same port and store).
    3. Within a few seconds of the workers' reconnect the priorities are (0, 1) again, and they
       stay so, sampled every 0.2 s, for three times the rank entries' TTL (6 s).
    4. Each worker started its watch again once or twice, not at every refresh."""
    a = spawn("worker", WORKER_ID="A").wait_ready()
    wait_until(lambda: run(ranked(nats_server.url, "A")), 20, "A's rank entry", 0.2)  # B finds it there
    b = spawn("worker", WORKER_ID="B").wait_ready()

    def priorities() -> tuple[float, float]:
        return (a.metric("orderflow_pull_priority"), b.metric("orderflow_pull_priority"))

    wait_until(lambda: priorities() == (0, 1), 20, "A at priority 0 and B at 1", 0.2)
    nats_server.restart()
    a.wait_ready(30)
    b.wait_ready(30)
    wait_until(lambda: priorities() == (0, 1), 15, "the ranks back after the restart", 0.2)
    seen = set()
    deadline = time.monotonic() + 18
    while time.monotonic() < deadline:
        seen.add(priorities())
        time.sleep(0.2)
    assert seen == {(0, 1)}, seen
    # The dead watch was noticed and replaced about once per worker, not at every refresh (its
    # echo can come in before the put's own answer: that must not count as a dead watch).
    for worker in (a, b):
        assert 1 <= worker.logs().count("watching again") <= 2, worker.logs()
