"""A full JetStream store never stops the work already stored (issue #20): every stream and bucket
has its share of the account's store (orderflow/capacity.py), so ORDERS refuses new orders (the
ingest answers 503) while ORDER_STATUS still has room for the `done` of everything ORDERS holds.
Before, a full store refused the `done` records that must be stored before the ack that frees
space: the workers completed 0 of 7 821 queued orders in 60 s, and handlers ran again."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import NatsServer, Service, connect, http, run, statuses

from orderflow import contract

pytestmark = pytest.mark.slow
STORE_BYTES = 2 * 1024 * 1024
ORDER = json.dumps({"product_id": 1, "count": 2, "username": "full-store"}).encode()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """The account orderflow connects as (no_auth_user) may store STORE_BYTES on file: the limit the
    server reports in its account info, as an operator's account limits would."""
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f"accounts {{ APP {{ jetstream {{ max_file: {STORE_BYTES}, max_mem: 1MB }}, "
        "users [{user: app, password: app}] } }\nno_auth_user: app\n"
    )
    server = NatsServer(tmp_path / "jetstream", tmp_path / "nats-server.log", extra_args=["-c", str(conf)])
    server.start()
    yield server
    server.stop()


async def stream_counts(url: str) -> tuple[int, int]:
    """Messages left in ORDERS and in ORDERS_DLQ."""
    async with connect(url) as nc:
        js = nc.jetstream()
        orders = await js.stream_info(contract.STREAM)
        dlq = await js.stream_info(contract.DLQ_STREAM)
        return orders.state.messages, dlq.state.messages


def post(ingest: Service) -> tuple[int, str]:
    status, _, body = http("POST", ingest.url + "/orders", ORDER)
    return status, json.loads(body).get("order_id", "") if status == 200 else ""


def test_the_workers_finish_every_accepted_order_once_while_the_full_store_refuses_new_ones(
    spawn: Callable[..., Service], tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1. No workers: orders are posted until the ingest answers 503 (the store is full).
    2. Two workers start while a client keeps posting: as the backlog shrinks some are accepted
       again, the rest answered 503.
    3. Every accepted order is done, its handler ran exactly once, nothing is left in ORDERS and
       nothing was dead-lettered. (The trickle stays within what ORDER_STATUS keeps: past that its
       oldest `done` records go first, so that a new `done` is never refused.)"""
    ledger = tmp_path / "runs.txt"
    ingest = spawn("ingest").wait_ready()
    accepted: list[str] = []
    refused = 0
    with ThreadPoolExecutor(8) as pool:
        while refused < 50:
            for status, order_id in pool.map(lambda _: post(ingest), range(200)):
                assert status in (200, 503), status
                if status == 200:
                    accepted.append(order_id)
                else:
                    refused += 1
            assert len(accepted) < 100_000, "the store never filled"
    full_at = len(accepted)

    stop = threading.Event()
    answers: Counter[int] = Counter()

    def keep_posting() -> None:
        while not stop.is_set():
            status, order_id = post(ingest)
            answers[status] += 1
            if status == 200:
                accepted.append(order_id)
            time.sleep(0.02)

    clients = [threading.Thread(target=keep_posting)]
    for c in clients:
        c.start()
    monkeypatch.setenv("ONCE_LEDGER", str(ledger))  # the handler's, not an orderflow setting
    for _ in range(2):
        spawn("worker", HANDLERS="once", CONCURRENCY="32")
    # until the workers made room and a few hundred more were accepted (the store holds ~1.5x that)
    deadline = time.monotonic() + 60
    while answers[200] < 300 and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    for c in clients:
        c.join()

    deadline = time.monotonic() + 90
    done: dict[str, object] = {}
    while time.monotonic() < deadline:
        done = {k: v for k, v in run(statuses(nats_server.url)).items() if v.status == "done"}
        if all(order_id in done for order_id in accepted):
            break
        time.sleep(1)
    ran = Counter(ledger.read_text().split()) if ledger.exists() else Counter()
    twice = [k for k, n in ran.items() if n > 1]
    missing = [k for k in accepted if k not in done]
    print(
        f"\nfull store {STORE_BYTES} B: accepted {len(accepted)} ({full_at} before the first 503s), "
        f"503s {refused + answers[503]}, done {sum(1 for k in accepted if k in done)}, "
        f"ran twice {len(twice)}, not done {len(missing)}"
    )
    assert answers[503] > 0 and answers[200] > 0, answers  # refused while full, accepted as space freed
    assert not missing, f"{len(missing)} of {len(accepted)} accepted orders not done, e.g. {missing[:3]}"
    assert not twice, f"{len(twice)} orders ran twice, e.g. {twice[:3]}"
    assert set(ran) == set(accepted)
    assert run(stream_counts(nats_server.url)) == (0, 0)
