"""`orderflow dev` (what `make run` starts): NATS, ingest and a worker; an order goes from POST to
done; Ctrl-C (SIGINT) drains and stops everything with exit code 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, find_binary, free_port, http, wait_until

pytestmark = pytest.mark.slow


def test_orderflow_dev_runs_the_whole_system_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    find_binary("nats-server")
    port, nats_port, worker_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    env["ORDERFLOW_WORK_S"] = "0.1"
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orderflow_tools.cli",
                "dev",
                "--port",
                str(port),
                "--nats-port",
                str(nats_port),
                "--worker-port",
                str(worker_port),
                "--workers",
                "1",
                "--data-dir",
                str(tmp_path / "data"),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return http("GET", base + "/readyz", timeout=1)[0] == 200
            except OSError:
                return False

        wait_until(ready, 30, "the ingest of orderflow dev")
        status, _, body = http(
            "POST", base + "/orders", b'{"product_id":"33","count":"3","username":"maksim"}'
        )
        assert status == 200
        order_id = json.loads(body)["order_id"]

        def done() -> bool:
            status, _, body = http("GET", f"{base}/orders/{order_id}")
            return status == 200 and json.loads(body)["status"] == "done"

        wait_until(done, 15, "the order to be done")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        text = log.read_text()
        assert "orderflow dev is up" in text and "drained in" in text
        assert "stopped (ingest 0, worker-1 0)" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
