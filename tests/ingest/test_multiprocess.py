"""ORDERFLOW_INGEST_PROCESSES: several ingest processes share one port (SO_REUSEPORT), and a scrape
of /metrics reports the whole pod, whichever process answers it."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from harness import Service, http


def children_of(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_processes_share_the_port_and_metrics_add_up(spawn: Any) -> None:
    svc: Service = spawn("ingest", INGEST_PROCESSES=2)
    svc.wait_ready()
    assert svc.proc is not None
    assert len(children_of(svc.proc.pid)) == 2
    for _ in range(40):
        assert http("POST", svc.url + "/orders", b'{"product_id":1,"count":1,"username":"m"}')[0] == 200
    route = 'orderflow_http_requests_total{method="POST",route="/orders",status="200"}'
    # Each scrape lands on either process; every one must report all 40 orders.
    assert [svc.metric(route) for _ in range(8)] == [40.0] * 8
    assert svc.metric('orderflow_orders_published_total{result="stored"}') == 40
    svc.signal(signal.SIGTERM)
    assert svc.wait(20) == 0


def test_no_process_takes_connections_before_it_is_connected_to_nats(spawn: Any, nats_server: Any) -> None:
    """Behind one port, a process that answered 503 while still connecting would fail requests
    that a connected sibling could have taken: each process listens only once NATS is there."""
    nats_server.stop()
    svc: Service = spawn("ingest", INGEST_PROCESSES=2)
    time.sleep(2)
    with pytest.raises(OSError):
        http("GET", svc.url + "/healthz", timeout=1)
    nats_server.start()
    svc.wait_ready()
    statuses = [
        http("POST", svc.url + "/orders", b'{"product_id":1,"count":1,"username":"m"}')[0] for _ in range(40)
    ]
    assert statuses == [200] * 40
    svc.signal(signal.SIGTERM)
    assert svc.wait(20) == 0
