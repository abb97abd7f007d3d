"""ORDERFLOW_INGEST_PROCESSES: several ingest processes share one port (SO_REUSEPORT), and a scrape
of /metrics reports the whole pod, whichever process answers it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from harness import Service, http
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict

from orderflow.metrics import SiblingsCollector
from orderflow_tools.kit import pid_alive


def children_of(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.procs
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


@pytest.mark.procs
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


@pytest.mark.procs
def test_a_stop_signal_forwarded_while_the_processes_still_start_stops_each_gracefully(
    spawn: Any, nats_server: Any
) -> None:
    """The test above failed now and then: a SIGTERM that reached a process before its handler was
    installed (the supervisor's own, or a child's still importing) killed it.
    1. SIGTERM to the supervisor as soon as both processes exist (they are still importing).
    2. Each holds the signal until its handler is in place, then runs its own shutdown: both
       log the graceful stop, and the supervisor exits 0."""
    svc: Service = spawn("ingest", INGEST_PROCESSES=2)
    assert svc.proc is not None
    deadline = time.monotonic() + 20
    while len(children_of(svc.proc.pid)) < 2:
        assert time.monotonic() < deadline, "the supervisor did not start its processes"
        time.sleep(0.005)
    svc.signal(signal.SIGTERM)
    assert svc.wait(30) == 0, svc.logs()
    assert svc.logs().count("received SIGTERM: graceful stop") == 2, svc.logs()


@pytest.mark.procs
def test_the_processes_do_not_outlive_their_supervisor(spawn: Any) -> None:
    """1. The supervisor is SIGKILLed (no chance to forward anything).
    2. The kernel sends each process SIGTERM (PR_SET_PDEATHSIG): they stop, none is left running."""
    svc: Service = spawn("ingest", INGEST_PROCESSES=2)
    svc.wait_ready()
    assert svc.proc is not None
    pids = children_of(svc.proc.pid)
    assert len(pids) == 2
    svc.proc.kill()
    svc.proc.wait(10)
    try:
        deadline = time.monotonic() + 30
        while any(pid_alive(p) for p in pids):
            assert time.monotonic() < deadline, f"still running after their supervisor died: {pids}"
            time.sleep(0.1)
    finally:
        for pid in pids:  # ours (its children), by pid
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_scrape_skips_the_metric_file_a_sibling_is_still_creating(tmp_path: Path) -> None:
    """prometheus_client creates a process's file and sizes it a moment later; a scrape between
    the two read an empty file and answered 500 (a second cause of the flaky test above)."""
    key = json.dumps(["orderflow_x", "orderflow_x_total", {}, "help"], sort_keys=True)
    live = MmapedDict(str(tmp_path / "counter_1.db"))  # type: ignore[no-untyped-call]
    live.write_value(key, 40.0, 0.0)  # type: ignore[no-untyped-call]
    live.close()  # type: ignore[no-untyped-call]
    (tmp_path / "counter_2.db").touch()  # a sibling between open() and truncate()
    registry = CollectorRegistry()
    SiblingsCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert "orderflow_x_total 40.0" in generate_latest(registry).decode()
