"""ORDERFLOW_INGEST_PROCESSES: several ingest processes share one port (SO_REUSEPORT), and a scrape
of /metrics reports the whole pod, whichever process answers it."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

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
