"""A worker started while JetStream does not answer (a stream without a leader during a cluster's
election, a cluster still forming) waits for it instead of exiting: found by the chaos rehearsal on
a 3-node cluster, where a worker restarted inside an election died on its stream check (exit 1, a
crash-loop back-off in Kubernetes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Service, find_binary, free_port, service_env, wait_until

from orderflow_tools.kit import NatsServer, Process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_a_worker_started_before_jetstream_answers_waits_and_gets_ready_once_it_does(tmp_path: Path) -> None:
    """1. nats-server runs without JetStream: every JetStream API request finds no responder.
    2. A worker starts: it connects, is not ready, says why, and keeps running.
    3. nats-server is replaced by one with JetStream on the same port: the worker gets ready."""
    port = free_port()
    plain = Process(
        [find_binary("nats-server"), "-a", "127.0.0.1", "-p", str(port)], None, tmp_path / "plain.log"
    )
    plain.start()
    worker = Service("worker", service_env(f"nats://127.0.0.1:{port}"), tmp_path / "worker.log")
    try:
        worker.start()
        wait_until(lambda: "JetStream does not answer yet" in worker.logs(), 30, "the worker to wait")
        assert worker.proc is not None and worker.proc.poll() is None
        assert worker.get("/readyz")[0] == 503
        plain.stop()
        binary = find_binary("nats-server")
        js = NatsServer(tmp_path / "jetstream", tmp_path / "nats.log", port=port, binary=binary).start()
        try:
            worker.wait_ready(60)
        finally:
            worker.stop()
            js.stop()
    finally:
        worker.stop()
        plain.stop()
