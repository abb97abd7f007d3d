"""`orderflow dev` (what `make run` starts): NATS (one node, or a 3-node cluster), ingest and a
worker; an order goes from POST to done; Ctrl-C (SIGINT) drains and stops everything with exit
code 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, connect, find_binary, free_port, http, run, wait_until

from orderflow_tools.kit import port_free

pytestmark = pytest.mark.slow


def start_dev(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    env["ORDERFLOW_WORK_S"] = "0.1"
    with open(tmp_path / "dev.log", "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orderflow_tools.cli",
                "dev",
                "--port",
                str(port),
                "--worker-port",
                str(free_port()),
                "--workers",
                "1",
                "--data-dir",
                str(tmp_path / "data"),
                *extra,
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def post_an_order_and_see_it_done(base: str, timeout_s: float = 30) -> None:
    def ready() -> bool:
        try:
            return http("GET", base + "/readyz", timeout=1)[0] == 200
        except OSError:
            return False

    wait_until(ready, timeout_s, "the ingest of orderflow dev")
    status, _, body = http("POST", base + "/orders", b'{"product_id":"33","count":"3","username":"maksim"}')
    assert status == 200
    order_id = json.loads(body)["order_id"]

    def done() -> bool:
        status, _, body = http("GET", f"{base}/orders/{order_id}")
        return status == 200 and json.loads(body)["status"] == "done"

    wait_until(done, 15, "the order to be done")


def test_orderflow_dev_runs_the_whole_system_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    find_binary("nats-server")
    port = free_port()
    proc = start_dev(tmp_path, port, "--nats-port", str(free_port()))
    try:
        post_an_order_and_see_it_done(f"http://127.0.0.1:{port}")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        text = (tmp_path / "dev.log").read_text()
        assert "orderflow dev is up" in text and "drained in" in text
        assert "stopped (ingest 0, worker-1 0)" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_orderflow_dev_nats_cluster_3_runs_on_a_3_node_cluster_with_r3_streams(tmp_path: Path) -> None:
    """`orderflow dev --nats-cluster 3`: three nodes on --nats-port and the next two ports, the
    streams created with 3 replicas, an order done, Ctrl-C stops everything with exit code 0."""
    find_binary("nats-server")
    port = free_port()
    nats_port = free_port()
    while not all(port_free(nats_port + i) for i in range(3)):
        nats_port = free_port()
    proc = start_dev(tmp_path, port, "--nats-port", str(nats_port), "--nats-cluster", "3")
    try:
        post_an_order_and_see_it_done(f"http://127.0.0.1:{port}", timeout_s=90)

        async def replicas() -> dict[str, int | None]:
            urls = ",".join(f"nats://127.0.0.1:{nats_port + i}" for i in range(3))
            async with connect(urls) as nc:
                js = nc.jetstream()
                return {
                    s: (await js.stream_info(s)).config.num_replicas for s in ("ORDERS", "KV_ORDER_STATUS")
                }

        assert run(replicas()) == {"ORDERS": 3, "KV_ORDER_STATUS": 3}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        text = (tmp_path / "dev.log").read_text()
        assert "cluster orderflow: 3 nodes, R3 streams" in text
        assert "stopped (ingest 0, worker-1 0)" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
